"""Every case of ../shared/audio_bad/CASES.md (and make_special_cases.sh) through ``audiotok encode``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from .conftest import shared_path

ERRORS = {
    "empty.wav": "is empty (0 bytes)",
    "random_bytes.wav": "is not an audio file soundfile can read (format not recognised)",
    "not_audio.flac": "is not an audio file soundfile can read (format not recognised)",
    "nan_inf_float32_48k.wav": "contains 110 NaN and 2 infinite samples",
}
VALID = {  # name -> frames at 24 kHz
    "one_sample_24k.wav": 1,
    "tiny_100_samples_24k.wav": 1,
    "silence_3s_16k.wav": 225,
    "eight_channel_7.1_48k.wav": None,
    "-rf name.wav": None,
    "truncated_mid_data.wav": None,
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, hub_cache):
    """One encode run over a copy of audio_bad plus the special cases (links, Latin-1 name)."""
    src_dir = shared_path("audio_bad")
    root = tmp_path_factory.mktemp("bad")
    inp = root / "in"
    shutil.copytree(src_dir, inp, symlinks=True)
    subprocess.run(["sh", str(src_dir / "make_special_cases.sh"), str(inp / "special")], check=True)
    out = root / "out"
    from audiotok.cli import main

    env = {"TORCH_HOME": str(hub_cache), "AUDIOTOK_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import contextlib
    import io

    err, stdout = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
            main(["encode", str(inp), "-o", str(out), "--jsonl", "--ext", "wav,flac"])
    except SystemExit as exc:
        code = exc.code
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    records = {os.path.basename(os.fsencode(json.loads(x)["input"])): json.loads(x)
               for x in stdout.getvalue().splitlines()}
    return code, err.getvalue(), records, out


def test_run_goes_on_and_exits_1(bad_run):
    code, err, records, _ = bad_run
    assert code == 1
    assert "Traceback" not in err
    assert len(records) == len(ERRORS) + len(VALID) + 4  # + loop_a, loop_b, self_loop, café


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_clear_error_per_bad_file(bad_run, name):
    _, err, records, out = bad_run
    rec = records[name.encode()]
    assert rec["status"] == "error"
    assert ERRORS[name] in rec["error"]
    assert f"{name}: {ERRORS[name]}" in err  # the message names the file
    assert not (out / name).with_suffix(".npz").exists()


@pytest.mark.parametrize("name", ["loop_a.wav", "loop_b.wav", "self_loop.wav"])
def test_symlink_loops_are_errors_and_walk_terminates(bad_run, name):
    _, err, records, _ = bad_run
    rec = records[name.encode()]
    assert rec["status"] == "error" and rec["error"] == "is a symbolic link loop; fix or remove the link"
    assert f"{name}: is a symbolic link loop" in err


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_edge_cases_encode(bad_run, name):
    _, _, records, out = bad_run
    rec = records[name.encode()]
    assert rec["status"] == "ok", rec
    with np.load(out / name.replace(".wav", ".npz")) as z:
        codes = z["codes"]
    assert codes.shape[0] == 8 and codes.dtype == np.int16
    if VALID[name] is not None:
        assert codes.shape[1] == VALID[name]
    assert rec["frames"] == codes.shape[1]


def test_eight_channels_recorded_and_downmixed(bad_run):
    """The 8-channel file is recorded as 8 channels at 48 kHz, and what the codec sees is the mean
    of all eight, resampled to 24 kHz (checked on the samples and on the codes)."""
    import soundfile as sf
    import torch

    from audiotok.formats import audio
    from audiotok.testing import random_encodec

    _, _, records, out = bad_run
    rec = records[b"eight_channel_7.1_48k.wav"]
    assert rec["channels"] == 8 and rec["sample_rate"] == 48000
    path = shared_path("audio_bad", "eight_channel_7.1_48k.wav")
    raw, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert raw.shape[1] == 8 and sr == 48000
    mono = raw.T.mean(axis=0, keepdims=True, dtype=np.float32)
    expect = audio.resample(mono, 48000, 24000)
    got, info = audio.read(str(path), 24000, 1)
    assert got.shape == expect.shape and rec["frames"] == -(-expect.shape[1] // 320)
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert np.abs(got).max() > 0  # not silence: the channels really were mixed, not dropped
    from audiotok.codecs.encodec import CodecEncoder

    enc = CodecEncoder(random_encodec("encodec_24khz"), 6.0, torch.device("cpu"))
    direct = dict(enc.run([(0, got)]) + enc.flush())[0].codes
    with np.load(out / "eight_channel_7.1_48k.npz") as z:
        np.testing.assert_array_equal(z["codes"], direct)


def test_truncated_file_encodes_what_exists(bad_run):
    rec = bad_run[2][b"truncated_mid_data.wav"]
    assert abs(rec["duration"] - 24977 / 44100) < 1e-6
    assert rec["frames"] == -(-round(24977 * 24000 / 44100) // 320)


def test_latin1_file_name_encodes_and_is_logged(bad_run):
    _, err, records, out = bad_run
    name = b"caf\xe9.wav"
    rec = records[name]
    assert rec["status"] == "ok"
    assert (out / "special" / os.fsdecode(b"caf\xe9.npz")).is_file()
    # the manifest is valid JSON and the name round-trips to the same bytes
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    names = {os.path.basename(os.fsencode(json.loads(x)["input"])) for x in lines}
    assert name in names
