"""Pretrain an EnCodecMAE (masked prediction of EnCodec codes, or self-training on a teacher's
k-means clusters); the work behind ``audiotok train mae``.

    from audiotok import train_mae

    result = train_mae(["data/"], "mae.pt", size="tiny", steps=2000, keep_steps=(0, 1000))
    result.checkpoint, result.failed, result.training["history"][-1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .runner import as_inputs, eprint
from .train_lm import TrainResult


def train_mae(inputs, out: str | Path, *, size: str = "tiny", frontend: str = "mel256", steps: int = 1000,
              batch_size: int = 16, lr: float | None = None, optimizer: str = "audiotok", init: str = "torch",
              seed: int = 0, val_fraction: float = 0.1, crop_seconds: float = 4.0, eval_every: int = 500,
              keep_steps: Sequence[int] = (), resume: bool = False, self_train: str | Path | None = None,
              clusters: int = 1024, kmeans_frames: int | None = None, codec_checkpoint: str | Path | None = None,
              cache: str | Path | None = None, ext=None, device: str = "auto", threads: int | None = None,
              batch_seconds: float = 60.0, workers: int = 1, progress: bool = False,
              log: Callable[[str], None] = eprint) -> TrainResult:
    """Train (or ``resume``) an EnCodecMAE on ``inputs`` (audio files, directories, globs, ``-``;
    ``.npz`` files written by ``encode`` are read instead of tokenised) and write its checkpoint to
    ``out`` (official v2 layout, atomically, at every validation). The keyword options are those of
    ``audiotok train mae`` (docs/train_mae.md), checked once before torch is imported; messages go
    to ``log``. Inputs that fail are left out and listed in ``result.failed``; a ``UsageError``
    when none is usable. ``result.training`` is the checkpoint's training record (split, history
    with the pretext baselines, target usage)."""
    from ..sources import AUDIO_EXTENSIONS
    from ..train.mae_job import TrainMaeOptions, run

    if ext is None:
        ext = ",".join((*AUDIO_EXTENSIONS, "npz"))
    elif not isinstance(ext, str):
        ext = ",".join(ext)
    o = TrainMaeOptions(as_inputs(inputs), Path(out), size, frontend, steps, batch_size, lr, seed, val_fraction,
                        crop_seconds, eval_every, resume, None if self_train is None else str(self_train), clusters,
                        kmeans_frames, None if codec_checkpoint is None else Path(codec_checkpoint),
                        None if cache is None else Path(cache), ext, device, batch_seconds, workers, not progress,
                        threads, optimizer, init, tuple(int(k) for k in keep_steps))
    failed, training = run(o, log, progress)
    return TrainResult(Path(out), failed, training)
