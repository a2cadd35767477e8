"""Code file formats written by ``encode`` and read by ``decode`` (and by ``train`` / ``score``).

- ``.npz``: ``codes`` int16 ``[n_q, frames]``; ``scales`` float32 per 1 s segment (48 kHz only);
  metadata ``model``, ``bandwidth``, ``sample_rate``, ``frame_rate``, ``n_samples`` (at the model's
  rate), ``n_q``, ``source``, ``format_version``.
- ``.npy``: the bare codes array (24 kHz model only; decode assumes 24 kHz and frames*320 samples).
- ``.ecdc``: the official ``encodec`` compressed format (see ``ecdc.py``).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np

from ..errors import InputError, UsageError
from ..registry import CODECS, get_codec

FORMATS = ("npz", "npy", "ecdc")
FORMAT_VERSION = 1


@dataclass
class EncodedItem:
    """One file's codes: int16 ``[n_q, frames]``, float32 scales per segment (normalising codecs),
    and the length in samples at the codec's rate."""

    codes: np.ndarray
    scales: np.ndarray | None
    n_samples: int


@dataclass
class CodesFile:
    item: EncodedItem
    model: str
    bandwidth: float | None


# .npy holds bare codes; decode reads them as this codec's (one segment, frames * hop samples)
NPY_CODEC = "encodec_24khz"


def check_format(fmt: str, model: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid; choose one of {', '.join(FORMATS)} or parquet (dataset shards)")
    if fmt == "npy" and model != NPY_CODEC:
        raise UsageError(f"--format npy holds bare codes and fits only {NPY_CODEC}; use npz (or ecdc) for {model}")
    if fmt == "ecdc" and not get_codec(model).ecdc:
        raise UsageError(f"--format ecdc holds only EnCodec codes; use npz for {model}")
    return fmt


def write_codes(f: IO[bytes], fmt: str, item: EncodedItem, model: str, bandwidth: float, source: str,
                settings: dict | None = None) -> None:
    """Write ``item`` as ``fmt``; ``settings`` (npz only) is stored as JSON under ``settings``: what
    the codes depend on (see ``provenance.py``), compared by reruns."""
    spec = get_codec(model)
    if fmt == "npy":
        np.save(f, item.codes)
    elif fmt == "npz":
        import json

        extra = {"scales": item.scales.astype(np.float32)} if item.scales is not None else {}
        if settings is not None:
            extra["settings"] = np.array(json.dumps(settings, sort_keys=True))
        np.savez(
            f, codes=item.codes, **extra,
            model=np.array(model), bandwidth=np.array(bandwidth, dtype=np.float32),
            sample_rate=np.array(spec.sample_rate), frame_rate=np.array(spec.frame_rate),
            n_samples=np.array(item.n_samples, dtype=np.int64), n_q=np.array(item.codes.shape[0]),
            source=np.array(source.encode("utf-8", "backslashreplace").decode("utf-8")),
            format_version=np.array(FORMAT_VERSION),
        )
    elif fmt == "ecdc":
        from .ecdc import write_ecdc

        counts = spec.segment_frames(item.n_samples)
        starts = np.cumsum([0] + counts)
        segments = [item.codes[:, starts[i]:starts[i + 1]] for i in range(len(counts))]
        scales = [float(s) for s in item.scales] if item.scales is not None else None
        write_ecdc(f, model, item.n_samples, segments, scales)
    else:
        raise UsageError(f"unknown format {fmt}")


MAX_SECONDS = 7 * 24 * 3600  # longest audio one codes file may declare (a week)
MAX_CODES_FILE_BYTES = 4 << 30  # a week of 48 kHz codes at 24 kbps in .npz is 2.9 GB
_DEFLATE_RATIO = 1100  # zlib's deflate cannot expand data more than ~1032 times


def read_codes(path: str, lm_loader=None) -> CodesFile:
    """Read a ``.npz`` / ``.npy`` / ``.ecdc`` file written by audiotok or the ``encodec`` CLI.

    Every size a file declares (array shapes, sample counts, segment scales) is checked against its
    data and against :data:`MAX_SECONDS` before anything is allocated, and the codes must fit the
    declared length and model exactly, so a crafted file fails here with one sentence."""
    from ..files import NotRegularFile, open_regular

    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    try:
        with open_regular(path) as f:
            data = f.read(MAX_CODES_FILE_BYTES + 1)
    except NotRegularFile as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CODES_FILE_BYTES:
        raise InputError(f"is larger than {MAX_CODES_FILE_BYTES >> 30} GiB, more than a week of codes; "
                         "split the audio and encode the parts")
    if not data:
        raise InputError("is empty (0 bytes)")
    if suffix == "ecdc":
        from .ecdc import read_ecdc

        c = read_ecdc(io.BytesIO(data), lm_loader=lm_loader)
        codes = np.concatenate([np.asarray(s, dtype=np.int16) for s in c.codes], axis=1)
        scales = np.asarray(c.scales, dtype=np.float32) if c.scales else None
        if scales is not None:
            _check_scales(scales, len(c.codes))
        bw = get_codec(c.model_name).bandwidth_for(codes.shape[0])
        return CodesFile(EncodedItem(codes, scales, int(c.audio_length)), c.model_name, bw)
    try:
        if suffix == "npy":
            _check_npy_header(io.BytesIO(data), len(data), "the array")
            codes = np.load(io.BytesIO(data), allow_pickle=False)
            spec = get_codec(NPY_CODEC)
            _check_codes(codes, spec.name)
            n = codes.shape[1] * spec.hop
            return CodesFile(EncodedItem(codes.astype(np.int16), None, n), spec.name, spec.bandwidth_for(codes.shape[0]))
        if suffix == "npz":
            _check_npz_members(data)
            z = np.load(io.BytesIO(data), allow_pickle=False)
            codes = z["codes"]
            model = str(z["model"])
            if model not in CODECS:
                raise InputError(f"was written for an unknown model {model!r}")
            _check_codes(codes, model)
            n_samples = _whole_number(z["n_samples"], "n_samples")
            _check_length(model, n_samples, codes.shape[1])
            scales = z["scales"].astype(np.float32) if "scales" in z.files else None
            if CODECS[model].normalize:
                if scales is None:
                    raise InputError(f"holds {CODECS[model].sample_rate // 1000} kHz codes without their scales array, so they cannot be decoded "
                                     "to the right loudness; encode the audio again")
                _check_scales(scales.reshape(-1), len(CODECS[model].segment_frames(n_samples)))
                scales = scales.reshape(-1)
            item = EncodedItem(codes.astype(np.int16), scales, n_samples)
            bandwidth = _check_metadata(z, model, codes.shape[0])
            return CodesFile(item, model, bandwidth)
    except (ValueError, KeyError, OSError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        raise InputError(f"is not a valid .{suffix} codes file ({exc})") from None
    raise InputError("has an unknown extension; codes are read from .npz, .npy and .ecdc files (and decode reads "
                     "the .parquet shards of encode --format parquet)")


_EDITED = "; the file is corrupt or was edited"


def _check_bandwidth(model: str, bandwidth: float, n_q: int) -> None:
    """A declared bandwidth must be one of the model's and give exactly ``n_q`` codebooks."""
    spec = get_codec(model)
    if not any(abs(bandwidth - b) < 1e-6 for b in spec.bandwidths):
        raise InputError(f"declares bandwidth {bandwidth:g} kbps, which {model} does not have "
                         f"({', '.join(f'{b:g}' for b in spec.bandwidths)}){_EDITED}")
    want = spec.n_codebooks(bandwidth)
    if want != n_q:
        raise InputError(f"declares bandwidth {bandwidth:g} kbps ({want} codebooks) but holds {n_q} codebooks{_EDITED}")


def check_codes_fit(item: EncodedItem, model: str, bandwidth: float | None) -> None:
    """Codes read from elsewhere (a Parquet row) checked as ``.npz`` codes are: the model is known,
    codes in range, frames fit ``n_samples``, scales fit the segments, the bandwidth the codebooks."""
    if model not in CODECS:
        raise InputError(f"was written for an unknown model {model!r}")
    _check_codes(item.codes, model)
    _check_length(model, item.n_samples, item.codes.shape[1])
    if CODECS[model].normalize:
        if item.scales is None:
            raise InputError(f"holds {CODECS[model].sample_rate // 1000} kHz codes without their scales, so they "
                             "cannot be decoded to the right loudness; encode the audio again")
        _check_scales(item.scales.reshape(-1), len(CODECS[model].segment_frames(item.n_samples)))
    if bandwidth is not None:
        _check_bandwidth(model, float(bandwidth), item.codes.shape[0])


def _check_metadata(z, model: str, n_q: int) -> float | None:
    """What an ``.npz`` declares beside its codes (bandwidth, ``n_q``, rates, ``settings``) must fit
    the codes and the model; returns the bandwidth (from the codebook count when none is stored)."""
    spec = get_codec(model)
    edited = _EDITED

    def number(key: str) -> float | None:
        if key not in z.files:
            return None
        value = z[key]
        if value.shape != () or not np.issubdtype(value.dtype, np.number):
            raise InputError(f"has {key} of dtype {value.dtype} and shape {value.shape}, not one number{edited}")
        return float(value)

    if (declared := number("n_q")) is not None and declared != n_q:
        raise InputError(f"declares {declared:g} codebooks (n_q) but holds {n_q}{edited}")
    if (rate := number("sample_rate")) is not None and rate != spec.sample_rate:
        raise InputError(f"declares a sample rate of {rate:g} Hz but {model} runs at {spec.sample_rate} Hz{edited}")
    if (fps := number("frame_rate")) is not None and abs(fps - spec.frame_rate) > 1e-6 * spec.frame_rate:
        raise InputError(f"declares {fps:g} frames per second but {model} has {spec.frame_rate:g}{edited}")
    bandwidth = number("bandwidth")
    if bandwidth is None:
        return spec.bandwidth_for(n_q)
    _check_bandwidth(model, bandwidth, n_q)
    if "settings" in z.files:
        import json

        try:
            settings = json.loads(str(z["settings"]))
        except ValueError:
            raise InputError(f"has settings that are not valid JSON{edited}") from None
        if isinstance(settings, dict):
            for key, have in (("model", model), ("bandwidth", bandwidth)):
                value = settings.get(key)
                if isinstance(value, (int, float)) and isinstance(have, float):
                    differs = abs(value - have) > 1e-6 * max(1.0, abs(have))  # stored as float32 in the arrays
                else:
                    differs = value is not None and value != have
                if differs:
                    shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
                    mine = f"{have:g}" if isinstance(have, float) else repr(have)
                    raise InputError(f"records {key} {shown} in its settings but declares {mine}{edited}")
    # the model's own value (the array holds it as float32: 0.1375 kbps reads back as 0.13749999)
    return next(b for b in spec.bandwidths if abs(bandwidth - b) < 1e-6)


def _check_npy_header(f: IO[bytes], available: int, what: str) -> None:
    """Refuse an ``.npy`` stream whose header declares more data than ``available`` bytes."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise InputError(f"stores {what} as Python objects, which audiotok never loads")
    count = 1
    for dim in shape:
        count *= int(dim)
    need = count * dtype.itemsize
    if need > available:
        raise InputError(f"declares {what} of shape {tuple(shape)} ({need} bytes) but holds only {available} bytes "
                         "of data; the file is corrupt or crafted")


def _check_npz_members(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.compress_size > len(data):
                raise InputError(f"declares a {info.filename} member larger than the file; the file is corrupt")
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO
            available = min(info.file_size, ratio * info.compress_size)
            with zf.open(info) as member:
                _check_npy_header(member, available, info.filename.removesuffix(".npy"))


def _whole_number(value: np.ndarray, what: str) -> int:
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        raise InputError(f"has {what} of dtype {value.dtype} and shape {value.shape}, not one whole number")
    return int(value)


def _check_length(model: str, n_samples: int, frames: int) -> None:
    """The codes' frame count must be what ``n_samples`` gives for ``model`` (within the bound)."""
    spec = get_codec(model)
    sr = spec.sample_rate
    if not 1 <= n_samples <= MAX_SECONDS * sr:
        raise InputError(f"declares {n_samples} samples; a codes file holds 1 to {MAX_SECONDS * sr} "
                         f"({MAX_SECONDS // 3600} h at {sr} Hz)")
    expected = sum(spec.segment_frames(n_samples))
    if frames != expected:
        raise InputError(f"holds {frames} frames of codes but declares {n_samples} samples, which need {expected}; "
                         "the file is corrupt")


def _check_scales(scales: np.ndarray, segments: int) -> None:
    if scales.shape != (segments,):
        raise InputError(f"holds {scales.size} scales for {segments} segments of 48 kHz codes; the file is corrupt")
    if not np.isfinite(scales).all() or (scales <= 0).any():
        raise InputError("holds scales that are NaN, infinite or not positive, which would decode to garbage; "
                         "the file is corrupt")


def _check_codes(codes: np.ndarray, model: str) -> None:
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"holds a {codes.dtype} array of shape {codes.shape}, not integer codes [n_q, frames]")
    spec = get_codec(model)
    n_max = spec.n_q
    if not 1 <= codes.shape[0] <= n_max:
        raise InputError(f"holds {codes.shape[0]} codebooks; {model} has 1 to {n_max}")
    if codes.shape[1] < 1:
        raise InputError("holds no frames of codes (shape [n_q, 0]); there is nothing to decode")
    if codes.shape[1] > MAX_SECONDS * spec.frame_rate:
        raise InputError(f"holds {codes.shape[1]} frames, more than a week of codes")
    if codes.min() < 0 or codes.max() >= spec.codebook_size:
        raise InputError(f"holds codes outside 0..{spec.codebook_size - 1}")


def read_settings(path: str) -> dict | None:
    """The settings an ``.npz`` codes file was written with (None for other formats and older files)."""
    import json

    if not str(path).lower().endswith(".npz"):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["settings"])) if "settings" in z.files else None
    except (OSError, ValueError, KeyError, EOFError):
        return None
