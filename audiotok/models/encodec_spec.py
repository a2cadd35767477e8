"""What the EnCodec models are, without torch: rates, channels, bandwidths, segments, and the
per-file result of encoding. Commands validate options and describe outputs from here before
(or without) importing torch; ``models/codec.py`` holds the networks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ecdc import MODELS as ECDC_MODELS
from ..ecdc import segment_frames  # noqa: F401  (one formula for frames per segment, shared)
from ..errors import UsageError

BANDWIDTHS = {"encodec_24khz": (1.5, 3.0, 6.0, 12.0, 24.0), "encodec_48khz": (3.0, 6.0, 12.0, 24.0)}
SAMPLE_RATES = {"encodec_24khz": 24000, "encodec_48khz": 48000}
CHANNELS = {"encodec_24khz": 1, "encodec_48khz": 2}
FRAME_RATES = {"encodec_24khz": 75, "encodec_48khz": 150}
SEGMENT = {name: (m.segment_length, m.segment_stride) for name, m in ECDC_MODELS.items() if m.segment_length}


def check_bandwidth(model: str, bandwidth: float) -> float:
    if model not in BANDWIDTHS:
        raise UsageError(f"unknown model {model!r}; choose encodec_24khz or encodec_48khz")
    if float(bandwidth) not in BANDWIDTHS[model]:
        valid = ", ".join(f"{b:g}" for b in BANDWIDTHS[model])
        raise UsageError(f"--bandwidth {bandwidth:g} is not valid for {model}; choose one of {valid} (kbps)")
    return float(bandwidth)


def n_codebooks(model: str, bandwidth: float) -> int:
    return int(bandwidth * 1000 // (FRAME_RATES[model] * 10))


def segment_spans(model: str, n_samples: int) -> list[tuple[int, int]]:
    """(offset, length) of each segment the model encodes separately (one for 24 kHz)."""
    if model not in SEGMENT:
        return [(0, n_samples)]
    length, stride = SEGMENT[model]
    return [(off, min(length, n_samples - off)) for off in range(0, n_samples, stride)]


def check_device(device: str) -> str:
    """The spelling of ``--device`` (auto, cpu, cuda, cuda:N); whether the device exists is checked
    when the model is loaded (``models.codec.resolve_device``)."""
    d = device.strip().lower()
    if d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit()):
        return d
    raise UsageError(f"--device {device!r} is not valid; use auto, cpu, cuda or cuda:N")


@dataclass
class EncodedItem:
    codes: np.ndarray  # int16 [n_q, frames]
    scales: np.ndarray | None  # float32 [segments] (48 kHz)
    n_samples: int  # at the model's rate
