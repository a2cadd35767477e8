"""The tokenizer facts the audio LMs depend on, from one place.

The LM side (``train lm``, ``score``, the training data) reads the codec name, sample rate, frame
rate and channels of its tokenizer only through ``tokenizer_spec``; nothing else in it spells a
rate or a codec name. The facts themselves live with the codec (``models.encodec_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from . import encodec_spec

DEFAULT_CODEC = "encodec_24khz"  # the tokenizer the audio LMs train and score on unless told otherwise


@dataclass(frozen=True)
class TokenizerSpec:
    codec: str
    sample_rate: int
    frame_rate: int
    channels: int

    @property
    def hop(self) -> int:
        """Samples per token frame."""
        return self.sample_rate // self.frame_rate


def tokenizer_spec(codec: str | None = None) -> TokenizerSpec:
    """The facts of ``codec`` (default: the LMs' tokenizer)."""
    name = codec or DEFAULT_CODEC
    if name not in encodec_spec.SAMPLE_RATES:
        raise UsageError(f"unknown tokenizer {name!r}; choose one of {', '.join(encodec_spec.SAMPLE_RATES)}")
    return TokenizerSpec(name, encodec_spec.SAMPLE_RATES[name], encodec_spec.FRAME_RATES[name],
                         encodec_spec.CHANNELS[name])
