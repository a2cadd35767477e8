"""audiotok.formats.audio.read: block-wise decoding equals a one-shot decode, and memory stays at the output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from audiotok.errors import InputError
from audiotok.formats import audio

from .conftest import REPO


def _one_shot(path, sample_rate, channels):
    """What a user would write: decode everything, mix, resample with soxr HQ (librosa's default)."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = audio.mix_channels(np.ascontiguousarray(data.T), channels)
    if sr != sample_rate:
        x = soxr.resample(np.ascontiguousarray(x.T), sr, sample_rate, quality="HQ").reshape(-1, x.shape[0]).T
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.mark.parametrize("sr,ch,target_sr,target_ch", [
    (44100, 2, 24000, 1), (16000, 1, 48000, 2), (48000, 6, 48000, 2), (24000, 1, 24000, 1), (22050, 3, 24000, 1),
])
def test_block_wise_read_equals_one_shot(tmp_path, monkeypatch, sr, ch, target_sr, target_ch):
    rng = np.random.default_rng(sr + ch)
    n = 3 * 4096 + 1234  # several blocks and a partial one
    x = (0.2 * rng.standard_normal((n, ch))).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(str(path), x, sr, subtype="FLOAT")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4096)
    got, info = audio.read(str(path), target_sr, target_ch)
    ref = _one_shot(path, target_sr, target_ch)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == ref.shape == (target_ch, audio.n_samples_at(n, sr, target_sr))
    np.testing.assert_array_equal(got, ref)
    assert (info.sample_rate, info.channels, info.frames) == (sr, ch, n)


def test_output_grows_when_the_header_understates_the_length(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    sf.write(str(path), np.linspace(-0.5, 0.5, 20000, dtype=np.float32), 44100, subtype="FLOAT")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 1000)
    monkeypatch.setattr(audio, "n_samples_at", lambda frames, sr, target: 7)
    got, info = audio.read(str(path), 24000, 1)
    np.testing.assert_array_equal(got, _one_shot(path, 24000, 1))
    assert info.frames == 20000


def test_non_finite_samples_are_counted_over_every_block(tmp_path, monkeypatch):
    x = np.zeros(10000, dtype=np.float32)
    x[[5, 4500, 9999]] = np.nan
    x[7000] = np.inf
    path = tmp_path / "bad.wav"
    sf.write(str(path), x, 24000, subtype="FLOAT")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 1024)
    with pytest.raises(InputError, match="contains 3 NaN and 1 infinite samples"):
        audio.read(str(path), 24000, 1)


@pytest.mark.slow
def test_reading_a_long_stereo_file_needs_about_the_output_not_the_decoded_file(tmp_path):
    """10 minutes of 44.1 kHz stereo: 212 MB as decoded float32, 58 MB as 24 kHz mono. The reader's
    peak must stay far below one decoded copy (a whole-file read held about four)."""
    sr, n = 44100, 10 * 60 * 44100
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", sr, 2, subtype="PCM_16") as f:
        for i in range(0, n, 60 * sr):
            t = np.arange(i, min(n, i + 60 * sr)) / sr
            f.write(np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1))
    code = (
        "import resource, sys, numpy, soundfile, soxr\n"
        "from audiotok.formats import audio\n"
        "audio.read(sys.argv[1] + '.warm.wav', 24000, 1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "x, info = audio.read(sys.argv[1], 24000, 1)\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, x.shape[1])\n"
    )
    sf.write(str(path) + ".warm.wav", np.zeros((44100, 2), np.float32), sr)
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after, frames = (int(v) for v in proc.stdout.split())
    assert frames == audio.n_samples_at(n, sr, 24000)
    output_mb = frames * 4 / 2**20
    growth_mb = (after - before) / 1024
    assert growth_mb < output_mb + 60, (growth_mb, output_mb)
