"""``audiotok probe`` as a library call: find the inputs, attach labels, build the feature sets
(embeddings read or computed, baselines), cross-validate, write the JSON report and the table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedders.probing import (
    BASELINES,
    EMBEDDING_EXTENSIONS,
    PROBES,
    RANDOM_NAME,
    Features,
    Labelled,
    LogMelAdapter,
    chance_accuracy,
    match_labels,
    plot_layers,
    random_like,
    read_embedding_file,
    read_labels,
    run_probe,
)
from ..errors import AudiotokError, UsageError


class CollectJob:
    """Pipeline job of ``probe``: decode each audio input at 24 kHz mono and keep the adapter's
    result in memory (no output files; nothing is ever done already)."""

    label = "embed"

    def __init__(self):
        import functools

        from ..formats import audio

        self.read_header = audio.read_header
        self.load = functools.partial(audio.read, sample_rate=24000, channels=1)
        self.results: dict[str, object] = {}

    def is_done(self, source) -> bool:
        return False

    def finish(self, source, info, result) -> dict:
        self.results[source.path] = result
        return {}


def run_through_pipeline(sources: list, adapter, workers: int = 1, batch_seconds: float = 60.0):
    """Every source through the shared pipeline with ``adapter``: ``{path: result}`` of the inputs
    that worked and ``[(input, error)]`` of those that did not (unreadable, empty, non-finite...)."""
    from ..engine import pipeline

    job = CollectJob()
    summary = pipeline.run(sources, job, adapter, batch_seconds=batch_seconds, workers=workers)
    return job.results, [(o.source.display, o.error or "failed") for o in summary.failed]


def embed_audio(sources: list, model, layer, how: str, device, workers: int = 1):
    """Embed audio sources through the ``embed`` adapter (24 kHz mono, 4 s chunks) on the
    pipeline: ``({path: [L, D] rows}, layer names, failed)``."""
    from ..embedders.chunking import MaeAdapter

    adapter = MaeAdapter(model, device=device, layer=layer, pool=how)
    results, failed = run_through_pipeline(sources, adapter, workers)
    rows = {p: (e.array if e.array.ndim == 2 else e.array[None]) for p, e in results.items()}
    n = next(iter(rows.values())).shape[0] if rows else 1
    names = [str(i) for i in range(n)] if layer == "all" else [str(layer)]
    return rows, names, failed


def logmel_features(sources: list, workers: int = 1):
    """Baseline rows ``{path: [1, 512]}`` and failed inputs (see ``LogMelAdapter``)."""
    results, failed = run_through_pipeline(sources, LogMelAdapter(), workers)
    return {p: r[None] for p, r in results.items()}, failed



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
    label_depth: int | None = None  # label = the folder this many levels below the input root
    exclude: list[str] | None = None  # glob patterns of inputs to leave out
    random_seeds: int = 3  # random-init baselines (seeds --seed, --seed + 1, ...)
    inner_folds: int = 3  # layer choice: grouped inner folds within each outer training part
    workers: int = 1  # decoding processes of the pipeline


def check(o: ProbeOptions) -> tuple[list[str], list[str]]:
    """Option errors before any work; returns (probes, baselines)."""
    if (o.labels is not None) + o.labels_from_parent + (o.label_depth is not None) != 1:
        raise UsageError("give exactly one of --labels labels.csv, --labels-from-parent and --label-depth N")
    if o.label_depth is not None and o.label_depth < 1:
        raise UsageError(f"--label-depth {o.label_depth} is not valid; give 1 (the top-level folders under the "
                         "input) or more")
    from ..engine.devices import Runtime

    Runtime.check(o.device, o.threads)
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
    if o.inner_folds < 2:
        raise UsageError(f"--inner-folds {o.inner_folds} must be at least 2")
    if o.random_seeds < 1:
        raise UsageError(f"--random-seeds {o.random_seeds} must be at least 1")
    if o.workers < 0:
        raise UsageError(f"--workers {o.workers} is not valid; give 0 or more")
    from ..files import prepare_output_file

    for path, what in ((o.out, "-o"), (o.plot, "--plot")):
        if path is not None:
            prepare_output_file(path, what)  # before the embedding work, not after it
    return probes, baselines


# Long on purpose: labels, the embeddings through the pipeline and the baselines' features of one
# probe run are read in one pass so a failed input is dropped from all of them at once.
def collect(o: ProbeOptions, baselines: list[str], log) -> tuple[Labelled, list[tuple[str, str]]]:
    from ..engine.sources import check_inputs_exist, discover, exclude, normalise_extensions

    check_inputs_exist(o.inputs)
    sources, _ = exclude(discover(o.inputs, normalise_extensions([o.ext])), list(o.exclude or []))
    failed = [(s.display, s.error) for s in sources if s.error]
    sources = [s for s in sources if not s.error]
    if not sources:
        raise UsageError("no input files found; check the paths, --ext and --exclude")
    if o.label_depth is not None:
        sources = _depth_labelled(sources, o.label_depth, failed)
    paths = [s.path for s in sources]
    emb_inputs = [p.lower().endswith(EMBEDDING_EXTENSIONS) for p in paths]
    if any(emb_inputs) and not all(emb_inputs):
        raise UsageError("the inputs mix embedding files and audio; probe one kind at a time")
    if o.labels:
        matched = match_labels(paths, read_labels(o.labels))
    elif o.label_depth is not None:
        matched = [(Path(s.rel).parts[o.label_depth - 1], s.path) for s in sources]
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
    from ..embedders.encodecmae import resolve_layers
    from ..engine.devices import Runtime
    from ..registry import ENCODECMAE

    net, _ = ENCODECMAE.load(o.model)
    resolve_layers(o.layer, net.cfg.layers)
    layer = "all" if o.layer.strip().lower() == "all" else int(o.layer)
    dev, data.threads = Runtime(o.device, o.threads).start()
    by_path = {s.path: s for s in sources}
    srcs = [by_path[p] for p in data.paths]
    log(f"embedding {len(srcs)} files with {o.model} ...")
    rows, names, bad = embed_audio(srcs, net, layer, o.pool, dev, o.workers)
    failed += bad
    sets = [(str(o.model), rows, names)]
    ok = set(rows)  # baselines see only the inputs the model could read
    srcs = [s for s in srcs if s.path in ok]
    if "random" in baselines:
        for k in range(o.random_seeds):
            log(f"embedding with a random-weight model of the same size (seed {o.seed + k}) ...")
            rnd, rnames, _ = embed_audio(srcs, random_like(net, o.seed + k), layer, o.pool, dev, o.workers)
            sets.append((f"{RANDOM_NAME} (seed {o.seed + k})", rnd, rnames))
    if "logmel" in baselines:
        mel, _ = logmel_features(srcs, o.workers)
        sets.append(("log-mel mean+std", mel, ["-"]))
    keep = [i for i, p in enumerate(data.paths) if all(p in r for _, r, _ in sets)]
    if not keep:
        raise UsageError("no audio input could be embedded (see the failed inputs)")
    data = Labelled([data.paths[i] for i in keep], [data.labels[i] for i in keep], [data.groups[i] for i in keep],
                    threads=data.threads)
    for name, r, layer_names in sets:
        data.features.append(Features(name, np.stack([r[p] for p in data.paths]), layer_names))
    return data, failed


def _depth_labelled(sources: list, depth: int, failed: list) -> list:
    """The inputs with a folder ``depth`` levels below their input root (the others are failed)."""
    keep = []
    for s in sources:
        folders = len(Path(s.rel).parts) - 1
        if folders >= depth:
            keep.append(s)
        else:
            where = "directly in the input folder" if folders == 0 else f"only {folders} folder(s) below the input folder"
            failed.append((s.display, f"is {where}, so --label-depth {depth} gives it no label"))
    if not keep:
        raise UsageError(f"no input is {depth} folder(s) below its input root; --label-depth {depth} labels a file by "
                         "that folder (give the folder holding the class folders as input)")
    return keep


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
    if report.get("selected"):
        lines += ["", f"layer chosen on {report['inner_folds']} inner folds within each training part:",
                  f"{'features':<28} {'probe':<6} {'accuracy':>8}  {'95 % interval':<15} layers per fold"]
        for r in report["selected"]:
            lines.append(f"{r['features'][:28]:<28} {r['probe']:<6} {r['accuracy']:>8.3f}  "
                         f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]  {' '.join(r['layers'])}")
    if report.get("comparisons"):
        lines += ["", "model - baseline on the same items (chosen layers): difference [95 % interval], "
                  "McNemar's exact p (items right only with the model / only with the baseline)"]
        for c in report["comparisons"]:
            lines.append(f"{c['probe']:<6} vs {c['baseline'][:44]:<44} {c['difference']:+.3f} "
                         f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]  p = {c['p_value']:.2g}  ({c['a_only']} / {c['b_only']})")
    return "\n".join(lines)


def run(o: ProbeOptions, log, echo) -> tuple[dict, list[tuple[str, str]]]:
    """Check the options (once, before any model loads), probe, print the table through ``echo``,
    write the report and plot; returns the report and the ``(input, error)`` of inputs left out."""
    probes, baselines = check(o)
    data, failed = collect(o, baselines, log)
    report = run_probe(data, probes, o.folds, o.seed, inner=o.inner_folds)
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
    if failed:
        log(f"{len(failed)} input(s) left out:")
    for p, e in failed:
        log(f"  {p}: {e}")
    return report, failed


@dataclass
class ProbeResult:
    report: dict  # what -o writes (docs/probe.md)
    failed: list[tuple[str, str]]  # (input, reason) of the inputs left out

    @property
    def status(self) -> int:
        """The command's exit status: 0, or 1 when some inputs were left out."""
        return 1 if self.failed else 0


# One keyword per `probe` option, so the API and the CLI stay one-to-one (docs/design.md).
def probe(inputs, *, labels: str | Path | None = None, labels_from_parent: bool = False,
          out: str | Path | None = None, model: str | Path = "mel256-ec-base_st", layer: str | int = "all",
          pool: str = "mean", probe: str = "both", folds: int = 5, seed: int = 0, baseline: str = "",
          random_seeds: int = 3, inner_folds: int = 3, plot: str | Path | None = None, ext=None,
          device: str = "cpu", threads: int | None = None, workers: int = 1, label_depth: int | None = None,
          exclude=None, log: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None) -> ProbeResult:
    """Cross-validated probes of ``inputs`` (``embed`` outputs, or audio embedded with ``model``
    through the shared pipeline) against ``labels`` (a CSV of ``path,label[,group]``) or the parent
    folders' names. The keyword options are those of ``audiotok probe`` (docs/probe.md), checked
    once before any model loads. Writes ``out`` (JSON) and ``plot`` (PNG) when given; ``echo``
    receives the table (default: not printed); messages go to ``log``."""
    from ..engine.runner import as_inputs
    from ..engine.sources import AUDIO_EXTENSIONS

    if ext is None:
        ext = ",".join((*AUDIO_EXTENSIONS, "npz", "npy"))
    elif not isinstance(ext, str):
        ext = ",".join(ext)
    o = ProbeOptions(as_inputs(inputs), None if labels is None else str(labels), labels_from_parent,
                     None if out is None else Path(out), str(model), str(layer), pool, probe, folds, seed, baseline,
                     None if plot is None else Path(plot), ext, device, threads, label_depth=label_depth,
                     exclude=None if exclude is None else list(exclude), random_seeds=random_seeds,
                     inner_folds=inner_folds, workers=workers)
    if log is None:
        from ..engine.runner import eprint as log
    report, failed = run(o, log, echo or (lambda text: None))
    return ProbeResult(report, failed)
