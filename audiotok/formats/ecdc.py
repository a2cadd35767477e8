"""Read and write the ``encodec`` CLI's ``.ecdc`` compressed format.

Layout (see docs/references.md, EnCodec): a ``!4sBI`` header (magic ``ECDC``, version 0, JSON length), a JSON
object ``{"m": model, "al": audio length in samples, "nc": codebooks, "lm": uses LM}``, then one
block per segment: for the 48 kHz model a big-endian float32 scale, then the codes of the segment
in time-major order (every codebook of frame 0, then frame 1, ...), either packed 10 bits each,
least significant bit first and padded to a whole byte at the segment's end, or (``lm: true``)
arithmetic-coded with EnCodec's entropy-coding LM.

The plain packing is done with numpy a block of four codes (40 bits, 5 bytes) at a time, so hours
of codes pack and unpack in well under a second. The LM variant is inherently sequential (one LM
step per frame, one arithmetic-coder symbol per code) and uses the ``encodec`` package's public
``ArithmeticCoder`` / ``ArithmeticDecoder`` and ``build_stable_quantized_cdf`` so our files are bit
for bit the ones the ``encodec`` CLI writes and reads.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..errors import InputError
from ..registry import CODECS, CodecSpec

MAGIC = b"ECDC"
VERSION = 0
_HEADER = struct.Struct("!4sBI")
_SCALE = struct.Struct("!f")
_MAX_JSON = 1 << 16  # the real header is ~60 bytes; anything huge is garbage
_READ_CHUNK = 1 << 20
BITS = 10
CARD = 1 << BITS
MAX_SECONDS = 7 * 24 * 3600  # longest audio a header may declare (a week); larger is corrupt or crafted
_LM_BLOCK = 4096  # frames decoded into one block: memory grows with the codes actually in the stream


# The codecs the format can hold (``CodecSpec.ecdc``): their rates, channels, codebooks,
# segments and LM all come from the registry.
EcdcModel = CodecSpec
MODELS: dict[str, CodecSpec] = {s.name: s for s in CODECS.values() if s.ecdc}


def iter_segment_frames(model: str | EcdcModel, audio_length: int) -> Iterator[int]:
    """Frames in each segment of a file of ``audio_length`` samples, in the order they are stored."""
    spec = MODELS[model] if isinstance(model, str) else model
    yield from spec.segment_frames(audio_length)


def segment_frames(model: str | EcdcModel, audio_length: int) -> list[int]:
    """List form of :func:`iter_segment_frames`."""
    return list(iter_segment_frames(model, audio_length))


@dataclass
class EcdcContents:
    """A decoded ``.ecdc`` file: codes per segment ``[n_codebooks, frames]`` (int64) and scales."""

    model_name: str
    audio_length: int
    n_codebooks: int
    use_lm: bool
    codes: list[np.ndarray]
    scales: list[float] | None  # one per segment for the 48 kHz model, else None

    @property
    def model(self) -> EcdcModel:
        return MODELS[self.model_name]

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate


# ----------------------------------------------------------------------------- bit packing


def pack_codes(codes: np.ndarray) -> bytes:
    """Pack a ``[K, T]`` array of 10-bit codes, time-major, LSB first, padded to a whole byte."""
    values = np.ascontiguousarray(np.asarray(codes).T).reshape(-1).astype(np.uint64)
    n = values.size
    if n == 0:
        return b""
    groups = -(-n // 4)
    padded = np.zeros(groups * 4, dtype=np.uint64)
    padded[:n] = values
    quads = padded.reshape(groups, 4)
    words = quads[:, 0] | (quads[:, 1] << 10) | (quads[:, 2] << 20) | (quads[:, 3] << 30)
    raw = words.astype("<u8").view(np.uint8).reshape(groups, 8)[:, :5]
    return raw.tobytes()[: -(-n * BITS // 8)]


def unpack_codes(data: bytes, n_codebooks: int, frames: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``len(data)`` must be ``ceil(10 * K * T / 8)``."""
    n = n_codebooks * frames
    if n == 0:
        return np.zeros((n_codebooks, frames), dtype=np.int64)
    groups = -(-n // 4)
    raw = np.zeros((groups, 8), dtype=np.uint8)
    buf = np.frombuffer(data, dtype=np.uint8)
    five = np.zeros(groups * 5, dtype=np.uint8)
    five[: buf.size] = buf
    raw[:, :5] = five.reshape(groups, 5)
    words = raw.view("<u8").reshape(groups)
    mask = np.uint64(CARD - 1)
    quads = np.stack([(words >> np.uint64(s)) & mask for s in (0, 10, 20, 30)], axis=1)
    values = quads.reshape(-1)[:n].astype(np.int64)
    return values.reshape(frames, n_codebooks).T.copy()


# ----------------------------------------------------------------------------- writing


def _check_codes(spec: EcdcModel, audio_length: int, codes: Sequence[Any], scales) -> list[np.ndarray]:
    expected = segment_frames(spec, audio_length)
    if len(codes) != len(expected):
        raise ValueError(
            f"{spec.name} stores {len(expected)} segment(s) for {audio_length} samples, got {len(codes)} code arrays"
        )
    arrays = [np.asarray(c.cpu().numpy() if hasattr(c, "cpu") else c) for c in codes]
    arrays = [a[0] if a.ndim == 3 and a.shape[0] == 1 else a for a in arrays]
    if not arrays:
        raise ValueError("there are no codes to write (audio_length must be > 0)")
    k = arrays[0].shape[0] if arrays[0].ndim == 2 else -1
    if not 1 <= k <= spec.n_q and arrays[0].ndim == 2:
        raise ValueError(f"{spec.name} has 1 to {spec.n_q} codebooks, got {k}")
    for i, (a, t) in enumerate(zip(arrays, expected)):
        if a.ndim != 2:
            raise ValueError(f"segment {i}: codes must be a [codebooks, frames] array, got shape {tuple(a.shape)}")
        if a.shape != (k, t):
            raise ValueError(f"segment {i}: codes must have shape ({k}, {t}), got {tuple(a.shape)}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"segment {i}: codes must be integers, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= CARD):
            raise ValueError(f"segment {i}: codes must lie in [0, {CARD})")
    if spec.normalize:
        if scales is None or len(scales) != len(arrays):
            raise ValueError(f"{spec.name} needs one scale per segment ({len(arrays)})")
    elif scales is not None and any(s is not None for s in scales):
        raise ValueError(f"{spec.name} is not normalised and stores no scales; pass scales=None")
    return [a.astype(np.int64, copy=False) for a in arrays]


def _scale_value(s) -> float:
    """A float from a float, a numpy scalar or a one-element tensor (``model.encode``'s scale)."""
    return float(np.asarray(s.detach().cpu() if hasattr(s, "detach") else s, dtype=np.float64).reshape(-1)[0])


def write_ecdc(
    fileobj: IO[bytes],
    model_name: str,
    audio_length: int,
    codes: Sequence[np.ndarray],
    scales: Sequence[float] | None = None,
    lm=None,
) -> None:
    """Write a ``.ecdc`` stream the ``encodec`` CLI decodes.

    ``codes`` holds one ``[K, T_seg]`` array per segment (``segment_frames`` gives the ``T_seg``);
    ``scales`` one float per segment for the 48 kHz model (``None`` for 24 kHz). With ``lm`` (an
    ``encodec.model.LMModel`` in eval mode, e.g. from :func:`default_lm_loader`) the codes are
    arithmetic-coded with it and the header says ``"lm": true``."""
    if model_name not in MODELS:
        raise ValueError(f"unknown EnCodec model {model_name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[model_name]
    audio_length = int(audio_length)
    arrays = _check_codes(spec, audio_length, codes, scales)
    meta = {"m": model_name, "al": audio_length, "nc": int(arrays[0].shape[0]), "lm": lm is not None}
    meta_bytes = json.dumps(meta).encode("utf-8")
    fileobj.write(_HEADER.pack(MAGIC, VERSION, len(meta_bytes)))
    fileobj.write(meta_bytes)
    for i, a in enumerate(arrays):
        if spec.normalize:
            fileobj.write(_SCALE.pack(_scale_value(scales[i])))
        if lm is None:
            fileobj.write(pack_codes(a))
        else:
            _lm_encode_segment(fileobj, a, lm)
    fileobj.flush()


def _lm_encode_segment(fileobj: IO[bytes], codes: np.ndarray, lm) -> None:
    import torch
    from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf

    k, t_len = codes.shape
    device = next(lm.parameters()).device
    coder = ArithmeticCoder(fileobj)
    states, offset = None, 0
    prev = torch.zeros(1, k, 1, dtype=torch.long, device=device)  # 0 = "no previous frame"
    codes_t = torch.from_numpy(codes)
    for t in range(t_len):
        with torch.no_grad():
            probas, states, offset = lm(prev, states, offset)
        frame = codes_t[:, t]
        for q, value in enumerate(frame.tolist()):
            cdf = build_stable_quantized_cdf(probas[0, :, q, 0], coder.total_range_bits, check=False)
            coder.push(value, cdf)
        prev = (1 + frame).view(1, k, 1).to(device)
    coder.flush()


# ----------------------------------------------------------------------------- reading


def _read_exactly(fileobj: IO[bytes], size: int, what: str) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = fileobj.read(min(size - got, _READ_CHUNK))
        if not chunk:
            raise InputError(f"the .ecdc stream ends before all {what} were read; the file is truncated")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_ecdc_header(fileobj: IO[bytes]) -> dict:
    """The JSON header of a ``.ecdc`` stream, validated (raises InputError)."""
    head = fileobj.read(_HEADER.size)
    if len(head) < _HEADER.size or head[:4] != MAGIC:
        raise InputError("this is not an .ecdc file (it does not start with the ECDC magic)")
    _, version, size = _HEADER.unpack(head)
    if version != VERSION:
        raise InputError(f"this .ecdc file has format version {version}; only version 0 is supported")
    if size > _MAX_JSON:
        raise InputError(f"this .ecdc file announces a {size}-byte header; the file is corrupt")
    raw = _read_exactly(fileobj, size, "header bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError("the .ecdc header is not valid JSON; the file is corrupt") from None
    if not isinstance(meta, dict):
        raise InputError("the .ecdc header is not a JSON object; the file is corrupt")
    missing = [k for k in ("m", "al", "nc", "lm") if k not in meta]
    if missing:
        raise InputError(f"the .ecdc header lacks {', '.join(missing)}; the file is corrupt")
    name, al, nc, use_lm = meta["m"], meta["al"], meta["nc"], meta["lm"]
    if name not in MODELS:
        raise InputError(
            f"the .ecdc file was made with model {name!r}, which is not supported; "
            f"supported models are {', '.join(MODELS)}"
        )
    spec = MODELS[name]
    if type(al) is not int or al < 1:
        raise InputError(f"the .ecdc header gives audio length {al!r}; it must be a positive whole number")
    if type(nc) is not int or not 1 <= nc <= spec.n_q:
        raise InputError(f"the .ecdc header gives {nc!r} codebooks; {name} has 1 to {spec.n_q}")
    if not isinstance(use_lm, bool):
        raise InputError(f"the .ecdc header gives lm={use_lm!r}; it must be true or false")
    # Plainly packed codes are read against the data (a length the data lacks is "truncated");
    # LM-coded ones can be very compact, so their declared length is bounded instead.
    if use_lm and al > MAX_SECONDS * spec.sample_rate:
        raise InputError(f"the .ecdc header gives audio length {al} samples ({al / spec.sample_rate / 3600:.0f} h), "
                         f"more than the {MAX_SECONDS // 3600} h one file may hold; the file is corrupt or crafted")
    return meta


def read_ecdc(fileobj: IO[bytes], lm_loader: Callable[[str], Any] | None = None) -> EcdcContents:
    """Read a ``.ecdc`` stream into codes and scales.

    ``lm_loader(model_name)`` returns the entropy-coding LM (an ``encodec.model.LMModel`` in eval
    mode) and is called only for files with ``"lm": true``; without one, :func:`default_lm_loader`
    resolves the official LM weights through ``audiotok.weights``. Raises InputError for streams
    that are not ``.ecdc``, use an unknown model, or end early."""
    meta = read_ecdc_header(fileobj)
    spec = MODELS[meta["m"]]
    al, nc, use_lm = meta["al"], meta["nc"], meta["lm"]
    lm = None
    if use_lm:
        lm = (lm_loader or default_lm_loader)(spec.name)
    codes: list[np.ndarray] = []
    scales: list[float] | None = [] if spec.normalize else None
    for frames in iter_segment_frames(spec, al):
        if spec.normalize:
            (scale,) = _SCALE.unpack(_read_exactly(fileobj, _SCALE.size, "codes"))
            scales.append(scale)
        if lm is None:
            data = _read_exactly(fileobj, -(-nc * frames * BITS // 8), "codes")
            codes.append(unpack_codes(data, nc, frames))
        else:
            codes.append(_lm_decode_segment(fileobj, nc, frames, lm))
    return EcdcContents(spec.name, al, nc, use_lm, codes, scales)


def _lm_decode_segment(fileobj: IO[bytes], nc: int, frames: int, lm) -> np.ndarray:
    import torch
    from encodec.quantization.ac import ArithmeticDecoder, build_stable_quantized_cdf

    device = next(lm.parameters()).device
    decoder = ArithmeticDecoder(fileobj)
    states, offset = None, 0
    prev = torch.zeros(1, nc, 1, dtype=torch.long, device=device)
    blocks: list[np.ndarray] = []
    out = np.zeros((nc, 0), dtype=np.int64)
    for t in range(frames):
        if t % _LM_BLOCK == 0:
            if out.shape[1]:
                blocks.append(out)
            out = np.zeros((nc, min(_LM_BLOCK, frames - t)), dtype=np.int64)
        j = t % _LM_BLOCK
        with torch.no_grad():
            probas, states, offset = lm(prev, states, offset)
        for q in range(nc):
            cdf = build_stable_quantized_cdf(probas[0, :, q, 0], decoder.total_range_bits, check=False)
            try:
                code = decoder.pull(cdf)
            except (RuntimeError, AssertionError):
                raise InputError(
                    "the LM-coded .ecdc stream does not decode; the file is corrupt or was coded with other LM weights"
                ) from None
            if code is None:
                raise InputError("the .ecdc stream ends before all codes were read; the file is truncated")
            out[q, j] = code
        prev = torch.from_numpy(1 + out[:, j]).view(1, nc, 1).to(device)
    blocks.append(out)
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else out


def default_lm_loader(model_name: str, checkpoint=None):
    """EnCodec's entropy-coding LM for ``model_name`` with the official hyper-parameters, its
    weights resolved by ``audiotok.weights.resolve_encodec`` (cache, explicit path, or download)."""
    import warnings

    from encodec.model import LMModel

    from ..errors import WeightsError
    from ..weights import check_finite, load_torch_file, resolve_encodec

    spec = MODELS[model_name]
    path = resolve_encodec(spec.lm_name, checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = LMModel(spec.n_q, CARD, num_layers=5, dim=200, past_context=int(3.5 * spec.frame_rate))
    state = load_torch_file(path, "EnCodec LM checkpoint")
    try:
        lm.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"checkpoint {path} does not hold the {spec.lm_name} weights ({first})") from None
    check_finite(state, path)
    return lm.eval()
