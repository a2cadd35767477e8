"""The tokenizer facts the audio LMs depend on, from one place.

The LM side (``train lm``, ``score``, the training data) reads the codec name, sample rate, frame
rate, hop, channels and codebook size of its tokenizer only through ``tokenizer_spec``; nothing else
in it spells a rate or a codec name. The facts themselves live in the model registry
(``audiotok.registry``), so any registered codec can tokenise for the LMs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import DEFAULT_CODEC, get_codec  # noqa: F401  (DEFAULT_CODEC: the LMs' default tokenizer)


@dataclass(frozen=True)
class TokenizerSpec:
    codec: str
    sample_rate: int
    frame_rate: float  # an int when whole (75), so records and checkpoints keep writing 75
    channels: int
    codebook_size: int  # the LM vocabulary (BOS is the id one past the codes)

    @property
    def hop(self) -> int | None:
        """Samples per token frame (None when the frame rate does not divide the sample rate)."""
        hop = self.sample_rate / self.frame_rate
        return int(hop) if hop == int(hop) else None


def whole(value: float) -> float:
    """``value`` as an int when it is whole (75.0 -> 75), else the float (12.5)."""
    return int(value) if float(value).is_integer() else float(value)


def tokenizer_spec(codec: str | None = None, option: str = "tokenizer") -> TokenizerSpec:
    """The facts of ``codec`` (default: the LMs' default tokenizer); ``option`` names the choice in
    the error for an unknown codec."""
    spec = get_codec(codec or DEFAULT_CODEC, option)
    return TokenizerSpec(spec.name, spec.sample_rate, whole(spec.frame_rate), spec.channels, spec.codebook_size)


def mel_hop(tokenizer: dict) -> tuple[int, int]:
    """``(sample_rate, hop)`` of the Whisper-GPT mel for a tokenizer record (``tokenizer_info``):
    one mel frame per token frame; a ``UsageError`` for a codec whose frames are not whole samples."""
    from ..errors import UsageError

    sr = int(tokenizer["sample_rate"])
    hop = sr / float(tokenizer["frame_rate"])
    if hop != int(hop):
        raise UsageError(f"{tokenizer['codec']} frames are {hop:g} samples long, so no mel frame aligns with each "
                         "token; audiotok's LMs need a codec whose frames are whole samples")
    return sr, int(hop)
