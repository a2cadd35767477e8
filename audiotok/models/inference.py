"""Inference-only rewrites of EnCodec's SEANet networks: same function, less time.

- ``fold_weight_norm``: weight-normalised convolutions become plain ones (same weights; ~10 %
  faster, no per-call norm).
- ``ELU``: on some CPUs torch's float32 ELU is slow (measured on one AMD EPYC: 16 ms for a
  4 x 32 x 24000 activation, against 3 ms through float64, whose ``expm1`` is vectorised there;
  it was half of the 24 kHz encoder's time), on others it is the faster one (another EPYC, AVX2
  kernels: 2.2 ms against 5.5 ms for 4 x 32 x 12166). So ``swap_elu`` times both once per process
  and swaps only when the float64 path is at least twice as fast: a margin wide enough that the
  same machine makes the same choice from run to run (the two CPUs measured are 5x apart). The float64 path gives the correctly rounded float32
  ELU, equal to torch's own in 99.85-99.96 % of elements and 1 ulp from it in the rest. GPUs and
  other dtypes keep the plain ELU.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


class ELU(nn.Module):
    """``nn.ELU`` evaluated in float64 for float32 CPU tensors (see the module docstring)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return F.elu(x.double(), self.alpha, inplace=True).float()
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@lru_cache(maxsize=1)
def float64_elu_is_faster(margin: float = 2.0) -> bool:
    """Whether the float64 ELU beats torch's float32 one on this CPU by ``margin`` (timed once:
    best of five alternations on an activation of the encoder's size)."""
    with torch.inference_mode():
        x = torch.randn(4, 32, 12160, generator=torch.Generator().manual_seed(0))
        fast, plain = ELU(), nn.ELU()
        best = {"f64": float("inf"), "f32": float("inf")}
        for _ in range(5):
            for name, fn in (("f64", fast), ("f32", plain)):
                t = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t)
    return best["f64"] * margin < best["f32"]


def fold_weight_norm(module: nn.Module) -> None:
    """Fold weight norm into plain weights, in place (same values)."""
    for mod in module.modules():
        if hasattr(mod, "weight_g"):
            try:
                torch.nn.utils.remove_weight_norm(mod)
            except ValueError:
                pass


def swap_elu(module: nn.Module, force: bool | None = None) -> None:
    """Replace every ``nn.ELU`` inside ``module`` by ``ELU`` (in place) when that is faster here
    (``float64_elu_is_faster``; ``force`` decides instead)."""
    if not (float64_elu_is_faster() if force is None else force):
        return
    for name, child in list(module.named_children()):
        if isinstance(child, nn.ELU) and not child.inplace:
            setattr(module, name, ELU(child.alpha))
        else:
            swap_elu(child, True)


def for_inference(module: nn.Module) -> nn.Module:
    """Both rewrites, in place; returns ``module``. Training must not use the result. The ELU is
    only timed and swapped for a module on the CPU (``ELU`` changes nothing elsewhere)."""
    fold_weight_norm(module)
    param = next(module.parameters(), None)
    if param is not None and param.device.type == "cpu":
        swap_elu(module)
    return module
