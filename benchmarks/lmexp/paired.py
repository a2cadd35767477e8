"""Per-file paired differences with bootstrap intervals (token-weighted, resampling files, or
files and training seeds together)."""

from __future__ import annotations

import numpy as np


def paired_difference(nats_a: np.ndarray, nats_b: np.ndarray, tokens: np.ndarray, n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """NLL(a) - NLL(b) over the same files: ``nats_*`` are per-file total nats, ``tokens`` per-file
    counts. Returns the token-weighted difference (nats/token), its relative size (% of b's NLL)
    and a percentile bootstrap interval over files."""
    a, b, n = (np.asarray(x, np.float64) for x in (nats_a, nats_b, tokens))
    diff = (a.sum() - b.sum()) / n.sum()
    rel = diff / (b.sum() / n.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), (n_boot, len(n)))
    da = a[idx].sum(1)
    db = b[idx].sum(1)
    dn = n[idx].sum(1)
    boot = (da - db) / dn
    boot_rel = (da - db) / db
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {"diff": float(diff), "rel": float(rel), "low": float(np.quantile(boot, lo)),
            "high": float(np.quantile(boot, hi)), "rel_low": float(np.quantile(boot_rel, lo)),
            "rel_high": float(np.quantile(boot_rel, hi)), "files": int(len(n)), "n_boot": n_boot}


def paired_difference_seeds(nats_a: np.ndarray, nats_b: np.ndarray, tokens: np.ndarray, n_boot: int = 2000,
                            seed: int = 0, level: float = 0.95) -> dict:
    """NLL(a) - NLL(b) with seeds and files resampled together: ``nats_a [S_a, F]`` and
    ``nats_b [S_b, F]`` are per-seed, per-file total nats (one row for a deterministic model such
    as a count baseline), ``tokens [F]``. Each replicate draws S_a seeds of a and S_b seeds of b
    (with replacement, independently: seeds of different arms are not paired) and one set of files
    (with replacement, shared by a and b: files are paired); its difference is that of the
    seed-averaged nats over the drawn files. The point estimate averages every seed over every file.
    Returns the fields of ``paired_difference`` plus the seed counts."""
    a, b = (np.atleast_2d(np.asarray(x, np.float64)) for x in (nats_a, nats_b))
    n = np.asarray(tokens, np.float64)
    ma, mb = a.mean(0), b.mean(0)
    diff = (ma.sum() - mb.sum()) / n.sum()
    rel = diff / (mb.sum() / n.sum())
    rng = np.random.default_rng(seed)
    F = len(n)
    files = rng.integers(0, F, (n_boot, F))
    sa = rng.integers(0, a.shape[0], (n_boot, a.shape[0]))
    sb = rng.integers(0, b.shape[0], (n_boot, b.shape[0]))
    # per replicate: the drawn seeds' mean nats per file, summed over the drawn files
    ra = np.stack([a[sa[i]].mean(0)[files[i]].sum() for i in range(n_boot)])
    rb = np.stack([b[sb[i]].mean(0)[files[i]].sum() for i in range(n_boot)])
    dn = n[files].sum(1)
    boot, boot_rel = (ra - rb) / dn, (ra - rb) / rb
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {"diff": float(diff), "rel": float(rel), "low": float(np.quantile(boot, lo)),
            "high": float(np.quantile(boot, hi)), "rel_low": float(np.quantile(boot_rel, lo)),
            "rel_high": float(np.quantile(boot_rel, hi)), "files": int(F), "seeds_a": int(a.shape[0]),
            "seeds_b": int(b.shape[0]), "n_boot": n_boot}
