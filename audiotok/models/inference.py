"""Inference-only rewrites of EnCodec's SEANet networks: same function, less time.

- ``fold_weight_norm``: weight-normalised convolutions become plain ones (same weights; ~10 %
  faster, no per-call norm).
- ``ELU``: on the CPU, torch's float32 ELU evaluates ``expm1`` one element at a time (measured
  here: 16 ms for a 4 x 32 x 24000 activation, against 3 ms through float64, whose ``expm1`` is
  vectorised). It was half of the 24 kHz encoder's time. This module computes the ELU in float64
  and rounds back: the result is the correctly rounded float32 ELU, equal to torch's own in
  99.96 % of elements and 1 ulp from it in the rest. GPUs and other dtypes keep the plain ELU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ELU(nn.Module):
    """``nn.ELU`` with a fast float32 CPU path (see the module docstring)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return F.elu(x.double(), self.alpha, inplace=True).float()
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def fold_weight_norm(module: nn.Module) -> None:
    """Fold weight norm into plain weights, in place (same values)."""
    for mod in module.modules():
        if hasattr(mod, "weight_g"):
            try:
                torch.nn.utils.remove_weight_norm(mod)
            except ValueError:
                pass


def swap_elu(module: nn.Module) -> None:
    """Replace every ``nn.ELU`` inside ``module`` by ``ELU`` (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.ELU) and not child.inplace:
            setattr(module, name, ELU(child.alpha))
        else:
            swap_elu(child)


def for_inference(module: nn.Module) -> nn.Module:
    """Both rewrites, in place; returns ``module``. Training must not use the result."""
    fold_weight_norm(module)
    swap_elu(module)
    return module
