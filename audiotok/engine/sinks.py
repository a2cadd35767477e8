"""Where results go: one file per input mirroring the input tree, a manifest line per input,
JSON lines on stdout. Every file is written to a temporary name and renamed, so a killed run never
leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError, UsageError
from ..files import (  # noqa: F401  (re-exported: these lived here before audiotok.files)
    NAME_MAX,
    atomic_write,
    create_exclusive,
    display_path,
    open_append,
    prepare_checkpoint_paths,
    prepare_output_dir,
    prepare_output_file,
    prepare_run_output,
    remove_stale_temps,
    temp_name,
)
from .sources import Source

Writer = Callable[[IO[bytes], Any], None]


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
