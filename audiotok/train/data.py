"""Training data for ``train lm``: audio tokenised and mel-featurised through the shared pipeline
(cached, one ``.npz`` per input mirroring the input tree), or ``.npz`` folders written by ``encode``.

The cache lives in a folder named after the tokenizer (codec weights hash and bandwidth), so a
cache is never reused with another tokenizer; reruns and ``--resume`` skip cached inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lm.tokenizer import tokenizer_spec
from .inputs import FeatureCache
from .lm import Example


def lm_cache(cache: Path, codec: str | None = None) -> FeatureCache:
    """The cache job of ``train lm``: audio at the tokenizer's rate (mono) -> (tokens, codes, mel,
    and the codec latent when the adapter keeps it)."""
    return FeatureCache(cache, tokenizer_spec(codec).sample_rate, _lm_arrays, lambda it: it.codes.shape[1])


def _lm_arrays(it) -> dict:
    extra = {} if it.latent is None else {"latent": it.latent.astype(np.float32)}
    return dict(tokens=it.codes[0].astype(np.int16), codes=it.codes.astype(np.int16), mel=it.mel.astype(np.float32),
                n_samples=np.array(it.n_samples), **extra)


def cache_dir(root: Path, tokenizer: dict) -> Path:
    weights = tokenizer.get("codec_sha256") or "noweights"  # a codec whose implementation holds its weights
    return root / f"{tokenizer['codec']}-{tokenizer['bandwidth']:g}kbps-{weights[:12]}"


def read_cached(path: Path, ident: str, tokenizer: dict) -> Example:
    """A cached input: coarse tokens, every codebook (older caches hold codebook 0 only; the
    information control then says so), the raw mel and, when it was kept, the codec latent."""
    with np.load(path) as z:
        n = int(z["n_samples"])
        codes = z["codes"].astype(np.int16) if "codes" in z.files else None
        latent = z["latent"].astype(np.float32) if "latent" in z.files else None
        return Example(ident, z["tokens"].astype(np.int16), z["mel"].astype(np.float32), n / tokenizer["sample_rate"],
                       codes, latent)


def read_encoded(path: str, need_mel: bool, tokenizer: dict) -> Example:
    """An ``encode`` output (``.npz`` with codes and metadata) of any bandwidth: the coarse models
    use codebook 0, the information control the tokenizer's codebooks (the file must hold at least
    those). The mel comes from the source audio recorded in the file (``lm_inputs.read_encoded``)."""
    from ..lm.inputs import read_encoded as read_lm_input
    from ..lm.mel import causal_log_mel
    from ..lm.tokenizer import mel_hop

    e = read_lm_input(path, tokenizer, len(tokenizer["codebooks"]), need_mel)
    mel = causal_log_mel(e.audio[0], *mel_hop(tokenizer)).numpy() if e.audio is not None else None
    return Example(path, e.codes[0], mel, e.n_samples / tokenizer["sample_rate"], e.codes)
