"""Small random-weight checkpoints in the official layouts, for tests and benchmarks.

Nothing here downloads. A random EnCodec from ``pretrained=False`` has all-zero codebooks (every
code would be 0), so ``random_encodec`` fills each residual codebook with vectors sampled from the
residuals of real-ish latents: codes then vary the way they do with trained weights.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def synthetic_audio(seconds: float, sample_rate: int = 24000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Deterministic test signal ``[channels, N]`` float32: a chirp, a few harmonics and noise bursts."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    f0, f1 = 60.0 + 40 * rng.random(), 2000.0 + 3000 * rng.random()
    dur = max(seconds, 1e-3)
    phase = 2 * np.pi * f0 * dur / np.log(f1 / f0) * (np.exp(t / dur * np.log(f1 / f0)) - 1)
    x = 0.3 * np.sin(phase)
    fund = 110 * (1 + rng.random())
    for k in range(1, 5):
        x += 0.1 / k * np.sin(2 * np.pi * fund * k * t + rng.random() * 6) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    env = (np.sin(2 * np.pi * (1.5 + rng.random()) * t) > 0.3).astype(np.float64)
    x += 0.08 * env * rng.standard_normal(n)
    out = np.stack([np.roll(x, 37 * c) * (1 - 0.1 * c) for c in range(channels)])
    return (0.8 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


def random_encodec(model: str = "encodec_24khz", seed: int = 0):
    """A random-weight ``encodec.EncodecModel`` (eval mode) with filled codebooks."""
    import encodec
    import torch

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model == "encodec_24khz":
            m = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
        elif model == "encodec_48khz":
            m = encodec.EncodecModel.encodec_model_48khz(pretrained=False)
        else:
            raise ValueError(model)
    m.name = model  # pretrained=False names it "unset"; the official CLI needs the real name
    sr, ch = m.sample_rate, m.channels
    audio = np.concatenate(
        [synthetic_audio(2.0, sr, seed=seed * 100 + i, channels=ch) for i in range(4)], axis=-1
    )
    x = torch.from_numpy(audio)[None]
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.inference_mode():
        if m.normalize:
            x = x / (1e-8 + x.mean(1, keepdim=True).pow(2).mean(2, keepdim=True).sqrt())
        latents = m.encoder(x)[0].T.contiguous()  # [T, 128]
    residual = latents.clone()
    for layer in m.quantizer.vq.layers:
        cb = layer._codebook
        idx = torch.randint(0, residual.shape[0], (cb.codebook_size,), generator=gen)
        noise = torch.randn(cb.codebook_size, residual.shape[1], generator=gen)
        embed = residual[idx] + 0.05 * residual.std() * noise
        cb.embed.data.copy_(embed)
        cb.embed_avg.data.copy_(embed)
        cb.inited.data.fill_(1.0)
        with torch.inference_mode():
            codes = cb.encode(residual)
            residual = residual - cb.decode(codes)
    return m


def save_encodec_checkpoint(model, directory: str | os.PathLike, filename: str | None = None) -> Path:
    """Save ``model.state_dict()`` as the official checkpoint would be saved (a plain state dict).

    With the default file name (the official one) the file can stand in the torch hub cache; the
    name's hash prefix is not the file's, which is fine there (hashes are checked on download only)."""
    import torch

    from .weights import ENCODEC_CHECKPOINTS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or ENCODEC_CHECKPOINTS[model.name])
    torch.save(model.state_dict(), path)
    return path


def random_encodec_lm(n_q: int = 32, seed: int = 0):
    """A random-weight EnCodec token LM in the official layout (``encodec.model.LMModel(n_q, 1024,
    num_layers=5, dim=200, past_context=262)``), eval mode."""
    import torch

    from .models.encodec_lm import build_lm

    torch.manual_seed(seed)
    return build_lm(n_q).eval()


def save_encodec_lm_checkpoint(lm, directory: str | os.PathLike, filename: str | None = None) -> Path:
    """Save ``lm.state_dict()`` as the official ``encodec_lm_24khz`` checkpoint is saved (a plain state dict)."""
    import torch

    from .weights import ENCODEC_CHECKPOINTS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or ENCODEC_CHECKPOINTS["encodec_lm_24khz"])
    torch.save(lm.state_dict(), path)
    return path


# --- EnCodecMAE checkpoints in the official layouts ------------------------------------------------
