"""The arms of the hybrid-vs-tokens experiment and their controls, built by one code path.

Every arm is ``train.lm.train`` on the same examples with a ``GPTConfig`` from ``arm_options``; a
control differs from ``whisper-gpt`` in one thing only: ``whisper-gpt-shuffled`` gets the mel of
another file (``shuffle_mel``), ``whisper-gpt-leaky`` sees the current frame's mel (``mel_lag`` 0),
``whisper-gpt-leaky-centred`` the next one, whose window is centred on the predicted frame's samples
(``mel_lag`` -1).

Positive controls, which a working pipeline must find: ``latent-lag0`` feeds the codec's own latent
z_t (the encoder output whose nearest level-0 codeword is c_t) through the same branch and the same
alignment code, so it must predict c_t almost perfectly; ``latent-lag1`` gets z_(t-1), about what
the information control sees. ``kmeans-mel-lag0`` / ``-lag1`` replace the tokens by the k-means
cluster of the mel slice m_t itself (``kmeans_mel_tokens``): with lag 0 the mel arm sees the slice
its target is computed from. ``token-gpt-matched`` is the token-only model with the hybrid's
parameter count (``matched_shape``: wider, ff = 4 x width as in every size).
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from audiotok.train.lm import Example

# arm -> (arch, size override or None, GPTConfig options, what is done to the data: None,
# "shuffle-mel" (each file's mel from another file) or "kmeans-mel" (tokens = k-means cluster of m_t))
ARMS: dict[str, tuple[str, str | None, dict, str | None]] = {
    "token-gpt": ("token-gpt", None, {}, None),
    "token-gpt-matched": ("token-gpt", None, {"shape": "matched"}, None),
    "whisper-gpt": ("whisper-gpt", None, {}, None),
    "whisper-gpt-shuffled": ("whisper-gpt", None, {}, "shuffle-mel"),
    "whisper-gpt-leaky": ("whisper-gpt", None, {"mel_lag": 0}, None),
    "whisper-gpt-leaky-centred": ("whisper-gpt", None, {"mel_lag": -1}, None),
    "latent-lag0": ("whisper-gpt", None, {"features": "latent", "mel_lag": 0}, None),
    "latent-lag1": ("whisper-gpt", None, {"features": "latent", "mel_lag": 1}, None),
    "kmeans-mel-lag0": ("whisper-gpt", None, {"mel_lag": 0}, "kmeans-mel"),
    "kmeans-mel-lag1": ("whisper-gpt", None, {"mel_lag": 1}, "kmeans-mel"),
    "info-control": ("info-control", None, {}, None),
    "token-gpt-large": ("token-gpt", "large", {}, None),
}


def arm_options(arm: str, size: str, n_codebooks: int, fusion: str | None = None,
                latent_dim: int | None = None) -> tuple[str, str, dict, str | None]:
    """``(arch, size, GPTConfig.make options, data transform)`` of an arm; ``latent_dim``: the
    codec latent's width (the latent arms)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")
    arch, big, opts, data = ARMS[arm]
    opts = dict(opts)
    if arch == "info-control":
        opts["n_codebooks"] = n_codebooks
    if arch == "whisper-gpt" and fusion is not None:
        opts["fusion"] = fusion
    if opts.get("shape") == "matched":
        opts["shape"] = matched_shape(big or size, fusion)  # the hybrid of the fusion compared
    if opts.get("features") == "latent":
        if latent_dim is None:
            raise ValueError(f"arm {arm} reads the codec latent: give its width (latent_dim)")
        opts["feature_dim"] = latent_dim
    return arch, big or size, opts, data


def matched_shape(size: str, fusion: str | None = None) -> dict:
    """The token-only model with the hybrid's parameter count: the size's backbone made wider
    (``dim`` a multiple of the heads, ``ff`` = the size's ff/dim ratio x ``dim``), at the width whose
    count is closest to whisper-gpt's of ``size``. Returns the ``GPTConfig.make(shape=...)`` dict."""
    from audiotok.lm.gpt import DEFAULT_FUSION, SIZES, GPTConfig, build_gpt, count_params

    dims = SIZES[size]
    target = count_params(build_gpt(GPTConfig.make("whisper-gpt", size, fusion=fusion or DEFAULT_FUSION)))
    ratio = dims["ff"] // dims["dim"]
    best = None
    for dim in range(dims["dim"], 2 * dims["dim"] + 1, dims["heads"]):
        shape = {"dim": dim, "ff": ratio * dim}
        n = count_params(build_gpt(GPTConfig.make("token-gpt", size, shape=shape)))
        if best is None or abs(n - target) < best[0]:
            best = (abs(n - target), shape)
        if n > target:
            break
    return best[1]


def shuffle_mel(examples: list[Example], seed: int, donors: list[Example] | None = None) -> list[Example]:
    """The same files with each one's mel taken from another file, repeated or cut to the file's
    length: the mel stream keeps its statistics but carries nothing about these tokens. Donors are
    the files themselves (a seeded derangement) or, when given, ``donors`` (never a file's own mel)."""
    pool = list(donors) if donors is not None else list(examples)
    rng = random.Random(seed)
    if donors is None:
        if len(examples) < 2:
            raise ValueError("shuffling the mel across files needs at least two files (or donors)")
        order = list(range(len(examples)))
        while True:
            perm = order[:]
            rng.shuffle(perm)
            if all(i != j for i, j in zip(order, perm)):
                break
    else:
        perm = []
        for e in examples:
            choices = [j for j, d in enumerate(pool) if d.id != e.id]
            if not choices:
                raise ValueError(f"no donor file other than {e.id}")
            perm.append(rng.choice(choices))
    out = []
    for e, j in zip(examples, perm):
        donor = pool[j].mel
        idx = np.arange(len(e.tokens)) % len(donor)
        out.append(replace(e, mel=np.ascontiguousarray(donor[idx])))
    return out


def kmeans_mel_tokens(train: list[Example], k: int = 256, seed: int = 0, iterations: int = 15):
    """A tokenizer made by k-means of the mel slices themselves (the planted-signal control):
    ``k`` centroids of the standardised training slices (k-means++ seeding, seeded); returns ``tokenize(examples)``, the same
    files with ``tokens`` (and ``codes``) = the cluster of each slice m_t. Position t of the lag-0 mel
    arm then holds the very slice c_t is computed from."""
    frames = np.concatenate([e.mel for e in train]).astype(np.float64)
    mean, std = frames.mean(0), frames.std(0) + 1e-3
    z = (frames - mean) / std
    rng = np.random.default_rng(seed)
    # k-means++ seeding: each next centroid drawn with probability proportional to the squared
    # distance to the nearest one already chosen
    centroids = z[[int(rng.integers(len(z)))]]
    d2 = ((z - centroids[0]) ** 2).sum(1)
    for _ in range(1, min(k, len(z))):
        pick = int(rng.choice(len(z), p=d2 / d2.sum())) if d2.sum() > 0 else int(rng.integers(len(z)))
        centroids = np.concatenate([centroids, z[pick][None]])
        d2 = np.minimum(d2, ((z - z[pick]) ** 2).sum(1))

    def nearest(x):
        return ((x ** 2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(1)[None]).argmin(1)

    for _ in range(iterations):
        assign = nearest(z)
        for j in range(len(centroids)):
            members = z[assign == j]
            if len(members):
                centroids[j] = members.mean(0)

    def tokenize(examples: list[Example]) -> list[Example]:
        out = []
        for e in examples:
            tok = nearest((e.mel.astype(np.float64) - mean) / std).astype(np.int16)
            out.append(replace(e, tokens=tok, codes=tok[None].copy()))
        return out

    return tokenize
