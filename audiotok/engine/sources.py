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

from ..files import NotRegularFile, display_path, file_kind_error, open_regular  # noqa: F401  (re-exported)

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "mp3", "opus", "aiff", "aif")
CODE_EXTENSIONS = ("npz", "npy", "ecdc")
_MAGIC = set("*?[")


@dataclass(frozen=True)
class Source:
    path: str  # to open (os-level str; may hold surrogate escapes for non-UTF-8 names)
    rel: str  # relative path under the common root, mirrored by outputs
    error: str | None = None  # set when the input cannot even be listed (missing, loop)
    offset: float = 0.0  # seconds into the recording where this input starts (manifest segments)
    duration: float | None = None  # seconds from ``offset``; None: to the end

    @property
    def is_segment(self) -> bool:
        return self.offset > 0 or self.duration is not None

    @property
    def display(self) -> str:
        return display_path(self.path)


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


def check_inputs_exist(inputs: Sequence[str]) -> None:
    """Refuse a path given on the command line that does not exist, or a pattern that matches
    nothing, before any work (a usage error: exit status 2). Paths read from stdin (``-``) and
    manifest entries are inputs like any other: each missing one gets an error record."""
    from ..errors import UsageError

    for item in inputs:
        if item == "-" or os.path.lexists(item):
            continue
        shown = display_path(item)
        if _MAGIC & set(item):
            if not glob.glob(item, recursive=True):
                raise UsageError(f"no file matches {shown}; check the pattern (nothing was processed)")
        else:
            raise UsageError(f"{shown} does not exist; check the path (nothing was processed)")


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


# --- manifests: JSONL or CSV lists of paths with optional offset/duration segments -------------
MANIFEST_PATH_FIELDS = ("path", "audio_filepath")  # ours, NeMo's


def read_manifest_inputs(manifest: str | os.PathLike) -> list[Source]:
    """Sources listed in a manifest: ``.jsonl`` (one JSON object per line) or ``.csv`` (a header
    row), each entry with ``path`` (or NeMo's ``audio_filepath``) and optional ``offset`` and
    ``duration`` in seconds. Relative paths are taken relative to the manifest's folder. Each
    segment is its own input, with its own output named ``<stem>_<start>-<end><ext>`` (seconds,
    3 decimals; ``end`` is ``end`` when no duration is given). Any malformed entry is a
    ``UsageError`` naming the line."""
    from ..errors import UsageError

    path = Path(manifest)
    kind = path.suffix.lower()
    if kind not in (".jsonl", ".csv"):
        raise UsageError(f"--manifest {display_path(str(path))} must be a .jsonl or .csv file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--manifest {display_path(str(path))} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--manifest {display_path(str(path))} cannot be read ({exc})") from None
    rows = _jsonl_rows(text, path) if kind == ".jsonl" else _csv_rows(text, path)
    base = path.parent
    entries = []
    for line, row in rows:
        where = f"{display_path(str(path))} line {line}"
        name = next((row[k] for k in MANIFEST_PATH_FIELDS if row.get(k) not in (None, "")), None)
        if not isinstance(name, str):
            raise UsageError(f"{where} has no path (a \"path\" or \"audio_filepath\" field)")
        offset = _seconds(row.get("offset"), where, "offset")
        duration = _seconds(row.get("duration"), where, "duration")
        if duration is not None and duration <= 0:
            raise UsageError(f"{where}: duration must be positive, not {duration:g}")
        full = name if os.path.isabs(name) else os.path.join(base, name)
        entries.append((full, offset or 0.0, duration))
    if not entries:
        raise UsageError(f"--manifest {display_path(str(path))} lists no inputs")
    return _manifest_sources(entries)


def _jsonl_rows(text: str, path: Path):
    import json

    from ..errors import UsageError

    for i, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{display_path(str(path))} line {i} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{display_path(str(path))} line {i} is not a JSON object")
        yield i, row


def _csv_rows(text: str, path: Path):
    import csv
    import io

    from ..errors import UsageError

    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not set(MANIFEST_PATH_FIELDS) & {f.strip() for f in reader.fieldnames}:
        raise UsageError(f"{display_path(str(path))} needs a header row with a path column")
    for row in reader:
        clean = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
        if any(v for v in clean.values()):
            yield reader.line_num, clean


def _seconds(value, where: str, name: str) -> float | None:
    from ..errors import UsageError

    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {name} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise UsageError(f"{where}: {name} must be a finite number of seconds >= 0, not {value!r}")
    return seconds


def segment_rel(rel: str, offset: float, duration: float | None) -> str:
    """The relative path a segment's outputs mirror: ``a/long.wav`` at 10 s for 5 s ->
    ``a/long_10.000-15.000.wav``."""
    p = Path(rel)
    end = "end" if duration is None else f"{offset + duration:.3f}"
    return str(p.with_name(f"{p.stem}_{offset:.3f}-{end}{p.suffix}"))


def _manifest_sources(entries: list[tuple[str, float, float | None]]) -> list[Source]:
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _, _ in entries])
    by_key: dict[tuple, Source] = {}
    for path, offset, duration in entries:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, common)
        err = None if os.path.lexists(path) else "no such file or directory"
        if offset > 0 or duration is not None:
            rel = segment_rel(rel, offset, duration)
        by_key.setdefault((absolute, offset, duration), Source(path=path, rel=rel, error=err,
                                                               offset=offset, duration=duration))
    return sorted(by_key.values(), key=lambda s: os.fsencode(s.rel))


# --- --exclude --------------------------------------------------------------------------------
def is_excluded(source: Source, patterns: Sequence[str]) -> bool:
    """Whether a glob of ``patterns`` matches the source's path as given, its relative path, or
    any one component of the relative path (so ``--exclude cache`` drops ``a/cache/b.wav``).
    Case-sensitive; ``*`` also matches ``/``."""
    import fnmatch

    rel = Path(source.rel).as_posix()
    given = Path(source.path).as_posix()
    candidates = [rel, given, *Path(rel).parts]
    return any(fnmatch.fnmatchcase(c, pat) for pat in patterns for c in candidates)


def exclude(sources: Sequence[Source], patterns: Sequence[str]) -> tuple[list[Source], list[Source]]:
    """``(kept, excluded)`` in the original order."""
    kept, dropped = [], []
    for s in sources:
        (dropped if patterns and is_excluded(s, patterns) else kept).append(s)
    return kept, dropped
