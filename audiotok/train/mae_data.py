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
from ..engine.sources import Source
from ..errors import InputError
from .mae import HOP, MaeExample
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


class CacheJob:
    """Pipeline job: decode at 24 kHz mono, write (audio, codes) to the cache."""

    def __init__(self, cache: Path):
        from ..engine.sinks import OutputTree
        from ..formats import audio

        self.tree = OutputTree(cache, ".npz")
        self.probe = audio.probe
        self.load = functools.partial(audio.read, sample_rate=SAMPLE_RATE, channels=1)

    def target(self, source: Source) -> Path:
        return self.tree.target(source)

    def is_done(self, source: Source) -> bool:
        return self.tree.done(source)

    def finish(self, source: Source, info, item) -> dict:
        audio, codes = item

        def write(f, _):
            np.savez(f, audio=audio, codes=codes, source=np.array(source.display))

        return {"output": str(self.tree.write(source, write, item)), "frames": int(codes.shape[1])}


def cache_dir(root: Path, codec_info: dict) -> Path:
    return root / f"{codec_info['codec']}-{BANDWIDTH:g}kbps-{(codec_info['codec_sha256'] or 'unknown')[:12]}"


def read_cached(path: Path, ident: str) -> MaeExample:
    with np.load(path) as z:
        return MaeExample(ident, z["audio"].astype(np.int16), z["codes"].astype(np.int16))


def read_encoded(path: str, ident: str, codec_info: dict | None = None) -> MaeExample:
    """An ``encode`` output (``.npz``): its first 8 codebooks, the audio from its source file.

    With ``codec_info`` (``lm.checkpoints.tokenizer_info`` of the codec that makes the targets), codes
    written with other codec weights are refused, as LM training refuses them."""
    from ..formats.audio import read
    from ..formats.codes import read_codes, read_settings

    c = read_codes(path)
    if c.model != EC_CODEC.name or c.item.codes.shape[0] < N_CODEBOOKS:
        shown = f" at {c.bandwidth:g} kbps" if c.bandwidth is not None else ""
        raise InputError(f"holds {c.model} codes{shown}; EnCodecMAE targets are {EC_CODEC.name} codes at "
                         f"{BANDWIDTH:g} kbps or more (encode the audio with -m {EC_CODEC.name} -b {BANDWIDTH:g}, "
                         "or train on the audio itself)")
    stored = (read_settings(path) or {}).get("weights_sha256")
    wanted = (codec_info or {}).get("codec_sha256")
    if stored and wanted and stored != wanted:
        raise InputError(f"was encoded with other codec weights (sha256 {stored}) than the training targets' codec "
                         f"({wanted}); encode again with --codec-checkpoint's weights, or train on the audio itself")
    with np.load(path, allow_pickle=False) as z:
        src = str(z["source"]) if "source" in z.files else None
    if not src or not Path(src).is_file():
        raise InputError(f"has no readable source audio ({src}); train on the audio itself")
    audio, _ = read(src, sample_rate=SAMPLE_RATE, channels=1)
    codes = c.item.codes[:N_CODEBOOKS].astype(np.int16)
    if codes.shape[1] != -(-audio.shape[1] // HOP):
        raise InputError(f"has {codes.shape[1]} frames but its source audio gives {-(-audio.shape[1] // HOP)}")
    return MaeExample(ident, to_int16(audio[0]), codes)


def collect(inputs: list[str], exts, codec, codec_info: dict, cache_root: Path, device, batch_seconds: float,
            workers: int, quiet: bool, share, log, exclude: list[str] | None = None
            ) -> tuple[list[MaeExample], list[tuple[str, str]]]:
    """Examples from every input (``inputs.collect_examples``): audio through the pipeline into the
    cache, encode outputs read directly. Returns the examples and the ``(input, error)`` of every
    input that failed."""
    from .inputs import collect_examples

    return collect_examples(inputs, exts, CacheJob(cache_dir(cache_root, codec_info)),
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
