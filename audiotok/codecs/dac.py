"""DAC (Descript Audio Codec): audio -> codes (``DacEncoder``) and codes -> audio (``DacDecoder``).

The network is written here in plain torch (no ``descript-audio-codec`` dependency): convolutions
with weight norm, Snake activations, and a residual vector quantizer whose codebooks are looked up
in an 8-dimensional projection by cosine similarity. Its modules carry the official parameter
names, so an official ``weights*.pth`` file (``{"state_dict", "metadata": {"kwargs"}}``, weight-norm
``weight_g`` / ``weight_v`` keys) loads strictly: every tensor from the file, none left over.

DAC is not causal: a code depends on audio on both sides of its frame, so zero padding added after
a file (as batching shorter files to a longer one's length would) changes its last codes. Each
file is therefore encoded alone, as the official ``model.encode(model.preprocess(x, sr))`` does:

- a file of at most ``WHOLE_SECONDS`` (10 s; padded with zeros to whole frames) in one call: the
  official whole-file computation, the same codes;
- a longer file in fixed chunks of ``CHUNK_SECONDS`` (8 s) of frames, each encoded with
  ``CONTEXT_SECONDS`` (1 s) of real audio on both sides (the file's own edges where there is none)
  and only its own frames kept. The context is wider than the encoder's receptive field (8 frames,
  about 0.1 s), so in exact arithmetic every code equals the whole-file one; in float32 a code
  whose two nearest codebook entries tie to rounding may differ. Memory stays bounded by the chunk.

The chunking is a function of the file's length only (never of batching, workers or neighbours) and
``numerics()`` records it in every output. Decoding is chunked the same way.

On the CPU the calls (every file's spans) run in ``engine.lanes.Lanes``: side by side, each with one
torch thread (up to 4 lanes), so codes are the same for ``--threads`` 1 to 4 and both cores work
(1.25x the throughput of one call of two threads on 2 cores).

``compress()`` / ``.dac`` files of the official package are another code sequence (1 s windows
without padding) and are not produced or read here.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.devices import resolve_device
from ..engine.lanes import Lanes, lane_plan
from ..engine.pipeline import step_error
from ..errors import AudiotokError, WeightsError
from ..formats.codes import EncodedItem
from ..registry import CodecSpec
from ..weights import check_finite, load_torch_file, resolve_encodec
from .adapters import ItemDecoder
from .layout import (
    GEMM_REDUCTION,
    NwcWeight,
    check_layout,
    conv1d_nwc,
    conv_transpose1d_nwc,
    default_layout,
    nwc_weight,
)

# Peak memory of one call of the 44.1 kHz model on the CPU: ~56 MB per second of audio to encode,
# ~110 MB per second to decode (measured), so a call spans at most 10 s (~0.6 / 1.1 GB).
WHOLE_SECONDS = 10.0  # files up to this long are encoded (and decoded) in one call
CHUNK_SECONDS = 8.0  # longer ones: frames kept per chunk
CONTEXT_SECONDS = 1.0  # frames computed on each side of a chunk (the receptive field is ~0.1 s)


# --- configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class DacConfig:
    """The official ``DAC(...)`` keyword arguments (``metadata["kwargs"]`` of a weights file)."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int | tuple[int, ...] = 8
    sample_rate: int = 44100

    @property
    def hop(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def latent(self) -> int:
        return self.latent_dim if self.latent_dim is not None else self.encoder_dim * 2 ** len(self.encoder_rates)

    def codebook_dims(self) -> tuple[int, ...]:
        dim = self.codebook_dim
        return tuple(dim) if isinstance(dim, tuple) else (dim,) * self.n_codebooks

    @classmethod
    def from_kwargs(cls, kwargs: dict, path) -> DacConfig:
        """The config a weights file declares; its other keys (``quantizer_dropout``...) are
        training settings and ignored, as the official loader does."""

        def whole(name, value, positive=True):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (positive and value < 1):
                raise WeightsError(f"checkpoint {path} declares {name} = {value!r}, not a positive whole number; "
                                   "the file is damaged or not a DAC weights file")
            return int(value)

        def whole_list(name, value):
            if not isinstance(value, (list, tuple)) or not value:
                raise WeightsError(f"checkpoint {path} declares {name} = {value!r}, not a list of whole numbers; "
                                   "the file is damaged or not a DAC weights file")
            return tuple(whole(name, v) for v in value)

        known = {f: kwargs[f] for f in cls.__dataclass_fields__ if f in kwargs}
        out = {}
        for name, value in known.items():
            if name in ("encoder_rates", "decoder_rates"):
                out[name] = whole_list(name, value)
            elif name == "latent_dim" and value is None:
                out[name] = None
            elif name == "codebook_dim" and isinstance(value, (list, tuple)):
                out[name] = whole_list(name, value)
            else:
                out[name] = whole(name, value)
        config = cls(**out)
        if isinstance(config.codebook_dim, tuple) and len(config.codebook_dim) != config.n_codebooks:
            raise WeightsError(f"checkpoint {path} declares {len(config.codebook_dim)} codebook dimensions for "
                               f"{config.n_codebooks} codebooks; the file is damaged")
        return config


# --- the network (official parameter names) --------------------------------------------------
class WNConv(nn.Module):
    """A 1-D convolution (or transposed convolution) with weight norm: ``weight_g``, ``weight_v``,
    ``bias`` as the official ``weight_norm(nn.Conv1d(...))`` stores them. ``fold()`` computes the
    weight once (``torch._weight_norm``, the function weight norm itself calls, so the same values),
    held for the layout the convolution runs in (``layout``): ``weight`` for ``ncw`` (``forward``),
    ``weight_nwc`` for ``nwc`` (``forward_nwc``), not both (the decoder's weights are 200 MB)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 transpose: bool = False):
        super().__init__()
        shape = (c_in, c_out, kernel) if transpose else (c_out, c_in, kernel)
        self.bias = nn.Parameter(torch.zeros(c_out))  # in the official files' key order
        self.weight_g = nn.Parameter(torch.ones(shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(shape))  # from the weights file (build_model: random)
        self.stride, self.padding, self.dilation, self.transpose = stride, padding, dilation, transpose
        self.layout = "ncw"
        self.gemm_from = GEMM_REDUCTION  # nwc: reductions from this long run as GEMMs (codecs/layout)
        self.weight: torch.Tensor | None = None
        self.weight_nwc: NwcWeight | None = None
        self._folded_as: tuple | None = None  # (device, dtype) of weight_v when folded

    def fold(self, layout: str | None = None) -> None:
        """Compute the weight once, for ``layout`` (default: the one it runs in)."""
        self.layout = check_layout(layout or self.layout)
        with torch.no_grad():
            w = torch._weight_norm(self.weight_v, self.weight_g, 0).detach()
        nwc = self.layout == "nwc"
        self.weight = None if nwc else w
        self.weight_nwc = nwc_weight(w, self.transpose, gemm_from=self.gemm_from) if nwc else None
        self._folded_as = (self.weight_v.device, self.weight_v.dtype)

    def _apply(self, fn, recurse=True):  # .to(device / dtype) folds again
        super()._apply(fn, recurse)
        if self._folded_as is not None and self._folded_as != (self.weight_v.device, self.weight_v.dtype):
            self.fold()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight is not None else torch._weight_norm(self.weight_v, self.weight_g, 0)
        if self.transpose:
            return F.conv_transpose1d(x, w, self.bias, self.stride, self.padding)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation)

    def forward_nwc(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x [B, T, C]`` (already padded: see ``_padded``), ``[B, T', C']`` out;
        a transposed one pads nothing: its ``padding`` outputs at each end are cut off here."""
        if self.weight_nwc is None:
            self.fold("nwc")
        if self.transpose:
            y = conv_transpose1d_nwc(x, self.weight_nwc, self.bias, self.stride)
            p = self.padding
            return y.narrow(1, p, y.shape[1] - 2 * p) if p else y
        return conv1d_nwc(x, self.weight_nwc, self.bias, self.stride, self.dilation)


class Snake(nn.Module):
    """``x + sin(alpha x)^2 / (alpha + 1e-9)`` per channel, in the official order of operations."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.alpha * x
        s.sin_().pow_(2)  # in place: one temporary instead of three
        s.mul_((self.alpha + 1e-9).reciprocal())
        return x + s

    def forward_nwc(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The same ops on ``x [B, T, C]``, the sum written to ``out`` if given."""
        a = self.alpha.view(1, 1, -1)
        s = a * x
        s.sin_().pow_(2)
        s.mul_((a + 1e-9).reciprocal())
        return torch.add(x, s, out=out)


def _padded(x: torch.Tensor, pad: int, snake: Snake | None = None) -> torch.Tensor:
    """``[zeros, snake(x), zeros]`` along the time of ``x [B, T, C]`` (``pad`` steps each side), the
    activation written in place (no copy of its output to pad it)."""
    B, T, C = x.shape
    buf = x.new_empty(B, T + 2 * pad, C)
    buf[:, :pad].zero_()
    buf[:, pad + T:].zero_()
    body = buf[:, pad:pad + T]
    if snake is None:
        body.copy_(x)
    else:
        snake.forward_nwc(x, out=body)
    return buf


def _snake_conv_nwc(snake: Snake | None, conv: WNConv, x: torch.Tensor) -> torch.Tensor:
    """``conv(snake(x))`` on ``[B, T, C]`` activations (``snake`` None: ``conv(x)``)."""
    if conv.padding and not conv.transpose:
        return conv.forward_nwc(_padded(x, conv.padding, snake))
    return conv.forward_nwc(x if snake is None else snake.forward_nwc(x))


def _forward_nwc(layers, x: torch.Tensor) -> torch.Tensor:
    """``layers`` (an ``nn.Sequential`` of the encoder's or decoder's modules) on ``x [B, T, C]``:
    each Snake is computed straight into the padded input of the convolution after it."""
    mods = list(layers)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, Snake) and i + 1 < len(mods) and isinstance(mods[i + 1], WNConv):
            x = _snake_conv_nwc(m, mods[i + 1], x)
            i += 2
            continue
        if isinstance(m, WNConv):
            x = _snake_conv_nwc(None, m, x)
        elif isinstance(m, Snake):
            x = m.forward_nwc(x)
        elif isinstance(m, ResidualUnit):
            x = x + _forward_nwc(m.block, x)
        elif isinstance(m, (EncoderBlock, DecoderBlock)):
            x = _forward_nwc(m.block, x)
        elif isinstance(m, nn.Tanh):
            x = torch.tanh(x)
        else:
            raise TypeError(f"no channels-last path for {type(m).__name__}")
        i += 1
    return x


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(Snake(dim), WNConv(dim, dim, 7, dilation=dilation, padding=3 * dilation),
                                   Snake(dim), WNConv(dim, dim, 1))

    def forward(self, x):
        return x + self.block(x)  # same length: the official crop never applies


def _units(dim: int) -> list[nn.Module]:
    return [ResidualUnit(dim, 1), ResidualUnit(dim, 3), ResidualUnit(dim, 9)]


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(*_units(dim // 2), Snake(dim // 2),
                                   WNConv(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x):
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(Snake(c_in), WNConv(c_in, c_out, 2 * stride, stride=stride,
                                                       padding=math.ceil(stride / 2), transpose=True), *_units(c_out))

    def forward(self, x):
        return self.block(x)


# The encoder's first layers (the input convolution and the first two blocks: 64 and 128 channels
# at the full and half sample rate) are computed in tiles of TILE_SAMPLES with TILE_HALO samples of
# the neighbouring audio on each side, their outputs cut to the tile and joined; the rest runs on
# the joined output. Every kept output reads only samples inside its tile's halo (the head's
# receptive field is ~140 samples each side), so the result is the whole computation's: bit for bit
# with one torch thread per call, as lanes run (tests/test_dac.py, released channel counts), up to
# float rounding (4e-6 relative) with more threads per call. Why: a whole 10 s call's activations
# (64 channels x 441,000 samples) leave the cache; in 0.74 s tiles one thread runs the 44.1 kHz
# encoder at 83-85 GFLOP/s instead of 58-62.
# Channels last, the encoder's convolutions with reductions from 448 (its 7-tap layers of 64 and
# 128 channels) run as GEMMs: with oneDNN's channels-last kernel its latent carried 1.8x the
# official float32 rounding error against float64, as GEMMs 1.1x, for ~2 % of its time. The decoder
# keeps codecs.layout's default (448 there: 1.17x instead of 1.19x the error, 6-9 % slower).
ENCODER_GEMM_REDUCTION = 448
TILE_SAMPLES = 32768
TILE_HALO = 1024
TILE_BLOCKS = 2  # encoder blocks in the tiled head (after the input convolution)


class Encoder(nn.Module):
    def __init__(self, c: DacConfig):
        super().__init__()
        layers: list[nn.Module] = [WNConv(1, c.encoder_dim, 7, padding=3)]
        dim = c.encoder_dim
        for stride in c.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake(dim), WNConv(dim, c.latent, 3, padding=1)]
        self.block = nn.Sequential(*layers)
        self.tiling: tuple[int, int, int] | None = None  # (tile, halo, head stride): tile_for_inference()
        self.layout = "ncw"  # activations' layout (use_layout)
        self._head_stride = math.prod(c.encoder_rates[:TILE_BLOCKS])
        # input samples the head reads on each side of an output: the input convolution (3), then per
        # block its residual units (3 x (1 + 3 + 9) taps) and strided convolution, at the block's rate
        reach, rate = 3, 1
        for stride in c.encoder_rates[:TILE_BLOCKS]:
            reach += rate * (39 + 2 * stride)
            rate *= stride
        self._head_reach = reach

    def tile_for_inference(self, tile: int = TILE_SAMPLES, halo: int = TILE_HALO) -> None:
        """Compute the head in tiles from now on (sizes rounded to whole head frames; the halo at
        least twice the head's reach, whatever was asked)."""
        hs = self._head_stride
        halo = max(halo, 2 * self._head_reach)
        self.tiling = (max(hs, tile // hs * hs), -(-halo // hs) * hs, hs)

    def use_layout(self, layout: str) -> None:
        _use_layout(self, layout, ENCODER_GEMM_REDUCTION)

    def forward(self, x):
        nwc = self.layout == "nwc"
        if nwc:  # [B, 1, T] is [B, T, 1] as it is
            x = x.reshape(x.shape[0], x.shape[-1], 1)

        def run(layers, x):
            return _forward_nwc(layers, x) if nwc else layers(x)

        t = 1 if nwc else 2
        if self.tiling is None or x.shape[t] <= self.tiling[0] + 2 * self.tiling[1]:
            y = run(self.block, x)
        else:
            tile, halo, hs = self.tiling
            head, tail = self.block[:1 + TILE_BLOCKS], self.block[1 + TILE_BLOCKS:]
            n, parts = x.shape[t], []
            for start in range(0, n, tile):
                lo, hi = max(0, start - halo), min(n, start + tile + halo)
                y = run(head, x.narrow(t, lo, hi - lo))
                a, b = (start - lo) // hs, (min(n, start + tile) - lo) // hs
                parts.append(y.narrow(t, a, b - a))
            y = run(tail, torch.cat(parts, dim=t))
        return y.transpose(1, 2).contiguous() if nwc else y


class Decoder(nn.Module):
    def __init__(self, c: DacConfig):
        super().__init__()
        layers: list[nn.Module] = [WNConv(c.latent, c.decoder_dim, 7, padding=3)]
        for i, stride in enumerate(c.decoder_rates):
            layers.append(DecoderBlock(c.decoder_dim // 2 ** i, c.decoder_dim // 2 ** (i + 1), stride))
        out_dim = c.decoder_dim // 2 ** len(c.decoder_rates)
        layers += [Snake(out_dim), WNConv(out_dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.layout = "ncw"  # activations' layout (use_layout)

    def use_layout(self, layout: str) -> None:
        _use_layout(self, layout)

    def forward(self, z):
        if self.layout == "nwc":
            return _forward_nwc(self.model, z.transpose(1, 2).contiguous()).transpose(1, 2)
        return self.model(z)


def _use_layout(net: Encoder | Decoder, layout: str, gemm_from: int = GEMM_REDUCTION) -> None:
    """``net`` computes in ``layout`` from now on: ``ncw`` (the official one) or ``nwc`` (channels
    last: ``codecs.layout``, its convolutions of reductions from ``gemm_from`` as GEMMs; each
    convolution's weight is held in that layout); its input and output stay ``[B, C, T]``."""
    net.layout = check_layout(layout)
    for m in net.modules():
        if isinstance(m, WNConv):
            m.layout, m.gemm_from = layout, gemm_from
            if m._folded_as is not None:  # folded already: again, for this layout
                m.fold()


class VectorQuantize(nn.Module):
    def __init__(self, dim: int, size: int, code_dim: int):
        super().__init__()
        self.in_proj = WNConv(dim, code_dim, 1)
        self.out_proj = WNConv(code_dim, dim, 1)
        self.codebook = nn.Embedding(size, code_dim)
        self._unit: tuple[torch.Tensor, torch.Tensor] | None = None

    def unit_codebook(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The L2-normalised codebook and its squared norms (cached: the same every call)."""
        if self._unit is None or self._unit[0].device != self.codebook.weight.device:
            cb = F.normalize(self.codebook.weight.detach())
            self._unit = (cb, cb.pow(2).sum(1, keepdim=True).t())
        return self._unit

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T]`` of projected latents ``[B, d, T]``: the codebook entry of highest cosine
        similarity, by the official expanded squared distance between unit vectors."""
        b, d, _ = z_e.shape
        enc = F.normalize(z_e.permute(0, 2, 1).reshape(-1, d))
        cb, cb_sq = self.unit_codebook()
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb_sq
        return (-dist).max(1)[1].view(b, -1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.codebook.weight).transpose(1, 2)


class ResidualVectorQuantize(nn.Module):
    def __init__(self, c: DacConfig):
        super().__init__()
        self.quantizers = nn.ModuleList(VectorQuantize(c.latent, c.codebook_size, d) for d in c.codebook_dims())

    def encode(self, z: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``[B, n_q, T]`` of latents ``z`` (the official eval-mode forward's ``codes``)."""
        residual, codes = z, []
        for i, q in enumerate(self.quantizers[:n_q]):
            z_e = q.in_proj(residual)
            idx = q.nearest(z_e)
            codes.append(idx)
            if i + 1 < n_q:
                # the straight-through expression of training, kept: its rounding feeds the residual
                z_q = z_e + (q.lookup(idx) - z_e)
                residual = residual - q.out_proj(z_q)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, D, T]`` of codes ``[B, n_q, T]`` (the official ``from_codes``)."""
        z = 0.0
        for i in range(codes.shape[1]):
            z = z + self.quantizers[i].out_proj(self.quantizers[i].lookup(codes[:, i]))
        return z


class DAC(nn.Module):
    def __init__(self, config: DacConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = ResidualVectorQuantize(config)
        self.decoder = Decoder(config)

    def fold(self) -> DAC:
        for m in self.modules():
            if isinstance(m, WNConv):
                m.fold()
        return self

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``[B, n_q, T]`` of audio ``[B, 1, T * hop]``."""
        return self.quantizer.encode(self.encoder(x), n_q)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode(codes))


# --- weights ----------------------------------------------------------------------------------
def read_weights(path, spec: CodecSpec | None = None) -> tuple[DacConfig, dict]:
    """The config and state dict of an official DAC weights file, checked against ``spec``."""
    blob = load_torch_file(path, "DAC weights file")
    layout = "DAC weights file in the descript layout ({state_dict, metadata: {kwargs}})"
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(f"checkpoint {path} is not a {layout}")
    meta = blob.get("metadata")
    kwargs = meta.get("kwargs") if isinstance(meta, dict) else None
    if not isinstance(kwargs, dict):
        raise WeightsError(f"checkpoint {path} has no metadata kwargs, so it is not a {layout}")
    config = DacConfig.from_kwargs(kwargs, path)
    if spec is not None:
        official = f" ({spec.weights_url or spec.checkpoint})" if spec.checkpoint else ""
        have = (config.sample_rate, config.hop, config.n_codebooks, config.codebook_size)
        want = (spec.sample_rate, spec.hop, spec.n_q, spec.codebook_size)
        if have != want:
            raise WeightsError(
                f"checkpoint {path} holds a DAC model of {have[0]} Hz, hop {have[1]}, {have[2]} x {have[3]} codes, "
                f"but {spec.name} is {want[0]} Hz, hop {want[1]}, {want[2]} x {want[3]}; pass its own weights{official}")
    check_finite(blob["state_dict"], path)
    return config, blob["state_dict"]


def build_model(config: DacConfig, state: dict | None = None, path=None) -> DAC:
    """The network of ``config`` with ``state`` loaded strictly (every key, nothing left over; its
    tensors kept, not copied), or random weights (torch's default convolution init, as the
    official model starts) drawn from torch's global generator when ``state`` is None."""
    if state is None:
        model = DAC(config)
        for m in model.modules():
            if isinstance(m, WNConv):
                bound = 1 / m.weight_v[0].numel() ** 0.5
                nn.init.uniform_(m.weight_v, -bound, bound)
                with torch.no_grad():
                    m.weight_g.copy_(torch.linalg.vector_norm(m.weight_v, dim=(1, 2), keepdim=True))
        return model.eval()
    with torch.random.fork_rng(devices=[]):  # the codebooks' initial values leave the caller's RNG alone
        model = DAC(config)
    # float32 whatever the file stores (as copying into the model's parameters would make them)
    state = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except Exception as exc:  # missing / unexpected keys, wrong shapes
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:240]
        raise WeightsError(f"checkpoint {path} does not hold the DAC weights its metadata describes ({detail})") from None
    return model.eval()


class DacCodec:
    """The DAC models behind the registry's ``protocols.Codec`` shape."""

    def __init__(self, spec: CodecSpec, checkpoint=None, device="cpu"):
        self.spec = spec
        self.device = resolve_device(device)
        path = resolve_encodec(spec.name, checkpoint)
        config, state = read_weights(path, spec)
        self.model = build_model(config, state, path).to(self.device)
        layout = default_layout(self.device)
        self.model.encoder.use_layout(layout)
        self.model.decoder.use_layout(layout)
        self.model.fold()
        if self.device.type == "cpu":
            self.model.encoder.tile_for_inference()
        self.checkpoint_path = str(path)

    def encoder(self, bandwidth: float, device=None) -> DacEncoder:
        return DacEncoder(self.model, self.spec, bandwidth, self.device if device is None else resolve_device(device))

    def decoder(self, device=None) -> DacDecoder:
        return DacDecoder(self.model, self.spec, self.device if device is None else resolve_device(device))


def load_dac(spec: CodecSpec, checkpoint=None, device="cpu") -> DacCodec:
    """``CodecSpec.implementation`` of the DAC models."""
    return DacCodec(spec, checkpoint, device)


# --- chunking -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunking:
    """How a file of ``T`` frames is cut: whole when ``T <= whole``; else spans of ``chunk`` frames,
    each computed with ``context`` frames of its neighbours on both sides."""

    whole: int
    chunk: int
    context: int

    @classmethod
    def for_spec(cls, spec: CodecSpec, whole_seconds=WHOLE_SECONDS, chunk_seconds=CHUNK_SECONDS,
                 context_seconds=CONTEXT_SECONDS) -> Chunking:
        def frames(s):
            return max(1, int(round(s * spec.frame_rate)))

        return cls(frames(whole_seconds), frames(chunk_seconds), frames(context_seconds))

    def spans(self, T: int) -> list[tuple[int, int, int, int]]:
        """``(lo, hi, start, stop)`` per call: frames ``lo:hi`` are computed, ``start:stop`` kept."""
        if T <= self.whole:
            return [(0, T, 0, T)]
        return [(max(0, s - self.context), min(T, s + self.chunk + self.context), s, min(T, s + self.chunk))
                for s in range(0, T, self.chunk)]

    def describe(self, spec: CodecSpec) -> dict:
        sec = 1 / spec.frame_rate
        return {"dac_whole_seconds": round(self.whole * sec, 6), "dac_chunk_seconds": round(self.chunk * sec, 6),
                "dac_context_seconds": round(self.context * sec, 6), "dac_whole_frames": self.whole,
                "dac_chunk_frames": self.chunk, "dac_context_frames": self.context}


@dataclass
class _Held:
    """A file whose spans are in the lanes: its codes once every span's call has ended."""

    key: object
    n: int  # samples
    spans: list
    futures: list = field(default_factory=list)

    def done(self) -> int:
        return sum(f.done() for f in self.futures)

    def result(self, n_q: int):
        T = self.spans[-1][3]
        codes = np.empty((n_q, T), dtype=np.int16)
        for (lo, _hi, start, stop), fut in zip(self.spans, self.futures):
            exc = fut.exception()
            if exc is not None:
                return exc if isinstance(exc, AudiotokError) else step_error(exc)
            codes[:, start:stop] = fut.result()[:, start - lo:stop - lo]
        return EncodedItem(codes, None, self.n)


class DacEncoder:
    """Adapter: mono audio ``[1, N]`` at the model's rate -> ``EncodedItem`` (codes ``[n_q, ceil(N / hop)]``).

    Each file alone (see the module's docstring), so its codes never depend on the batch. Its calls
    go to ``lanes`` (default: ``lane_plan(device)``); ``run`` returns the files whose calls have
    all ended, leaving at most ``2 x lanes`` calls queued so the lanes stay busy while the next
    batch is read; ``flush`` waits for the rest."""

    on_progress = None  # set by the pipeline: on_progress(key, samples_done, samples_total) within an input

    def __init__(self, model: DAC, spec: CodecSpec, bandwidth: float, device: torch.device,
                 chunking: Chunking | None = None, lanes: Lanes | None = None):
        self.model, self.spec, self.device = model, spec, device
        self.name = spec.name
        self.bandwidth = spec.check_bandwidth(bandwidth)
        self.n_q = spec.n_codebooks(self.bandwidth)
        self.sample_rate, self.channels, self.frame_rate = spec.sample_rate, spec.channels, spec.frame_rate
        self.hop = model.config.hop
        self.chunking = chunking or Chunking.for_spec(spec)
        self.lanes = lanes if lanes is not None else Lanes(*lane_plan(device))
        self.held: list[_Held] = []

    def numerics(self) -> dict:
        """The chunking (recorded in every output: codes of longer files depend on it) and, with
        lanes, the torch threads of each call (what the rounding depends on)."""
        out = self.chunking.describe(self.spec)
        if self.model.encoder.tiling is not None:
            out["dac_encoder_tile"] = f"{self.model.encoder.tiling[0]}+{self.model.encoder.tiling[1]}"
        out["dac_encoder_layout"] = self.model.encoder.layout
        if self.lanes.n > 1:
            out.update(threads=self.lanes.threads_per_lane, lanes=self.lanes.n)
        return out

    @torch.inference_mode()
    def _call(self, x: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """One span's codes (int16 ``[n_q, hi - lo]``); runs in a lane."""
        seg = torch.from_numpy(x[lo * self.hop:hi * self.hop]).to(self.device)[None, None]
        return self.model.encode(seg, self.n_q)[0].to(torch.int16).cpu().numpy()

    def _start(self, key, audio: np.ndarray) -> None:
        n = audio.shape[-1]
        T = -(-n // self.hop)
        x = np.zeros(T * self.hop, dtype=np.float32)  # the official preprocess: zeros to whole frames
        x[:n] = audio.reshape(-1)[:n]
        held = _Held(key, n, self.chunking.spans(T))
        self.held.append(held)
        for lo, hi, _start, _stop in held.spans:
            held.futures.append(self.lanes.submit(self._call, x, lo, hi, cost=hi - lo))

    def _finished(self, keep: int) -> list:
        """Wait until at most ``keep`` calls are unfinished; the files whose calls all ended (in the
        order they came), reporting progress within longer files meanwhile."""
        while True:
            pending = [f for h in self.held for f in h.futures if not f.done()]
            if self.on_progress is not None:
                for h in self.held:
                    if len(h.spans) > 1 and 0 < h.done() < len(h.spans):
                        frames = sum(s[3] - s[2] for s, f in zip(h.spans, h.futures) if f.done())
                        self.on_progress(h.key, min(h.n, frames * self.hop), h.n)
            if len(pending) <= keep:
                break
            cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        out = [(h.key, h.result(self.n_q)) for h in self.held if h.done() == len(h.spans)]
        self.held = [h for h in self.held if h.done() < len(h.spans)]
        return out

    def encode(self, audio: np.ndarray, key=None) -> EncodedItem:
        """One file's codes, at once (its calls still run in the lanes)."""
        self._start(key, audio)
        held = self.held[-1]
        cf.wait(held.futures)
        self.held.remove(held)
        res = held.result(self.n_q)
        if isinstance(res, Exception):
            raise res
        return res

    def run(self, batch):
        for key, audio in batch:
            self._start(key, audio)
        return self._finished(keep=2 * self.lanes.n if self.lanes.n > 1 else 0)

    def flush(self):
        return self._finished(keep=0)

    def reset(self) -> None:
        for h in self.held:
            for f in h.futures:
                f.cancel()
        self.held = []


class DacDecoder(ItemDecoder):
    """Adapter: ``EncodedItem`` -> audio ``[1, n_samples]``: the official ``decode(from_codes(codes))``,
    cut to the file's length, chunked as the encoder chunks (bounded memory)."""

    def __init__(self, model: DAC, spec: CodecSpec, device: torch.device, chunking: Chunking | None = None):
        self.model, self.spec, self.device = model, spec, device
        self.name = spec.name
        self.sample_rate = spec.sample_rate
        self.hop = model.config.hop
        self.chunking = chunking or Chunking.for_spec(spec)

    def numerics(self) -> dict:
        """The chunking and the decoder's layout (recorded with decoded audio)."""
        return {**self.chunking.describe(self.spec), "dac_decoder_layout": self.model.decoder.layout}

    @torch.inference_mode()
    def decode(self, item: EncodedItem, key=None) -> np.ndarray:
        n_q, T = item.codes.shape
        have = self.model.config.n_codebooks
        if n_q > have:
            raise WeightsError(f"the codes have {n_q} codebooks but {self.name} has {have}")
        if T != -(-item.n_samples // self.hop):
            raise ValueError(f"{T} frames of codes do not fit {item.n_samples} samples for {self.name} "
                             f"(expected {-(-item.n_samples // self.hop)})")
        codes = torch.from_numpy(item.codes.astype(np.int64)).to(self.device)
        n, h = item.n_samples, self.hop
        out = np.zeros((1, n), dtype=np.float32)  # the 16/24 kHz decoders end 8 samples short: zeros
        spans = self.chunking.spans(T)
        for lo, hi, start, stop in spans:
            wav = self.model.decode(codes[None, :, lo:hi])[0, 0]
            a, b = start * h, min(n, stop * h)
            got = wav[a - lo * h:b - lo * h]
            out[0, a:a + got.shape[0]] = got.float().cpu().numpy()
            if self.on_progress is not None and len(spans) > 1:
                self.on_progress(key, stop, T)
        return out


