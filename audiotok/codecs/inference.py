"""Inference-only rewrite of EnCodec's SEANet networks: same function, less time.

``fold_weight_norm`` turns weight-normalised convolutions into plain ones (the same weights, no
per-call norm; about 10 % faster). Nothing here measures the machine: which kernels run, and so
every rounding, is fixed by the shapes, the device type and the thread count (see
``audiotok.engine.provenance``). An earlier version timed a float64 ELU against torch's float32 one at
start-up and kept the faster; under load that choice flipped from process to process and so did
codes, so every device now runs torch's own ELU, as the official model does.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_weight_norm(module: nn.Module) -> None:
    """Fold weight norm into plain weights, in place (same values)."""
    for mod in module.modules():
        if hasattr(mod, "weight_g"):
            try:
                torch.nn.utils.remove_weight_norm(mod)
            except ValueError:
                pass


def for_inference(module: nn.Module) -> nn.Module:
    """``fold_weight_norm`` in place; returns ``module``. Training must not use the result."""
    fold_weight_norm(module)
    return module
