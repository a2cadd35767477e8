"""Every model audiotok knows, by name: what it is (rates, channels, frames, bandwidths,
codebooks, weights) without importing torch, and where its implementation lives.

Commands, option checks and help texts, the code file formats, the weights resolver, ``train lm``
and ``score`` read these facts from here and nowhere else. A new codec is one ``CodecSpec`` and
one implementation of the ``audiotok.protocols.Codec`` shape::

    from audiotok.registry import CodecSpec, register_codec

    register_codec(CodecSpec(name="mycodec", sample_rate=16000, channels=1, frame_rate=50,
                             bandwidths=(0.5,), codebook_size=1024, n_q=1,
                             implementation="mypackage.codec:load"))

``implementation`` is ``"module:function"``; the function takes ``(checkpoint, device)`` and
returns a ``Codec``. It is imported only when the model is used, so the registry stays light.
``AUDIOTOK_PLUGINS`` (comma-separated module names) are imported by the CLI at start-up, so a
codec registered in a module of your own is available to ``audiotok encode -m NAME`` too.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class CodecSpec:
    """What a codec is. ``frame_rate`` frames per second, each frame ``n_codebooks(bandwidth)``
    codes of ``log2(codebook_size)`` bits; audio is cut into segments of ``segment_length``
    samples every ``segment_stride`` (None: the whole file is one segment); ``normalize``: each
    segment stores a float32 scale."""

    name: str
    sample_rate: int
    channels: int
    frame_rate: float
    bandwidths: tuple[float, ...]
    codebook_size: int
    n_q: int  # codebooks at the highest bandwidth
    implementation: str | Callable[..., Any]
    segment_length: int | None = None
    segment_stride: int | None = None
    normalize: bool = False
    checkpoint: str | None = None  # official weights file name (torch hub cache, see weights.py)
    weights_url: str | None = None  # where ``checkpoint`` is downloaded from (None: no download)
    hub_repo: str | None = None  # or: the Hugging Face repo holding ``checkpoint`` (its cache, see weights.py)
    default_bandwidth: float | None = None  # when none is asked for (None: the highest)
    lm_name: str | None = None  # the entropy-coding LM's weights (key of ENCODEC_CHECKPOINTS)
    ecdc: bool = False  # the official `encodec` CLI's .ecdc format can hold its codes
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def hop(self) -> int | None:
        """Samples per frame when whole (None for a fractional hop)."""
        hop = self.sample_rate / self.frame_rate
        return int(hop) if hop == int(hop) else None

    def n_codebooks(self, bandwidth: float) -> int:
        """Codebooks at ``bandwidth`` kbps, with float slack: 0.4125 kbps of 137.5 bps codebooks is 3,
        also when read back from a file as float32."""
        return int(math.floor(bandwidth * 1000 / (self.frame_rate * self.bits_per_code) + 1e-6))

    @property
    def bandwidth_default(self) -> float:
        """The bandwidth used when none is asked for."""
        return self.default_bandwidth if self.default_bandwidth is not None else max(self.bandwidths)

    @property
    def codebook_counts(self) -> list[int]:
        """The codebook counts the bandwidths give (``--n-q`` choices)."""
        return [self.n_codebooks(b) for b in self.bandwidths]

    def choose_bandwidth(self, bandwidth: float | None = None, n_q: int | None = None,
                         option: str = "--bandwidth") -> float:
        """The bandwidth of a run from ``--bandwidth`` and/or ``--n-q`` (a codebook count), else the
        default; a ``UsageError`` naming the choices when neither fits or they disagree."""
        if n_q is not None:
            by_count = self.bandwidth_for(int(n_q))
            if by_count is None:
                counts = ", ".join(map(str, self.codebook_counts))
                raise UsageError(f"--n-q {n_q} is not valid for {self.name}; choose one of {counts} (codebooks)")
            if bandwidth is not None and self.n_codebooks(float(bandwidth)) != int(n_q):
                raise UsageError(f"{option} {bandwidth:g} gives {self.n_codebooks(float(bandwidth))} codebooks of "
                                 f"{self.name}, not --n-q {n_q}; give one of the two")
            return by_count
        return self.check_bandwidth(self.bandwidth_default if bandwidth is None else bandwidth, option)

    def check_bandwidth(self, bandwidth: float, option: str = "--bandwidth") -> float:
        if float(bandwidth) not in self.bandwidths:
            valid = ", ".join(f"{b:g}" for b in self.bandwidths)
            raise UsageError(f"{option} {bandwidth:g} is not valid for {self.name}; choose one of {valid} (kbps)")
        return float(bandwidth)

    def bandwidth_for(self, n_q: int) -> float | None:
        """The bandwidth whose codebook count is ``n_q`` (None if none is)."""
        return next((bw for bw in self.bandwidths if self.n_codebooks(bw) == n_q), None)

    def segment_spans(self, n_samples: int) -> list[tuple[int, int]]:
        """(offset, length) of each segment encoded separately (one for a whole-file codec)."""
        if not self.segment_length:
            return [(0, n_samples)]
        return [(off, min(self.segment_length, n_samples - off)) for off in range(0, n_samples, self.segment_stride)]

    def segment_frames(self, n_samples: int) -> list[int]:
        """Frames stored for each segment of a file of ``n_samples`` samples: ``ceil(n * frame_rate /
        sample_rate)`` in exact arithmetic, what a codec with that frame rate returns. (The ``encodec``
        CLI's float expression ``ceil(n / sample_rate * frame_rate)`` rounds up one frame too many at
        some lengths, 6720 samples at 24 kHz among them, where its encoder gives 21 frames, not 22;
        at 12.5 Hz it would do so at 8960 samples of 16 kHz.)"""
        if n_samples <= 0:
            return []
        rate = Fraction(self.frame_rate).limit_denominator(1 << 20) / self.sample_rate
        return [math.ceil(n * rate) for _, n in self.segment_spans(n_samples)]

    def load(self, checkpoint=None, device: Any = "cpu"):
        """The implementation (a ``protocols.Codec``) with weights from ``checkpoint`` or the default."""
        factory = self.implementation
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(self, checkpoint, device)


CODECS: dict[str, CodecSpec] = {}


def register_codec(spec: CodecSpec, replace: bool = False) -> CodecSpec:
    """Make ``spec`` known by its name (and aliases) to every command and format."""
    for name in (spec.name, *spec.aliases):
        if name in CODECS and not replace and CODECS[name] != spec:
            raise ValueError(f"a codec named {name!r} is already registered")
        CODECS[name] = spec
    return spec


def unregister_codec(name: str) -> None:
    spec = CODECS.pop(name, None)
    if spec is not None:
        for alias in (spec.name, *spec.aliases):
            CODECS.pop(alias, None)


def codec_names() -> list[str]:
    return sorted({s.name for s in CODECS.values()})


def get_codec(name: str, option: str = "--model") -> CodecSpec:
    """The spec of codec ``name``; a usage error naming the choices if there is none."""
    try:
        return CODECS[name]
    except KeyError:
        raise UsageError(f"{option} {name!r} is not a known codec; choose one of {', '.join(codec_names())}") from None


def load_plugins(env: str = "AUDIOTOK_PLUGINS") -> None:
    """Import the modules named in ``$AUDIOTOK_PLUGINS`` (they register their models)."""
    for name in filter(None, (n.strip() for n in os.environ.get(env, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"{env} names {name!r}, which cannot be imported ({exc})") from None


# --- the EnCodec models ------------------------------------------------------------------------
_ENCODEC = "audiotok.codecs.encodec:load_encodec"
_ENCODEC_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"  # AUDIOTOK_ENCODEC_URL replaces it (weights.py)

ENCODEC_24KHZ = register_codec(CodecSpec(
    name="encodec_24khz", sample_rate=24000, channels=1, frame_rate=75,
    bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0), codebook_size=1024, n_q=32, implementation=_ENCODEC,
    checkpoint="encodec_24khz-d7cc33bc.th", weights_url=_ENCODEC_URL + "encodec_24khz-d7cc33bc.th",
    default_bandwidth=6.0, lm_name="encodec_lm_24khz", ecdc=True,
    description="EnCodec 24 kHz mono, causal (streamable)",
))
# segments of 1 s, overlap 1 %: stride int(0.99 * 48000) = 47520
ENCODEC_48KHZ = register_codec(CodecSpec(
    name="encodec_48khz", sample_rate=48000, channels=2, frame_rate=150,
    bandwidths=(3.0, 6.0, 12.0, 24.0), codebook_size=1024, n_q=16, implementation=_ENCODEC,
    segment_length=48000, segment_stride=47520, normalize=True,
    checkpoint="encodec_48khz-7e698e3e.th", weights_url=_ENCODEC_URL + "encodec_48khz-7e698e3e.th",
    default_bandwidth=6.0, lm_name="encodec_lm_48khz", ecdc=True,
    description="EnCodec 48 kHz stereo, 1 s segments with a scale each",
))

DEFAULT_CODEC = ENCODEC_24KHZ.name
