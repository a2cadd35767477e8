"""Read any common audio format, convert channels and rate, validate. No torch here: this module
runs inside the decode worker processes.

Every problem with one file becomes an ``InputError`` whose message names the reason; the caller
adds the file name.
"""

from __future__ import annotations

import errno
import math
import os
import re

import numpy as np

from ..errors import InputError
from ..protocols import AudioInfo, segment_span  # noqa: F401  (re-exported)


def _open(path: str):
    from ..files import NotRegularFile, open_regular

    try:
        return open_regular(path)
    except NotRegularFile as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("is a symbolic link loop; fix or remove the link") from None
        if exc.errno == errno.ENOENT:
            raise InputError("does not exist (a broken link or a file removed during the run)") from None
        if exc.errno == errno.EISDIR:
            raise InputError("is a directory, not an audio file") from None
        if exc.errno == errno.EACCES:
            raise InputError("cannot be read: permission denied") from None
        if exc.errno == errno.ENXIO:
            raise InputError("is a socket or device, not a regular file; it was skipped") from None
        raise InputError(f"cannot be opened ({exc.strerror})") from None


def _size_of_nonempty(f) -> int:
    """The size of the open file ``f`` in bytes; an ``InputError`` when it is empty."""
    if f.read(1) == b"":
        raise InputError("is empty (0 bytes)")
    f.seek(0)
    return os.fstat(f.fileno()).st_size


def _sf_error(exc: Exception) -> InputError:
    # libsndfile names the Python file object ("Error opening <_io.BufferedReader name=...>: ");
    # the caller names the file, so only the reason is kept.
    text = re.sub(r"^Error (opening|reading) <[^>]*>:\s*", "", str(exc).strip())
    text = re.sub(r"\s*\(possibly a pipe\?\)", "", text)  # the input is never a pipe here
    if "Format not recognised" in text or "unknown format" in text.lower():
        return InputError("is not an audio file soundfile can read (format not recognised)")
    return InputError(f"cannot be decoded as audio ({text.strip() or type(exc).__name__}); the file is damaged "
                      "or not audio")


FRAMES_PER_BYTE = 1024  # more than any real file (FLAC of digital silence: ~300): beyond it a header lies


def plausible_frames(frames: int, file_bytes: int) -> int:
    """A header's frame count, capped at what ``file_bytes`` of data can hold (a lying header
    must not set progress totals or preallocate memory)."""
    return max(0, min(int(frames), int(file_bytes) * FRAMES_PER_BYTE))


def read_header(path: str) -> AudioInfo:
    """Sample rate, channels and length from the file header (no sample data read)."""
    import soundfile as sf

    with _open(path) as f:
        size = _size_of_nonempty(f)
        try:
            info = sf.info(f)
        except Exception as exc:  # libsndfile raises several types
            raise _sf_error(exc) from None
    if info.frames <= 0 or info.channels <= 0:
        raise InputError("contains no audio samples")
    return AudioInfo(int(info.samplerate), int(info.channels), plausible_frames(info.frames, size))


def mix_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``[C, N]`` -> ``[channels, N]``.

    To mono: the mean of all channels. To stereo: mono is duplicated; more than two channels are
    folded pairwise (even-indexed channels averaged into left, odd into right), which keeps the
    WAVE order FL/FR, FC/LFE, BL/BR, SL/SR on the right sides."""
    c = x.shape[0]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32).astype(np.float32)
    if channels == 2:
        if c == 1:
            return np.repeat(x, 2, axis=0)
        left = x[0::2].mean(axis=0, dtype=np.float32)
        right = x[1::2].mean(axis=0, dtype=np.float32)
        return np.stack([left, right]).astype(np.float32)
    raise ValueError(f"unsupported channel count {channels}")


def resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr at librosa's default quality (``soxr_hq``)."""
    if sr == target_sr:
        return x
    import soxr

    y = soxr.resample(np.ascontiguousarray(x.T), sr, target_sr, quality="HQ")
    y = np.asarray(y, dtype=np.float32)
    return np.ascontiguousarray(y.reshape(y.shape[0], -1).T)


BLOCK_FRAMES = 1 << 18  # frames decoded at a time (1 MiB per channel of float32)


class _Output:
    """A preallocated ``[channels, N]`` float32 array filled block by block (grows if a header
    understated the length; trimmed at the end)."""

    def __init__(self, channels: int, expected: int):
        self.data = np.empty((channels, max(1, expected)), dtype=np.float32)
        self.n = 0

    def add(self, block: np.ndarray) -> None:  # block: [m, C] frames-major, as decoders give it
        m = block.shape[0]
        if self.n + m > self.data.shape[1]:
            grown = np.empty((self.data.shape[0], max(2 * self.data.shape[1], self.n + m)), np.float32)
            grown[:, :self.n] = self.data[:, :self.n]
            self.data = grown
        self.data[:, self.n:self.n + m] = block.T
        self.n += m

    def result(self) -> np.ndarray:
        return self.data if self.n == self.data.shape[1] else np.ascontiguousarray(self.data[:, :self.n])


def clip_info(info: AudioInfo, offset: float = 0.0, duration: float | None = None) -> AudioInfo:
    """The header facts of a segment of a recording described by ``info``."""
    return info.clip(offset, duration)


def read(path: str, sample_rate: int | None = None, channels: int | None = None,
         offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` to float32 ``[channels, N]`` at ``sample_rate`` (None: keep the file's);
    only the segment from ``offset`` seconds for ``duration`` seconds (None: to the end) when given.

    Decodes, checks, mixes and resamples ``BLOCK_FRAMES`` at a time into one preallocated output,
    so memory is the output plus a block, whatever the file's channel count and rate."""
    import soundfile as sf

    with _open(path) as f:
        size = _size_of_nonempty(f)
        try:
            snd = sf.SoundFile(f)
        except Exception as exc:  # libsndfile raises several types
            raise _sf_error(exc) from None
        with snd:
            sr, in_ch = int(snd.samplerate), int(snd.channels)
            out_ch = channels or in_ch
            mix_ch = 1 if (in_ch == 1 and out_ch == 2) else out_ch  # mono to stereo: duplicate at the end
            target = sample_rate or sr
            stream = None
            if target != sr:
                import soxr

                stream = soxr.ResampleStream(sr, target, mix_ch, dtype="float32", quality="HQ")
            remaining = None  # frames of the segment still to read (None: read to the end)
            expected = plausible_frames(snd.frames, size)
            if offset or duration is not None:
                start, remaining = segment_span(expected, sr, offset, duration)
                expected = remaining
                try:
                    snd.seek(start)
                except Exception as exc:
                    raise _sf_error(exc) from None
            out = _Output(mix_ch, n_samples_at(expected, sr, target))
            frames = n_nan = n_inf = 0
            peak = 0.0
            while True:
                try:
                    want = BLOCK_FRAMES if remaining is None else min(BLOCK_FRAMES, remaining)
                    block = snd.read(want, dtype="float32", always_2d=True)
                    if remaining is not None:
                        remaining -= block.shape[0]
                except Exception as exc:
                    raise _sf_error(exc) from None
                last = block.shape[0] == 0
                frames += block.shape[0]
                if not last and not np.isfinite(block).all():
                    n_nan += int(np.isnan(block).sum())
                    n_inf += int(np.isinf(block).sum())
                if n_nan or n_inf:
                    if last:
                        break
                    continue  # keep counting; nothing more is converted
                if not last and block.size:
                    peak = max(peak, float(np.abs(block).max()))
                mixed = mix_channels(block.T, mix_ch).T if not last else block[:, :mix_ch]
                if stream is not None:
                    mixed = stream.resample_chunk(np.ascontiguousarray(mixed), last=last)
                if mixed.shape[0]:
                    out.add(mixed.reshape(mixed.shape[0], -1))
                if last:
                    break
    if frames == 0:
        raise InputError("contains no audio samples")
    if n_nan or n_inf:
        raise InputError(
            f"contains {n_nan} NaN and {n_inf} infinite samples; repair or re-export the file "
            "(audiotok never feeds non-finite audio to a model)"
        )
    x = out.result()
    if mix_ch != out_ch:
        x = np.repeat(x, out_ch, axis=0)
    return x, AudioInfo(sr, in_ch, frames, peak)


def n_samples_at(frames: int, sr: int, target_sr: int) -> int:
    """Length after resampling ``frames`` samples from ``sr`` to ``target_sr`` (soxr's rule)."""
    return int(math.ceil(frames * target_sr / sr)) if sr != target_sr else frames


def prepare_array(audio, sample_rate: int, target_sr: int, channels: int) -> np.ndarray:
    """An in-memory recording (``[N]`` or ``[channels, N]``, any rate) as float32
    ``[channels, N']`` at ``target_sr``: mixed and resampled exactly as files are."""
    from ..errors import UsageError

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise UsageError(f"audio must be [samples] or [channels, samples], not shape {x.shape}")
    if x.shape[0] > 64 and x.shape[1] <= 64:
        raise UsageError(f"audio of shape {x.shape} looks like [samples, channels]; pass it as [channels, samples] (audio.T)")
    if x.shape[-1] == 0:
        raise InputError("the audio contains no samples")
    if not np.isfinite(x).all():
        raise InputError("the audio contains NaN or infinite samples")
    x = mix_channels(x, channels)
    if int(sample_rate) != target_sr:
        x = resample(x, int(sample_rate), target_sr)
    return np.ascontiguousarray(x, dtype=np.float32)
