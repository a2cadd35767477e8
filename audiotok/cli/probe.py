"""``audiotok probe``: cross-validated linear / MLP probes of embeddings (or audio) against labels."""

from __future__ import annotations

from pathlib import Path

import typer

from ..engine.sources import AUDIO_EXTENSIONS
from . import base as cli
from .base import app


@app.command()
def probe(
    inputs: list[str] = cli.INPUTS,
    labels: str = typer.Option(None, "--labels", help="CSV of path,label[,group] (paths matched by their tail, without extension)."),
    labels_from_parent: bool = typer.Option(False, "--labels-from-parent", help="Label = the file's parent folder name."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the JSON report here."),
    model: str = typer.Option("mel256-ec-base_st", "--model", "-m", help="EnCodecMAE for audio inputs (path or released name)."),
    layer: str = typer.Option("all", "--layer", "-l", help="Layer for audio inputs: index, negative index or all (one score per layer)."),
    pool: str = typer.Option("mean", "--pool", "-p", help="Pooling of frame-level embeddings: mean, max or meanstd."),
    probe_kind: str = typer.Option("both", "--probe", help="linear (logistic regression), mlp or both."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds (grouped by the CSV's group column)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the folds and the MLP."),
    baseline: str = typer.Option("", "--baseline", help="Also score baselines (audio inputs): logmel, random or logmel,random."),
    plot: Path = typer.Option(None, "--plot", help="Draw accuracy per layer into this PNG."),
    ext: str = typer.Option(",".join((*AUDIO_EXTENSIONS, "npz", "npy")), "--ext",
                            help="Extensions taken from directories (npz/npy: `audiotok embed` outputs)."),
    device: str = typer.Option("cpu", "--device", help="Device for embedding audio inputs."),
    threads: int = cli.THREADS,
) -> None:
    """Score how well embeddings separate labelled classes (k-fold CV, grouped; JSON report and table)."""
    from ..jobs.probe import ProbeOptions, run

    opts = ProbeOptions(inputs, labels, labels_from_parent, out, model, layer, pool, probe_kind, folds, seed,
                        baseline, plot, ext, device, threads)
    with cli.interruptible("interrupted: no report was written; rerun the same command"):
        code = run(opts, cli.eprint, print)
    raise typer.Exit(code)
