"""Training inputs shared by ``train lm`` and ``train mae``: audio goes through the pipeline into a
feature cache (one ``.npz`` per input, reruns skip cached inputs), ``encode`` outputs (``.npz``)
are read directly. Each trainer supplies its cache job, its adapter and its two readers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudiotokError, UsageError


class FeatureCache:
    """Pipeline job that writes a trainer's cache: each input decoded at ``sample_rate`` mono, the
    adapter's result turned into arrays by ``arrays(item)`` and written with the input's display
    name as one ``.npz`` mirroring the input tree; ``frames(item)`` is the frame count reported."""

    def __init__(self, cache: Path, sample_rate: int, arrays: Callable[[Any], dict], frames: Callable[[Any], int]):
        from ..engine.sinks import OutputTree
        from ..formats import audio

        self.tree = OutputTree(cache, ".npz")
        self.read_header = audio.read_header
        self.load = functools.partial(audio.read, sample_rate=sample_rate, channels=1)
        self.arrays, self.frames = arrays, frames

    def target(self, source) -> Path:
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def finish(self, source, info, item) -> dict:
        def write(f, it):
            np.savez(f, **self.arrays(it), source=np.array(source.display))

        return {"output": str(self.tree.write(source, write, item)), "frames": int(self.frames(item))}


# 13 parameters: the two trainers' cache job, adapter and readers plus the pipeline's run options.
def collect_examples(inputs: list[str], exts, job, adapter, read_cached: Callable[[Path, str], Any],
                     read_encoded: Callable[[str, str], Any], *, batch_seconds: float, workers: int, quiet: bool,
                     share, log: Callable[[str], None], label: str = "progress",
                     exclude: list[str] | None = None) -> tuple[list, list[tuple[str, str]]]:
    """Examples from every input, in input order (cached audio first, then encode outputs).

    ``job``: the pipeline job that writes the cache (``target``/``is_done``); ``adapter``: the
    pipeline adapter (or a factory, built only when some input is not cached yet);
    ``read_cached(cache_file, ident)`` / ``read_encoded(npz_path, ident)`` -> example, where
    ``ident`` is the input's path relative to its root (the id the train/validation split uses).
    Under torchrun each rank caches its share, then waits for the others. Inputs matching a glob
    of ``exclude`` are left out. Returns the examples and the ``(input, error)`` of every input that
    failed (listed through ``log`` on rank 0)."""
    from ..engine import pipeline
    from ..engine.progress import Progress
    from ..engine.sources import check_inputs_exist, discover, shard
    from ..engine.sources import exclude as drop_excluded

    check_inputs_exist(inputs)
    sources, _ = drop_excluded(discover(inputs, exts), list(exclude or []))
    if not sources:
        raise UsageError("no input files found; check the paths, --ext and --exclude")
    audio_src = [s for s in sources if not s.path.lower().endswith(".npz")]
    code_src = [s for s in sources if s.path.lower().endswith(".npz")]
    failed: list[tuple[str, str]] = []
    if audio_src:
        mine = shard(audio_src, share.rank, share.world)  # each rank caches its share
        progress = Progress(enabled=not quiet and share.rank == 0, label=label)
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
            examples.append(read_encoded(s.path, s.rel))
        except AudiotokError as exc:
            failed.append((s.display, str(exc)))
    if failed and share.rank == 0:
        log(f"{len(failed)} input(s) failed and are left out of training:")
        for path, err in failed:
            log(f"  {path}: {err}")
    return examples, failed
