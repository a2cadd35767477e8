"""Whisper-GPT's front end: the causal log-mel, frame-aligned with the codec's frames.

A pure function of a waveform tensor; reads no files.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..registry import DEFAULT_CODEC, get_codec

# --- causal log-mel (Whisper-GPT, docs/references.md, Whisper-GPT) -----------------------------------------
# at the tokenizer's sample rate with one frame per token frame (its hop); the defaults are the
# default tokenizer's (EnCodec 24 kHz: 24000 Hz, hop 320)
MEL_SAMPLE_RATE = get_codec(DEFAULT_CODEC).sample_rate
MEL_HOP = get_codec(DEFAULT_CODEC).hop
MEL_N_FFT = 1024  # the window; a longer hop gets the next power of two that covers it (mel_n_fft)
MEL_BINS = 80
MEL_FMAX = 12000.0  # or the Nyquist frequency of a lower sample rate
MEL_FLOOR = 1e-10
SILENCE_LOG_MEL = float(np.log10(MEL_FLOOR))  # the log-mel value of an all-zero slice


@functools.lru_cache(maxsize=4)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmax: float) -> torch.Tensor:
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax)
    return torch.from_numpy(fb.astype(np.float32))  # [n_mels, n_fft // 2 + 1]


def causal_frames(n_samples: int, hop: int = MEL_HOP) -> int:
    """Frames of a causal front-end (and of a causal codec with that hop) for ``n_samples``: ceil(N / hop)."""
    return -(-int(n_samples) // hop)


def mel_n_fft(hop: int) -> int:
    """The STFT window for ``hop``: 1024 samples, or the next power of two when the hop is longer
    (a frame must cover its hop: Mimi's 1920-sample frames get 2048)."""
    n = MEL_N_FFT
    while n < hop:
        n *= 2
    return n


def causal_log_mel(wave: torch.Tensor | np.ndarray, sample_rate: int = MEL_SAMPLE_RATE,
                   hop: int = MEL_HOP) -> torch.Tensor:
    """Causal, non-centred log10 power mel of audio at ``sample_rate``: ``[..., N]`` -> ``[..., T, 80]``.

    The signal is right-padded with zeros to a multiple of the hop (only the last, partial frame
    sees them), left-padded with ``n_fft - hop`` zeros, and cut into Hann-windowed frames of
    ``n_fft`` samples (``mel_n_fft``: 1024 for hops up to 1024) every ``hop``, so frame ``t`` ends
    exactly where the codec's frame ``t`` ends (``(t + 1) * hop``) and ``T = ceil(N / hop)``. 80
    bins up to 12 kHz (or the Nyquist frequency, below 24 kHz). For the default tokenizer (EnCodec
    24 kHz): 24000 Hz, hop 320, window 1024. No normalisation here: the model applies the fixed
    training-set affine stored in its checkpoint.
    """
    n_fft = mel_n_fft(hop)
    x = torch.as_tensor(wave, dtype=torch.float32)
    n = x.shape[-1]
    frames = causal_frames(n, hop)
    lead = x.shape[:-1]
    x = x.reshape(-1, n)
    x = torch.nn.functional.pad(x, (n_fft - hop, frames * hop - n))
    window = torch.hann_window(n_fft, device=x.device)
    if frames == 0:
        return x.new_zeros(*lead, 0, MEL_BINS)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=False, return_complex=True)  # [B, F, T]
    power = spec.real.square() + spec.imag.square()
    fb = _mel_filters(int(sample_rate), n_fft, MEL_BINS, min(MEL_FMAX, sample_rate / 2)).to(x.device)
    mel = torch.einsum("mf,bft->btm", fb, power)
    return torch.log10(mel.clamp_min(MEL_FLOOR)).reshape(*lead, frames, MEL_BINS)
