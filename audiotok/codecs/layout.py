"""Channels-last ("nwc") activations for the causal convolution stacks (EnCodec 24 kHz, Mimi).

A causal stack holds its activations as ``[rows, time, channels]`` (``nwc``) instead of the
official ``[rows, channels, time]`` (``ncw``): every convolution then runs as oneDNN's
channels-last kernel on the tensor as it is (a 2-D convolution of height 1), with no reorder to and
from a blocked layout at each layer, and carried context is prepended by writing the layer's input
after it (``with_context``) instead of copying the whole activation. The numbers are those of other
kernels (other summation orders): equal to the official layout's up to float rounding, never bit
for bit, so the layout is a compute path, fixed per device type (``default_layout``) and recorded
in every output's ``numerics``. Nothing here measures the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("ncw", "nwc")


def default_layout(device: torch.device) -> str:
    """``nwc`` on the CPU (measured faster there: docs/benchmarks.md), the official ``ncw`` elsewhere
    (not measured on a GPU)."""
    return "nwc" if device.type == "cpu" else "ncw"


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    return layout


def time_dim(layout: str) -> int:
    """The time dimension of a ``[rows, ., .]`` activation in ``layout``."""
    return 1 if layout == "nwc" else 2


# A convolution whose reduction (kernel x input channels) is this long or longer runs as GEMMs
# instead of oneDNN's channels-last kernel: that kernel sums long reductions with 2-5x the
# rounding error of the official layout's (0.2-1.1e-6 against 1.5-3e-7 relative, measured against
# float64 on EnCodec's layers), enough to move 0.2 % of frames' codes; the GEMMs' error is the
# official layout's or less (2-5e-7) and on these layers they are as fast or faster. A model may
# start lower (``nwc_weight(gemm_from=)``: DAC's encoder, whose 7-tap layers of 64 and 128 channels
# otherwise give it 1.8x the official error) at some speed (Mimi: 10 % slower end to end from 448).
# A strided convolution runs as im2col and one GEMM; one of stride 1 as one GEMM per tap on
# shifted views of its input, summed in place: no copy of kernel x the input (DAC's dilated 7-tap
# layers of 256 channels: 1.6x faster than im2col, with 3.8e-7 relative error against its 4.7e-7).
# Fixed by the weight's shape and the stride only.
GEMM_REDUCTION = 1024


@dataclass
class NwcWeight:
    """A (transposed) convolution's weight for ``nwc`` activations: for a long reduction or a
    pointwise convolution (of one group) the ``[k * in, out]`` GEMM weight, else the channels-last
    2-D one (oneDNN). One of the two, never both."""

    conv: torch.Tensor | None
    gemm: torch.Tensor | None
    kernel: int


def nwc_weight(weight: torch.Tensor, transposed: bool = False, groups: int = 1,
               gemm_from: int = GEMM_REDUCTION) -> NwcWeight:
    """From a ``[out, in / groups, k]`` convolution weight (``[in, out / groups, k]`` if ``transposed``);
    GEMMs for reductions of ``gemm_from`` or more (see ``GEMM_REDUCTION``)."""
    w = weight.detach()
    k = w.shape[-1]
    if not transposed and groups == 1 and (k == 1 or k * w.shape[1] >= gemm_from):
        return NwcWeight(None, w.permute(2, 1, 0).reshape(k * w.shape[1], w.shape[0]).contiguous(), k)
    return NwcWeight(w[:, :, None, :].contiguous(memory_format=torch.channels_last), None, k)


def conv1d_nwc(x: torch.Tensor, weight: NwcWeight, bias, stride: int = 1, dilation: int = 1,
               groups: int = 1) -> torch.Tensor:
    """``F.conv1d`` (no padding) on ``x [rows, time, C]``: ``[rows, time', C']``."""
    if weight.gemm is not None:
        R, L, C = x.shape
        k = weight.kernel
        T = (L - (k - 1) * dilation - 1) // stride + 1
        if stride == 1 and k > 1:
            return _taps(x, weight, bias, dilation, T)
        if k == 1 and stride == 1:
            cols = x.reshape(R * L, C)  # a pointwise convolution: one GEMM, no im2col
        else:  # im2col: each output step's k input steps side by side, then one GEMM
            x = x.contiguous()
            cols = x.as_strided((R, T, k, C), (L * C, stride * C, dilation * C, 1)).reshape(R * T, k * C)
        y = torch.mm(cols, weight.gemm) if bias is None else torch.addmm(bias, cols, weight.gemm)
        return y.view(R, T, -1)
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight.conv, bias, stride=(1, stride), dilation=(1, dilation),
                 groups=groups)
    return y.squeeze(2).transpose(1, 2)


def _taps(x: torch.Tensor, weight: NwcWeight, bias, dilation: int, T: int) -> torch.Tensor:
    """A stride-1 convolution as one GEMM per tap: ``y[r, t] = bias + sum_j x[r, t + j * dilation] @ W_j``,
    each term over the rows laid end to end (the outputs that would straddle two rows are computed
    and dropped: ``(k - 1) * dilation`` per row)."""
    R, L, C = x.shape
    k = weight.kernel
    x = x.contiguous()
    flat = x.view(R * L, C)
    n = R * L - (k - 1) * dilation  # outputs over the rows end to end
    w = weight.gemm.view(k, C, -1)
    cols = flat.narrow(0, 0, n)
    y = torch.mm(cols, w[0]) if bias is None else torch.addmm(bias, cols, w[0])
    for j in range(1, k):
        y.addmm_(flat.narrow(0, j * dilation, n), w[j])
    if R == 1:
        return y.view(1, n, -1)
    N = y.shape[-1]
    return y.as_strided((R, T, N), (L * N, N, 1)).contiguous()  # each row's T outputs, one copy


def conv_transpose1d_nwc(x: torch.Tensor, weight: NwcWeight, bias, stride: int, groups: int = 1) -> torch.Tensor:
    """``F.conv_transpose1d`` (no padding) on ``x [rows, time, C]``: ``[rows, time', C']``."""
    y = F.conv_transpose2d(x.transpose(1, 2).unsqueeze(2), weight.conv, bias, stride=(1, stride), groups=groups)
    return y.squeeze(2).transpose(1, 2)


ELU = nn.ELU()  # alpha 1, as SEANet's


def activate(m: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``m(x)`` (``m`` an activation module); an ELU may overwrite ``x`` (the same values, one
    allocation and one pass less)."""
    if type(m) is nn.ELU:
        return F.elu_(x, m.alpha) if inplace else F.elu(x, m.alpha)
    return m(x)


def with_context(x: torch.Tensor, ctx: torch.Tensor, t: int, nwc: bool, act: nn.Module | None = None,
                 fresh: torch.Tensor | None = None, start: Callable | None = None) -> tuple:
    """A causal convolution's input: ``(buf, tail)``, ``buf`` = ``[context, act(x)]`` along dim ``t``
    (``act`` None: ``x`` itself) and ``tail`` a copy of its last ``ctx.shape[t]`` steps (the next
    window's context). The context is ``ctx``, or ``start(act(x))`` for the rows where ``fresh`` is
    set. ``nwc``: ``act(x)`` is written after room for the context, so neither costs a copy of the
    activation; otherwise it is computed and concatenated as the official layers do (the same ops,
    so ``ncw`` stays bit for bit what it was before ``nwc`` existed)."""
    pad, n = ctx.shape[t], x.shape[t]
    if nwc:
        shape = list(x.shape)
        shape[t] = pad + n
        buf = x.new_empty(shape)
        body = buf.narrow(t, pad, n)
        if act is None:
            body.copy_(x)
        elif type(act) is nn.ELU:
            torch._C._nn.elu(x, act.alpha, 1, 1, out=body)
        else:
            body.copy_(act(x))
    else:
        body = x if act is None else act(x)
    if fresh is not None:
        ctx = torch.where(fresh[:, None, None], start(body), ctx)
    if nwc:
        buf.narrow(t, 0, pad).copy_(ctx)
    else:
        buf = torch.cat([ctx, body], dim=t)
    return buf, buf.narrow(t, n, pad).clone()
