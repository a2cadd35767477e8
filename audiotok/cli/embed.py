"""``audiotok embed``: audio files -> EnCodecMAE embeddings (per file, pooled or frame-level)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
import typer

from ..errors import UsageError
from . import base as cli
from .base import app

FORMATS = ("npz", "npy", "parquet")


class EmbedJob:
    """What embed does with each input: decode to 24 kHz mono, write the embedding."""

    def __init__(self, out: Path, fmt: str, meta: dict, keep_ext: bool = False):
        from .. import audio
        from ..models.mae import SAMPLE_RATE
        from ..sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt, self.meta = fmt, meta
        self.probe = audio.probe
        self.load = functools.partial(audio.read, sample_rate=SAMPLE_RATE, channels=1)

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def finish(self, source, info, emb) -> dict:
        path = self.tree.write(source, self._write, emb)
        return {"output": str(path), "shape": list(emb.array.shape), "frames": int(emb.timestamps.shape[0]),
                **{k: self.meta[k] for k in ("model", "layer", "pooling")}}

    def _write(self, f, emb) -> None:
        if self.fmt == "npy":
            np.save(f, emb.array)
            return
        np.savez(f, embedding=emb.array, timestamps=emb.timestamps,
                 **{k: np.asarray(v) for k, v in self.meta.items()})


def read_embedding(path: str | os.PathLike) -> np.ndarray:
    """The embedding array of an ``embed`` output file (.npy or .npz)."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["embedding"]
    return data


def write_stack(stack: Path, sources, job: EmbedJob) -> int:
    """``stack`` = ``[N, D]`` pooled embeddings of every finished input (in input order) and
    ``<stem>.paths.txt`` with their paths, one per line. Returns N."""
    from ..sinks import atomic_write

    rows, paths = [], []
    for src in sources:
        target = job.target(src)
        if src.error or not target.is_file():
            continue
        row = read_embedding(target).reshape(-1)
        if rows and row.shape != rows[0].shape:
            raise UsageError(f"{target} holds an embedding of {row.shape[0]} values, not {rows[0].shape[0]} like the others "
                             "(made with other options); rerun with --overwrite")
        rows.append(row)
        paths.append(os.fsencode(src.path))
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    stem = stack.with_suffix("") if stack.suffix == ".npy" else stack
    buf = io.BytesIO()
    np.save(buf, matrix)
    atomic_write(stem.with_name(stem.name + ".npy"), lambda f: f.write(buf.getvalue()))
    atomic_write(stem.with_name(stem.name + ".paths.txt"), lambda f: f.write(b"".join(p + b"\n" for p in paths)))
    return len(rows)


@app.command()
def embed(
    inputs: list[str] = cli.INPUTS_OR_MANIFEST,
    out: Path = cli.OUT,
    model: str = typer.Option("mel256-ec-base_st", "--model", "-m",
                              help="Checkpoint path (v2 .pt or v1 folder) or released name (Hugging Face cache)."),
    layer: str = typer.Option("-1", "--layer", "-l", help="Layer index, negative index, or all (-1: last, combined)."),
    pool: str = typer.Option("mean", "--pool", "-p", help="mean, max, meanstd (mean and std concatenated) or none (frames)."),
    chunk_seconds: float = typer.Option(4.0, "--chunk-seconds", help="Chunk length in seconds (the models were trained on 4)."),
    overlap: float = typer.Option(0.0, "--overlap", help="Seconds of overlap between chunks (each frame still comes out once)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16 for the network."),
    fmt: str = typer.Option("npz", "--format", "-f",
                            help="npz (array + timestamps + metadata), npy (bare array) or parquet (dataset shards)."),
    stack: Path = typer.Option(None, "--stack", help="Also write FILE.npy [N, D] of pooled embeddings and FILE.paths.txt."),
    manifest: Path = cli.MANIFEST,
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    shard_mb: float = cli.SHARD_MB,
    ext: str = cli.EXT,
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    overwrite: bool = cli.OVERWRITE,
    jsonl: bool = cli.JSONL,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
    log_every: float = cli.LOG_EVERY,
) -> None:
    """Embed audio files with EnCodecMAE, mirroring the input tree under OUT."""
    from ..embedder import MaeAdapter, check_options
    from ..models.codec import resolve_device
    from ..models.mae import load_mae, resolve_layers
    from ..weights import resolve_encodecmae

    check_options(pool, dtype, chunk_seconds, overlap)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid for embed; choose npz, npy or parquet")
    if stack is not None and fmt == "parquet":
        raise UsageError("--stack reads per-file outputs; use --format npz or npy with it (Parquet rows already form one table)")
    if stack is not None and pool == "none":
        raise UsageError("--stack needs pooled embeddings; use --pool mean, max or meanstd")
    sources, share = cli.collect_sources(inputs, ext, shard, out, None if fmt == "parquet" else fmt, manifest=manifest,
                                         exclude=exclude, keep_ext=keep_ext, excluded=(excluded := []))
    opts = cli.RunOptions(out, batch_seconds, workers, overwrite, jsonl, quiet, shard, log_every=log_every)
    if dry_run:  # before loading the model; Parquet settings are not all known yet, so not compared
        job = EmbedJob(out, fmt, {}, keep_ext)
        if fmt == "parquet":
            from ..datasets import parquet_job

            job = parquet_job(job, out, "embedding", {}, share, overwrite, shard_mb, check_settings=False)
        raise typer.Exit(cli.dry_run(sources, job, opts, excluded))
    if stack is not None and share.world > 1:
        raise UsageError("--stack needs every input in one process; drop --shard/torchrun or stack the outputs afterwards")
    dev = resolve_device(device)
    net = load_mae(resolve_encodecmae(model))
    resolve_layers(layer, net.cfg.layers)  # a bad --layer fails before any work
    layer_value: int | str = "all" if layer.strip().lower() == "all" else int(layer)
    adapter = MaeAdapter(net, device=dev, layer=layer_value, pool=pool, dtype=dtype,
                         chunk_seconds=chunk_seconds, overlap=overlap)
    meta = {"model": model, "layer": str(layer_value), "pooling": pool, "frame_rate": net.cfg.frame_rate,
            "sample_rate": adapter.sample_rate, "chunk_seconds": chunk_seconds, "overlap": overlap, "dtype": dtype}
    job = EmbedJob(out, fmt, meta, keep_ext)
    if fmt == "parquet":
        from ..datasets import parquet_job

        settings = {("model_sample_rate" if k == "sample_rate" else k): v for k, v in meta.items()}
        job = parquet_job(job, out, "embedding", settings, share, overwrite, shard_mb)
    code = cli.run_job(sources, share, job, adapter, opts)
    if stack is not None and code != 130:
        n = write_stack(stack, sources, job)
        if not quiet:
            cli.eprint(f"stacked {n} embeddings into {stack}")
    raise typer.Exit(code)
