"""The tokenizer facts the audio LMs depend on, from one place.

The LM side (``train lm``, ``score``, the training data) reads the codec name, sample rate, frame
rate and channels of its tokenizer only through ``tokenizer_spec``; nothing else in it spells a
rate or a codec name. The facts themselves live in the model registry (``audiotok.registry``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import DEFAULT_CODEC, get_codec  # noqa: F401  (DEFAULT_CODEC: the LMs' tokenizer)


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
    spec = get_codec(codec or DEFAULT_CODEC, "tokenizer")
    return TokenizerSpec(spec.name, spec.sample_rate, int(spec.frame_rate), spec.channels)
