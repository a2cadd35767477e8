"""Per-file paired differences with bootstrap intervals (token-weighted, resampling files)."""

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
