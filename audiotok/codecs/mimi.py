"""Mimi (Kyutai's codec of Moshi, Sesame CSM, Kyutai STT/TTS): 24 kHz mono, 12.5 frames per second,
up to 32 codebooks of 2048 codes (the first one "semantic", the others acoustic).

The network is computed here (``MimiNet``), from the official weights in either layout
(``mimi_weights``): a causal SEANet encoder (strides 4, 5, 6, 8: 25 Hz), an 8-layer transformer
with rotary positions attending 250 steps back, a learnt stride-2 convolution down to 12.5 Hz, and a
split residual vector quantizer (one semantic level, the rest acoustic, each part with its own
input and output projections); the decoder mirrors it. Everything is causal, so the model runs as a
stream of fixed-length windows that carry their state: the last samples each convolution needs,
each transposed convolution's last input frame, and each attention layer's keys and values of the
last 250 steps with their positions. Encoding a file window by window equals the official
whole-file ``encode`` (which pads the file with zeros to a whole frame); memory does not grow with
the file's length.

Same codes whatever the batching: each call has a fixed shape (rows x window samples, from the
device type and, on the CPU, the file's own length); a row carries one file from its first window
(state reset) to its last, and rows never mix (convolutions, attention and nearest-code search are
per row).

On the CPU, the adapter keeps one set of row streams per lane (``engine.lanes``: side by side, one
torch thread each, up to 4): a file goes to the least loaded lane and stays there to its end, so
codes are the same for ``--threads`` 1 to 4 and both cores of a small machine work (1.3x the audio
per second of one stream with two threads, measured on 2 cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.devices import resolve_device
from ..engine.lanes import Lanes, lane_plan
from ..errors import WeightsError
from ..formats.codes import EncodedItem
from ..registry import CodecSpec
from ..weights import check_finite
from .adapters import ItemDecoder
from .layout import (
    ELU,
    NwcWeight,
    activate,
    check_layout,
    conv1d_nwc,
    conv_transpose1d_nwc,
    default_layout,
    nwc_weight,
    time_dim,
    with_context,
)
from .mimi_weights import (
    MimiConfig,
    config_for,
    decoder_plan,
    default_weights,
    encoder_plan,
    read_safetensors,
    to_moshi_layout,
)
from .rows import LanedRows, StreamShape


# --- the network -------------------------------------------------------------------------------------
@dataclass
class _Conv:
    """A causal convolution: ``pad`` samples of left context (zeros at a file's start, or its
    first sample repeated when ``replicate``), no look-ahead."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    replicate: bool = False
    nwc: NwcWeight | None = None  # the weight for the ``nwc`` layout

    @property
    def pad(self) -> int:
        return (self.weight.shape[-1] - 1) * self.dilation + 1 - self.stride

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups


@dataclass
class _ConvTr:
    """A causal transposed convolution trimmed on the right: a window's outputs need the last
    ``ctx`` input frames of the window before."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    groups: int = 1
    nwc: NwcWeight | None = None

    @property
    def ctx(self) -> int:
        return -(-(self.weight.shape[-1] - self.stride) // self.stride)

    @property
    def in_channels(self) -> int:
        return self.weight.shape[0]


@dataclass
class _Layer:
    in_proj: torch.Tensor
    out_proj: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor]
    norm2: tuple[torch.Tensor, torch.Tensor]
    linear1: torch.Tensor
    linear2: torch.Tensor
    scale1: torch.Tensor
    scale2: torch.Tensor


@dataclass
class _Codebooks:
    input_proj: torch.Tensor
    output_proj: torch.Tensor
    embeds: list = field(default_factory=list)  # [bins, dim] per level


class MimiNet:
    """Mimi's encoder and decoder as streams over windows of rows (weights in the moshi layout).

    ``layout`` (default ``layout.default_layout(device)``): how the SEANet and the transformer hold
    activations, ``ncw`` (the official ``[rows, channels, time]``) or ``nwc`` (time-major, channels
    last: oneDNN's channels-last convolutions, no reorder per layer, no transposes around the
    transformer)."""

    def __init__(self, w: dict, config: MimiConfig, device: torch.device, layout: str | None = None):
        self.config = c = config
        self.layout = check_layout(layout or default_layout(device))
        self.nwc = self.layout == "nwc"
        self.t = time_dim(self.layout)
        w = {k: v.to(device=device, dtype=torch.float32) for k, v in w.items()}
        self.device = device
        self.hop = c.hop
        self.enc = self._seanet(w, "encoder", encoder_plan(c))
        self.dec = self._seanet(w, "decoder", decoder_plan(c))
        self.enc_layers = self._transformer(w, "encoder_transformer", c.num_hidden_layers)
        self.dec_layers = self._transformer(w, "decoder_transformer", c.num_hidden_layers)
        s = c.downsample_stride
        self.down = _Conv(w["downsample.conv.conv.conv.weight"], None, stride=s, replicate=True)
        up = w["upsample.convtr.convtr.convtr.weight"]
        self.up = _ConvTr(up, None, stride=s, groups=c.hidden_size // up.shape[1])
        self.rvq = []
        for rvq, n in (("rvq_first", c.num_semantic_quantizers), ("rvq_rest", c.num_quantizers - c.num_semantic_quantizers)):
            cb = _Codebooks(w[f"quantizer.{rvq}.input_proj.weight"], w[f"quantizer.{rvq}.output_proj.weight"])
            for q in range(n):
                p = f"quantizer.{rvq}.vq.layers.{q}._codebook."
                cb.embeds.append(w[p + "embedding_sum"] / w[p + "cluster_usage"].clamp(min=1e-5)[:, None])
            self.rvq.append(cb)
        self.n_q = c.num_quantizers
        if self.nwc:
            for op in self._convs(self.enc) + self._convs(self.dec) + [self.down, self.up]:
                op.nwc = nwc_weight(op.weight, isinstance(op, _ConvTr), op.groups)

    # --- building -----------------------------------------------------------------------------
    @staticmethod
    def _seanet(w: dict, part: str, plan: list) -> list:
        ops: list = []
        for op in plan:
            if op[0] == "elu":
                ops.append(("elu", None))
            elif op[0] == "conv":
                _, i, _, _, _, stride, dilation = op
                p = f"{part}.model.{i}.conv.conv."
                ops.append(("conv", _Conv(w[p + "weight"], w[p + "bias"], stride, dilation)))
            elif op[0] == "convtr":
                _, i, _, _, _, stride = op
                p = f"{part}.model.{i}.convtr.convtr."
                ops.append(("convtr", _ConvTr(w[p + "weight"], w[p + "bias"], stride)))
            else:
                _, i, _, dilation = op
                p = f"{part}.model.{i}.block."
                ops.append(("res", (_Conv(w[p + "1.conv.conv.weight"], w[p + "1.conv.conv.bias"], 1, dilation),
                                    _Conv(w[p + "3.conv.conv.weight"], w[p + "3.conv.conv.bias"]))))
        return ops

    @staticmethod
    def _transformer(w: dict, part: str, n: int) -> list:
        layers = []
        for i in range(n):
            p = f"{part}.transformer.layers.{i}."
            layers.append(_Layer(w[p + "self_attn.in_proj_weight"], w[p + "self_attn.out_proj.weight"],
                                 (w[p + "norm1.weight"], w[p + "norm1.bias"]), (w[p + "norm2.weight"], w[p + "norm2.bias"]),
                                 w[p + "linear1.weight"], w[p + "linear2.weight"],
                                 w[p + "layer_scale_1.scale"], w[p + "layer_scale_2.scale"]))
        return layers

    # --- state ----------------------------------------------------------------------------------
    def _convs(self, ops: list) -> list:
        out = []
        for kind, op in ops:
            if kind in ("conv", "convtr"):
                out.append(op)
            elif kind == "res":
                out.extend(op)
        return out

    def _init(self, rows: int, ops: list, extra: list, layers: list) -> dict:
        dev, c = self.device, self.config
        ctx = []
        for op in self._convs(ops) + extra:
            n = op.ctx if isinstance(op, _ConvTr) else op.pad
            ctx.append(torch.zeros((rows, n, op.in_channels) if self.nwc else (rows, op.in_channels, n), device=dev))
        H, hd, C = c.num_attention_heads, c.head_dim, c.sliding_window
        kv = [{"k": torch.zeros(rows, H, C, hd, device=dev), "v": torch.zeros(rows, H, C, hd, device=dev),
               "pos": torch.full((rows, C), -1, dtype=torch.long, device=dev)} for _ in layers]
        return {"ctx": ctx, "kv": kv, "offset": torch.zeros(rows, dtype=torch.long, device=dev)}

    def init_encoder_state(self, rows: int) -> dict:
        return self._init(rows, self.enc, [self.down], self.enc_layers)

    def init_decoder_state(self, rows: int) -> dict:
        return self._init(rows, self.dec, [self.up], self.dec_layers)

    # --- one window -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_window(self, x: torch.Tensor, state: dict, fresh: torch.Tensor) -> torch.Tensor:
        """Samples ``[rows, 1, W]`` (W a multiple of the hop) -> latents ``[rows, hidden, W / hop]``.
        ``fresh[r]``: row ``r``'s window is the first of a file (its state starts anew)."""
        fresh = fresh if bool(fresh.any()) else None
        ctx = state["ctx"]
        if self.nwc:
            x = x.transpose(1, 2).contiguous()
        x = self._run(self.enc, x, ctx, fresh)
        x = self._attend(self.enc_layers, x, state, fresh)
        x = self._conv(self.down, x, ctx, len(ctx) - 1, fresh)
        return x.transpose(1, 2) if self.nwc else x

    @torch.inference_mode()
    def decode_window(self, emb: torch.Tensor, state: dict, fresh: torch.Tensor) -> torch.Tensor:
        """Latents ``[rows, hidden, F]`` -> samples ``[rows, 1, F * hop]``."""
        fresh = fresh if bool(fresh.any()) else None
        ctx = state["ctx"]
        if self.nwc:
            emb = emb.transpose(1, 2).contiguous()
        x = self._convtr(self.up, emb, ctx, len(ctx) - 1, fresh)
        x = self._attend(self.dec_layers, x, state, fresh)
        x = self._run(self.dec, x, ctx, fresh)
        return x.transpose(1, 2) if self.nwc else x

    def _run(self, ops: list, x: torch.Tensor, ctx: list, fresh) -> torch.Tensor:
        """The SEANet ops; ``ctx[i]`` is the context of the i-th (transposed) convolution. An ELU
        right before a convolution is applied by it (``_conv(elu=True)``)."""
        i = 0
        elu = False
        for kind, op in ops:
            if elu and kind != "conv":
                x = activate(ELU, x, inplace=True)
            if kind == "elu":
                elu = True
                continue
            if kind == "conv":
                x = self._conv(op, x, ctx, i, fresh, elu)
                i += 1
            elif kind == "convtr":
                x = self._convtr(op, x, ctx, i, fresh)
                i += 1
            else:
                a, b = op
                y = self._conv(a, x, ctx, i, fresh, elu=True)  # x stays as it is: the sum reads it
                y = self._conv(b, y, ctx, i + 1, fresh, elu=True, inplace=True)
                i += 2
                x = y.add_(x)
            elu = False
        return activate(ELU, x, inplace=True) if elu else x

    def _conv(self, op: _Conv, x: torch.Tensor, ctx_list: list, idx: int, fresh, elu: bool = False,
              inplace: bool = False) -> torch.Tensor:
        """Convolution ``op`` of ``x`` (of ELU(``x``) when ``elu``; ``inplace``: ``x`` may be
        overwritten) after its context (a file's start: zeros, or its first sample repeated)."""
        pad, t = op.pad, self.t
        if pad:
            ctx = ctx_list[idx]

            def start(body):  # a file's start: its first sample repeated, or zeros
                return body.narrow(t, 0, 1).expand_as(ctx) if op.replicate else torch.zeros_like(ctx)

            x, ctx_list[idx] = with_context(x, ctx, t, self.nwc, ELU if elu else None, fresh, start)
        elif elu:
            x = activate(ELU, x, inplace=inplace)
        if self.nwc:
            return conv1d_nwc(x, op.nwc, op.bias, op.stride, op.dilation, op.groups)
        return F.conv1d(x, op.weight, op.bias, op.stride, 0, op.dilation, op.groups)

    def _convtr(self, op: _ConvTr, x: torch.Tensor, ctx_list: list, idx: int, fresh) -> torch.Tensor:
        t = self.t
        T, n = x.shape[t], op.ctx
        if n:
            ctx = ctx_list[idx]
            if fresh is not None:  # no frames before a file's first: they contribute nothing
                ctx = torch.where(fresh[:, None, None], torch.zeros_like(ctx), ctx)
            x = torch.cat([ctx, x], dim=t)
            ctx_list[idx] = x.narrow(t, x.shape[t] - n, n).clone()
        if self.nwc:
            y = conv_transpose1d_nwc(x, op.nwc, op.bias, op.stride, op.groups)
        else:
            y = F.conv_transpose1d(x, op.weight, op.bias, op.stride, 0, 0, op.groups)
        return y.narrow(t, n * op.stride, T * op.stride)

    def _attend(self, layers: list, x: torch.Tensor, state: dict, fresh) -> torch.Tensor:
        """The transformer over a window ``[rows, hidden, T]`` (``nwc``: ``[rows, T, hidden]``), in
        the layout it came in."""
        c = self.config
        R, T = (x.shape[0], x.shape[1]) if self.nwc else (x.shape[0], x.shape[2])
        H, hd, C = c.num_attention_heads, c.head_dim, c.sliding_window
        if fresh is not None:
            state["offset"] = torch.where(fresh, torch.zeros_like(state["offset"]), state["offset"])
            for kv in state["kv"]:
                kv["pos"] = torch.where(fresh[:, None], torch.full_like(kv["pos"], -1), kv["pos"])
        offset = state["offset"]
        qpos = offset[:, None] + torch.arange(T, device=x.device)  # [R, T]
        cos, sin = _rope(offset, T, hd, c.rope_theta, x.device)
        h = x if self.nwc else x.transpose(1, 2)
        for layer, kv in zip(layers, state["kv"]):
            y = F.layer_norm(h, (h.shape[-1],), layer.norm1[0], layer.norm1[1], c.norm_eps)
            q, k, v = F.linear(y, layer.in_proj).view(R, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
            keys = torch.cat([kv["k"], k], dim=2)
            values = torch.cat([kv["v"], v], dim=2)
            kpos = torch.cat([kv["pos"], qpos], dim=1)  # [R, C + T]
            delta = qpos[:, :, None] - kpos[:, None, :]
            mask = (kpos[:, None, :] >= 0) & (delta >= 0) & (delta < C)
            att = F.scaled_dot_product_attention(q, keys, values, mask[:, None], dropout_p=0.0)
            kv["k"], kv["v"], kv["pos"] = keys[:, :, -C:].clone(), values[:, :, -C:].clone(), kpos[:, -C:].clone()
            att = att.transpose(1, 2).reshape(R, T, H * hd)
            h = h + layer.scale1 * F.linear(att, layer.out_proj)
            y = F.layer_norm(h, (h.shape[-1],), layer.norm2[0], layer.norm2[1], c.norm_eps)
            h = h + layer.scale2 * F.linear(F.gelu(F.linear(y, layer.linear1)), layer.linear2)
        state["offset"] = offset + T
        return h if self.nwc else h.transpose(1, 2)

    # --- quantizer ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def quantize(self, emb: torch.Tensor, n_q: int) -> torch.Tensor:
        """Latents ``[rows, hidden, T]`` -> codes ``[rows, n_q, T]`` (int64)."""
        R, _, T = emb.shape
        codes = []
        n_sem = self.config.num_semantic_quantizers
        for part, levels in ((self.rvq[0], min(n_q, n_sem)), (self.rvq[1], n_q - n_sem)):
            if levels <= 0:
                continue
            residual = F.conv1d(emb, part.input_proj).transpose(1, 2).reshape(R * T, -1)
            for embed in part.embeds[:levels]:
                idx = torch.cdist(residual[None], embed[None], p=2)[0].argmin(dim=-1)
                residual = residual - F.embedding(idx, embed)
                codes.append(idx.view(R, T))
        return torch.stack(codes, dim=1)

    @torch.inference_mode()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[rows, K, T]`` -> latents ``[rows, hidden, T]``."""
        n_sem = self.config.num_semantic_quantizers
        out = None
        for part, sel in ((self.rvq[0], codes[:, :n_sem]), (self.rvq[1], codes[:, n_sem:])):
            if sel.shape[1] == 0:
                continue
            q = torch.zeros((), device=codes.device)
            for i in range(sel.shape[1]):
                q = q + F.embedding(sel[:, i], part.embeds[i]).transpose(1, 2)
            y = F.conv1d(q, part.output_proj)
            out = y if out is None else out + y
        return out


def _rope(offset: torch.Tensor, T: int, D: int, max_period: float, device):
    """cos and sin ``[rows, 1, T, D/2]`` of the interleaved rotary embedding at positions
    ``offset + 0..T-1`` (the float32 expression moshi uses)."""
    ds = torch.arange(D // 2, device=device, dtype=torch.float32)
    freqs = torch.exp(ds * (-math.log(max_period) * 2 / D))
    ts = offset.float().view(-1, 1) + torch.arange(T, device=device, dtype=torch.float32)
    ts = ts.view(-1, 1, T, 1)
    return torch.cos(freqs * ts), torch.sin(freqs * ts)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    xr, xi = x.view(*x.shape[:-1], -1, 2).unbind(-1)
    return torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1).view(x.shape)


# --- loading -----------------------------------------------------------------------------------------
def load_weights(path: Path, device, layout: str | None = None) -> MimiNet:
    """A ``MimiNet`` from a ``.safetensors`` file in either official layout (strict); ``layout``:
    its activations' (``MimiNet``)."""
    config = config_for(path)
    tensors = read_safetensors(path)
    check_finite(tensors, path)  # names as the file has them
    state = to_moshi_layout(tensors, config, path)
    return MimiNet(state, config, device, layout)


class MimiCodec:
    """Mimi behind the registry's ``protocols.Codec`` shape."""

    def __init__(self, spec: CodecSpec, checkpoint=None, device="cpu"):
        self.spec = spec
        self.device = resolve_device(device)
        if checkpoint is None:
            path = default_weights()
        else:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise WeightsError(f"checkpoint file {path} does not exist; check the --checkpoint path")
        self.checkpoint_path = str(path)
        self.net = load_weights(path, self.device)
        if self.net.config.sampling_rate != spec.sample_rate or self.net.config.audio_channels != spec.channels:
            raise WeightsError(f"checkpoint {path} is a {self.net.config.sampling_rate} Hz, "
                               f"{self.net.config.audio_channels}-channel Mimi; {spec.name} is {spec.sample_rate} Hz mono")
        if self.net.hop * spec.frame_rate != spec.sample_rate or self.net.config.codebook_size != spec.codebook_size:
            raise WeightsError(f"checkpoint {path} runs at {spec.sample_rate / self.net.hop:g} frames per second with "
                               f"{self.net.config.codebook_size} codes per codebook; {spec.name} is "
                               f"{spec.frame_rate:g} Hz x {spec.codebook_size}")

    def encoder(self, bandwidth: float, device=None) -> MimiEncoder:
        return MimiEncoder(self, bandwidth, self.device if device is None else resolve_device(device))

    def decoder(self, device=None) -> MimiDecoder:
        return MimiDecoder(self, self.device if device is None else resolve_device(device))


def load_mimi(spec: CodecSpec, checkpoint=None, device="cpu") -> MimiCodec:
    """``CodecSpec.implementation`` of ``mimi``."""
    return MimiCodec(spec, checkpoint, device)


def _net_on(codec: MimiCodec, device: torch.device) -> MimiNet:
    if device == codec.device:
        return codec.net
    return load_weights(Path(codec.checkpoint_path), device)


# --- adapters ----------------------------------------------------------------------------------------
# The shapes every call runs at (measured on 2 CPU cores: longer windows cost less per second of
# audio, 1 row runs as fast per sample as 4). On the CPU, files shorter than LONE_SECONDS share
# calls of 4 rows x 1.6 s (a short file wastes at most one window's tail); longer ones run alone
# in calls of 1 row x 6.4 s (about 1.5x faster per second of audio). Which shape a file gets
# depends on its length only, so its codes do not depend on what else is encoded. On CUDA every
# file shares calls of 32 rows x 4 s.
CPU_SHARED = StreamShape(4, 38400)
CPU_LONE = StreamShape(1, 153600)
CUDA_SHARED = StreamShape(32, 96000)
LONE_SECONDS = 30.0
CPU_DECODE_FRAMES = 80  # 6.4 s per decoder call
CUDA_DECODE_FRAMES = 150


class MimiEncoder:
    """Adapter: ``[1, N]`` float32 audio at 24 kHz -> ``EncodedItem`` (int16 codes ``[n_q, ceil(N / 1920)]``).

    Every model call has a fixed shape (``StreamShape``) chosen from the device type and, on the
    CPU, the file's own length (``lone_seconds``): never from the batch the engine hands over.
    ``shared`` / ``lone`` override the shapes (tests and benchmarks). ``lanes`` (default:
    ``lane_plan(device)``): one ``RowScheduler`` per lane; with more than one, ``run`` hands each
    file to the least loaded lane and returns what the lanes have finished (one task per lane left
    running, so they stay busy while the next batch is read), ``flush`` waits for the rest."""

    on_progress = None  # set by the pipeline: on_progress(key, samples_done, samples_total)

    def __init__(self, codec: MimiCodec, bandwidth: float, device: torch.device, shared: StreamShape | None = None,
                 lone: StreamShape | None = None, lone_seconds: float | None = None, lanes: Lanes | None = None):
        self.spec = codec.spec
        self.bandwidth = self.spec.check_bandwidth(bandwidth)
        self.n_q = self.spec.n_codebooks(self.bandwidth)
        self.net = _net_on(codec, device)
        if self.n_q > self.net.n_q:
            raise WeightsError(f"{self.n_q} codebooks asked (bandwidth {self.bandwidth:g} kbps) but the weights in "
                               f"{codec.checkpoint_path} hold {self.net.n_q}")
        self.device = device
        self.hop = self.net.hop
        self.sample_rate, self.channels, self.frame_rate = self.spec.sample_rate, self.spec.channels, self.spec.frame_rate
        cuda = device.type == "cuda"
        self.shared_shape = shared or (CUDA_SHARED if cuda else CPU_SHARED)
        self.lone_shape = None if cuda and lone is None else (lone or CPU_LONE)
        self.lone_samples = int((LONE_SECONDS if lone_seconds is None else lone_seconds) * self.sample_rate)
        self.lanes = lanes if lanes is not None else Lanes(*lane_plan(device))
        self.rows = LanedRows(self, self.lanes, self.shared_shape, self.lone_shape, self.lone_samples, self.hop,
                              self.net.init_encoder_state, self._encode_window)

    def _encode_window(self, x: torch.Tensor, state, fresh: torch.Tensor, ends: list) -> np.ndarray:
        """One fixed-shape call (``rows.RowStreams``): int16 codes ``[rows, n_q, window / hop]``."""
        emb = self.net.encode_window(x, state, fresh)
        return self.net.quantize(emb, self.n_q).to(torch.int16).cpu().numpy()

    def numerics(self) -> dict:
        """What the codes depend on beyond the audio and the weights (for metadata)."""
        out = {"stream_shared": self.shared_shape.describe(), "stream_layout": self.net.layout}
        if self.lone_shape is not None:
            out["stream_lone"] = self.lone_shape.describe()
            out["lone_seconds"] = self.lone_samples / self.sample_rate
        if self.lanes.n > 1:
            out.update(threads=self.lanes.threads_per_lane, lanes=self.lanes.n)
        return out

    def reset(self) -> None:
        self.rows.reset()

    def run(self, batch):
        return self.rows.run([(key, audio[0]) for key, audio in batch])

    def flush(self):
        return self.rows.flush()


class MimiDecoder(ItemDecoder):
    """Adapter: ``EncodedItem`` -> ``[1, n_samples]`` float32 audio at 24 kHz, decoded as a stream
    of ``window`` frames into one preallocated output (memory does not grow with the file)."""

    def __init__(self, codec: MimiCodec, device: torch.device, window: int | None = None):
        self.spec = codec.spec
        self.net = _net_on(codec, device)
        self.device = device
        self.window = window or (CUDA_DECODE_FRAMES if device.type == "cuda" else CPU_DECODE_FRAMES)
        self.sample_rate = self.spec.sample_rate

    def numerics(self) -> dict:
        """What the decoded samples depend on beyond the codes and the weights (for metadata)."""
        return {"stream_window": self.window, "stream_layout": self.net.layout}

    def decode(self, item: EncodedItem, key=None) -> np.ndarray:
        codes = np.asarray(item.codes)
        K, T = codes.shape
        if K > self.net.n_q:
            raise WeightsError(f"the codes have {K} codebooks but the Mimi weights hold {self.net.n_q}")
        if K < 1:
            raise ValueError("the codes have no codebook")
        if codes.size and (codes.min() < 0 or codes.max() >= self.net.config.codebook_size):
            raise ValueError(f"the codes hold values outside 0..{self.net.config.codebook_size - 1}")
        expected = sum(self.spec.segment_frames(item.n_samples))
        if T != expected:
            raise ValueError(f"{T} frames of codes do not fit {item.n_samples} samples for {self.spec.name} "
                             f"(expected {expected})")
        W, hop = self.window, self.net.hop
        out = np.empty((1, item.n_samples), dtype=np.float32)
        state = self.net.init_decoder_state(1)
        c = torch.from_numpy(codes.astype(np.int64)).to(self.device)
        for start in range(0, T, W):
            part = c[:, start:start + W]
            if part.shape[1] < W:  # the last window: code 0 after the end; those samples are cut off
                part = torch.cat([part, part.new_zeros(K, W - part.shape[1])], dim=1)
            emb = self.net.dequantize(part[None])
            wav = self.net.decode_window(emb, state, torch.tensor([start == 0], device=self.device))
            lo = start * hop
            n = min(W * hop, item.n_samples - lo)
            if n > 0:
                out[:, lo:lo + n] = wav[0, :, :n].float().cpu().numpy()
            if self.on_progress is not None:
                self.on_progress(key, min(T, start + W), T)
        return out


