"""Dataset outputs: Parquet shards instead of one small file per input.

Rows (one per input or manifest segment) are buffered and written as one shard of one row group
once about ``max_bytes`` of arrays are buffered, and at the end of the run:
``OUT/data/shard-<rank>-<index>-<run>.parquet`` (rank 000 without torchrun or ``--shard``; ``run``:
8 hex digits drawn by each run, so runs writing into one folder at once never pick the same name;
a folder of shards only, so ``pandas.read_parquet("OUT/data")`` reads them all). Each shard is
written to a temporary name and renamed, so a shard that exists is complete. A rerun reads the
``id`` column of the finished shards and skips those inputs (resumable like the per-file
outputs); rows still buffered when a process is killed are redone. A run that meets an input
claimed by another run (``sharing.Claims``) first reads the shards written since it started, so
a row finished meanwhile is not written twice.

Arrays are nested lists (``codes``: ``list<list<int16>>`` = ``[n_q][frames]``; ``embedding``: one
list level per axis) with their ``shape`` beside them, so pandas, pyarrow and Hugging Face
``datasets`` read the shards without audiotok. The run's settings are columns too, and are kept
in the schema metadata (key ``audiotok``) so a rerun with other settings is refused instead of
mixing rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..files import display_path

if TYPE_CHECKING:  # annotations only: formats/ never imports the engine at run time
    from ..engine.sources import Source

SHARD_RE = re.compile(r"^shard-(\d{3,})-(\d{5,})(?:-[0-9a-f]{8})?\.parquet$")  # older runs: no run tag
DEFAULT_SHARD_BYTES = 64 << 20
META_KEY = b"audiotok"
DATA_DIR = "data"  # shards go in OUT/data (OUT also holds manifest.jsonl)


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise UsageError("--format parquet needs pyarrow; install it with `pip install pyarrow`") from None
    return pa, pq


def source_id(source: Source) -> str:
    """A row's ``id``: the input's relative path (segments: with their span), as outputs mirror it."""
    return Path(display_path(source.rel)).as_posix()


def nested_list_array(arrays: list[np.ndarray], value_type):
    """One pyarrow list array (one list level per axis) holding ``arrays`` (same ndim, any shapes)."""
    pa, _ = _pa()
    ndim = arrays[0].ndim
    if any(a.ndim != ndim for a in arrays):
        raise ValueError("all arrays of a column need the same number of axes")
    flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    level = pa.array(flat, type=value_type)
    for k in range(ndim - 1, -1, -1):
        lengths = [np.full(int(np.prod(a.shape[:k], dtype=np.int64)), a.shape[k], dtype=np.int64) for a in arrays]
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))])
        if offsets[-1] >= 2**31:
            raise ValueError("a shard column holds more than 2**31 values; lower the shard size")
        level = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), level)
    return level


class ShardWriter:
    """Buffers rows and writes them as Parquet shards under ``root``.

    ``settings`` (JSON-able) describe how the rows were made; finished shards made with other
    settings make the constructor raise ``UsageError`` unless ``overwrite`` (or not ``check_settings``:
    a dry run that does not know every setting yet). With ``overwrite``, this rank's shards that
    existed when the writer was made (every shard when ``world`` is 1) are removed when the first
    new shard is written; shards other runs write meanwhile are kept."""

    def __init__(self, root: str | os.PathLike, settings: dict, rank: int = 0, world: int = 1,
                 max_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False, check_settings: bool = True):
        self.root = Path(root)
        self.settings = settings
        self.rank, self.world = rank, world
        self.max_bytes = max(1, int(max_bytes))
        self.overwrite = overwrite
        self.check_settings = check_settings
        self.rows: list[dict] = []
        self.buffered = 0
        self.written: list[Path] = []
        self.done: dict[str, Path] = {}  # id -> finished shard holding it
        self.tag = secrets.token_hex(4)  # this writer's part of the shard names
        shards = self.finished_shards()
        self.existing = {path.name for _, _, path in shards}  # shards read (or, with overwrite, to replace)
        # names are unique through the tag; the index keeps this rank's shards in order after earlier ones
        self.next_index = 0 if overwrite else 1 + max((i for r, i, _ in shards if r == rank), default=-1)
        self.on_flush: Callable[[list[str]], None] | None = None  # called with each shard's ids once it is on disk
        if not overwrite:
            for _, _, path in shards:
                self._read_finished(path)

    # --- reading what exists ------------------------------------------------------------
    def finished_shards(self) -> list[tuple[int, int, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            m = SHARD_RE.match(p.name)
            if m and p.is_file():
                out.append((int(m.group(1)), int(m.group(2)), p))
        return out

    def _read_finished(self, path: Path) -> None:
        _, pq = _pa()
        try:
            meta = pq.read_schema(path).metadata or {}
            ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise UsageError(f"{path} is not a readable Parquet shard ({type(exc).__name__}: {exc}); "
                             "remove it or pass --overwrite") from None
        theirs = json.loads(meta.get(META_KEY, b"{}"))
        if self.check_settings and theirs != json.loads(json.dumps(self.settings)):
            diff = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            raise UsageError(f"{self.root} holds Parquet shards made with other settings ({', '.join(diff)}); "
                             "write to another -o or pass --overwrite to replace them")
        for i in ids:
            self.done[i] = path

    def has(self, row_id: str) -> bool:
        return row_id in self.done

    def refresh(self) -> None:
        """Read the ids of shards other runs finished since this writer last looked."""
        mine = {p.name for p in self.written}
        for _, _, path in self.finished_shards():
            if path.name in self.existing or path.name in mine:
                continue
            self.existing.add(path.name)
            _, pq = _pa()
            try:
                ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
            except Exception:  # a shard removed or replaced meanwhile (another run's --overwrite)
                continue
            for i in ids:
                self.done.setdefault(i, path)

    # --- writing ------------------------------------------------------------------------
    def shard_path(self, index: int | None = None) -> Path:
        i = self.next_index if index is None else index
        return self.root / f"shard-{self.rank:03d}-{i:05d}-{self.tag}.parquet"

    def add(self, row: dict, nbytes: int) -> Path:
        """Buffer one row (a dict of column -> value; arrays as numpy); returns the shard it goes in."""
        target = self.shard_path()
        self.rows.append(row)
        self.buffered += int(nbytes)
        if self.buffered >= self.max_bytes:
            self.flush()
        return target

    def flush(self) -> Path | None:
        """Write the buffered rows as the next shard (one row group). Returns its path (None when
        nothing was buffered); ``on_flush(ids)`` is called with the ids now on disk."""
        if not self.rows:
            return None
        from ..files import atomic_write

        _, pq = _pa()
        if self.overwrite and not self.written:
            self._remove_old()
        table = self._table(self.rows)
        path = self.shard_path()
        atomic_write(path, lambda f: pq.write_table(table, f, row_group_size=max(1, table.num_rows),
                                                     compression="zstd"))
        for r in self.rows:
            self.done[r["id"]] = path
        self.written.append(path)
        self.next_index += 1
        ids = [r["id"] for r in self.rows]
        self.rows, self.buffered = [], 0
        if self.on_flush is not None:
            self.on_flush(ids)
        return path

    def close(self) -> None:
        self.flush()

    def _remove_old(self) -> None:
        for r, _, p in self.finished_shards():
            if p.name in self.existing and (self.world <= 1 or r == self.rank):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def _table(self, rows: list[dict]):
        pa, _ = _pa()
        columns, names = [], []
        for name in rows[0]:
            values = [r[name] for r in rows]
            columns.append(_column(values))
            names.append(name)
        meta = {META_KEY: json.dumps(self.settings, sort_keys=True).encode()}
        return pa.Table.from_arrays(columns, names=names).replace_schema_metadata(meta)


_ARROW_TYPES = {np.dtype(np.int16): "int16", np.dtype(np.int32): "int32", np.dtype(np.int64): "int64",
                np.dtype(np.float16): "float16", np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _column(values: list):
    pa, _ = _pa()
    if isinstance(values[0], np.ndarray):
        return nested_list_array(values, getattr(pa, _ARROW_TYPES[values[0].dtype])())
    return pa.array(values)


# --- rows of each command ----------------------------------------------------------------------
def base_row(source: Source, info) -> dict:
    return {"id": source_id(source), "path": display_path(source.path),
            "offset": float(source.offset), "duration": float(info.duration),
            "sample_rate": int(info.sample_rate), "channels": int(info.channels)}


def codes_row(source: Source, info, item, settings: dict) -> tuple[dict, int]:
    """An ``encode`` row: ``codes [n_q, frames]`` int16, its shape, ``scales`` (48 kHz) and settings."""
    codes = np.ascontiguousarray(item.codes, dtype=np.int16)
    scales = None if item.scales is None else np.asarray(item.scales, np.float32)
    row = {**base_row(source, info), "codes": codes, "shape": np.asarray(codes.shape, np.int32),
           "n_samples": int(item.n_samples)}
    if scales is not None:  # 48 kHz only (one RMS scale per 1 s segment)
        row["scales"] = scales
    row.update(settings)
    return row, codes.nbytes


def embedding_row(source: Source, info, emb, settings: dict) -> tuple[dict, int]:
    """An ``embed`` row: ``embedding`` (float32, one list level per axis), its shape, ``timestamps``
    (seconds of each frame) and settings."""
    array = np.ascontiguousarray(emb.array, dtype=np.float32)
    stamps = np.asarray(emb.timestamps, np.float64)
    row = {**base_row(source, info), "embedding": array, "shape": np.asarray(array.shape, np.int32),
           "timestamps": stamps, **settings}
    return row, array.nbytes + stamps.nbytes


class DatasetJob:
    """A pipeline job that writes rows into Parquet shards instead of one file per input: wraps a
    command's job (its ``read_header`` and ``load``) with a ``ShardWriter`` and a row builder
    ``row(source, info, result, settings) -> (row, nbytes)``."""

    releases_claims = True  # a row's claim is released once its shard is on disk, not when it is buffered

    def __init__(self, job: Any, writer: ShardWriter, row: Callable, settings: dict):
        self.job, self.writer, self.row, self.settings = job, writer, row, settings
        self.read_header = job.read_header
        self.load = job.load
        name = type(job).__name__
        self.label = getattr(job, "label", None) or (name[:-3] if name.endswith("Job") else name).lower()
        self.claims = None  # sharing.Claims of the run (set by the runner)
        writer.on_flush = self._flushed

    def is_done(self, source: Source) -> bool:
        return self.writer.has(source_id(source))

    def claim_key(self, source: Source) -> str:
        return "row:" + source_id(source)

    def done_after_claim(self, source: Source) -> bool:
        """Whether another run wrote this row since this run started (read from its new shards)."""
        self.writer.refresh()
        return self.is_done(source)

    def _flushed(self, ids: list[str]) -> None:
        if self.claims is not None:
            for i in ids:
                self.claims.release("row:" + i)

    def target(self, source: Source) -> Path:
        return self.writer.done.get(source_id(source)) or self.writer.shard_path()

    def finish(self, source: Source, info, result) -> dict:
        row, nbytes = self.row(source, info, result, self.settings)
        shard = self.writer.add(row, nbytes)
        return {"output": str(shard), "id": row["id"], "shape": [int(n) for n in row["shape"]]}

    def close(self) -> None:
        self.writer.close()


def parquet_job(job: Any, out: str | os.PathLike, kind: str, settings: dict, share, overwrite: bool,
                shard_mb: float = DEFAULT_SHARD_BYTES / (1 << 20), check_settings: bool = True) -> DatasetJob:
    """Wrap an ``encode`` (``kind="codes"``) or ``embed`` (``kind="embedding"``) job for ``--format parquet``."""
    rows = {"codes": codes_row, "embedding": embedding_row}[kind]
    writer = ShardWriter(Path(out) / DATA_DIR, {"kind": kind, **settings}, share.rank, share.world,
                         max_bytes=int(shard_mb * (1 << 20)), overwrite=overwrite, check_settings=check_settings)
    return DatasetJob(job, writer, rows, settings)


def read_parquet_dataset(out: str | os.PathLike):
    """All finished shards of the run folder ``out`` as one ``pyarrow.Table`` (rows in shard order)."""
    pa, pq = _pa()
    root = Path(out) / DATA_DIR
    paths = sorted(p for p in root.iterdir() if SHARD_RE.match(p.name)) if root.is_dir() else []
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else None


# --- reading rows back (``decode`` of ``encode --format parquet`` output) -------------------------------
def expand_rows(sources: list[Source]) -> list[Source]:
    """Each ``.parquet`` source becomes one source per row (``row``: its ``id``; outputs mirror the
    id, so ``decode DS/data -o audio/`` rebuilds the input tree); other sources stay as they are. A
    shard that cannot be read, or has no ``id`` column, stays one source with that error."""
    import dataclasses

    out: list[Source] = []
    for s in sources:
        if s.error or not s.path.lower().endswith(".parquet"):
            out.append(s)
            continue
        try:
            ids = _read_columns(s.path, ["id"]).column("id").to_pylist()
        except Exception as exc:  # pyarrow raises several types for damaged files
            out.append(dataclasses.replace(s, error=f"is not a readable Parquet shard with an id column ({_short(exc)})"))
            continue
        for i in ids:
            if not isinstance(i, str) or not i or i.startswith("/") or ".." in Path(i).parts:
                out.append(dataclasses.replace(s, rel=s.rel, error=f"has a row whose id {i!r} is not a relative path"))
                continue
            out.append(dataclasses.replace(s, rel=str(Path(*Path(i).parts)), row=i))
    return out


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc).strip() else ''}"


def _read_columns(path: str, columns: list[str]):
    _, pq = _pa()
    from ..files import open_regular

    with open_regular(path) as f:
        return pq.read_table(f, columns=columns)


_TABLES: dict = {}  # (path, mtime_ns, size, arrays) -> (table, {id: index}), per process
_ROW_COLUMNS = ["id", "shape", "n_samples", "model", "bandwidth", "scales", "codes"]


def _shard_table(path: str, arrays: bool):
    """The columns of a shard ``decode`` reads (without ``codes`` unless ``arrays``), cached: the
    small columns of every shard (probing goes through rows in id order, across shards), the codes
    of the last two (decoding goes shard by shard)."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size, arrays)
    if key not in _TABLES:
        _, pq = _pa()
        names = set(pq.read_schema(path).names)
        missing = [c for c in _ROW_COLUMNS if c not in names and c != "scales"]
        if missing:
            from ..errors import InputError

            raise InputError(f"is not a shard of `encode --format parquet` (no {', '.join(missing)} column)")
        table = _read_columns(path, [c for c in _ROW_COLUMNS if c in names and (arrays or c != "codes")])
        if arrays:
            for old in [k for k in _TABLES if k[3]][:-1]:  # rows come shard by shard: two cover a switch
                _TABLES.pop(old)
        _TABLES[key] = (table, {rid: i for i, rid in enumerate(table.column("id").to_pylist())})
    return _TABLES[key]


def read_codes_row(path: str, row: str, header_only: bool = False):
    """Row ``row`` of an ``encode --format parquet`` shard as a ``codes.CodesFile``, checked as
    ``.npz`` files are (shape, codebooks, bandwidth, length, scales); ``header_only``: without the
    codes array (for lengths)."""
    from ..errors import InputError
    from .codes import CodesFile, EncodedItem, check_codes_fit

    try:
        table, index = _shard_table(path, arrays=not header_only)
    except InputError:
        raise
    except Exception as exc:  # unreadable, not a regular file, damaged: pyarrow raises several types
        raise InputError(f"is not a readable Parquet shard ({_short(exc)})") from None
    if row not in index:
        raise InputError(f"has no row {row!r} (the shard changed since it was listed)")
    i = index[row]

    def value(name):
        return table.column(name)[i].as_py() if name in table.column_names else None

    model, n_samples, bandwidth = value("model"), value("n_samples"), value("bandwidth")
    shape = value("shape")
    if not isinstance(model, str) or not isinstance(n_samples, int) or not isinstance(shape, list) or len(shape) != 2:
        raise InputError(f"has a row {row!r} without a model, n_samples or [n_q, frames] shape; the shard is corrupt")
    if header_only:
        codes = np.zeros((int(shape[0]), 0), np.int16)
    else:
        cell = table.column("codes")[i]
        inner = cell.values  # list<int16> per codebook
        flat = inner.flatten().to_numpy(zero_copy_only=False) if inner is not None else np.zeros(0, np.int16)
        if len(inner or []) != shape[0] or flat.size != shape[0] * shape[1]:
            raise InputError(f"has a row {row!r} whose codes do not fit its shape {shape}; the shard is corrupt")
        codes = flat.reshape(shape[0], shape[1])
    scales = value("scales")
    scales = None if scales is None else np.asarray(scales, np.float32)
    item = EncodedItem(codes, scales, n_samples)
    if not header_only:
        check_codes_fit(item, model, bandwidth)
    return CodesFile(item, model, bandwidth)
