"""``audiotok probe``: how well do embeddings classify a labelled set of recordings?

Inputs are ``embed`` outputs (``.npz`` with metadata, or bare ``.npy``; frame-level ones are pooled
here) or audio files (embedded through the same ``Embedder`` as ``embed``). Labels come from a CSV
(``path,label[,group]``) or from each file's parent folder. Each layer is scored with a linear
probe (logistic regression) and an MLP (scikit-learn), standardised on the training folds only,
by k-fold cross-validation grouped by ``group`` (no group on both sides of a split) and
stratified by label. Optional baselines on the same folds: mean+std of log-mel frames, and a
random-weight EnCodecMAE of the same size as the model.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError

PROBES = ("linear", "mlp")
BASELINES = ("logmel", "random")
EMBEDDING_EXTENSIONS = (".npz", ".npy")


@dataclass
class Features:
    """``X [N, L, D]`` for N recordings and L layers (``layers`` names them)."""

    name: str
    X: np.ndarray
    layers: list[str]


@dataclass
class Labelled:
    paths: list[str]
    labels: list[str]
    groups: list[str]
    features: list[Features] = field(default_factory=list)
    threads: int | None = None  # torch threads that embedded audio inputs (None: embeddings were read)


# --- labels ------------------------------------------------------------------------------------
def _key_parts(path: str) -> tuple[str, ...]:
    p = Path(os.path.normpath(path))
    return tuple(p.with_suffix("").parts) if p.suffix else tuple(p.parts)


def read_labels(csv_path: str | os.PathLike) -> list[tuple[str, str, str | None]]:
    """Rows ``(path, label, group or None)`` of a labels CSV (a ``path,label[,group]`` header is optional)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise UsageError(f"--labels {csv_path} cannot be read ({exc.strerror}); give a CSV of path,label[,group]") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    out = []
    for i, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise UsageError(f"--labels {csv_path}: row {i} ({','.join(r)}) needs at least a path and a label")
        out.append((r[0].strip(), r[1].strip(), r[2].strip() if len(r) > 2 and r[2].strip() else None))
    if not out:
        raise UsageError(f"--labels {csv_path} has no rows; give a CSV of path,label[,group]")
    return out


def match_labels(paths: list[str], rows: list[tuple[str, str, str | None]]) -> list[tuple[str, str] | None]:
    """``(label, group)`` for each input path: the CSV row whose path, without extension, is the
    longest common tail of the input's (``emb/speech/a.npz`` matches ``audio/speech/a.wav``);
    None when no row matches. A tail shared by rows with different labels is an error."""
    index: dict[tuple[str, ...], list[int]] = {}
    for i, (p, _, _) in enumerate(rows):
        parts = _key_parts(p)
        for k in range(1, len(parts) + 1):
            index.setdefault(parts[-k:], []).append(i)
    out = []
    for path in paths:
        parts = _key_parts(path)
        hit = None
        for k in range(len(parts), 0, -1):
            cand = index.get(parts[-k:])
            if cand:
                hit = cand
                break
        if hit is None:
            out.append(None)
            continue
        if len({rows[i][1] for i in hit}) > 1:
            raise UsageError(f"{path} matches several rows of --labels with different labels "
                             f"({rows[hit[0]][0]}, {rows[hit[1]][0]}); give fuller paths in the CSV")
        p, label, group = rows[hit[0]]
        out.append((label, group or p))
    return out


# --- inputs ------------------------------------------------------------------------------------
def pool(frames: np.ndarray, how: str) -> np.ndarray:
    from .chunking import pool_frames

    if how == "none":
        raise UsageError("--pool none cannot be probed; choose mean, max or meanstd")
    return pool_frames(frames.astype(np.float32), how)


def read_embedding_file(path: str, how: str) -> tuple[np.ndarray, list[str]]:
    """``[L, D]`` pooled rows and the layer names of one ``embed`` output."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"is not an embedding file written by `audiotok embed` ({type(exc).__name__})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if "embedding" not in data.files:
                raise InputError("is an .npz without an 'embedding' array (not written by `audiotok embed`)")
            arr = data["embedding"]
            layer = str(data["layer"]) if "layer" in data.files else "-1"
            pooling = str(data["pooling"]) if "pooling" in data.files else ("none" if arr.ndim >= 2 else "mean")
    else:
        arr, layer, pooling = data, "-1", ("none" if data.ndim == 2 else "mean")
    all_layers = layer == "all"
    frame_level = pooling == "none"
    if frame_level:
        arr = pool(arr, how)  # [T, D] -> [D], [L, T, D] -> [L, D]
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise InputError(f"holds an embedding of shape {arr.shape} that cannot be probed")
    names = [str(i) for i in range(arr.shape[0])] if all_layers else [layer]
    return arr.astype(np.float32), names


def embed_audio(paths: list[str], model, layer: str, how: str, device: str, batch: int = 16) -> Features:
    """Embed audio files through the ``embed`` core (24 kHz mono, 4 s chunks)."""
    from ..formats.audio import read
    from .chunking import Embedder

    emb = Embedder(model, "probe", device=device, layer=layer, pool=how)
    rows = []
    for i in range(0, len(paths), batch):
        audios = [read(p, sample_rate=24000, channels=1)[0] for p in paths[i:i + batch]]
        for e in emb.embed_many(audios, 24000):
            rows.append(e.array if e.array.ndim == 2 else e.array[None])
    n = rows[0].shape[0]
    names = [str(i) for i in range(n)] if layer == "all" else [str(layer)]
    return Features("", np.stack(rows), names)


def logmel_features(paths: list[str]) -> Features:
    """Baseline: mean and std over time of the 256-bin log-mel frames (the mel256 front end)."""
    import torch

    from ..formats.audio import read
    from .fbank import kaldi_fbank

    rows = []
    for p in paths:
        x, _ = read(p, sample_rate=24000, channels=1)
        if x.shape[1] < 637:
            x = np.pad(x, ((0, 0), (0, 637 - x.shape[1])))
        fb = kaldi_fbank(torch.from_numpy(x)).numpy()[0].astype(np.float64)
        rows.append(np.concatenate([fb.mean(0), fb.std(0)])[None].astype(np.float32))
    return Features("log-mel mean+std", np.stack(rows), ["-"])


def random_like(model, seed: int = 0):
    """A random-weight EnCodecMAE of the same configuration (the EnCodec front end, a fixed
    encoder, is kept)."""
    import copy

    import torch

    from .encodecmae import EncodecMAE

    torch.manual_seed(seed)
    net = EncodecMAE(model.cfg)
    if model.codec_encoder is not None:
        net.codec_encoder = copy.deepcopy(model.codec_encoder)
    return net.eval()


# --- cross-validation --------------------------------------------------------------------------
def make_folds(labels: list[str], groups: list[str], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold, grouped: no group has members on both sides of any split."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_groups < k:
        raise UsageError(f"--folds {k} needs at least {k} groups but the data have {n_groups}; use fewer folds")
    y = np.array(labels)
    if len(set(labels)) < 2:
        raise UsageError("the labelled inputs have only one class; a probe needs at least two")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, np.array(groups)))


def make_probe(kind: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        clf = LogisticRegression(max_iter=2000, C=1.0)
    elif kind == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=500, early_stopping=False, random_state=seed)
    else:
        raise UsageError(f"--probe {kind!r} is not valid; choose linear, mlp or both")
    return make_pipeline(StandardScaler(), clf)  # the scaler is fitted on the training folds only


def cross_validate(X: np.ndarray, labels: list[str], folds, kind: str, seed: int) -> dict:
    """Accuracy, macro-F1, per-fold scores and the confusion matrix of the out-of-fold predictions."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    classes = sorted(set(labels))
    y = np.array(labels)
    pred = np.empty(len(y), dtype=object)
    accs, f1s = [], []
    for train_idx, test_idx in folds:
        clf = make_probe(kind, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X[train_idx], y[train_idx])
        p = clf.predict(X[test_idx])
        pred[test_idx] = p
        accs.append(float(accuracy_score(y[test_idx], p)))
        f1s.append(float(f1_score(y[test_idx], p, average="macro", labels=classes, zero_division=0)))
    return {"accuracy": float(np.mean(accs)), "macro_f1": float(np.mean(f1s)), "fold_accuracy": accs,
            "fold_macro_f1": f1s,
            "confusion": confusion_matrix(y, pred.astype(str), labels=classes).tolist()}


def run_probe(data: Labelled, probes: list[str], folds_k: int, seed: int, log=None) -> dict:
    """The report: one entry per (features, layer, probe)."""
    folds = make_folds(data.labels, data.groups, folds_k, seed)
    results = []
    for feats in data.features:
        for li, layer in enumerate(feats.layers):
            for kind in probes:
                r = cross_validate(feats.X[:, li], data.labels, folds, kind, seed)
                results.append({"features": feats.name, "layer": layer, "probe": kind, **r})
                if log:
                    log(f"{feats.name} layer {layer} {kind}: accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}")
    classes = sorted(set(data.labels))
    return {"classes": classes, "n_items": len(data.labels), "n_groups": len(set(data.groups)),
            "class_counts": {c: data.labels.count(c) for c in classes}, "folds": folds_k, "seed": seed,
            "fold_test_groups": [sorted({data.groups[i] for i in te}) for _, te in folds], "results": results}


def chance_accuracy(labels: list[str]) -> float:
    """Accuracy of always answering the most frequent class."""
    return max(labels.count(c) for c in set(labels)) / len(labels)


def plot_layers(report: dict, path: str | os.PathLike) -> None:
    """Accuracy per layer, one line per (features, probe); baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in report["results"]:
        series.setdefault((r["features"], r["probe"]), []).append((r["layer"], r["accuracy"]))
    for (name, probe), pts in series.items():
        if len(pts) == 1 and not pts[0][0].lstrip("-").isdigit():
            ax.axhline(pts[0][1], linestyle="--", label=f"{name} ({probe})", color="grey" if probe == "linear" else "black")
            continue
        xs = [int(p[0]) for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{name} ({probe})")
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy (cross-validated)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..files import atomic_write

    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
