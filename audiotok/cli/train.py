"""``audiotok train lm`` (Whisper-GPT, the token-only GPT or the information control) and ``audiotok train mae`` (EnCodecMAE)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ..sources import AUDIO_EXTENSIONS
from . import base as cli
from .base import app

train_app = typer.Typer(help="Train models audiotok scores with (no public Whisper-GPT weights exist).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


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
    codec_checkpoint: Path = typer.Option(None, "--codec-checkpoint", help="EnCodec weights that tokenise (default: official)."),
    bandwidth: float = typer.Option(6.0, "--bandwidth", "-b", help="Tokenizer kbps (the model uses codebook 0)."),
    cache: Path = typer.Option(None, "--cache", help="Feature cache folder (default: OUT.cache beside the checkpoint)."),
    ext: str = typer.Option(",".join((*AUDIO_EXTENSIONS, "npz")), "--ext",
                            help="Extensions taken from directories (npz: folders written by `audiotok encode`)."),
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    quiet: bool = cli.QUIET,
) -> None:
    """Train an audio LM on audio files (tokenised and featurised through the pipeline, cached) or encode outputs."""
    from ..models.gpt import ARCHS, SIZES

    if arch not in ARCHS:
        raise UsageError(f"--arch {arch!r} is not valid; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise UsageError(f"--size {size!r} is not valid; choose one of {', '.join(SIZES)}")
    if out.suffix.lower() in (".wav", ".flac", ".npz", ".npy") or out.is_dir():
        raise UsageError(f"-o {out} must be a checkpoint file path (e.g. model.pt)")
    if resume and not out.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {out} yet; run without --resume first")
    if not resume and out.exists():
        raise UsageError(f"{out} exists; pass --resume to continue it or choose another -o")
    if resume and patience is not None:
        raise UsageError("--patience keeps the best weights in memory and cannot --resume; run it in one go")
    from ..train.mae_job import check_output_paths

    cache = check_output_paths(out, cache)
    with cli.interruptible(lambda: _stopped(out)):
        _train_lm(inputs, out, arch, size, steps, batch_size, context, lr, seed, val_fraction, resume, patience,
                  eval_every, codec_checkpoint, bandwidth, cache, ext, device, batch_seconds, workers, quiet)


def _stopped(out: Path) -> str:
    """What an interrupted training run leaves."""
    if out.is_file():
        return f"interrupted: {out} holds the last checkpoint saved; rerun with --resume to continue from it"
    return f"interrupted before the first checkpoint was saved; there is no checkpoint at {out}"


def _train_lm(inputs, out, arch, size, steps, batch_size, context, lr, seed, val_fraction, resume, patience,
              eval_every, codec_checkpoint, bandwidth, cache, ext, device, batch_seconds, workers, quiet) -> None:
    import torch

    from ..distributed import current_share
    from ..models.codec import load_codec, resolve_device
    from ..models.lm import tokenizer_info
    from ..models.lm_tokenizer import tokenizer_spec
    from ..registry import get_codec
    from ..train.lm import TrainConfig, train

    spec = tokenizer_spec()
    bandwidth = get_codec(spec.codec).check_bandwidth(bandwidth)
    share = current_share()
    dev = resolve_device(device)
    if share.world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, torch.get_num_threads() // share.world))
    codec = load_codec(spec.codec, codec_checkpoint, dev)
    n_in = get_codec(spec.codec).n_codebooks(bandwidth) if arch == "info-control" else 1
    tokenizer = tokenizer_info(codec, bandwidth, list(range(n_in)))
    examples, failed = _collect(inputs, ext, codec, tokenizer, arch, cache, dev, batch_seconds, workers, quiet, share)
    if not examples:
        raise UsageError("no usable training input (every input failed; see the messages above)")
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction,
                       patience=patience, eval_every=eval_every)
    train(arch, size, examples, tokenizer, out, tcfg, context=context, device=dev, resume=resume,
          log=cli.eprint, progress=not quiet, model_options={"n_codebooks": n_in})
    if share.rank == 0:
        cli.eprint(f"checkpoint: {out}")
    raise typer.Exit(1 if failed else 0)


def _collect(inputs, ext, codec, tokenizer, arch, cache_root: Path, dev, batch_seconds, workers, quiet, share):
    """Examples from every input: audio through the pipeline into the cache, encode outputs read directly."""
    from .. import pipeline
    from ..errors import AudiotokError
    from ..models.codec import CodecEncoder
    from ..models.lm_adapter import LMFeatures
    from ..progress import Progress
    from ..sources import check_inputs_exist, discover, normalise_extensions, shard
    from ..train.data import CacheJob, cache_dir, read_cached, read_encoded

    exts = normalise_extensions([ext])
    check_inputs_exist(inputs)
    sources = discover(inputs, exts)
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
    audio_src = [s for s in sources if not s.path.lower().endswith(".npz")]
    code_src = [s for s in sources if s.path.lower().endswith(".npz")]
    failed: list[tuple[str, str]] = []
    job = CacheJob(cache_dir(cache_root, tokenizer), tokenizer["codec"])
    if audio_src:
        mine = shard(audio_src, share.rank, share.world)  # each rank caches its share
        adapter = LMFeatures(CodecEncoder(codec, tokenizer["bandwidth"], dev), with_mel=True)
        progress = Progress(enabled=not quiet and share.rank == 0, label="tokenise")
        with progress:
            summary = pipeline.run(mine, job, adapter, batch_seconds=batch_seconds, workers=workers,
                                   record_sink=lambda o: None, progress=progress)
        failed += [(o.source.display, o.error or "") for o in summary.failed]
        if share.world > 1:
            import torch.distributed as dist

            dist.barrier()
    examples = []
    for s in audio_src:
        if s.error is None and job.is_done(s):
            examples.append(read_cached(job.target(s), s.rel, tokenizer))
    for s in code_src:
        try:
            if s.error:
                raise AudiotokError(s.error)
            ex = read_encoded(s.path, arch == "whisper-gpt", tokenizer)
            ex.id = s.rel
            examples.append(ex)
        except AudiotokError as exc:
            failed.append((s.display, str(exc)))
    if failed and share.rank == 0:
        cli.eprint(f"{len(failed)} input(s) failed and are left out of training:")
        for path, err in failed:
            cli.eprint(f"  {path}: {err}")
    return examples, failed


@train_app.command("mae")
def train_mae(
    inputs: list[str] = cli.INPUTS,
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (official v2 layout, atomically)."),
    size: str = typer.Option("tiny", "--size", help="tiny (4 x 96, for CPU runs), small, base or large."),
    frontend: str = typer.Option("mel256", "--frontend", help="mel256 (256-bin log mel) or ec (EnCodec encoder latents)."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Crops per step and process."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Peak learning rate (AdamW, warmup + cosine)."),
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
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    quiet: bool = cli.QUIET,
) -> None:
    """Pretrain an EnCodecMAE (masked prediction of EnCodec codes, or self-training on a teacher's clusters)."""
    from ..train.mae_job import TrainMaeOptions, check, run

    opts = TrainMaeOptions(inputs, out, size, frontend, steps, batch_size, lr, seed, val_fraction, crop_seconds,
                           eval_every, resume, self_train, clusters, kmeans_frames, codec_checkpoint, cache, ext,
                           device, batch_seconds, workers, quiet)
    check(opts)
    with cli.interruptible(lambda: _stopped(out)):
        code = run(opts, cli.eprint)
    raise typer.Exit(code)
