"""``audiotok train mae`` as a library call: check the options, load the codec that makes the
targets, collect the (cached) data, fit the self-training centroids, run the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError


@dataclass
class TrainMaeOptions:
    inputs: list[str]
    out: Path
    size: str = "tiny"
    frontend: str = "mel256"
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.1
    crop_seconds: float = 4.0
    eval_every: int = 500
    resume: bool = False
    self_train: str | None = None
    clusters: int = 1024
    kmeans_frames: int | None = None
    codec_checkpoint: Path | None = None
    cache: Path | None = None
    ext: str = ""
    device: str = "auto"
    batch_seconds: float = 60.0
    workers: int = 1
    quiet: bool = False
    threads: int | None = None


def check(o: TrainMaeOptions) -> None:
    """Option errors, before anything is loaded."""
    from ..engine.sources import check_inputs_exist
    from ..lm.names import MAE_FRONTENDS as FRONTENDS
    from ..lm.names import MAE_SIZES as SIZES

    if o.size not in SIZES:
        raise UsageError(f"--size {o.size!r} is not valid; choose one of {', '.join(SIZES)}")
    if o.frontend not in FRONTENDS:
        raise UsageError(f"--frontend {o.frontend!r} is not valid; choose mel256 or ec")
    if o.out.suffix.lower() in (".wav", ".flac", ".npz", ".npy") or o.out.is_dir():
        raise UsageError(f"-o {o.out} must be a checkpoint file path (e.g. mae.pt)")
    if o.resume and not o.out.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {o.out} yet; run without --resume first")
    if not o.resume and o.out.exists():
        raise UsageError(f"{o.out} exists; pass --resume to continue it or choose another -o")
    if o.crop_seconds * 24000 < 2 * 637:
        raise UsageError(f"--crop-seconds {o.crop_seconds:g} is too short; give at least 0.06 s (4 s as in the paper)")
    if o.clusters < 2:
        raise UsageError(f"--clusters {o.clusters} must be at least 2")
    from ..engine.devices import check_device, check_threads

    check_device(o.device)
    check_threads(o.threads)
    check_inputs_exist(o.inputs)  # a missing input is a usage error before torch loads
    from ..files import prepare_checkpoint_paths

    prepare_checkpoint_paths(o.out, o.cache)


def run(o: TrainMaeOptions, log) -> int:
    """Train; returns the exit code (1 when some inputs failed and were left out)."""
    import torch

    from ..codecs.encodec import load_codec, resolve_device
    from ..engine.devices import apply_threads
    from ..engine.distributed import current_share
    from ..engine.sources import normalise_extensions
    from ..lm.checkpoints import tokenizer_info
    from ..train.mae import (
        MaeTrainConfig,
        SelfTraining,
        fit_centroids,
        load_teacher,
        read_training_checkpoint,
        train,
    )
    from ..train.mae_data import BANDWIDTH, codec_encoder_state, collect
    from ..train.mae_net import MaeTrainSpec

    check(o)
    teacher = load_teacher(o.self_train) if o.self_train else None
    share = current_share()
    dev = resolve_device(o.device)
    if share.world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if o.threads is None:
            o.threads = max(1, torch.get_num_threads() // share.world)
    apply_threads(o.threads)
    codec = load_codec("encodec_24khz", o.codec_checkpoint, dev)
    codec_info = tokenizer_info(codec, BANDWIDTH, list(range(8)))
    enc_state = codec_encoder_state(codec) if o.frontend == "ec" else None
    examples, failed = collect(o.inputs, normalise_extensions([o.ext]), codec, codec_info,
                               o.cache or o.out.with_name(o.out.name + ".cache"), dev, o.batch_seconds, o.workers,
                               o.quiet, share, log)
    if not examples:
        raise UsageError("no usable training input (every input failed; see the messages above)")
    tcfg = MaeTrainConfig(steps=o.steps, batch_size=o.batch_size, lr=o.lr, seed=o.seed, val_fraction=o.val_fraction,
                          crop_seconds=o.crop_seconds, eval_every=o.eval_every)
    st = None
    if teacher is not None:
        from ..train.lm import split_by_file

        if o.resume:
            centroids = read_training_checkpoint(o.out).get("centroids")
            if centroids is None:
                raise UsageError(f"--resume --self-train: {o.out} has no k-means centroids; it was not self-trained")
        else:
            train_ids = set(split_by_file([e.id for e in examples], o.val_fraction, o.seed)[0])
            centroids = fit_centroids(teacher, [e for e in examples if e.id in train_ids], o.clusters,
                                      tcfg.crop_samples, o.seed, o.kmeans_frames, log)
            if share.world > 1:  # every rank trains on rank 0's centroids
                import torch.distributed as dist

                dist.broadcast(centroids, 0)
        st = SelfTraining(teacher.to(dev), centroids.to(dev), str(o.self_train))
    spec = MaeTrainSpec.make(o.size, o.frontend, int(st.centroids.shape[0]) if st else None)
    train(examples, o.out, spec, tcfg, enc_state, codec_info, st, dev, o.resume, log, not o.quiet)
    if share.rank == 0:
        log(f"checkpoint: {o.out}")
    return 1 if failed else 0
