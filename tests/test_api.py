"""The Python API runs the same pipeline as the CLI: identical outputs, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import audiotok
from audiotok.errors import UsageError

from .conftest import write_wav


def _arrays(root, key):
    out = {}
    for p in sorted(root.rglob("*.npz")):
        with np.load(p) as z:
            out[p.name] = z[key].copy()
    return out


def test_encode_files_and_encoder_equal_the_cli(cli, tmp_path):
    src = tmp_path / "in"
    for i, (sec, sr) in enumerate([(0.4, 16000), (2.2, 44100), (0.06, 24000)]):
        write_wav(src / f"f{i}.wav", sec, sr=sr, seed=200 + i)
    assert cli("encode", src, "-o", tmp_path / "cli", "--quiet").code == 0
    summary = audiotok.encode_files([src], tmp_path / "api")
    assert (summary.ok, summary.skipped, summary.failed, summary.exit_code) == (3, 0, [], 0)
    a, b = _arrays(tmp_path / "cli", "codes"), _arrays(tmp_path / "api", "codes")
    assert a.keys() == b.keys() and len(a) == 3
    enc = audiotok.Encoder("encodec_24khz", 6.0, device="cpu")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        wav, sr = sf.read(str(src / name.replace(".npz", ".wav")), dtype="float32", always_2d=True)
        item = enc.encode(wav.T, sr)
        np.testing.assert_array_equal(item.codes, a[name])
    assert audiotok.encode_files([src], tmp_path / "api").skipped == 3  # reruns skip, as the CLI does


def test_api_usage_errors_raise_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    write_wav(tmp_path / "in" / "a.wav", 0.2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="--bandwidth 5 is not valid"):
        audiotok.encode_files([tmp_path / "in"], tmp_path / "o", bandwidth=5)
    with pytest.raises(UsageError, match="--threads 0 is not valid"):
        audiotok.encode_files([tmp_path / "in"], tmp_path / "o", threads=0)
    with pytest.raises(UsageError, match="no input files found"):
        audiotok.encode_files([tmp_path / "empty"], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_decode_and_embed_files_equal_the_cli(cli, tmp_path):
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    src = tmp_path / "in"
    write_wav(src / "a.wav", 1.1, sr=22050, seed=7)
    assert cli("encode", src, "-o", tmp_path / "codes", "--quiet").code == 0
    assert cli("decode", tmp_path / "codes", "-o", tmp_path / "dcli", "--quiet").code == 0
    assert audiotok.decode_files([tmp_path / "codes"], tmp_path / "dapi").ok == 1
    x, _ = sf.read(str(tmp_path / "dcli" / "a.wav"), dtype="int16")
    y, _ = sf.read(str(tmp_path / "dapi" / "a.wav"), dtype="int16")
    np.testing.assert_array_equal(x, y)
    ckpt = save_encodecmae_checkpoint(tmp_path / "m.pt", random_encodecmae_state("mel", dim=64, layers=2, heads=4),
                                      encodecmae_gin(64, 2, 4))
    assert cli("embed", src, "-o", tmp_path / "ecli", "--model", ckpt, "--quiet").code == 0
    s = audiotok.embed_files([src], tmp_path / "eapi", model=str(ckpt))
    assert s.ok == 1 and s.stacked is None
    np.testing.assert_array_equal(_arrays(tmp_path / "ecli", "embedding")["a.npz"],
                                  _arrays(tmp_path / "eapi", "embedding")["a.npz"])


def test_rerun_with_other_settings_is_refused(cli, tmp_path):
    src = tmp_path / "in"
    write_wav(src / "a.wav", 0.5, seed=8)
    assert cli("encode", src, "-o", tmp_path / "o", "--quiet").code == 0
    r = cli("encode", src, "-o", tmp_path / "o", "-b", "24", "--quiet")
    assert r.code == 2 and "was made with bandwidth 6.0 (asked now: 24.0)" in r.err and "--overwrite" in r.err
    r = cli("encode", src, "-o", tmp_path / "o", "-b", "24", "--quiet", "--overwrite")
    assert r.code == 0
    with np.load(tmp_path / "o" / "a.npz") as z:
        assert z["codes"].shape[0] == 32
    assert cli("encode", src, "-o", tmp_path / "n", "-f", "npy", "--quiet").code == 0
    r = cli("encode", src, "-o", tmp_path / "n", "-f", "npy", "-b", "3", "--quiet")
    assert r.code == 2 and "8 codebooks (asked now: 4" in r.err


def test_embed_rerun_with_other_settings_is_refused(cli, tmp_path):
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    ckpt = save_encodecmae_checkpoint(tmp_path / "m.pt", random_encodecmae_state("mel", dim=64, layers=2, heads=4),
                                      encodecmae_gin(64, 2, 4))
    write_wav(tmp_path / "in" / "a.wav", 0.8, seed=9)
    assert cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--quiet").code == 0
    r = cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--pool", "none", "--layer", "all", "--quiet")
    assert r.code == 2 and "was made with layer '-1' (asked now: 'all')" in r.err
    with np.load(tmp_path / "e" / "a.npz") as z:
        assert z["embedding"].shape == (64,)  # untouched
    r = cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--pool", "none", "--layer", "all",
            "--quiet", "--overwrite")
    assert r.code == 0
    with np.load(tmp_path / "e" / "a.npz") as z:
        assert z["embedding"].ndim == 3 and z["embedding"].shape[0] == 2
    r = cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--layer", "x", "--quiet")
    assert r.code == 2 and "--layer 'x' is not valid" in r.err
