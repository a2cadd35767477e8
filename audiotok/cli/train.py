"""``audiotok train lm``: train Whisper-GPT or the token-only GPT (room for ``train mae``)."""

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
    arch: str = typer.Option("whisper-gpt", "--arch", help="whisper-gpt or token-gpt."),
    size: str = typer.Option("micro", "--size", help="micro (~0.25M), tiny (~1.1M) or small (~3.2M parameters)."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Crops per step and process."),
    context: int = typer.Option(256, "--context", min=2, help="Positions per crop (and per scoring window)."),
    lr: float = typer.Option(3e-4, "--lr", min=0.0, help="Peak learning rate (AdamW, warmup + cosine)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, initialisation, crops and dropout."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9, help="Files held out for validation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
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
    import torch

    from ..distributed import current_share
    from ..models.codec import check_bandwidth, load_codec, resolve_device
    from ..models.gpt import ARCHS, SIZES
    from ..models.lm import tokenizer_info
    from ..train.lm import TrainConfig, train

    if arch not in ARCHS:
        raise UsageError(f"--arch {arch!r} is not valid; choose whisper-gpt or token-gpt")
    if size not in SIZES:
        raise UsageError(f"--size {size!r} is not valid; choose one of {', '.join(SIZES)}")
    if out.suffix.lower() in (".wav", ".flac", ".npz", ".npy") or out.is_dir():
        raise UsageError(f"-o {out} must be a checkpoint file path (e.g. model.pt)")
    if resume and not out.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {out} yet; run without --resume first")
    if not resume and out.exists():
        raise UsageError(f"{out} exists; pass --resume to continue it or choose another -o")
    bandwidth = check_bandwidth("encodec_24khz", bandwidth)
    share = current_share()
    dev = resolve_device(device)
    if share.world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, torch.get_num_threads() // share.world))
    codec = load_codec("encodec_24khz", codec_checkpoint, dev)
    tokenizer = tokenizer_info(codec, bandwidth, [0])
    examples, failed = _collect(inputs, ext, codec, tokenizer, arch, cache or out.with_name(out.name + ".cache"),
                                dev, batch_seconds, workers, quiet, share)
    if not examples:
        raise UsageError("no usable training input (every input failed; see the messages above)")
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction)
    train(arch, size, examples, tokenizer, out, tcfg, context=context, device=dev, resume=resume,
          log=cli.eprint, progress=not quiet)
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
    from ..sources import discover, normalise_extensions, shard
    from ..train.data import CacheJob, cache_dir, read_cached, read_encoded

    exts = normalise_extensions([ext])
    sources = discover(inputs, exts)
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
    audio_src = [s for s in sources if not s.path.lower().endswith(".npz")]
    code_src = [s for s in sources if s.path.lower().endswith(".npz")]
    failed: list[tuple[str, str]] = []
    job = CacheJob(cache_dir(cache_root, tokenizer))
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
            examples.append(read_cached(job.target(s), s.rel))
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
