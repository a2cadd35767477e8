"""``audiotok train mae`` as a library call: check the options, load the codec that makes the
targets, collect the (cached) data, fit the self-training centroids, run the training loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..registry import ENCODEC_24KHZ


@dataclass
class TrainMaeOptions:
    inputs: list[str]
    out: Path
    size: str = "tiny"
    frontend: str = "mel256"
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None  # default: DEFAULT_LR[optimizer][size]
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
    exclude: list[str] | None = None  # glob patterns of inputs to leave out
    optimizer: str = "audiotok"
    init: str = "torch"
    keep_steps: tuple[int, ...] = ()

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.optimizer, self.size)


def parse_steps(text: str) -> tuple[int, ...]:
    """``--keep-steps 0,2000,5000`` -> (0, 2000, 5000)."""
    out = []
    for part in str(text or "").split(","):
        if part.strip():
            try:
                out.append(int(part))
            except ValueError:
                raise UsageError(f"--keep-steps {text!r} is not valid; give step numbers separated by commas") from None
    return tuple(out)


def default_lr(optimizer: str, size: str) -> float:
    """The reference's 1e-4 for the paper's sizes and its preset; for tiny under the audiotok
    preset, the best of a sweep on CPU (docs/embed.md)."""
    return TINY_LR if (size == "tiny" and optimizer == "audiotok") else 1e-4


TINY_LR = 1e-3


def check(o: TrainMaeOptions) -> None:
    """Option errors, before anything is loaded."""
    from ..engine.sources import check_inputs_exist
    from ..registry import ENCODECMAE

    ENCODECMAE.check_size(o.size)
    ENCODECMAE.check_frontend(o.frontend)
    if o.out.suffix.lower() in (".wav", ".flac", ".npz", ".npy") or o.out.is_dir():
        raise UsageError(f"-o {o.out} must be a checkpoint file path (e.g. mae.pt)")
    if o.resume and not o.out.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {o.out} yet; run without --resume first")
    if not o.resume and o.out.exists():
        raise UsageError(f"{o.out} exists; pass --resume to continue it or choose another -o")
    if o.crop_seconds * ENCODEC_24KHZ.sample_rate < 2 * 637:
        raise UsageError(f"--crop-seconds {o.crop_seconds:g} is too short; give at least 0.06 s (4 s as in the paper)")
    if o.clusters < 2:
        raise UsageError(f"--clusters {o.clusters} must be at least 2")
    for name, value in (("--steps", o.steps), ("--batch-size", o.batch_size), ("--eval-every", o.eval_every)):
        if value < 1:
            raise UsageError(f"{name} {value} is not valid; give 1 or more")
    if not 0.0 <= o.val_fraction <= 0.9:
        raise UsageError(f"--val-fraction {o.val_fraction:g} is not valid; give a fraction from 0 to 0.9")
    from ..lm.names import MAE_INITS as INITS
    from ..lm.names import MAE_OPTIMIZERS as OPTIMIZERS

    if o.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer {o.optimizer!r} is not valid; choose {' or '.join(OPTIMIZERS)}")
    if o.init not in INITS:
        raise UsageError(f"--init {o.init!r} is not valid; choose {' or '.join(INITS)}")
    if o.lr is not None and o.lr < 0:
        raise UsageError(f"--lr {o.lr:g} is not valid; give 0 or more")
    bad = [k for k in o.keep_steps if not 0 <= k <= o.steps]
    if bad:
        raise UsageError(f"--keep-steps {bad[0]} is not a step of this run; give steps from 0 to --steps {o.steps}")
    from ..engine.devices import Runtime

    Runtime.check(o.device, o.threads)
    check_inputs_exist(o.inputs)  # a missing input is a usage error before torch loads
    from ..files import prepare_checkpoint_paths

    prepare_checkpoint_paths(o.out, o.cache)


def run(o: TrainMaeOptions, log, progress: bool | None = None) -> tuple[list[tuple[str, str]], dict]:
    """Check the options (before torch is imported), then train; returns the ``(input, error)`` of
    the inputs left out and the checkpoint's training record. ``progress``: show the bar (default:
    unless ``o.quiet``)."""
    check(o)

    from ..engine.devices import Runtime
    from ..engine.distributed import current_share
    from ..engine.sources import normalise_extensions
    from ..lm.checkpoints import tokenizer_info
    from ..train.loop import distributed
    from ..train.mae import (
        MaeTrainConfig,
        SelfTraining,
        fit_centroids,
        load_teacher,
        read_training_checkpoint,
        train,
    )
    from ..train.mae_data import BANDWIDTH, codec_encoder_state, collect
    from ..train.mae_net import EC_CODEC, N_CODEBOOKS, MaeTrainSpec
    from .encode import codec_weights

    teacher, teacher_state = load_teacher(o.self_train) if o.self_train else (None, None)
    share = current_share()
    dev, _ = Runtime.check(o.device, o.threads).start(world=share.world)
    distributed(dev)  # joins torchrun's process group, if any
    # the targets' codec, through the registry's interface (EnCodecMAE's is EnCodec 24 kHz)
    weights, _ = codec_weights(EC_CODEC.name, o.codec_checkpoint, option="--codec-checkpoint")
    codec = EC_CODEC.load(weights, dev)
    codec_info = tokenizer_info(codec, BANDWIDTH, list(range(N_CODEBOOKS)))
    enc_state = codec_encoder_state(codec) if o.frontend == "ec" else None
    examples, failed = collect(o.inputs, normalise_extensions([o.ext]), codec, codec_info,
                               o.cache or o.out.with_name(o.out.name + ".cache"), dev, o.batch_seconds, o.workers,
                               o.quiet, share, log, exclude=o.exclude)
    if not examples:
        raise UsageError("no usable training input (every input failed; see the messages above)")
    tcfg = MaeTrainConfig(steps=o.steps, batch_size=o.batch_size, lr=o.learning_rate(), seed=o.seed,
                          val_fraction=o.val_fraction, crop_seconds=o.crop_seconds, eval_every=o.eval_every,
                          optimizer=o.optimizer, init=o.init, keep_steps=tuple(sorted(set(o.keep_steps))))
    st = None
    if teacher is not None:
        from ..train.loop import split_by_file

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
        st = SelfTraining(teacher.to(dev), centroids.to(dev), str(o.self_train), teacher_state)
    spec = MaeTrainSpec.make(o.size, o.frontend, int(st.centroids.shape[0]) if st else None)
    train(examples, o.out, spec, tcfg, enc_state, codec_info, st, dev, o.resume, log,
          (not o.quiet) if progress is None else progress)
    if share.rank == 0:
        log(f"checkpoint: {o.out}")
    record = read_training_checkpoint(o.out)["audiotok"]["training"] if o.out.is_file() else {}
    return failed, record


# One keyword per `train mae` option, so the API and the CLI stay one-to-one (docs/design.md).
def train_mae(inputs, out: str | Path, *, size: str = "tiny", frontend: str = "mel256", steps: int = 1000,
              batch_size: int = 16, lr: float | None = None, optimizer: str = "audiotok", init: str = "torch",
              seed: int = 0, val_fraction: float = 0.1, crop_seconds: float = 4.0, eval_every: int = 500,
              keep_steps: Sequence[int] = (), resume: bool = False, self_train: str | Path | None = None,
              clusters: int = 1024, kmeans_frames: int | None = None, codec_checkpoint: str | Path | None = None,
              cache: str | Path | None = None, ext=None, device: str = "auto", threads: int | None = None,
              batch_seconds: float = 60.0, workers: int = 1, progress: bool = False, exclude=None,
              log: Callable[[str], None] | None = None):
    """Train (or ``resume``) an EnCodecMAE on ``inputs`` (audio files, directories, globs, ``-``;
    ``.npz`` files written by ``encode`` are read instead of tokenised) and write its checkpoint to
    ``out`` (official v2 layout, atomically, at every validation). The keyword options are those of
    ``audiotok train mae`` (docs/train_mae.md), checked once before torch is imported; messages go
    to ``log``. Inputs that fail are left out and listed in ``result.failed``; a ``UsageError``
    when none is usable. ``result.training`` is the checkpoint's training record (split, history
    with the pretext baselines, target usage)."""
    from ..engine.runner import as_inputs
    from ..engine.sources import AUDIO_EXTENSIONS
    from .train_lm import TrainResult

    if ext is None:
        ext = ",".join((*AUDIO_EXTENSIONS, "npz"))
    elif not isinstance(ext, str):
        ext = ",".join(ext)
    o = TrainMaeOptions(as_inputs(inputs), Path(out), size, frontend, steps, batch_size, lr, seed, val_fraction,
                        crop_seconds, eval_every, resume, None if self_train is None else str(self_train), clusters,
                        kmeans_frames, None if codec_checkpoint is None else Path(codec_checkpoint),
                        None if cache is None else Path(cache), ext, device, batch_seconds, workers, not progress,
                        threads, exclude=None if exclude is None else list(exclude), optimizer=optimizer,
                        init=init, keep_steps=tuple(int(k) for k in keep_steps))
    if log is None:
        from ..engine.runner import eprint as log
    failed, training = run(o, log, progress)
    return TrainResult(Path(out), failed, training)
