"""The EnCodec facts by model name, as tables: a view of ``audiotok.registry`` (the one place they
are defined) for code that indexes by name. New code should use ``registry.get_codec(name)``."""

from __future__ import annotations

from ..codes import EncodedItem  # noqa: F401  (re-exported)
from ..devices import check_device  # noqa: F401  (re-exported)
from ..registry import CODECS, get_codec

_ENCODEC = [s for s in CODECS.values() if s.implementation == "audiotok.models.codec:load_encodec"]
BANDWIDTHS = {s.name: s.bandwidths for s in _ENCODEC}
SAMPLE_RATES = {s.name: s.sample_rate for s in _ENCODEC}
CHANNELS = {s.name: s.channels for s in _ENCODEC}
FRAME_RATES = {s.name: s.frame_rate for s in _ENCODEC}
SEGMENT = {s.name: (s.segment_length, s.segment_stride) for s in _ENCODEC if s.segment_length}


def check_bandwidth(model: str, bandwidth: float) -> float:
    return get_codec(model).check_bandwidth(bandwidth)


def n_codebooks(model: str, bandwidth: float) -> int:
    return get_codec(model).n_codebooks(bandwidth)


def segment_frames(model: str, n_samples: int) -> list[int]:
    return get_codec(model).segment_frames(n_samples)


def segment_spans(model: str, n_samples: int) -> list[tuple[int, int]]:
    return get_codec(model).segment_spans(n_samples)
