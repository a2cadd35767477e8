"""``audiotok embed``: audio files -> EnCodecMAE embeddings (option parsing only; the work is
``audiotok.jobs.embed.embed_files``)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import base as cli
from .base import app


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
    manifest: Path = cli.MANIFEST,
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    shard_mb: float = cli.SHARD_MB,
    stack: Path = typer.Option(None, "--stack", help="Also write FILE.npy [N, D] of pooled embeddings and FILE.paths.jsonl (the input of each row)."),
    ext: str = cli.EXT,
    device: str = cli.DEVICE,
    threads: int = cli.THREADS,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    overwrite: bool = cli.OVERWRITE,
    jsonl: bool = cli.JSONL,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
    log_every: float = cli.LOG_EVERY,
) -> None:
    """Embed audio files with EnCodecMAE, mirroring the input tree under OUT."""
    from ..jobs.embed import embed_files

    summary = cli.run(embed_files, inputs, out, model=model, layer=layer, pool=pool, chunk_seconds=chunk_seconds,
                      overlap=overlap, dtype=dtype, fmt=fmt, stack=stack, manifest=manifest, exclude=exclude,
                      dry_run=dry_run, keep_ext=keep_ext, shard_mb=shard_mb, log_every=log_every, ext=ext, device=device, threads=threads,
                      batch_seconds=batch_seconds, workers=workers, overwrite=overwrite, jsonl=jsonl,
                      progress=not quiet, shard=shard)
    if stack is not None and not quiet and getattr(summary, "stacked", None) is not None:
        cli.eprint(f"stacked {summary.stacked} embeddings into {stack}")
    cli.finish(summary, quiet)
