"""Where results go: one file per input mirroring the input tree, a manifest line per input,
JSON lines on stdout. Every file is written to a temporary name and renamed, so a killed run never
leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import UsageError
from .sources import Source, display_path

Writer = Callable[[IO[bytes], Any], None]


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class OutputTree:
    """``OUT/<rel with suffix replaced>`` for each source (``keep_ext``: the suffix appended, so
    ``a.wav`` and ``a.flac`` get ``a.wav.npz`` and ``a.flac.npz``)."""

    def __init__(self, root: str | os.PathLike, suffix: str, keep_ext: bool = False):
        self.root = Path(root)
        self.suffix = suffix if suffix.startswith(".") else "." + suffix
        self.keep_ext = keep_ext

    def target(self, source: Source) -> Path:
        rel = Path(source.rel)
        if not rel.suffix:
            return self.root / (rel.name + self.suffix)
        return self.root / (rel.with_name(rel.name + self.suffix) if self.keep_ext else rel.with_suffix(self.suffix))

    def done(self, source: Source) -> bool:
        return self.target(source).is_file()

    def write(self, source: Source, writer: Writer, result: Any) -> Path:
        path = self.target(source)
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
    input wins). Under torchrun or ``--shard``, each rank appends to its own part file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._f.write(_json_line(record))
        self._f.flush()

    def close(self) -> None:
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
        with open(out_dir / "manifest.jsonl", "a", encoding="utf-8") as merged:
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

    def emit(self, record: dict) -> None:
        self.stream.write(_json_line(record))
        self.stream.flush()


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """The last record per input of a manifest file."""
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                out[rec["input"]] = rec
    return out


__all__ = ["OutputTree", "Manifest", "JsonLines", "atomic_write", "merge_manifest_parts", "display_path"]
