"""Score how well embeddings (or audio, embedded on the way) separate labelled classes; the work
behind ``audiotok probe``.

    from audiotok import probe

    result = probe(["clips/"], labels="labels.csv", model="mae.pt", baseline="logmel,random", out="r.json")
    result.report["comparisons"], result.failed, result.status
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .runner import as_inputs, eprint


@dataclass
class ProbeResult:
    report: dict  # what -o writes (docs/probe.md)
    failed: list[tuple[str, str]]  # (input, reason) of the inputs left out

    @property
    def status(self) -> int:
        """The command's exit status: 0, or 1 when some inputs were left out."""
        return 1 if self.failed else 0


def probe(inputs, *, labels: str | Path | None = None, labels_from_parent: bool = False,
          out: str | Path | None = None, model: str | Path = "mel256-ec-base_st", layer: str | int = "all",
          pool: str = "mean", probe: str = "both", folds: int = 5, seed: int = 0, baseline: str = "",
          random_seeds: int = 3, inner_folds: int = 3, plot: str | Path | None = None, ext=None,
          device: str = "cpu", threads: int | None = None, workers: int = 1,
          log: Callable[[str], None] = eprint, echo: Callable[[str], None] | None = None) -> ProbeResult:
    """Cross-validated probes of ``inputs`` (``embed`` outputs, or audio embedded with ``model``
    through the shared pipeline) against ``labels`` (a CSV of ``path,label[,group]``) or the parent
    folders' names. The keyword options are those of ``audiotok probe`` (docs/probe.md), checked
    once before any model loads. Writes ``out`` (JSON) and ``plot`` (PNG) when given; ``echo``
    receives the table (default: not printed); messages go to ``log``."""
    from ..probe_run import ProbeOptions, run
    from ..sources import AUDIO_EXTENSIONS

    if ext is None:
        ext = ",".join((*AUDIO_EXTENSIONS, "npz", "npy"))
    elif not isinstance(ext, str):
        ext = ",".join(ext)
    o = ProbeOptions(as_inputs(inputs), None if labels is None else str(labels), labels_from_parent,
                     None if out is None else Path(out), str(model), str(layer), pool, probe, folds, seed, baseline,
                     None if plot is None else Path(plot), ext, device, threads, random_seeds, inner_folds, workers)
    report, failed = run(o, log, echo or (lambda text: None))
    return ProbeResult(report, failed)
