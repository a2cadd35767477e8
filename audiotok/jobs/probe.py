"""``audiotok probe`` as a library call: find the inputs, attach labels, build the feature sets
(embeddings read or computed, baselines), cross-validate, write the JSON report and the table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedders.probing import (
    BASELINES,
    EMBEDDING_EXTENSIONS,
    PROBES,
    Features,
    Labelled,
    chance_accuracy,
    embed_audio,
    logmel_features,
    match_labels,
    plot_layers,
    random_like,
    read_embedding_file,
    read_labels,
    run_probe,
)
from ..errors import AudiotokError, UsageError


@dataclass
class ProbeOptions:
    inputs: list[str]
    labels: str | None = None
    labels_from_parent: bool = False
    out: Path | None = None
    model: str = "mel256-ec-base_st"
    layer: str = "all"
    pool: str = "mean"
    probe: str = "both"
    folds: int = 5
    seed: int = 0
    baselines: str = ""
    plot: Path | None = None
    ext: str = ""
    device: str = "cpu"
    threads: int | None = None  # torch threads for embedding audio inputs (None: torch's default)


def check(o: ProbeOptions) -> tuple[list[str], list[str]]:
    """Option errors before any work; returns (probes, baselines)."""
    if (o.labels is None) == (not o.labels_from_parent):
        raise UsageError("give exactly one of --labels labels.csv and --labels-from-parent")
    from ..engine.devices import check_threads

    check_threads(o.threads)
    probes = list(PROBES) if o.probe == "both" else [o.probe]
    if any(p not in PROBES for p in probes):
        raise UsageError(f"--probe {o.probe!r} is not valid; choose linear, mlp or both")
    baselines = [b.strip() for b in o.baselines.split(",") if b.strip()]
    for b in baselines:
        if b not in BASELINES:
            raise UsageError(f"--baseline {b!r} is not valid; choose logmel, random or both as logmel,random")
    if o.pool not in ("mean", "max", "meanstd"):
        raise UsageError(f"--pool {o.pool!r} is not valid for probe; choose mean, max or meanstd")
    if o.folds < 2:
        raise UsageError(f"--folds {o.folds} must be at least 2")
    from ..files import prepare_output_file

    for path, what in ((o.out, "-o"), (o.plot, "--plot")):
        if path is not None:
            prepare_output_file(path, what)  # before the embedding work, not after it
    return probes, baselines


def collect(o: ProbeOptions, baselines: list[str], log) -> tuple[Labelled, list[tuple[str, str]]]:
    from ..engine.sources import check_inputs_exist, discover, normalise_extensions

    check_inputs_exist(o.inputs)
    sources = discover(o.inputs, normalise_extensions([o.ext]))
    failed = [(s.display, s.error) for s in sources if s.error]
    sources = [s for s in sources if not s.error]
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
    paths = [s.path for s in sources]
    emb_inputs = [p.lower().endswith(EMBEDDING_EXTENSIONS) for p in paths]
    if any(emb_inputs) and not all(emb_inputs):
        raise UsageError("the inputs mix embedding files and audio; probe one kind at a time")
    if o.labels:
        matched = match_labels(paths, read_labels(o.labels))
    else:
        matched = [(Path(p).parent.name, p) for p in paths]
    keep = []
    for p, m in zip(paths, matched):
        if m is None:
            failed.append((p, "has no row in --labels"))
        else:
            keep.append((p, m))
    data = Labelled([p for p, _ in keep], [m[0] for _, m in keep], [m[1] for _, m in keep])
    if not data.paths:
        raise UsageError("no input has a label; check --labels or the folder layout")
    if all(emb_inputs):
        if baselines:
            raise UsageError("--baseline needs audio inputs (the baselines are computed from the audio)")
        rows, ok = [], []
        names = None
        for i, p in enumerate(data.paths):
            try:
                arr, layer_names = read_embedding_file(p, o.pool)
            except AudiotokError as exc:
                failed.append((p, str(exc)))
                continue
            if names is not None and (arr.shape != rows[0].shape):
                failed.append((p, f"holds an embedding of shape {arr.shape}, not {rows[0].shape} like the others"))
                continue
            names = names or layer_names
            rows.append(arr)
            ok.append(i)
        if not rows:
            raise UsageError("no readable embedding among the inputs")
        data = Labelled([data.paths[i] for i in ok], [data.labels[i] for i in ok], [data.groups[i] for i in ok])
        data.features.append(Features("embeddings", np.stack(rows), names))
        return data, failed
    from ..codecs.encodec import resolve_device
    from ..embedders.encodecmae import load_mae, resolve_layers
    from ..weights import resolve_encodecmae

    net = load_mae(resolve_encodecmae(o.model))
    resolve_layers(o.layer, net.cfg.layers)
    layer = "all" if o.layer.strip().lower() == "all" else int(o.layer)
    from ..engine.devices import apply_threads

    dev = resolve_device(o.device)
    data.threads = apply_threads(o.threads)
    log(f"embedding {len(data.paths)} files with {o.model} ...")
    feats = embed_audio(data.paths, net, layer, o.pool, dev)
    feats.name = str(o.model)
    data.features.append(feats)
    if "random" in baselines:
        log("embedding with a random-weight model of the same size ...")
        rnd = embed_audio(data.paths, random_like(net, o.seed), layer, o.pool, dev)
        rnd.name = "random-init"
        data.features.append(rnd)
    if "logmel" in baselines:
        data.features.append(logmel_features(data.paths))
    return data, failed


def write_report(report: dict, path: Path) -> None:
    from ..files import atomic_write

    text = json.dumps(report, indent=1).encode()
    atomic_write(Path(path), lambda f: f.write(text))


def table(report: dict) -> str:
    """The report as a plain-text table (one row per features/layer/probe)."""
    lines = [f"{report['n_items']} items, {len(report['classes'])} classes, {report['n_groups']} groups, "
             f"{report['folds']}-fold grouped CV; chance (majority) {report['chance_accuracy']:.3f}",
             f"{'features':<28} {'layer':>5} {'probe':<6} {'accuracy':>8} {'macro-F1':>8}  folds"]
    for r in report["results"]:
        folds = " ".join(f"{a:.2f}" for a in r["fold_accuracy"])
        lines.append(f"{r['features'][:28]:<28} {r['layer']:>5} {r['probe']:<6} {r['accuracy']:>8.3f} "
                     f"{r['macro_f1']:>8.3f}  {folds}")
    return "\n".join(lines)


def run(o: ProbeOptions, log, echo) -> int:
    probes, baselines = check(o)
    data, failed = collect(o, baselines, log)
    report = run_probe(data, probes, o.folds, o.seed)
    report["chance_accuracy"] = chance_accuracy(data.labels)
    report["inputs"] = [os.fspath(p) for p in data.paths]
    report["failed"] = [{"input": p, "error": e} for p, e in failed]
    report["threads"] = data.threads
    echo(table(report))
    if o.out is not None:
        write_report(report, o.out)
        log(f"report: {o.out}")
    if o.plot is not None:
        plot_layers(report, o.plot)
        log(f"plot: {o.plot}")
    for p, e in failed:
        log(f"  {p}: {e}")
    return 1 if failed else 0
