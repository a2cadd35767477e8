"""Input discovery: paths, directories, globs and ``-`` (paths on stdin) -> sorted, sharded sources.

Each source gets the path to open, a stable id (its path as given, resolved against the common
root) and the relative path its outputs mirror. Nothing here opens audio.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "mp3", "opus", "aiff", "aif")
CODE_EXTENSIONS = ("npz", "npy", "ecdc")
_MAGIC = set("*?[")


@dataclass(frozen=True)
class Source:
    path: str  # to open (os-level str; may hold surrogate escapes for non-UTF-8 names)
    rel: str  # relative path under the common root, mirrored by outputs
    error: str | None = None  # set when the input cannot even be listed (missing, loop)

    @property
    def display(self) -> str:
        return display_path(self.path)


def display_path(path: str) -> str:
    """A printable form of any path (non-UTF-8 bytes shown as \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def normalise_extensions(exts: Iterable[str]) -> tuple[str, ...]:
    out = []
    for e in exts:
        for part in str(e).split(","):
            part = part.strip().lower().lstrip(".")
            if part:
                out.append(part)
    return tuple(dict.fromkeys(out))


def _has_ext(name: str, exts: Sequence[str]) -> bool:
    return name.rsplit(".", 1)[-1].lower() in exts if "." in name else False


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


def _walk(root: str, exts: Sequence[str], problems: list[tuple[str, str]] | None = None) -> list[str]:
    """Recursive listing that follows directory symlinks but never loops. Folders that cannot be
    listed are added to ``problems`` as (folder, reason)."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        if problems is not None and exc.filename is not None:
            problems.append((os.fsdecode(exc.filename), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames.sort()
        for name in filenames:
            if _has_ext(name, exts) and not name.startswith("."):
                found.append(os.path.join(dirpath, name))
    return found


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _MAGIC & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def read_stdin_paths(stream=None) -> list[str]:
    """One path per line (trailing newline stripped, blank lines ignored), bytes kept exactly."""
    stream = stream if stream is not None else sys.stdin.buffer
    out = []
    for raw in stream.read().split(b"\n"):
        raw = raw.rstrip(b"\r")
        if raw.strip():
            out.append(os.fsdecode(raw))
    return out


def discover(inputs: Sequence[str], exts: Sequence[str] = AUDIO_EXTENSIONS, stdin=None) -> list[Source]:
    """Expand inputs into a deterministic, de-duplicated, sorted list of sources.

    Directories are walked recursively for files with one of ``exts``; explicit files are taken
    whatever their extension; patterns with ``* ? [`` are globbed (``**`` recursive). A missing
    input becomes a source carrying an error, so the run reports it and goes on."""
    entries: list[tuple[str, str, str | None]] = []  # (path, root, error)
    expanded: list[str] = []
    for item in inputs:
        if item == "-":
            expanded.extend(read_stdin_paths(stdin))
        else:
            expanded.append(item)
    problems: list[tuple[str, str]] = []
    for item in expanded:
        if os.path.isdir(item):
            for p in _walk(item, exts, problems):
                entries.append((p, item, None))
            entries.extend((d, item, f"is a folder that cannot be read ({why}); its files were not processed")
                           for d, why in problems)
            problems.clear()
        elif os.path.lexists(item):
            entries.append((item, os.path.dirname(item) or ".", None))
        elif _MAGIC & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            root = _glob_root(item)
            for m in matches:
                if os.path.isdir(m):
                    entries.extend((p, root, None) for p in _walk(m, exts, problems))
                    entries.extend((d, root, f"is a folder that cannot be read ({why}); its files were not processed")
                                   for d, why in problems)
                    problems.clear()
                elif _has_ext(m, exts):
                    entries.append((m, root, None))
            if not matches:
                entries.append((item, os.path.dirname(item) or ".", "no file matches this pattern"))
        else:
            entries.append((item, os.path.dirname(item) or ".", "no such file or directory"))
    if not entries:
        return []
    roots = [os.path.abspath(r) for _, r, _ in entries]
    common = os.path.commonpath(roots)
    by_key: dict[str, Source] = {}
    for (path, _root, err) in entries:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, common)
        if rel.startswith(".."):
            rel = os.path.basename(absolute)
        if err is None:
            err = _kind_error(path)
        by_key.setdefault(absolute, Source(path=path, rel=rel, error=err))
    return sorted(by_key.values(), key=lambda s: os.fsencode(s.rel))


def _kind_error(path: str) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing, a link loop, no permission: the reader says which, with the file's name
    return None if stat.S_ISDIR(mode) else file_kind_error(mode)


def shard(sources: Sequence[Source], rank: int, world: int) -> list[Source]:
    """This rank's share of the sorted sources (round robin: balanced in count and length mix)."""
    if world <= 1:
        return list(sources)
    return [s for i, s in enumerate(sources) if i % world == rank]
