"""``audiotok score``: how predictable each audio file is under an audio LM (option parsing only;
the work is ``audiotok.jobs.score.score_files``)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..engine.sources import AUDIO_EXTENSIONS
from . import base as cli
from .base import app


@app.command()
def score(
    inputs: list[str] = cli.INPUTS,
    model: list[str] = typer.Option([], "--model", "-m",
                                    help="whisper-gpt, token-gpt or encodec-lm (repeat with a second --checkpoint to compare)."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="LM checkpoint (train lm output, or the EnCodec LM file)."),
    codec_checkpoint: Path = typer.Option(None, "--codec-checkpoint",
                                          help="Codec weights that tokenise (the codec is the LM's; default: the "
                                          "weights it was trained with, else the official ones)."),
    bandwidth: float = typer.Option(None, "--bandwidth", "-b", help="Tokenizer kbps (default: the checkpoint's; 6 for encodec-lm)."),
    output: Path = typer.Option(None, "--output", "-o", help="Append records to this JSONL file instead of stdout (reruns skip inputs in it)."),
    summary_path: Path = typer.Option(None, "--summary", help="Also write the corpus summary (JSON) here."),
    frames: Path = typer.Option(None, "--frames", help="Per-frame arrays (time, token, surprisal, entropy, rank) under DIR."),
    plot: Path = typer.Option(None, "--plot", help="A PNG per file (spectrogram + surprisal curves) under DIR."),
    rows: int = typer.Option(8, "--rows", min=1, help="Windows per model call (speed only; scores do not change)."),
    ext: str = typer.Option(",".join((*AUDIO_EXTENSIONS, "npz", "ecdc")), "--ext",
                            help="Extensions to take from directories (comma-separated; npz, ecdc: codes written by encode)."),
    exclude: list[str] = cli.EXCLUDE,
    device: str = cli.DEVICE,
    threads: int = cli.THREADS,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    overwrite: bool = cli.OVERWRITE,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
) -> None:
    """Score audio files under an audio LM: NLL, perplexity, bits per second (+ per-frame surprisal)."""
    from ..jobs.score import print_corpus, score_files

    result = cli.run(score_files, inputs, models=model, checkpoints=checkpoint, codec_checkpoint=codec_checkpoint,
                     bandwidth=bandwidth, output=output, summary_path=summary_path, frames=frames, plot=plot,
                     rows=rows, ext=ext, exclude=exclude, device=device, threads=threads, batch_seconds=batch_seconds,
                     workers=workers, overwrite=overwrite, progress=not quiet, shard=shard)
    print_corpus(result.corpus)
    cli.finish(result.summary, quiet)
