"""The causal EnCodec 24 kHz encoder (and decoder) run as a stream of fixed-length windows.

Each convolution keeps the last ``kernel - stride`` samples of its input as left context for the
next window, and the LSTM carries its ``(h, c)`` state, so encoding a file window by window equals
encoding it whole (up to float rounding). At the start of a file a layer's context is the
reflection of its first samples, and at its end each strided convolution sees the reflection of
its last samples in the few positions past the end that its last frame reads: exactly the padding
the official model applies (``SConv1d`` pads the right with ``reflect`` to a whole frame), so every
frame matches, the last one of a file whose length is not a multiple of 320 included.

Windows have a fixed length and the caller fixes the number of rows (``models/codec.py``), so every
kernel sees the same shapes whatever files share a call: a row's numbers depend on its own samples,
the window shape and the thread count, never on its neighbours. Nothing here measures the machine.

``StreamingDecoder`` runs the causal decoder the same way, frames in and samples out: its
convolutions carry context as the encoder's do, each transposed convolution carries its last
input frame (the one whose output overlaps the next window's first samples), and the LSTM its
state. So a long file decodes in memory that does not grow with its length (the official decoder
holds activations of 32 channels at 24 kHz for the whole file: 5.5 GB per activation for 30 min).
"""

from __future__ import annotations

import torch
from torch import nn


class _Conv(nn.Module):
    def __init__(self, sconv):
        super().__init__()
        conv = sconv.conv.conv
        self.conv = conv
        k = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        self.pad = k - conv.stride[0]
        self.stride = conv.stride[0]


class _ConvTr(nn.Module):
    """A causal transposed convolution: window ``[ctx frames, x]`` in, the samples of ``x``'s frames out."""

    def __init__(self, sconvtr):
        super().__init__()
        conv = sconvtr.convtr.convtr
        self.conv = conv
        self.stride = conv.stride[0]
        self.pad = (conv.kernel_size[0] - 1) // self.stride  # earlier frames reaching this window

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        y = self.conv(torch.cat([ctx, x], dim=-1))
        start = self.pad * self.stride
        return y[..., start:start + x.shape[-1] * self.stride]


class _StatefulStack(nn.Module):
    """The ops of a causal SEANet ``nn.Sequential`` with the state that carries them across windows."""

    def __init__(self, layers):
        super().__init__()
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
                    self.convs.append(_ConvTr(layer))
                    self.ops.append(("convtr", len(self.convs) - 1))
                else:
                    self.ops.append(("conv", self._add(layer)))
                self.hop *= self.convs[-1].stride
            elif isinstance(layer, SEANetResnetBlock):
                inner = [self._add(m) if isinstance(m, SConv1d) else m for m in layer.block]
                self.ops.append(("res", (inner, self._add(layer.shortcut))))
            elif isinstance(layer, SLSTM):
                self.lstm = layer.lstm
                self.lstm_skip = layer.skip
                self.ops.append(("lstm", None))
            else:  # activations
                self.ops.append(("act", layer))

    def _add(self, sconv) -> int:
        self.convs.append(_Conv(sconv))
        return len(self.convs) - 1

    def init_state(self, rows: int, device=None, dtype=torch.float32) -> dict:
        ctx = [torch.zeros(rows, c.conv.in_channels, c.pad, device=device, dtype=dtype) for c in self.convs]
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
        for i in range(len(self.ops)):
            x = self._op(i, x, state, fresh, ends)
            if ends is not None and self.ops[i][0] == "conv":
                stride = self.convs[self.ops[i][1]].stride
                ends = [-(-n // stride) for n in ends]
        return x

    def _op(self, i: int, x: torch.Tensor, state: dict, fresh, ends) -> torch.Tensor:
        kind, op = self.ops[i]
        if kind == "conv":
            return self._conv(op, x, state, fresh, ends)
        if kind == "convtr":
            c = self.convs[op]
            ctx = state["ctx"][op]
            if fresh is not None:  # no frames before a file's first: their contribution is zero
                ctx = ctx * (~fresh).to(ctx.dtype)[:, None, None]
            state["ctx"][op] = x[:, :, x.shape[-1] - c.pad:].clone()
            return c(x, ctx)
        if kind == "act":
            return op(x)
        if kind == "res":
            inner, short = op
            y = x
            for m in inner:
                y = self._conv(m, y, state, fresh) if isinstance(m, int) else m(y)
            return self._conv(short, x, state, fresh) + y
        h, c = state["h"], state["c"]
        if fresh is not None:
            keep = (~fresh).to(h.dtype)[None, :, None]
            h, c = h * keep, c * keep
        seq = x.permute(2, 0, 1)
        y, (state["h"], state["c"]) = self.lstm(seq, (h.contiguous(), c.contiguous()))
        if self.lstm_skip:
            y = y + seq
        return y.permute(1, 2, 0)

    def _conv(self, idx: int, x: torch.Tensor, state: dict, fresh: torch.Tensor | None,
              ends: list[int] | None = None) -> torch.Tensor:
        c = self.convs[idx]
        if c.pad:
            ctx = state["ctx"][idx]
            if fresh is not None:
                reflect = x[:, :, 1:c.pad + 1].flip(-1)
                ctx = torch.where(fresh[:, None, None], reflect, ctx)
            x = torch.cat([ctx, x], dim=-1)
            state["ctx"][idx] = x[:, :, -c.pad:].clone()  # not a view: frees x, safe to edit x
            if ends is not None and c.stride > 1:
                for r, n in enumerate(ends):
                    extra = -n % c.stride
                    if extra:  # reflect the row's last samples into the end of its last frame
                        at = c.pad + n
                        x[r, :, at:at + extra] = x[r, :, at - 1 - extra:at - 1].flip(-1)
        return c.conv(x)


class StreamingEncoder(_StatefulStack):
    """Wraps a causal ``encodec.modules.SEANetEncoder`` (weights shared, not copied)."""

    def __init__(self, encoder):
        super().__init__(encoder.model)


class StreamingDecoder(_StatefulStack):
    """Wraps a causal ``encodec.modules.SEANetDecoder`` (weights shared; one row of fixed length)."""

    def __init__(self, decoder):
        super().__init__(decoder.model)
