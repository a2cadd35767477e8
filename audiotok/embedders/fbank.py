"""EnCodecMAE's mel256 front end: the Kaldi-compatible log mel filterbank.

A pure function of a waveform tensor; reads no files.
"""

from __future__ import annotations

import functools

import torch

# --- Kaldi-compatible log mel filterbank (EnCodecMAE mel256, docs/references.md, EnCodecMAE) ---------------
FBANK_SAMPLE_RATE = 24000
FBANK_BINS = 256
FBANK_FRAME_MS = 26.56  # 637 samples at 24 kHz
FBANK_SHIFT_MS = 13.28  # 318 samples at 24 kHz
FBANK_NORM = (-6.12, 4.82)  # (mean, std) the models were trained with


def fbank_geometry(sample_rate: int = FBANK_SAMPLE_RATE, frame_ms: float = FBANK_FRAME_MS,
                   shift_ms: float = FBANK_SHIFT_MS) -> tuple[int, int, int]:
    """(window, shift, fft size) in samples, rounded as Kaldi rounds them."""
    window = int(sample_rate * frame_ms * 0.001)
    shift = int(sample_rate * shift_ms * 0.001)
    n_fft = 1 << (window - 1).bit_length()
    return window, shift, n_fft


def fbank_frames(n_samples: int, window: int = 637, shift: int = 318) -> int:
    """Frames of a ``snip_edges`` fbank: only frames that fit entirely (0 if the input is shorter)."""
    return 0 if n_samples < window else 1 + (n_samples - window) // shift


@functools.lru_cache(maxsize=8)
def _kaldi_mel_banks(n_bins: int, n_fft: int, sample_rate: float, low: float, high: float) -> torch.Tensor:
    """Kaldi's triangular filters on the mel scale 1127 ln(1 + f/700): ``[n_fft // 2 + 1, n_bins]``."""
    import math

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    nyquist = 0.5 * sample_rate
    high = high if high > 0 else high + nyquist
    lo_mel, hi_mel = mel(low), mel(high)
    step = (hi_mel - lo_mel) / (n_bins + 1)
    k = torch.arange(n_bins).unsqueeze(1)
    left, centre, right = lo_mel + k * step, lo_mel + (k + 1.0) * step, lo_mel + (k + 2.0) * step
    freqs = (sample_rate / n_fft) * torch.arange(n_fft // 2)
    m = (1127.0 * (1.0 + freqs / 700.0).log()).unsqueeze(0)
    rising = (m - left) / (centre - left)
    falling = (right - m) / (right - centre)
    banks = torch.clamp_min(torch.minimum(rising, falling), 0.0)  # [n_bins, n_fft // 2]
    banks = torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets no weight
    return banks.T.contiguous()


def kaldi_fbank(wave: torch.Tensor, n_bins: int = FBANK_BINS, sample_rate: int = FBANK_SAMPLE_RATE,
                frame_ms: float = FBANK_FRAME_MS, shift_ms: float = FBANK_SHIFT_MS,
                low_freq: float = 20.0, high_freq: float = 0.0, preemphasis: float = 0.97) -> torch.Tensor:
    """Log mel filterbank as ``torchaudio.compliance.kaldi.fbank`` computes it with dither 0,
    Hanning window, per-frame DC removal, pre-emphasis, power spectrum, ``snip_edges`` and no
    energy term, for a batch of equal-length waveforms: ``[B, N]`` -> ``[B, T, n_bins]``.

    The waveform is used as given (the [-1, 1] scale, not int16)."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    window, shift, n_fft = fbank_geometry(sample_rate, frame_ms, shift_ms)
    b, n = x.shape
    t = fbank_frames(n, window, shift)
    if t == 0:
        return x.new_zeros(b, 0, n_bins)
    frames = x.unfold(1, window, shift)  # [B, T, window] (a view)
    frames = frames - frames.mean(dim=2, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
    frames = frames - preemphasis * previous
    frames = frames * torch.hann_window(window, periodic=False, dtype=x.dtype, device=x.device)
    frames = torch.nn.functional.pad(frames, (0, n_fft - window))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [B, T, n_fft // 2 + 1]
    banks = _kaldi_mel_banks(n_bins, n_fft, float(sample_rate), low_freq, high_freq).to(x.device)
    energies = torch.matmul(power, banks)
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()
