"""Every model audiotok knows, by name: what it is (rates, channels, frames, bandwidths,
codebooks, weights) without importing torch, and where its implementation lives. Codecs
(``CodecSpec``, used by encode, decode, score and the trainers) and embedders (``EmbedderSpec``,
used by embed, probe and train mae) each have a table here.

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
    # "module:function" giving the path of the default weights (no torch; a WeightsError naming
    # the files to fetch when they cannot be had), for codecs whose weights are not ``checkpoint``
    default_weights: str | None = None
    weights_source: str = ""  # where the official weights come from (shown to users)

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

    def check_bandwidth(self, bandwidth: float | None, option: str = "--bandwidth") -> float:
        """``bandwidth`` (None: the codec's default) if it is one of the codec's; else a UsageError."""
        if bandwidth is None:
            bandwidth = self.bandwidth_default
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

# --- Mimi (Kyutai) --------------------------------------------------------------------------------
MIMI = register_codec(CodecSpec(
    name="mimi", sample_rate=24000, channels=1, frame_rate=12.5,
    # k codebooks of 11 bits at 12.5 Hz: 0.1375 kbps each (1.1 kbps at the default 8)
    bandwidths=tuple(round(k * 11 * 12.5 / 1000, 6) for k in range(1, 33)), codebook_size=2048, n_q=32,
    implementation="audiotok.codecs.mimi:load_mimi", default_weights="audiotok.codecs.mimi_weights:default_weights",
    # the official file (``audiotok models`` looks for it in the Hugging Face cache; resolving goes
    # through ``default_weights``, which also fetches the config.json beside it)
    checkpoint="model.safetensors", hub_repo="kyutai/mimi",
    weights_source="Hugging Face kyutai/mimi: model.safetensors + config.json",
    description="Mimi (Kyutai) 24 kHz mono, 12.5 Hz, causal (streamable); 1.1 kbps = 8 codebooks",
    default_bandwidth=1.1,
))

DEFAULT_CODEC = ENCODEC_24KHZ.name


# --- the DAC models (Descript Audio Codec) -----------------------------------------------------
@dataclass(frozen=True)
class DacSpec(CodecSpec):
    """A DAC model (``ceil(n / hop)`` frames for ``n`` samples, as for every whole-hop codec: the
    official ``preprocess`` pads to whole frames) whose bandwidths can be typed as printed."""

    def check_bandwidth(self, bandwidth: float, *args, **kwargs) -> float:
        """Also accepts a bandwidth as printed (``7.75`` or ``7.75195`` for 9 codebooks of
        dac_44khz, exactly 7.751953125): the nearest within 0.01 kbps (they are >= 0.5 apart)."""
        if bandwidth is None:
            return super().check_bandwidth(bandwidth, *args, **kwargs)
        near = [b for b in self.bandwidths if abs(b - float(bandwidth)) < 0.01]
        return near[0] if len(near) == 1 else super().check_bandwidth(bandwidth, *args, **kwargs)


_DAC = "audiotok.codecs.dac:load_dac"
_DAC_RELEASES = "https://github.com/descriptinc/descript-audio-codec/releases/download/"


def _dac(name: str, sample_rate: int, hop: int, n_q: int, checkpoint: str, url: str, about: str) -> DacSpec:
    frame_rate = sample_rate / hop
    # one bandwidth per codebook count: n codebooks of 10 bits at frame_rate (exact binary fractions)
    bandwidths = tuple(n * frame_rate * 10 / 1000 for n in range(1, n_q + 1))
    return register_codec(DacSpec(
        name=name, sample_rate=sample_rate, channels=1, frame_rate=frame_rate, bandwidths=bandwidths,
        codebook_size=1024, n_q=n_q, implementation=_DAC, checkpoint=checkpoint, weights_url=_DAC_RELEASES + url,
        description=about,  # default bandwidth: every codebook (the highest), as the official encode
    ))


DAC_16KHZ = _dac("dac_16khz", 16000, 320, 12, "weights_16khz.pth", "0.0.5/weights_16khz.pth",
                 "DAC 16 kHz mono, 50 Hz, 12 x 1024 codes (6 kbps), not causal")
DAC_24KHZ = _dac("dac_24khz", 24000, 320, 32, "weights_24khz.pth", "0.0.4/weights_24khz.pth",
                 "DAC 24 kHz mono, 75 Hz, 32 x 1024 codes (24 kbps), not causal")
# the 44.1 kHz release asset is a bare ``weights.pth``: kept in the cache under a name that says which model it is
DAC_44KHZ = _dac("dac_44khz", 44100, 512, 9, "weights_44khz.pth", "0.0.1/weights.pth",
                 "DAC 44.1 kHz mono, 86.13 Hz, 9 x 1024 codes (7.75 kbps), not causal")


# --- embedders ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedderSpec:
    """What an embedder family is: its input rate, the front ends and sizes ``train mae`` builds
    (front end -> (kind, input dim); size -> (layers, dim, heads, ff_dim)), the released models
    ``embed``/``probe`` accept by name and where they come from, and its implementation.

    ``implementation`` (``"module:function"``) takes a local checkpoint path and returns the loaded
    network; ``resolver`` (``"module:function"``) turns a released name or a path into a local path
    (downloading when allowed). Both are imported only when a model is loaded."""

    name: str
    sample_rate: int
    frame_rate: float
    frontends: dict[str, tuple[str, int]]
    sizes: dict[str, tuple[int, int, int, int]]
    released: dict[str, tuple[str, str]]  # released name -> (Hugging Face repo, file)
    implementation: str
    resolver: str
    weights_source: str = ""
    description: str = ""

    def resolve(self, name_or_path) -> Any:
        """The local path of a released name or a checkpoint path (``WeightsError`` if there is none)."""
        return _import(self.resolver)(name_or_path)

    def load(self, name_or_path) -> tuple[Any, Any]:
        """``(network, local path)`` for a released name or a checkpoint path, loaded strictly."""
        path = self.resolve(name_or_path)
        return _import(self.implementation)(path), path

    def check_size(self, size: str) -> str:
        if size not in self.sizes:
            raise UsageError(f"--size {size!r} is not valid; choose one of {', '.join(self.sizes)}")
        return size

    def check_frontend(self, frontend: str) -> str:
        if frontend not in self.frontends:
            raise UsageError(f"--frontend {frontend!r} is not valid; choose one of {', '.join(self.frontends)}")
        return frontend


def _import(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


EMBEDDERS: dict[str, EmbedderSpec] = {}


def register_embedder(spec: EmbedderSpec, replace: bool = False) -> EmbedderSpec:
    """Make an embedder family known to ``embed``, ``probe`` and ``train mae``."""
    if spec.name in EMBEDDERS and not replace and EMBEDDERS[spec.name] != spec:
        raise ValueError(f"an embedder named {spec.name!r} is already registered")
    EMBEDDERS[spec.name] = spec
    return spec


def embedder_names() -> list[str]:
    return sorted(EMBEDDERS)


def get_embedder(name: str = "encodecmae", option: str = "--embedder") -> EmbedderSpec:
    try:
        return EMBEDDERS[name]
    except KeyError:
        raise UsageError(f"{option} {name!r} is not a known embedder; choose one of {', '.join(embedder_names())}") from None


ENCODECMAE_V2_REPO = "lpepino/encodecmae-v2"
ENCODECMAE_V2_NAMES = ("mel256-ec-base_st", "mel256-ec-base", "mel256-ec-small", "mel256-ec-large",
                       "mel256-ec-large_st", "ec-ec-base")
ENCODECMAE_V1_NAMES = ("small", "base", "large", "base-st", "large-st")  # hub lpepino/encodecmae-<name>

ENCODECMAE = register_embedder(EmbedderSpec(
    name="encodecmae", sample_rate=24000, frame_rate=75.0,
    frontends={"mel256": ("mel", 256), "ec": ("ec", 128)},
    sizes={"tiny": (4, 96, 4, 384), "small": (5, 768, 12, 4096), "base": (10, 768, 12, 4096),
           "large": (20, 1024, 12, 4096)},
    released={**{n: (ENCODECMAE_V2_REPO, f"{n}.pt") for n in ENCODECMAE_V2_NAMES},
              **{n: (f"lpepino/encodecmae-{n}", "model.pt") for n in ENCODECMAE_V1_NAMES}},
    implementation="audiotok.embedders.encodecmae:load_mae",
    resolver="audiotok.weights:resolve_encodecmae",
    weights_source=f"hub {ENCODECMAE_V2_REPO}/<name>.pt (v2); lpepino/encodecmae-<name> (v1)",
    description="EnCodecMAE (Pepino et al.): masked-token pretraining on EnCodec targets; 75 frames/s",
))
