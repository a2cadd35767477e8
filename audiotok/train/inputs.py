"""Training inputs shared by ``train lm`` and ``train mae``: audio goes through the pipeline into a
feature cache (one ``.npz`` per input, reruns skip cached inputs), ``encode`` outputs (``.npz``)
are read directly. Each trainer supplies its cache job, its adapter and its two readers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AudiotokError, UsageError


def collect_examples(inputs: list[str], exts, job, adapter, read_cached: Callable[[Path, str], Any],
                     read_encoded: Callable[[str, str], Any], *, batch_seconds: float, workers: int, quiet: bool,
                     share, log: Callable[[str], None], label: str = "progress") -> tuple[list, list[tuple[str, str]]]:
    """Examples from every input, in input order (cached audio first, then encode outputs).

    ``job``: the pipeline job that writes the cache (``target``/``is_done``); ``adapter``: the
    pipeline adapter (or a factory, built only when some input is not cached yet);
    ``read_cached(cache_file, ident)`` / ``read_encoded(npz_path, ident)`` -> example, where
    ``ident`` is the input's path relative to its root (the id the train/validation split uses).
    Under torchrun each rank caches its share, then waits for the others. Returns the examples
    and the ``(input, error)`` of every input that failed (listed through ``log`` on rank 0)."""
    from ..engine import pipeline
    from ..engine.progress import Progress
    from ..engine.sources import check_inputs_exist, discover, shard

    check_inputs_exist(inputs)
    sources = discover(inputs, exts)
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
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
