"""The causal EnCodec 24 kHz encoder (and decoder) run as a stream of fixed-length windows.

Each convolution keeps the last ``kernel - stride`` samples of its input as left context for the
next window, and the LSTM carries its ``(h, c)`` state, so encoding a file window by window equals
encoding it whole (up to float rounding). At the start of a file a layer's context is the
reflection of its first samples, and at its end each strided convolution sees the reflection of
its last samples in the few positions past the end that its last frame reads: exactly the padding
the official model applies (``SConv1d`` pads the right with ``reflect`` to a whole frame), so every
frame matches, the last one of a file whose length is not a multiple of 320 included.

Windows have a fixed length, so every kernel sees the same window shape whatever files share the
batch. The number of rows may vary (the CPU adapter runs only the occupied rows). A row's result
must not depend on it, and for two or more rows it does not; but some CPU kernels take another
path for a batch of one and round differently (which ones depends on the CPU: the first
convolution on one machine, the LSTM on another). So the first time a single row runs at a given
window length, ``StreamingEncoder`` tests each layer, one row against two, on random input, and
from then on runs the layers that differ with the row duplicated (``paired_ops``); the others run
alone at full speed.

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


class _Stream(nn.Module):
    """The ops of a causal SEANet ``nn.Sequential`` with the state that carries them across windows."""

    pair_lone_rows = True

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
        self.paired_ops: dict[int, set[int]] = {}  # window length -> ops a lone row runs paired

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
        paired: set[int] = set()
        if x.shape[0] == 1 and x.device.type == "cpu" and self.pair_lone_rows:
            if x.shape[-1] not in self.paired_ops:
                self.paired_ops[x.shape[-1]] = self._calibrate(x.shape[-1], x.dtype)
            paired = self.paired_ops[x.shape[-1]]
        for i in range(len(self.ops)):
            if i in paired:
                x = self._paired(i, x, state, fresh, ends)
            else:
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

    # --- a lone row through kernels that round differently for one row ----------------
    def _paired(self, i: int, x: torch.Tensor, state: dict, fresh, ends) -> torch.Tensor:
        """Op ``i`` for a single row, computed as row 0 of a batch of two copies."""
        pair = {"ctx": [c.expand(2, -1, -1) for c in state["ctx"]],
                "h": state["h"].expand(-1, 2, -1), "c": state["c"].expand(-1, 2, -1)}
        y = self._op(i, x.expand(2, -1, -1).contiguous(), pair, None if fresh is None else fresh.expand(2),
                     None if ends is None else ends * 2)
        state["ctx"] = [c[:1] for c in pair["ctx"]]
        state["h"], state["c"] = pair["h"][:, :1], pair["c"][:, :1]
        return y[:1]

    @torch.inference_mode()
    def _calibrate(self, window: int, dtype) -> set[int]:
        """The ops whose result for a row alone differs from the same row among two."""
        gen = torch.Generator().manual_seed(0)
        two = self.init_state(2, dtype=dtype)
        two = {"ctx": [torch.randn(c.shape, generator=gen, dtype=dtype) for c in two["ctx"]],
               "h": torch.randn(two["h"].shape, generator=gen, dtype=dtype),
               "c": torch.randn(two["c"].shape, generator=gen, dtype=dtype)}
        x = 0.1 * torch.randn(2, self.convs[0].conv.in_channels, window, generator=gen, dtype=dtype)
        paired = set()
        for i in range(len(self.ops)):
            one = {"ctx": [c[:1].clone() for c in two["ctx"]], "h": two["h"][:, :1].clone(),
                   "c": two["c"][:, :1].clone()}
            alone = self._op(i, x[:1].clone(), one, None, None)
            x = self._op(i, x, two, None, None)
            if not (torch.equal(alone[0], x[0]) and torch.equal(one["h"][:, 0], two["h"][:, 0])
                    and torch.equal(one["c"][:, 0], two["c"][:, 0])
                    and all(torch.equal(a[0], b[0]) for a, b in zip(one["ctx"], two["ctx"]))):
                paired.add(i)
        return paired


class StreamingEncoder(_Stream):
    """Wraps a causal ``encodec.modules.SEANetEncoder`` (weights shared, not copied)."""

    def __init__(self, encoder):
        super().__init__(encoder.model)


class StreamingDecoder(_Stream):
    """Wraps a causal ``encodec.modules.SEANetDecoder`` (weights shared); always one row here, so
    no pairing is needed."""

    pair_lone_rows = False

    def __init__(self, decoder):
        super().__init__(decoder.model)
