"""``audiotok encode`` (audio -> codec codes) and ``audiotok decode`` (codes -> audio): option
parsing only; the work is ``audiotok.jobs.encode.encode_files`` / ``jobs.decode.decode_files``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..engine.sources import CODE_EXTENSIONS
from ..registry import DEFAULT_CODEC
from . import base as cli
from .base import app


def _bandwidth_help() -> str:
    from ..registry import CODECS

    def listed(bws) -> str:
        step = bws[0]
        if len(bws) > 8 and all(abs(b - (i + 1) * step) < 1e-9 for i, b in enumerate(bws)):
            return f"k x {step:g} for k = 1..{len(bws)} codebooks"  # one step per codebook (mimi)
        return ", ".join(f"{b:g}" for b in bws)

    specs = {s.name: s for s in CODECS.values()}
    return ("kbps (default: the codec's, " + "; ".join(f"{s.bandwidth_default:g} for {n}" for n, s in sorted(specs.items()))
            + "); choices: " + "; ".join(f"{', '.join(f'{b:g}' for b in s.bandwidths)} ({n})" for n, s in sorted(specs.items())))


def _model_help() -> str:
    from ..registry import codec_names

    return f"Codec: {', '.join(codec_names())} (`audiotok models` lists their facts)."


@app.command()
def encode(
    inputs: list[str] = cli.INPUTS_OR_MANIFEST,
    out: Path = cli.OUT,
    model: str = typer.Option(DEFAULT_CODEC, "--model", "-m", help=_model_help()),
    bandwidth: float = typer.Option(None, "--bandwidth", "-b", help=_bandwidth_help()),
    n_q: int = typer.Option(None, "--n-q", min=1, help="Codebooks to keep (instead of --bandwidth): a count one "
                            "of the codec's bandwidths gives (`audiotok models` lists them)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Codec weights file (default: official; EnCodec and DAC from the torch hub cache, mimi from the Hugging Face cache)."),
    fmt: str = typer.Option("npz", "--format", "-f",
                            help="npz (codes + metadata), npy (bare codes, 24 kHz), ecdc or parquet (dataset shards)."),
    manifest: Path = cli.MANIFEST,
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    shard_mb: float = cli.SHARD_MB,
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
    """Encode audio files into codec codes, mirroring the input tree under OUT."""
    from ..jobs.encode import encode_files

    summary = cli.run(encode_files, inputs, out, model=model, bandwidth=bandwidth, n_q=n_q, checkpoint=checkpoint, fmt=fmt,
                      manifest=manifest, exclude=exclude, dry_run=dry_run, keep_ext=keep_ext, shard_mb=shard_mb,
                      ext=ext, device=device, threads=threads, batch_seconds=batch_seconds, workers=workers,
                      overwrite=overwrite, jsonl=jsonl, progress=not quiet, shard=shard, log_every=log_every)
    cli.finish(summary, quiet)


@app.command()
def decode(
    inputs: list[str] = cli.INPUTS,
    out: Path = cli.OUT,
    fmt: str = typer.Option("wav", "--format", "-f", help="wav or flac (16-bit PCM at the model's rate)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Codec weights file (default: official; EnCodec from the torch hub cache, "
                                       "mimi from the Hugging Face cache)."),
    ext: str = typer.Option(",".join((*CODE_EXTENSIONS, "parquet")), "--ext",
                            help="Extensions to take from directories (parquet: `encode --format parquet` shards)."),
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    device: str = cli.DEVICE,
    threads: int = cli.THREADS,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = typer.Option(0, "--workers", min=0, help="Reader processes (0: one background thread)."),
    overwrite: bool = cli.OVERWRITE,
    jsonl: bool = cli.JSONL,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
    log_every: float = cli.LOG_EVERY,
) -> None:
    """Decode .npz / .npy / .ecdc codes (or Parquet shards' rows) back to audio, trimmed to the original length."""
    from ..jobs.decode import decode_files

    summary = cli.run(decode_files, inputs, out, fmt=fmt, checkpoint=checkpoint, exclude=exclude, dry_run=dry_run,
                      keep_ext=keep_ext, ext=ext, device=device, threads=threads, batch_seconds=batch_seconds,
                      workers=workers, overwrite=overwrite, jsonl=jsonl, progress=not quiet, shard=shard,
                      log_every=log_every)
    cli.finish(summary, quiet)
