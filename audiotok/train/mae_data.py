"""Training data for ``train mae``: audio decoded at 24 kHz mono through the shared pipeline and
tokenised by the same EnCodec adapter ``encode`` uses, cached once (one ``.npz`` per input with
the int16 audio and the 8 codebooks at 6 kbps), or ``.npz`` folders written by ``encode`` (codes
from the file, audio from its recorded source).

The cache folder is named after the codec weights' hash, so it is never reused with another codec.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..codecs.encodec import WithAudio
from .inputs import FeatureCache
from .mae import MaeExample
from .mae_net import EC_CODEC, N_CODEBOOKS
from .mae_net import TARGET_BANDWIDTH as BANDWIDTH  # kbps: 8 codebooks, the targets of stage 1

SAMPLE_RATE = EC_CODEC.sample_rate


def codec_targets(codec, device):
    """The codec adapter that turns audio into the target codes: the one place the training data
    touches the codec interface (``run([(key, audio[1, N])])`` / ``flush()`` -> ``(key, item)``
    with ``item.codes [8, frames]``). ``codec``: a ``protocols.Codec`` (``CodecSpec.load``), or an
    ``encodec`` model from ``codecs.encodec.load_codec``."""
    if hasattr(codec, "encoder") and callable(codec.encoder) and hasattr(codec, "spec"):
        return codec.encoder(BANDWIDTH, device)
    from ..codecs.encodec import CodecEncoder

    return CodecEncoder(codec, BANDWIDTH, device)


class TargetFeatures(WithAudio):
    """Pipeline adapter: audio ``[1, N]`` -> ``(int16 audio [N], codes [8, frames])``."""

    def combine(self, audio, item):
        return to_int16(audio[0]), np.asarray(item.codes[:N_CODEBOOKS], dtype=np.int16)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)


def mae_cache(cache: Path) -> FeatureCache:
    """The cache job of ``train mae``: audio at 24 kHz mono -> (int16 audio, the 8 target codebooks)."""
    return FeatureCache(cache, SAMPLE_RATE, lambda it: {"audio": it[0], "codes": it[1]}, lambda it: it[1].shape[1])


def cache_dir(root: Path, codec_info: dict) -> Path:
    return root / f"{codec_info['codec']}-{BANDWIDTH:g}kbps-{(codec_info['codec_sha256'] or 'unknown')[:12]}"


def read_cached(path: Path, ident: str) -> MaeExample:
    with np.load(path) as z:
        return MaeExample(ident, z["audio"].astype(np.int16), z["codes"].astype(np.int16))


def read_encoded(path: str, ident: str, codec_info: dict | None = None) -> MaeExample:
    """An ``encode`` output (``.npz``): its first 8 codebooks, the audio from its source file, read
    and checked as the LM commands read them (``lm.inputs.read_encoded``: the codec, enough
    codebooks, the source audio's length and, with ``codec_info`` (``lm.checkpoints.tokenizer_info``
    of the codec that makes the targets), the codec weights: codes written with other weights are
    refused, as LM training refuses them)."""
    from ..lm.inputs import read_encoded as read_codes_input

    facts = {"codec": EC_CODEC.name, "bandwidth": BANDWIDTH, "sample_rate": SAMPLE_RATE, **(codec_info or {})}
    e = read_codes_input(path, facts, N_CODEBOOKS, need_audio=True)
    return MaeExample(ident, to_int16(e.audio[0]), e.codes)


def collect(inputs: list[str], exts, codec, codec_info: dict, cache_root: Path, device, batch_seconds: float,
            workers: int, quiet: bool, share, log, exclude: list[str] | None = None
            ) -> tuple[list[MaeExample], list[tuple[str, str]]]:
    """Examples from every input (``inputs.collect_examples``): audio through the pipeline into the
    cache, encode outputs read directly. Returns the examples and the ``(input, error)`` of every
    input that failed."""
    from .inputs import collect_examples

    return collect_examples(inputs, exts, mae_cache(cache_dir(cache_root, codec_info)),
                            lambda: TargetFeatures(codec_targets(codec, device)), read_cached,
                            functools.partial(read_encoded, codec_info=codec_info),
                            batch_seconds=batch_seconds, workers=workers, quiet=quiet, share=share, log=log,
                            exclude=exclude)


def codec_encoder_state(codec) -> dict:
    """The EnCodec encoder's weights (``encoder.*`` of the codec checkpoint) for the ec front end."""
    from ..weights import load_torch_file

    state = load_torch_file(codec.checkpoint_path, "EnCodec checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
