"""Whisper-GPT's front end: the causal log-mel, frame-aligned with the codec's frames.

A pure function of a waveform tensor; reads no files.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

# --- causal log-mel (Whisper-GPT, docs/references.md, Whisper-GPT) -----------------------------------------
MEL_SAMPLE_RATE = 24000
MEL_N_FFT = 1024
MEL_HOP = 320
MEL_BINS = 80
MEL_FMAX = 12000.0
MEL_FLOOR = 1e-10
SILENCE_LOG_MEL = float(np.log10(MEL_FLOOR))  # the log-mel value of an all-zero slice


@functools.lru_cache(maxsize=4)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmax: float) -> torch.Tensor:
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax)
    return torch.from_numpy(fb.astype(np.float32))  # [n_mels, n_fft // 2 + 1]


def causal_frames(n_samples: int, hop: int = MEL_HOP) -> int:
    """Frames of a causal front-end (and of EnCodec 24 kHz) for ``n_samples``: ceil(N / hop)."""
    return -(-int(n_samples) // hop)


def causal_log_mel(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Causal, non-centred log10 power mel of 24 kHz audio: ``[..., N]`` -> ``[..., T, 80]``.

    The signal is right-padded with zeros to a multiple of the hop (only the last, partial frame
    sees them), left-padded with ``n_fft - hop`` zeros, and cut into Hann-windowed frames of 1024
    samples every 320, so frame ``t`` ends exactly where EnCodec's frame ``t`` ends
    (``(t + 1) * 320``) and ``T = ceil(N / 320)``. No normalisation here: the model applies the
    fixed training-set affine stored in its checkpoint.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    n = x.shape[-1]
    frames = causal_frames(n)
    lead = x.shape[:-1]
    x = x.reshape(-1, n)
    x = torch.nn.functional.pad(x, (MEL_N_FFT - MEL_HOP, frames * MEL_HOP - n))
    window = torch.hann_window(MEL_N_FFT, device=x.device)
    if frames == 0:
        return x.new_zeros(*lead, 0, MEL_BINS)
    spec = torch.stft(x, MEL_N_FFT, hop_length=MEL_HOP, win_length=MEL_N_FFT, window=window,
                      center=False, return_complex=True)  # [B, F, T]
    power = spec.real.square() + spec.imag.square()
    fb = _mel_filters(MEL_SAMPLE_RATE, MEL_N_FFT, MEL_BINS, MEL_FMAX).to(x.device)
    mel = torch.einsum("mf,bft->btm", fb, power)
    return torch.log10(mel.clamp_min(MEL_FLOOR)).reshape(*lead, frames, MEL_BINS)
