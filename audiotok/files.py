"""Files audiotok writes, safely: atomic writes through exclusive temp files (never through a link,
never leaving a finished-looking file after a kill), stale temp removal, append-only opens that
refuse links, and the checks that an output folder or file can be written before any work.
No torch, no knowledge of commands: the engine, the formats, weights and checkpoints use it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import OutputError, UsageError


def display_path(path: str) -> str:
    """A printable form of any path (non-UTF-8 bytes shown as \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


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
    except OSError as exc:
        raise OutputError(f"cannot write to {what} {shown} ({exc.strerror or exc}); choose a writable folder") from None
    _write_check(out, what, shown)
    return out


def _write_check(folder: Path, what: str, shown: str) -> None:
    """Create and remove a file in ``folder``: it takes new files (permissions, read-only mounts, quotas)."""
    try:
        check = folder / temp_name("write-check")
        os.close(create_exclusive(check))
        os.unlink(check)
    except OSError as exc:
        raise OutputError(f"cannot write to {what} {shown} ({exc.strerror or exc}); choose a writable folder") from None


def check_output_dir(out: str | os.PathLike, what: str = "-o") -> Path:
    """``prepare_output_dir`` without creating anything: an existing folder must take a file; a
    missing one must be creatable (its nearest existing parent a writable folder). So a run that
    stops before any work (weights missing, a usage error found later) leaves no empty folder."""
    out = Path(out)
    if out.exists():
        return prepare_output_dir(out, what)
    shown = display_path(str(out))
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {shown} cannot be created: {display_path(str(parent))} is a file, not a folder; "
                         "choose another path")
    _write_check(parent, what, shown)
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


def file_kind_error(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read (FIFOs, devices and sockets would block or never
    end), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not an audio file"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"is {kind}, not a regular file; it was skipped without being opened"


def open_regular(path: str):
    """Open ``path`` for reading only if it is a regular file: opened non-blocking (a FIFO cannot
    hang the run) and checked with ``fstat`` before anything is read. Raises OSError as ``open``
    does, or ``NotRegularFile`` with the reason."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        why = file_kind_error(os.fstat(fd).st_mode)
        if why:
            raise NotRegularFile(why)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class NotRegularFile(Exception):
    """Raised by :func:`open_regular`; the message says what the file is."""
