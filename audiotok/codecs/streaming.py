"""The causal EnCodec 24 kHz encoder (and decoder) run as a stream of fixed-length windows.

Each convolution keeps the last ``kernel - stride`` samples of its input as left context for the
next window, and the LSTM carries its ``(h, c)`` state, so encoding a file window by window equals
encoding it whole (up to float rounding). At the start of a file a layer's context is the
reflection of its first samples, and at its end each strided convolution sees the reflection of
its last samples in the few positions past the end that its last frame reads: exactly the padding
the official model applies (``SConv1d`` pads the right with ``reflect`` to a whole frame), so every
frame matches, the last one of a file whose length is not a multiple of 320 included.

Windows have a fixed length and the caller fixes the number of rows (``codecs/encodec.py``), so every
kernel sees the same shapes whatever files share a call: a row's numbers depend on its own samples,
the window shape and the thread count, never on its neighbours. Nothing here measures the machine.

``StreamingDecoder`` runs the causal decoder the same way, frames in and samples out: its
convolutions carry context as the encoder's do, each transposed convolution carries its last
input frame (the one whose output overlaps the next window's first samples), and the LSTM its
state. So a long file decodes in memory that does not grow with its length (the official decoder
holds activations of 32 channels at 24 kHz for the whole file: 5.5 GB per activation for 30 min).

``layout``: ``ncw`` computes with the official model's kernels and layout (its numbers up to the
rounding that other call shapes give, often none); ``nwc`` holds activations time-major, channels last (``codecs.layout``), faster on
the CPU, its numbers within float rounding of the official ones.
"""

from __future__ import annotations

import torch
from torch import nn

from .layout import (
    LAYOUTS,
    activate,
    check_layout,
    conv1d_nwc,
    conv_transpose1d_nwc,
    nwc_weight,
    time_dim,
    with_context,
)

__all__ = ["LAYOUTS", "StreamingDecoder", "StreamingEncoder"]


class _Conv(nn.Module):
    """A causal convolution; ``nwc``: on ``[rows, time, C]`` (``layout.conv1d_nwc``)."""

    def __init__(self, sconv, layout: str):
        super().__init__()
        conv = sconv.conv.conv
        self.conv = conv
        k = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        self.pad = k - conv.stride[0]
        self.stride = conv.stride[0]
        self.nwc = layout == "nwc"
        if self.nwc:
            self.weight_nwc = nwc_weight(conv.weight, groups=conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.nwc:
            return conv1d_nwc(x, self.weight_nwc, c.bias, c.stride[0], c.dilation[0], c.groups)
        return c(x)


class _ConvTr(nn.Module):
    """A causal transposed convolution: window ``[ctx frames, x]`` in, the samples of ``x``'s frames out."""

    def __init__(self, sconvtr, layout: str):
        super().__init__()
        conv = sconvtr.convtr.convtr
        self.conv = conv
        self.stride = conv.stride[0]
        self.pad = (conv.kernel_size[0] - 1) // self.stride  # earlier frames reaching this window
        self.nwc = layout == "nwc"
        self.t = time_dim(layout)
        if self.nwc:
            self.weight_nwc = nwc_weight(conv.weight, transposed=True, groups=conv.groups)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        t = self.t
        x_all = torch.cat([ctx, x], dim=t)
        if self.nwc:
            y = conv_transpose1d_nwc(x_all, self.weight_nwc, self.conv.bias, self.stride, self.conv.groups)
        else:
            y = self.conv(x_all)
        start = self.pad * self.stride
        return y.narrow(t, start, x.shape[t] * self.stride)


class _StatefulStack(nn.Module):
    """The ops of a causal SEANet ``nn.Sequential`` with the state that carries them across windows."""

    def __init__(self, layers, layout: str = "ncw"):
        super().__init__()
        self.layout = check_layout(layout)
        self.nwc = layout == "nwc"
        self.t = time_dim(layout)  # the time dimension of activations
        from encodec.modules.conv import SConv1d, SConvTranspose1d
        from encodec.modules.lstm import SLSTM
        from encodec.modules.seanet import SEANetResnetBlock

        self.ops: list[tuple[str, object]] = []
        self.convs = nn.ModuleList()
        self.hop = 1  # samples per frame: the product of the (transposed) convolutions' strides
        for layer in layers:
            if isinstance(layer, (SConv1d, SConvTranspose1d)):
                if not layer.causal:
                    raise ValueError("streaming needs the causal (24 kHz) EnCodec")
                if isinstance(layer, SConvTranspose1d):
                    self.convs.append(_ConvTr(layer, layout))
                    self.ops.append(("convtr", len(self.convs) - 1))
                else:
                    self.ops.append(("conv", (self._add(layer), None)))
                self.hop *= self.convs[-1].stride
            elif isinstance(layer, SEANetResnetBlock):
                inner = [("conv", (self._add(m), None)) if isinstance(m, SConv1d) else ("act", m) for m in layer.block]
                self.ops.append(("res", (self._fuse(inner), self._add(layer.shortcut))))
            elif isinstance(layer, SLSTM):
                self.lstm = layer.lstm
                self.lstm_skip = layer.skip
                self.ops.append(("lstm", None))
            else:  # activations
                self.ops.append(("act", layer))
        self.ops = self._fuse(self.ops)

    def _fuse(self, ops: list) -> list:
        """An activation followed by a padded convolution becomes one step that writes the
        activation straight after the convolution's context (no copy to prepend the context)."""
        out: list = []
        for kind, op in ops:
            if kind == "conv" and out and out[-1][0] == "act" and self.convs[op[0]].pad:
                out[-1] = ("conv", (op[0], out[-1][1]))
            else:
                out.append((kind, op))
        return out

    def _add(self, sconv) -> int:
        self.convs.append(_Conv(sconv, self.layout))
        return len(self.convs) - 1

    def init_state(self, rows: int, device=None, dtype=torch.float32) -> dict:
        def shape(c):
            return (rows, c.pad, c.conv.in_channels) if self.nwc else (rows, c.conv.in_channels, c.pad)

        ctx = [torch.zeros(shape(c), device=device, dtype=dtype) for c in self.convs]
        n, h = self.lstm.num_layers, self.lstm.hidden_size
        return {"ctx": ctx, "h": torch.zeros(n, rows, h, device=device, dtype=dtype),
                "c": torch.zeros(n, rows, h, device=device, dtype=dtype)}

    # --- one window -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: dict, fresh: torch.Tensor | None = None,
                ends: list[int] | None = None) -> torch.Tensor:
        """Run one window ``x [rows, C, W]`` through every op (encoder: samples in, ``W`` a multiple
        of the hop, ``[rows, 128, W / 320]`` out; decoder: frames in, ``W * 320`` samples out).

        ``fresh[r]`` marks rows whose window is the first of a file (context and LSTM reset);
        ``ends[r]`` (encoder) is the number of real samples in row ``r`` (``W`` unless its file
        ends inside this window; what follows them is ignored). ``state`` (from ``init_state``) is
        updated in place."""
        if fresh is not None and not bool(fresh.any()):
            fresh = None
        if ends is not None and all(n % self.hop == 0 for n in ends):
            ends = None  # whole frames everywhere: no layer reads past an end
        if self.nwc:
            x = x.transpose(1, 2).contiguous()
        for kind, op in self.ops:
            x = self._op(kind, op, x, state, fresh, ends)
            if ends is not None and kind == "conv":
                stride = self.convs[op[0]].stride
                ends = [-(-n // stride) for n in ends]
        return x.transpose(1, 2).contiguous() if self.nwc else x

    def _op(self, kind: str, op, x: torch.Tensor, state: dict, fresh, ends) -> torch.Tensor:
        t = self.t
        if kind == "conv":
            return self._conv(op[0], x, state, fresh, ends, act=op[1])
        if kind == "convtr":
            c = self.convs[op]
            ctx = state["ctx"][op]
            if fresh is not None:  # no frames before a file's first: their contribution is zero
                ctx = ctx * (~fresh).to(ctx.dtype)[:, None, None]
            state["ctx"][op] = x.narrow(t, x.shape[t] - c.pad, c.pad).clone()
            return c(x, ctx)
        if kind == "act":  # x is this stack's own intermediate: overwritten in place
            return activate(op, x, inplace=True)
        if kind == "res":
            inner, short = op
            y = x
            for j, (k, o) in enumerate(inner):  # x stays as it is: the shortcut reads it
                y = self._op(k, o, y, state, fresh, None) if j or k != "act" else activate(o, y, inplace=False)
            return self._conv(short, x, state, fresh) + y
        h, c = state["h"], state["c"]
        if fresh is not None:
            keep = (~fresh).to(h.dtype)[None, :, None]
            h, c = h * keep, c * keep
        seq = x.transpose(0, 1) if self.nwc else x.permute(2, 0, 1)  # [frames, rows, C]
        y, (state["h"], state["c"]) = self.lstm(seq, (h.contiguous(), c.contiguous()))
        if self.lstm_skip:
            y = y + seq
        return y.transpose(0, 1).contiguous() if self.nwc else y.permute(1, 2, 0)

    def _conv(self, idx: int, x: torch.Tensor, state: dict, fresh: torch.Tensor | None,
              ends: list[int] | None = None, act: nn.Module | None = None) -> torch.Tensor:
        """Convolution ``idx`` of ``act(x)`` (``act``: an activation applied first, or None), its
        context from ``state`` before it (or, for ``fresh`` rows, the reflection of its first samples)."""
        c = self.convs[idx]
        t = self.t
        if not c.pad:
            return c(x if act is None else activate(act, x, inplace=False))
        buf, state["ctx"][idx] = with_context(x, state["ctx"][idx], t, self.nwc, act, fresh,
                                              lambda body: body.narrow(t, 1, c.pad).flip(t))  # reflection
        if ends is not None and c.stride > 1:
            for r, n in enumerate(ends):
                extra = -n % c.stride
                if extra:  # reflect the row's last samples into the end of its last frame
                    at = c.pad + n
                    row = buf[r]  # [C, time] or [time, C]
                    row.narrow(t - 1, at, extra).copy_(row.narrow(t - 1, at - 1 - extra, extra).flip(t - 1))
        return c(buf)


class StreamingEncoder(_StatefulStack):
    """Wraps a causal ``encodec.modules.SEANetEncoder`` (weights shared, not copied)."""

    def __init__(self, encoder, layout: str = "ncw"):
        super().__init__(encoder.model, layout)


class StreamingDecoder(_StatefulStack):
    """Wraps a causal ``encodec.modules.SEANetDecoder`` (weights shared; one row of fixed length)."""

    def __init__(self, decoder, layout: str = "ncw"):
        super().__init__(decoder.model, layout)
