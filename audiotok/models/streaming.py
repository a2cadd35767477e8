"""The causal EnCodec 24 kHz encoder run as a stream of fixed-length windows.

Each convolution keeps the last ``kernel - stride`` samples of its input as left context for the
next window, and the LSTM carries its ``(h, c)`` state, so encoding a file window by window equals
encoding it whole (up to float rounding). At the start of a file a layer's context is the
reflection of its first samples, exactly the padding the official model applies.

Windows have a fixed length, so every kernel sees the same window shape whatever files share the
batch. The number of rows may vary: on the CPU a row's result is bit-identical for any row count
except that the LSTM and the last convolution give a row alone another rounding than a row in
company, so ``tail_rows`` (2 on the CPU) pads the batch to at least that many rows from the LSTM
on (the padding repeats row 0 and is dropped at the end). The adapter decides the row counts.
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


class StreamingEncoder(nn.Module):
    """Wraps a causal ``encodec.modules.SEANetEncoder`` (weights shared, not copied)."""

    def __init__(self, encoder, tail_rows: int = 1):
        super().__init__()
        self.tail_rows = tail_rows
        from encodec.modules.conv import SConv1d
        from encodec.modules.lstm import SLSTM
        from encodec.modules.seanet import SEANetResnetBlock

        self.ops: list[tuple[str, object]] = []
        self.convs = nn.ModuleList()
        self.hop = 1
        for layer in encoder.model:
            if isinstance(layer, SConv1d):
                if not layer.causal:
                    raise ValueError("streaming needs the causal (24 kHz) encoder")
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

    def _conv(self, idx: int, x: torch.Tensor, state: dict, fresh: torch.Tensor | None) -> torch.Tensor:
        c = self.convs[idx]
        if c.pad:
            ctx = state["ctx"][idx]
            rows = ctx.shape[0]
            if x.shape[0] > rows:  # padded tail (see tail_rows): repeat row 0's context
                ctx = torch.cat([ctx, ctx[:1].expand(x.shape[0] - rows, -1, -1)])
            if fresh is not None:
                reflect = x[:, :, 1:c.pad + 1].flip(-1)
                ctx = torch.where(fresh[:, None, None], reflect, ctx)
            x = torch.cat([ctx, x], dim=-1)
            state["ctx"][idx] = x[:rows, :, -c.pad:]
        return c.conv(x)

    def forward(self, x: torch.Tensor, state: dict, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """Encode one window ``x [rows, 1, W]`` (W a multiple of the hop, 320) -> ``[rows, 128, W/320]``.

        ``fresh[r]`` marks rows whose window is the first of a file (context and LSTM reset).
        ``state`` (from ``init_state``) is updated in place."""
        if fresh is not None and not bool(fresh.any()):
            fresh = None
        rows = x.shape[0]
        for kind, op in self.ops:
            if kind == "conv":
                x = self._conv(op, x, state, fresh)
            elif kind == "act":
                x = op(x)
            elif kind == "res":
                inner, short = op
                y = x
                for m in inner:
                    y = self._conv(m, y, state, fresh) if isinstance(m, int) else m(y)
                x = self._conv(short, x, state, fresh) + y
            else:
                h, c = state["h"], state["c"]
                if fresh is not None:
                    keep = (~fresh).to(h.dtype)[None, :, None]
                    h, c = h * keep, c * keep
                extra = self.tail_rows - rows
                if extra > 0:
                    x = torch.cat([x, x[:1].expand(extra, -1, -1)])
                    h = torch.cat([h, h[:, :1].expand(-1, extra, -1)], dim=1)
                    c = torch.cat([c, c[:, :1].expand(-1, extra, -1)], dim=1)
                    if fresh is not None:
                        fresh = torch.cat([fresh, fresh[:1].expand(extra)])
                seq = x.permute(2, 0, 1)
                y, (h, c) = self.lstm(seq, (h.contiguous(), c.contiguous()))
                state["h"], state["c"] = h[:, :rows], c[:, :rows]
                if self.lstm_skip:
                    y = y + seq
                x = y.permute(1, 2, 0)
        return x[:rows]
