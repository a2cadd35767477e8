"""Where results go: one file per input mirroring the input tree, a manifest line per input,
JSON lines on stdout. Every file is written to a temporary name and renamed, so a killed run never
leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError, UsageError
from .sources import Source, display_path

Writer = Callable[[IO[bytes], Any], None]


NAME_MAX = 255  # bytes per name on common file systems (ext4, xfs, btrfs, tmpfs, NFS)
# ours: .NAME.tmp-PID-8HEX; earlier versions wrote .NAME.tmp-PID (only names of outputs we write)
_TMP_RE = re.compile(rb"^\..+\.tmp-(\d+)-[0-9a-f]{8}$|^\..+\.(?:npz|npy|ecdc|wav|flac|png|json|jsonl|pt)\.tmp-(\d+)$",
                     re.DOTALL)
_FILE_MODE = 0o666  # before the umask, like open(); mkstemp's 0o600 would hide outputs in shared folders


def temp_name(name: str, pid: int | None = None) -> str:
    """``.NAME.tmp-PID-RANDOM``, with NAME cut (at a byte) so the whole stays within ``NAME_MAX``."""
    tail = f".tmp-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}".encode()
    raw = os.fsencode(name)[: NAME_MAX - 1 - len(tail)]
    return os.fsdecode(b"." + raw + tail)


def create_exclusive(path: Path) -> int:
    """A new file at ``path`` opened for writing; never through a link, never an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, _FILE_MODE)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(fileobj)`` into a new temp file beside ``path``, fsync, then rename.

    The temp file is created exclusively under a random name (a link planted there cannot redirect
    the write); the rename replaces a link at ``path`` itself, never what it points to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(temp_name(path.name))
        try:
            fd = create_exclusive(tmp)
            break
        except FileExistsError:
            continue
        except OSError as exc:  # name the output asked for, not the hidden temporary name
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise OSError(errno.EEXIST, "no free temporary name", str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(root: str | os.PathLike) -> int:
    """Remove the temp files that runs killed on this machine left under ``root`` (their process is
    gone); a live run's temp files are kept. Links are not followed. Returns how many were removed."""
    removed = 0
    stack = [os.fsencode(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                m = _TMP_RE.match(entry.name)
                if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1) or m.group(2))):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


def prepare_output_dir(out: str | os.PathLike, what: str = "-o") -> Path:
    """Create the output folder (or check it) and prove it is writable; a user-caused problem is one
    sentence (exit 1), never a traceback."""
    out = Path(out)
    shown = display_path(str(out))
    if out.exists() and not out.is_dir():
        raise UsageError(f"{what} {shown} is an existing file, not a folder; choose a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / temp_name("write-check")
        os.close(create_exclusive(probe))
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {what} {shown} ({exc.strerror or exc}); choose a writable folder") from None
    return out


def prepare_output_file(path: str | os.PathLike, what: str = "-o") -> Path:
    """Check, before any work, that a single output file (a checkpoint, a report, a records file)
    can be written at ``path``: not a folder, its folder created and writable. One sentence otherwise
    (a folder at ``path``: usage error, exit 2; an unwritable folder: exit 1)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {display_path(str(path))} is a folder; {what} takes a file path")
    prepare_output_dir(path.parent, f"the folder of {what}")
    return path


def prepare_checkpoint_paths(out: Path, cache: Path | None) -> Path:
    """A training run's checkpoint file and cache folder (default ``OUT.cache``) can be written,
    checked before any work (a read-only -o would otherwise fail only when the first checkpoint is
    saved). Returns the cache folder."""
    out = Path(out)
    prepare_output_file(out, "-o")
    cache = Path(cache) if cache is not None else out.with_name(out.name + ".cache")
    prepare_output_dir(cache, "--cache")
    return cache


def prepare_run_output(out: str | os.PathLike) -> Path:
    """The output folder of a run: created and writable, stale temp files of killed runs removed."""
    out = prepare_output_dir(out)
    remove_stale_temps(out)
    return out


def open_append(path: Path):
    """Open ``path`` for appending text, refusing to follow a link planted at that name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, _FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"{display_path(str(path))} is a symbolic link; audiotok does not write through "
                              "links in its output folder; remove the link and rerun") from None
        raise OutputError(f"cannot write {display_path(str(path))} ({exc.strerror or exc}); "
                          "choose a writable output folder") from None
    return os.fdopen(fd, "a", encoding="utf-8")


class OutputTree:
    """``OUT/<rel with suffix replaced>`` for each source (``keep_ext``: the suffix appended, so
    ``a.wav`` and ``a.flac`` get ``a.wav.npz`` and ``a.flac.npz``)."""

    def __init__(self, root: str | os.PathLike, suffix: str, keep_ext: bool = False):
        self.root = Path(root)
        self.suffix = suffix if suffix.startswith(".") else "." + suffix
        self._checked: set[Path] = set()
        self.keep_ext = keep_ext

    def target(self, source: Source) -> Path:
        rel = Path(source.rel)
        if not rel.suffix:
            return self.root / (rel.name + self.suffix)
        return self.root / (rel.with_name(rel.name + self.suffix) if self.keep_ext else rel.with_suffix(self.suffix))

    def done(self, source: Source) -> bool:
        """A regular file (not a link) is at the target."""
        try:
            return stat.S_ISREG(os.lstat(self.target(source)).st_mode)
        except OSError:
            return False

    def check_inside(self, path: Path) -> None:
        """Refuse a target whose folder is (or passes through) a link leading outside the output root."""
        folder = path.parent
        if folder in self._checked:
            return
        root = os.path.realpath(self.root)
        real = os.path.realpath(folder)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise OutputError(f"the output folder {display_path(str(folder))} is a link leading outside "
                              f"{display_path(str(self.root))} (to {display_path(real)}); remove the link or choose another -o")
        self._checked.add(folder)

    def write(self, source: Source, writer: Writer, result: Any) -> Path:
        path = self.target(source)
        if len(os.fsencode(path.name)) > NAME_MAX:
            raise OutputError(f"the output name {display_path(path.name)} is longer than {NAME_MAX} bytes; "
                              "rename the input")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.check_inside(path)
        atomic_write(path, lambda f: writer(f, result))
        return path


def claim_targets(sources: list[Source], tree: OutputTree) -> list[Source]:
    """Check the inputs' outputs before any work, on the full sorted list (before sharding).

    An output that would replace an input is a usage error. Two inputs with the same output (``a.wav``
    and ``a.flac`` in one folder) would overwrite each other: the first in sorted order keeps it,
    the others become per-input errors."""
    import dataclasses

    inputs = {os.path.realpath(s.path): s for s in sources if not s.error}
    owner: dict[str, Source] = {}
    out = []
    for s in sources:
        if s.error:
            out.append(s)
            continue
        target = tree.target(s)
        key = os.path.realpath(target)
        if key in inputs:
            raise UsageError(f"output {display_path(str(target))} would overwrite the input "
                             f"{inputs[key].display}; choose another -o")
        if key in owner:
            s = dataclasses.replace(s, error=f"has the same output {display_path(str(target))} as "
                                             f"{owner[key].display}; pass --keep-ext, rename one of them or run them separately")
        else:
            owner[key] = s
        out.append(s)
    return out


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"


class Manifest:
    """Append-only JSONL, one line per input per run, flushed line by line (the last line per
    input wins). Under torchrun or ``--shard``, each rank appends to its own part file.

    A write that fails (disk full, file system gone read-only) does not end the run: the error is
    kept in ``failure`` and the run reports it at the end; outputs already written stay."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open_append(path)
        self.failure: str | None = None
        self.lost = 0
        self._cut = False  # a failed write may have left part of a line: start the next on a new line

    def append(self, record: dict) -> None:
        line = ("\n" if self._cut else "") + _json_line(record)
        try:
            self._f.write(line)
            self._f.flush()
            self._cut = False
        except (OSError, ValueError) as exc:  # ValueError: the file could not be reopened after a failure
            self.lost += 1
            self._cut = True
            if self.failure is None:
                self.failure = getattr(exc, "strerror", None) or str(exc)
            with contextlib.suppress(OSError):  # drop what is buffered, so no line is written twice
                self._f.close()
            with contextlib.suppress(OutputError):
                self._f = open_append(self.path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


def manifest_part_name(rank: int, world: int) -> str:
    return "manifest.jsonl" if world <= 1 else f"manifest.rank-{rank}.jsonl"


def merge_manifest_parts(out_dir: Path, rank: int, world: int) -> bool:
    """Mark this rank finished; the last rank to finish appends every part to ``manifest.jsonl``.

    Works the same under torchrun and for independent ``--shard K/N`` jobs (no process group
    needed). Returns True when this call did the merge."""
    if world <= 1:
        return False
    (out_dir / f".manifest.rank-{rank}.done").write_text(str(time.time()))
    markers = [out_dir / f".manifest.rank-{k}.done" for k in range(world)]
    if not all(m.exists() for m in markers):
        return False
    lock = out_dir / ".manifest.merge.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        with open_append(out_dir / "manifest.jsonl") as merged:
            for k in range(world):
                part = out_dir / f"manifest.rank-{k}.jsonl"
                if part.exists():
                    merged.write(part.read_text(encoding="utf-8"))
                    part.unlink()
            merged.flush()
            os.fsync(merged.fileno())
        for m in markers:
            with contextlib.suppress(FileNotFoundError):
                m.unlink()
    finally:
        os.close(fd)
        os.unlink(lock)
    return True


class JsonLines:
    """One JSON object per input on stdout (machine-readable results for pipelines)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self.failure: str | None = None  # the first write that failed (disk full, reader gone)
        self.lost = 0

    def emit(self, record: dict) -> None:
        try:
            self.stream.write(_json_line(record))
            self.stream.flush()
        except (OSError, ValueError) as exc:  # the run goes on; the caller reports it at the end
            self.lost += 1
            if self.failure is None:
                self.failure = getattr(exc, "strerror", None) or str(exc)


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """The last record per input of a manifest file."""
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed run or a full disk
            if isinstance(rec, dict) and "input" in rec:
                out[rec["input"]] = rec
    return out


__all__ = ["OutputTree", "Manifest", "JsonLines", "atomic_write", "merge_manifest_parts", "display_path",
           "prepare_output_dir", "prepare_output_file", "remove_stale_temps", "temp_name", "open_append"]
