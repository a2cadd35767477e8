"""``encode`` outputs as model inputs (``score``: ``.npz``, ``.npy``, ``.ecdc``; ``train lm`` and
``train mae``: ``.npz``): the codes as written, checked against the tokenizer the LM reads, and the source
audio when a mel is needed (``.npz`` only: the others record no source).

Using the codes file gives the same numbers as tokenising the audio again, because the first ``k``
codebooks of a residual quantiser do not depend on how many more were asked for and the codec's
stream shape depends only on the file's length. What must match is checked here: the codec, its
weights (``settings.weights_sha256`` against the tokenizer's ``codec_sha256``, when both are
known), enough codebooks, and the source audio's length. No torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class EncodedInput:
    codes: np.ndarray  # int16 [n_q, T]: the codebooks the models read (at least)
    n_samples: int  # length at the tokenizer's sample rate
    audio: np.ndarray | None  # float32 [1, n_samples] source audio (mono, tokenizer rate), when asked for


def is_codes_file(path: str) -> bool:
    """Whether an LM input is an ``encode`` output (``.npz``, ``.npy``, ``.ecdc``) rather than audio."""
    return str(path).lower().endswith((".npz", ".npy", ".ecdc"))


def _source_audio(path: str, stored: str | None, n_samples: int, sample_rate: int) -> np.ndarray:
    from ..formats.audio import read

    if not stored:
        raise InputError("records no source audio, which the mel (whisper-gpt, --plot) is computed from; "
                         "give the audio itself or use a token-only model")
    if not os.path.isfile(stored):
        raise InputError(f"names its source audio {stored!r}, which is not there (a relative name is taken from "
                         "the current folder); run from the folder encode ran in, or give the audio itself")
    try:
        audio, _ = read(stored, sample_rate=sample_rate, channels=1)
    except InputError as exc:
        raise InputError(f"has a source audio {stored!r} that cannot be read: it {exc}") from None
    if audio.shape[1] != n_samples:
        raise InputError(f"holds codes of {n_samples} samples but its source audio {stored!r} has {audio.shape[1]} "
                         "at that rate (changed since it was encoded, or encoded from a segment); give the audio itself")
    return audio


def read_encoded(path: str, tokenizer: dict, need_codebooks: int, need_audio: bool) -> EncodedInput:
    """Read an ``encode`` ``.npz`` for an LM whose tokenizer is ``tokenizer`` (``models.lm.tokenizer_info``)
    and which reads codebooks ``0 .. need_codebooks - 1``; ``InputError`` (one sentence) when it does not fit."""
    from ..formats.codes import read_codes, read_settings

    c = read_codes(path)
    if c.model != tokenizer["codec"]:
        raise InputError(f"holds {c.model} codes but the model reads {tokenizer['codec']} tokens")
    have = int(c.item.codes.shape[0])
    if have < need_codebooks:
        raise InputError(f"holds {have} codebook(s) but the model reads {need_codebooks} "
                         f"(--bandwidth {tokenizer['bandwidth']:g}); encode at that bandwidth or more")
    settings = read_settings(path) or {}
    stored, asked = settings.get("weights_sha256"), tokenizer.get("codec_sha256")
    if stored and asked and stored != asked:
        raise InputError(f"was encoded with other codec weights (sha256 {stored}) than the model's tokenizer "
                         f"({asked}); encode again with those weights, or give the audio itself")
    audio = None
    if need_audio:
        src = None
        if str(path).lower().endswith(".npz"):  # .npy / .ecdc record no source audio
            with np.load(path, allow_pickle=False) as z:
                src = str(z["source"]) if "source" in z.files else None
        audio = _source_audio(path, src, c.item.n_samples, int(tokenizer["sample_rate"]))
    return EncodedInput(c.item.codes[:need_codebooks].astype(np.int16), int(c.item.n_samples), audio)
