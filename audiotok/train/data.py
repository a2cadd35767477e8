"""Training data for ``train lm``: audio tokenised and mel-featurised through the shared pipeline
(cached, one ``.npz`` per input mirroring the input tree), or ``.npz`` folders written by ``encode``.

The cache lives in a folder named after the tokenizer (codec weights hash and bandwidth), so a
cache is never reused with another tokenizer; reruns and ``--resume`` skip cached inputs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..engine.sources import Source
from ..lm.tokenizer import tokenizer_spec
from .lm import Example


class CacheJob:
    """Pipeline job: decode audio at the tokenizer's rate (mono), write (codes, mel) to the cache."""

    def __init__(self, cache: Path, codec: str | None = None):
        from ..engine.sinks import OutputTree
        from ..formats import audio

        self.tree = OutputTree(cache, ".npz")
        self.probe = audio.probe
        self.load = functools.partial(audio.read, sample_rate=tokenizer_spec(codec).sample_rate, channels=1)

    def target(self, source: Source) -> Path:
        return self.tree.target(source)

    def is_done(self, source: Source) -> bool:
        return self.tree.done(source)

    def finish(self, source: Source, info, item) -> dict:
        def write(f, it):
            extra = {} if it.latent is None else {"latent": it.latent.astype(np.float32)}
            np.savez(f, tokens=it.codes[0].astype(np.int16), codes=it.codes.astype(np.int16), mel=it.mel.astype(np.float32),
                     n_samples=np.array(it.n_samples), source=np.array(source.display), **extra)

        return {"output": str(self.tree.write(source, write, item)), "frames": int(item.codes.shape[1])}


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
