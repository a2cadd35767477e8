"""The model registry: one place for every codec's facts; a toy codec registered through the
public interface encodes and decodes through the CLI like EnCodec does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audiotok.errors import UsageError
from audiotok.registry import CODECS, get_codec

from .conftest import REPO, write_wav


def test_encodec_facts_come_from_the_registry():
    from audiotok.formats import ecdc
    from audiotok.weights import ENCODEC_CHECKPOINTS

    s24, s48 = get_codec("encodec_24khz"), get_codec("encodec_48khz")
    assert (s24.sample_rate, s24.channels, s24.frame_rate, s24.hop) == (24000, 1, 75, 320)
    assert (s48.sample_rate, s48.channels, s48.frame_rate, s48.hop) == (48000, 2, 150, 320)
    assert [s24.n_codebooks(b) for b in s24.bandwidths] == [2, 4, 8, 16, 32]
    assert [s48.n_codebooks(b) for b in s48.bandwidths] == [2, 4, 8, 16]
    assert s48.segment_frames(95040 + 480) == [150, 150, 2]  # third segment: 480 samples = 1.5 frames
    assert ecdc.MODELS["encodec_48khz"] is s48 and ENCODEC_CHECKPOINTS["encodec_24khz"] == s24.checkpoint
    with pytest.raises(UsageError, match="choose one of 1.5, 3, 6, 12, 24"):
        s24.check_bandwidth(5)
    with pytest.raises(UsageError, match="not a known codec"):
        get_codec("nope")


def test_toy_codec_encodes_and_decodes_through_the_cli(cli, tmp_path):
    from . import toy_codec  # registers toy8k

    try:
        src = write_wav(tmp_path / "in" / "a.wav", 1.23, sr=44100, seed=5)
        r = cli("encode", tmp_path / "in", "-o", tmp_path / "codes", "-m", "toy8k", "-b", "0.8", "--quiet", "--jsonl")
        assert r.code == 0, r
        rec = json.loads(r.out.splitlines()[0])
        assert rec["model"] == "toy8k" and rec["n_q"] == 1 and rec["frames"] == 123
        with np.load(tmp_path / "codes" / "a.npz") as z:
            assert z["codes"].shape == (1, 123) and z["codes"].dtype == np.int16
            assert int(z["sample_rate"]) == 8000 and int(z["n_samples"]) == 9840
            assert json.loads(str(z["settings"]))["numerics"]["toy"] == "mu-law frame means"
        # the codes are the toy codec's own, computed on the audio resampled to 8 kHz
        from audiotok.formats import audio
        wav, _ = audio.read(str(src), 8000, 1)
        direct = dict(toy_codec.ToyEncoder(toy_codec.SPEC).run([(0, wav)]))[0].codes
        with np.load(tmp_path / "codes" / "a.npz") as z:
            np.testing.assert_array_equal(z["codes"], direct)
        r = cli("decode", tmp_path / "codes", "-o", tmp_path / "wav", "--quiet")
        assert r.code == 0, r
        info = sf.info(str(tmp_path / "wav" / "a.wav"))
        assert (info.samplerate, info.channels, info.frames) == (8000, 1, 9840)
        r = cli("encode", tmp_path / "in", "-o", tmp_path / "bad", "-m", "toy8k", "-b", "0.8", "-f", "ecdc", "--quiet")
        assert r.code == 2 and "ecdc holds only EnCodec codes" in r.err
        r = cli("encode", tmp_path / "in", "-o", tmp_path / "bad", "-m", "toy8k", "-b", "6", "--quiet")
        assert r.code == 2 and "not valid for toy8k" in r.err
    finally:
        CODECS.pop("toy8k", None)


def test_a_plugin_module_that_does_not_import_is_one_sentence(tmp_path):
    """(A plugin that imports reaching a fresh process: tests/test_codec_plugins.py.)"""
    write_wav(tmp_path / "in" / "b.wav", 0.5, sr=8000, seed=2)
    env = dict(os.environ, AUDIOTOK_PLUGINS="no_such_plugin_module", PYTHONPATH=str(REPO), AUDIOTOK_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "audiotok", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "o2"),
                           "-m", "toy8k", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "AUDIOTOK_PLUGINS names 'no_such_plugin_module'" in proc.stderr
