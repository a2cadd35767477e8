"""``audiotok train lm`` (Whisper-GPT, the token-only GPT or the information control) and ``audiotok train mae`` (EnCodecMAE)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..engine.sources import AUDIO_EXTENSIONS
from ..registry import DEFAULT_CODEC
from . import base as cli
from .base import app

train_app = typer.Typer(help="Train models audiotok scores with (no public Whisper-GPT weights exist).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


def _codec_help() -> str:
    from ..registry import codec_names

    return f"Codec that tokenises ({', '.join(codec_names())}; its codebook size is the vocabulary)."


@train_app.command("lm")
def train_lm(
    inputs: list[str] = cli.INPUTS,
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (atomically, at every epoch)."),
    arch: str = typer.Option("whisper-gpt", "--arch", help="whisper-gpt, token-gpt or info-control (all codebooks in)."),
    size: str = typer.Option("micro", "--size", help="micro (~0.25M), tiny (~1.1M), small (~3.2M) or large (~32M parameters)."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Crops per step and process."),
    context: int = typer.Option(256, "--context", min=2, help="Positions per crop (and per scoring window)."),
    lr: float = typer.Option(3e-4, "--lr", min=0.0, help="Peak learning rate (AdamW, warmup + cosine)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation, crops and dropout."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9, help="Files held out for validation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    patience: int = typer.Option(None, "--patience", min=1,
                                 help="Early stopping: stop after this many validations without a better NLL (keeps the best weights)."),
    eval_every: int = typer.Option(None, "--eval-every", min=1, help="Steps between validations (default: one epoch)."),
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", help=_codec_help()),
    codec_checkpoint: Path = typer.Option(None, "--codec-checkpoint", help="Codec weights that tokenise (default: official)."),
    bandwidth: float = typer.Option(None, "--bandwidth", "-b",
                                    help="Tokenizer kbps (default: the codec's, 6 for EnCodec; the model uses codebook 0)."),
    n_q: int = typer.Option(None, "--n-q", min=1, help="Tokenizer codebooks (instead of --bandwidth)."),
    cache: Path = typer.Option(None, "--cache", help="Feature cache folder (default: OUT.cache beside the checkpoint)."),
    ext: str = typer.Option(",".join((*AUDIO_EXTENSIONS, "npz")), "--ext",
                            help="Extensions taken from directories (npz: folders written by `audiotok encode`)."),
    exclude: list[str] = cli.EXCLUDE,
    device: str = cli.DEVICE,
    threads: int = cli.THREADS,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    quiet: bool = cli.QUIET,
) -> None:
    """Train an audio LM on audio files (tokenised and featurised through the pipeline, cached) or encode outputs."""
    from ..jobs.train_lm import train_lm as run_training

    result = cli.run(run_training, inputs, out, arch=arch, size=size, steps=steps, batch_size=batch_size,
                     context=context, lr=lr, seed=seed, val_fraction=val_fraction, resume=resume, patience=patience,
                     eval_every=eval_every, codec=codec, codec_checkpoint=codec_checkpoint, bandwidth=bandwidth,
                     n_q=n_q, cache=cache,
                     ext=ext, exclude=exclude, device=device, threads=threads, batch_seconds=batch_seconds, workers=workers,
                     progress=not quiet, log=cli.eprint, interrupted=lambda: _stopped(out))
    raise typer.Exit(result.status)


def _stopped(out: Path) -> str:
    """What an interrupted training run leaves."""
    if out.is_file():
        return f"interrupted: {out} holds the last checkpoint saved; rerun with --resume to continue from it"
    return f"interrupted before the first checkpoint was saved; there is no checkpoint at {out}"


@train_app.command("mae")
def train_mae(
    inputs: list[str] = cli.INPUTS,
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (official v2 layout, atomically)."),
    size: str = typer.Option("tiny", "--size", help="tiny (4 x 96, for CPU runs), small, base or large."),
    frontend: str = typer.Option("mel256", "--frontend", help="mel256 (256-bin log mel) or ec (EnCodec encoder latents)."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Crops per step and process."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Learning rate (the peak under --optimizer audiotok; default: "
                             "1e-3 for tiny with --optimizer audiotok, else 1e-4 as the paper)."),
    optimizer: str = typer.Option("audiotok", "--optimizer", help="audiotok (decay on matrices, warmup + cosine, "
                                  "clipping at 1) or reference (the paper's: decay on every parameter, constant lr)."),
    init: str = typer.Option("torch", "--init", help="torch (PyTorch's defaults) or reference (Xavier-uniform, zero biases)."),
    keep_steps: str = typer.Option("", "--keep-steps", help="Also keep the checkpoint of these steps as CKPT.stepN.pt "
                                   "(comma-separated; 0 = the untrained model)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation, crops and masks."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9, help="Files held out for validation."),
    crop_seconds: float = typer.Option(4.0, "--crop-seconds", help="Length of the random training crops."),
    eval_every: int = typer.Option(500, "--eval-every", min=1, help="Validate and checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the checkpoint at --out."),
    self_train: str = typer.Option(None, "--self-train", help="Teacher checkpoint: train on k-means ids of its last layer."),
    clusters: int = typer.Option(1024, "--clusters", help="k-means clusters for --self-train."),
    kmeans_frames: int = typer.Option(None, "--kmeans-frames", min=1, help="Teacher frames k-means is fitted on "
                                      "(default: 20 per cluster, at least 10000)."),
    codec_checkpoint: Path = typer.Option(None, "--codec-checkpoint", help="EnCodec weights for the targets (default: official)."),
    cache: Path = typer.Option(None, "--cache", help="Audio + codes cache folder (default: OUT.cache beside the checkpoint)."),
    ext: str = typer.Option(",".join((*AUDIO_EXTENSIONS, "npz")), "--ext",
                            help="Extensions taken from directories (npz: folders written by `audiotok encode`)."),
    exclude: list[str] = cli.EXCLUDE,
    device: str = cli.DEVICE,
    threads: int = cli.THREADS,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    quiet: bool = cli.QUIET,
) -> None:
    """Pretrain an EnCodecMAE (masked prediction of EnCodec codes, or self-training on a teacher's clusters)."""
    from ..jobs.train_mae import parse_steps
    from ..jobs.train_mae import train_mae as run_training

    result = cli.run(run_training, inputs, out, size=size, frontend=frontend, steps=steps, batch_size=batch_size,
                     lr=lr, optimizer=optimizer, init=init, seed=seed, val_fraction=val_fraction,
                     crop_seconds=crop_seconds, eval_every=eval_every, keep_steps=parse_steps(keep_steps),
                     resume=resume, self_train=self_train, clusters=clusters, kmeans_frames=kmeans_frames,
                     codec_checkpoint=codec_checkpoint, cache=cache, ext=ext, device=device, threads=threads,
                     batch_seconds=batch_seconds, workers=workers, progress=not quiet, log=cli.eprint,
                     exclude=exclude, interrupted=lambda: _stopped(out))
    raise typer.Exit(result.status)
