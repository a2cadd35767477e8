"""Embed option checks without torch (so a typo is reported at once)."""

from __future__ import annotations

from ..errors import UsageError

POOLS = ("mean", "max", "meanstd", "none")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_options(pool: str, dtype: str, chunk_seconds: float, overlap: float) -> None:
    if pool not in POOLS:
        raise UsageError(f"--pool {pool!r} is not valid; choose mean, max, meanstd or none")
    if dtype not in DTYPE_NAMES:
        raise UsageError(f"--dtype {dtype!r} is not valid; choose float32, bfloat16 or float16")
    if not chunk_seconds > 0:
        raise UsageError(f"--chunk-seconds must be positive, not {chunk_seconds:g}")
    if not 0 <= overlap < chunk_seconds:
        raise UsageError(f"--overlap {overlap:g} must be at least 0 and less than --chunk-seconds ({chunk_seconds:g})")


def check_layer_spelling(layer) -> str:
    text = str(layer).strip().lower()
    if text == "all":
        return text
    try:
        int(text)
    except ValueError:
        raise UsageError(f"--layer {layer!r} is not valid; give an index (0, 3, -1...) or all") from None
    return text
