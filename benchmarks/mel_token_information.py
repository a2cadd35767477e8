#!/usr/bin/env python
"""How much one mel slice tells about the coarse token it is aligned with, per alignment.

Reads the feature cache that ``hybrid_vs_tokens.py`` leaves in ``--work`` (coarse tokens and the
causal log-mel of every corpus file), clusters the standardised mel slices of the training files
with k-means, and reports the cross-entropy (nats per token) of the coarse token c_t on the test
files given the cluster of the slice m_(t-lag) (add-alpha counts fitted on the training files):
lag 1 is what the causal hybrid sees at the position predicting c_t, 0 and -1 what the leaky
controls see. The previous token (a bigram) and the unigram are printed for scale. A leak can only
help a model if it lowers this number.

    python benchmarks/mel_token_information.py --corpus /work/corpus --work WORK
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LAGS = {"m_(t-1) causal": 1, "m_t leaky": 0, "m_(t+1) leaky-centred": -1}


def load(corpus: Path, cache: Path, domain: str, split: str):
    files = json.loads((corpus / "manifest.json").read_text())["files"]
    toks, mels = [], []
    for f in files:
        if f["domain"] == domain and f["split"] == split:
            with np.load(cache / (f["path"].rsplit(".", 1)[0] + ".npz")) as z:
                toks.append(z["tokens"].astype(np.int64))
                mels.append(z["mel"].astype(np.float32))
    return toks, mels


def cross_entropy(ctx_train, y_train, ctx_test, y_test, n_ctx: int, vocab: int = 1024, alpha: float = 0.1) -> float:
    counts = np.full((n_ctx, vocab), alpha)
    np.add.at(counts, (ctx_train, y_train), 1.0)
    probs = counts / counts.sum(1, keepdims=True)
    return float(-np.log(probs[ctx_test, y_test]).mean())


def nearest(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((z ** 2).sum(1)[:, None] - 2 * z @ centroids.T + (centroids ** 2).sum(1)[None]).argmin(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="the --work folder of a hybrid_vs_tokens.py run")
    ap.add_argument("--clusters", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    caches = sorted(p for p in (args.work / "cache").iterdir() if p.is_dir())
    if len(caches) != 1:
        raise SystemExit(f"expected one tokenizer cache in {args.work / 'cache'}, found {len(caches)}")
    results = {}
    print("| data | " + " | ".join(LAGS) + " | previous token | unigram |")
    print("|---|" + "---:|" * (len(LAGS) + 2))
    for domain in ("speech", "music"):
        train, test = (load(args.corpus, caches[0], domain, s) for s in ("train", "test"))
        frames = np.concatenate(train[1])
        mean, std = frames.mean(0), frames.std(0) + 1e-3
        z = (frames - mean) / std
        rng = np.random.default_rng(args.seed)
        centroids = z[rng.choice(len(z), args.clusters, replace=False)].copy()
        for _ in range(args.iterations):
            assign = nearest(z, centroids)
            for k in range(args.clusters):
                members = z[assign == k]
                if len(members):
                    centroids[k] = members.mean(0)

        def pairs(data, lag, mean=mean, std=std, centroids=centroids):
            ctx, ys = [], []
            for tokens, mel in zip(*data):
                cluster = nearest((mel - mean) / std, centroids)
                src = np.arange(len(tokens)) - lag
                ok = (src >= 0) & (src < len(tokens))
                ctx.append(cluster[src[ok]])
                ys.append(tokens[ok])
            return np.concatenate(ctx), np.concatenate(ys)

        row = {name: cross_entropy(*pairs(train, lag), *pairs(test, lag), args.clusters) for name, lag in LAGS.items()}
        prev = [(np.concatenate([t[:-1] for t in d[0]]), np.concatenate([t[1:] for t in d[0]])) for d in (train, test)]
        row["previous token"] = cross_entropy(*prev[0], *prev[1], 1024)
        y_train, y_test = np.concatenate(train[0]), np.concatenate(test[0])
        row["unigram"] = cross_entropy(np.zeros_like(y_train), y_train, np.zeros_like(y_test), y_test, 1)
        results[domain] = row
        print(f"| {domain} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
