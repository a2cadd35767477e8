"""``embed --stack``: one ``[N, D]`` matrix of the pooled embeddings of every finished input and
the input of each row.

The rows' inputs go to ``FILE.paths.jsonl``: one JSON object ``{"row": i, "input": path}`` per
line, in row order. JSON escapes newlines, tabs and every other control character inside a name,
so no file name can add, split or shift lines; names that are not UTF-8 are kept exactly (their
bytes as ``\\udcXX`` escapes, the way Python's ``os.fsdecode`` represents them, so
``os.fsencode(record["input"])`` gives the original bytes back). Both files are written
atomically, the paths after the matrix."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..files import atomic_write, display_path


def read_embedding(path: str | os.PathLike) -> np.ndarray:
    """The embedding array of an ``embed`` output file (.npy or .npz)."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["embedding"]
    return data


def stack_paths(stack: str | os.PathLike) -> tuple[Path, Path]:
    """``(FILE.npy, FILE.paths.jsonl)`` for ``--stack FILE`` or ``--stack FILE.npy``."""
    stack = Path(stack)
    stem = stack.with_suffix("") if stack.suffix == ".npy" else stack
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".paths.jsonl")


def write_stack(stack: str | os.PathLike, items) -> int:
    """Stack ``items`` (``(input path, embedding file)`` pairs, in row order; missing files are
    left out) into the matrix and its paths file. Returns the number of rows, which always equals
    the number of path lines."""
    rows: list[np.ndarray] = []
    inputs: list[str] = []
    for input_path, target in items:
        if not Path(target).is_file():
            continue
        row = read_embedding(target).reshape(-1)
        if rows and row.shape != rows[0].shape:
            raise UsageError(f"{display_path(str(target))} holds an embedding of {row.shape[0]} values, not "
                             f"{rows[0].shape[0]} like the others (made with other options); rerun with --overwrite")
        rows.append(row)
        inputs.append(input_path)
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    lines = "".join(json.dumps({"row": i, "input": p}, ensure_ascii=True) + "\n" for i, p in enumerate(inputs))
    buf = io.BytesIO()
    np.save(buf, matrix)
    npy, paths = stack_paths(stack)
    atomic_write(npy, lambda f: f.write(buf.getvalue()))
    atomic_write(paths, lambda f: f.write(lines.encode("ascii")))
    return matrix.shape[0]


def read_stack(stack: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The matrix and the input of each row, as :func:`write_stack` wrote them."""
    npy, paths = stack_paths(stack)
    matrix = np.load(npy, allow_pickle=False)
    with open(paths, encoding="ascii") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return matrix, [r["input"] for r in records]
