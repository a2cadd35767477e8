"""Code file formats written by ``encode`` and read by ``decode`` (and by ``train`` / ``score``).

- ``.npz``: ``codes`` int16 ``[n_q, frames]``; ``scales`` float32 per 1 s segment (48 kHz only);
  metadata ``model``, ``bandwidth``, ``sample_rate``, ``frame_rate``, ``n_samples`` (at the model's
  rate), ``n_q``, ``source``, ``format_version``.
- ``.npy``: the bare codes array (24 kHz model only; decode assumes 24 kHz and frames*320 samples).
- ``.ecdc``: the official ``encodec`` compressed format (see ``ecdc.py``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

import numpy as np

from .errors import InputError, UsageError
from .models.encodec_spec import FRAME_RATES, SAMPLE_RATES, EncodedItem, n_codebooks, segment_frames

FORMATS = ("npz", "npy", "ecdc")
FORMAT_VERSION = 1


@dataclass
class CodesFile:
    item: EncodedItem
    model: str
    bandwidth: float | None


def check_format(fmt: str, model: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid; choose one of {', '.join(FORMATS)} or parquet (dataset shards)")
    if fmt == "npy" and model != "encodec_24khz":
        raise UsageError("--format npy holds bare codes and fits only encodec_24khz; use npz or ecdc for 48 kHz")
    return fmt


def write_codes(f: IO[bytes], fmt: str, item: EncodedItem, model: str, bandwidth: float, source: str) -> None:
    if fmt == "npy":
        np.save(f, item.codes)
    elif fmt == "npz":
        extra = {"scales": item.scales.astype(np.float32)} if item.scales is not None else {}
        np.savez(
            f, codes=item.codes, **extra,
            model=np.array(model), bandwidth=np.array(bandwidth, dtype=np.float32),
            sample_rate=np.array(SAMPLE_RATES[model]), frame_rate=np.array(FRAME_RATES[model]),
            n_samples=np.array(item.n_samples, dtype=np.int64), n_q=np.array(item.codes.shape[0]),
            source=np.array(source.encode("utf-8", "backslashreplace").decode("utf-8")),
            format_version=np.array(FORMAT_VERSION),
        )
    elif fmt == "ecdc":
        from .ecdc import write_ecdc

        counts = segment_frames(model, item.n_samples)
        starts = np.cumsum([0] + counts)
        segments = [item.codes[:, starts[i]:starts[i + 1]] for i in range(len(counts))]
        scales = [float(s) for s in item.scales] if item.scales is not None else None
        write_ecdc(f, model, item.n_samples, segments, scales)
    else:
        raise UsageError(f"unknown format {fmt}")


def read_codes(path: str, lm_loader=None) -> CodesFile:
    """Read a ``.npz`` / ``.npy`` / ``.ecdc`` file written by audiotok or the ``encodec`` CLI."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})") from None
    if not data:
        raise InputError("is empty (0 bytes)")
    if suffix == "ecdc":
        from .ecdc import read_ecdc

        c = read_ecdc(io.BytesIO(data), lm_loader=lm_loader)
        codes = np.concatenate([np.asarray(s, dtype=np.int16) for s in c.codes], axis=1)
        scales = np.asarray(c.scales, dtype=np.float32) if c.scales else None
        bw = _bandwidth_for(c.model_name, codes.shape[0])
        return CodesFile(EncodedItem(codes, scales, int(c.audio_length)), c.model_name, bw)
    try:
        if suffix == "npy":
            codes = np.load(io.BytesIO(data), allow_pickle=False)
            _check_codes(codes)
            n = codes.shape[1] * 320
            return CodesFile(EncodedItem(codes.astype(np.int16), None, n), "encodec_24khz",
                             _bandwidth_for("encodec_24khz", codes.shape[0]))
        if suffix == "npz":
            z = np.load(io.BytesIO(data), allow_pickle=False)
            codes = z["codes"]
            _check_codes(codes)
            model = str(z["model"])
            if model not in SAMPLE_RATES:
                raise InputError(f"was written for an unknown model {model!r}")
            scales = z["scales"].astype(np.float32) if "scales" in z.files else None
            item = EncodedItem(codes.astype(np.int16), scales, int(z["n_samples"]))
            return CodesFile(item, model, float(z["bandwidth"]))
    except (ValueError, KeyError, OSError, EOFError) as exc:
        raise InputError(f"is not a valid .{suffix} codes file ({exc})") from None
    raise InputError("has an unknown extension; decode reads .npz, .npy and .ecdc")


def _check_codes(codes: np.ndarray) -> None:
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"holds a {codes.dtype} array of shape {codes.shape}, not integer codes [n_q, frames]")
    if codes.size and (codes.min() < 0 or codes.max() > 1023):
        raise InputError("holds codes outside 0..1023")


def _bandwidth_for(model: str, n_q: int) -> float | None:
    from .models.encodec_spec import BANDWIDTHS

    for bw in BANDWIDTHS[model]:
        if n_codebooks(model, bw) == n_q:
            return bw
    return None
