"""``audiotok embed`` end to end with the fixture checkpoint: outputs, options, reruns, stacking,
batch/worker invariance, released names from a Hugging Face cache, and every shared bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from audiotok.testing import fill_hf_cache

from .conftest import FIXTURE_ATOL, FIXTURE_RTOL, shared_path, write_wav

ATOL, RTOL = FIXTURE_ATOL, FIXTURE_RTOL


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fixture_dir():
    return shared_path("fixtures", "encodecmae")


@pytest.fixture(scope="module")
def ckpt(fixture_dir):
    return str(fixture_dir / "tiny_mel_st.pt")


@pytest.fixture
def run(capsys, monkeypatch):
    """``audiotok ARGS`` in-process -> (exit code, stdout, stderr)."""
    from audiotok.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def call(*args, stdin: bytes | None = None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return call


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    lengths = {"a/one.wav": 9.3, "a/two.wav": 0.7, "b/three.wav": 4.0, "b/deep/four.wav": 2.2, "five.wav": 12.05}
    for i, (rel, sec) in enumerate(lengths.items()):
        write_wav(root / rel, sec, sr=[24000, 16000, 44100][i % 3], seed=i, channels=1 + i % 2)
    return root


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _api(ckpt, path, **kw):
    import soundfile as sf

    from audiotok import load_embedder

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return load_embedder(ckpt, **kw).embed(x.T, sr)


# --- outputs ----------------------------------------------------------------------------------
def test_fixture_parity_through_the_cli(run, tmp_path, ckpt, fixture_dir):
    code, _, err = run("embed", *(fixture_dir / f"wav_{x}.wav" for x in "abcd"), "-o", tmp_path / "o",
                       "-m", ckpt, "--layer", "all", "--pool", "none", "-q")
    assert code == 0, err
    expected = np.load(fixture_dir / "expected.npz")
    for x in "abcd":
        z = _load(tmp_path / "o" / f"wav_{x}.npz")
        ref = expected[f"all_{x}"]
        assert z["embedding"].dtype == np.float32 and z["embedding"].shape[0] == 2
        np.testing.assert_allclose(z["embedding"][:, : ref.shape[1]], ref, atol=ATOL, rtol=RTOL)
        assert z["timestamps"].shape == (z["embedding"].shape[1],)
    assert _load(tmp_path / "o" / "wav_c.npz")["embedding"].shape == (2, 602, 64)  # + the 1200-sample tail


def test_tree_npz_metadata_manifest_and_api_agree(run, tmp_path, ckpt, clips):
    code, _, err = run("embed", clips, "-o", tmp_path / "o", "-m", ckpt, "-q")
    assert code == 0, err
    outs = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.npz"))
    assert outs == ["a/one.npz", "a/two.npz", "b/deep/four.npz", "b/three.npz", "five.npz"]
    z = _load(tmp_path / "o" / "a/one.npz")
    assert z["embedding"].shape == (64,) and z["embedding"].dtype == np.float32
    assert str(z["model"]) == ckpt and str(z["layer"]) == "-1" and str(z["pooling"]) == "mean"
    assert float(z["frame_rate"]) == pytest.approx(24000 / 318) and int(z["sample_rate"]) == 24000
    assert z["timestamps"].shape == (300 + 300 + 97,)  # 4 + 4 + 1.3 s
    np.testing.assert_array_equal(z["embedding"], _api(ckpt, clips / "a/one.wav"))
    lines = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and {r["status"] for r in lines} == {"ok"}
    rec = next(r for r in lines if r["input"].endswith("one.wav"))
    assert rec["shape"] == [64] and rec["frames"] == 697 and rec["pooling"] == "mean" and rec["layer"] == "-1"


@pytest.mark.parametrize("pool,layer,shape", [
    ("mean", "-1", (64,)), ("max", "0", (64,)), ("meanstd", "-2", (128,)), ("none", "-1", (697, 64)),
    ("mean", "all", (2, 64)), ("none", "all", (2, 697, 64)),
])
def test_pool_layer_and_npy(run, tmp_path, ckpt, clips, pool, layer, shape):
    code, _, err = run("embed", clips / "a/one.wav", "-o", tmp_path / "o", "-m", ckpt, "--pool", pool,
                       "--layer", layer, "--format", "npy", "-q")
    assert code == 0, err
    arr = np.load(tmp_path / "o" / "one.npy")
    assert arr.shape == shape and arr.dtype == np.float32
    want = _api(ckpt, clips / "a/one.wav", pool=pool, layer=layer if layer == "all" else int(layer))
    np.testing.assert_array_equal(arr, want)


def test_chunk_seconds_overlap_and_dtype(run, tmp_path, ckpt, clips):
    wav = clips / "five.wav"
    base = ["embed", wav, "-m", ckpt, "--pool", "none", "-q"]
    assert run(*base, "-o", tmp_path / "c4")[0] == 0
    assert run(*base, "-o", tmp_path / "c2", "--chunk-seconds", "2")[0] == 0
    assert run(*base, "-o", tmp_path / "ov", "--overlap", "1.5")[0] == 0
    assert run(*base, "-o", tmp_path / "bf", "--dtype", "bfloat16")[0] == 0
    c4, c2, ov, bf = (_load(tmp_path / d / "five.npz") for d in ("c4", "c2", "ov", "bf"))
    # 12.05 s at 16 kHz -> 289200 samples at 24 kHz: 3 chunks of 4 s (300 frames) + a 1200-sample tail (2 frames)
    assert c4["embedding"].shape == (3 * 300 + 2, 64)
    assert c2["embedding"].shape == (6 * 149 + 2, 64)  # 2 s chunks: 1 + (48000 - 637) // 318 frames
    assert not np.allclose(c2["embedding"][:149], c4["embedding"][:149])  # less context per chunk
    assert np.all(np.diff(ov["timestamps"]) > 0) and ov["timestamps"][-1] > 12.0
    assert float(ov["overlap"]) == 1.5 and float(c2["chunk_seconds"]) == 2.0
    assert str(bf["dtype"]) == "bfloat16" and bf["embedding"].dtype == np.float32
    assert np.abs(bf["embedding"] - c4["embedding"]).max() < 0.25 and not np.array_equal(bf["embedding"], c4["embedding"])


def test_rerun_skips_overwrite_redoes_and_stack(run, tmp_path, ckpt, clips):
    out, stack = tmp_path / "o", tmp_path / "all.npy"
    code, stdout, _ = run("embed", clips, "-o", out, "-m", ckpt, "--jsonl", "-q", "--stack", stack)
    assert code == 0
    recs = [json.loads(x) for x in stdout.splitlines()]
    assert len(recs) == 5 and all(r["status"] == "ok" for r in recs)
    matrix = np.load(stack)
    paths = [json.loads(line)["input"] for line in (tmp_path / "all.paths.jsonl").read_text().splitlines()]
    assert matrix.shape == (5, 64) and matrix.dtype == np.float32
    from audiotok.engine.sources import AUDIO_EXTENSIONS, discover

    assert paths == [src.path for src in discover([str(clips)], AUDIO_EXTENSIONS)]
    for row, p in zip(matrix, paths):
        np.testing.assert_array_equal(row, _load(out / os.path.relpath(p, clips).replace(".wav", ".npz"))["embedding"])
    before = (out / "a/one.npz").stat().st_mtime_ns
    code, stdout, _ = run("embed", clips, "-o", out, "-m", ckpt, "--jsonl", "-q", "--stack", stack)
    assert code == 0 and {json.loads(x)["status"] for x in stdout.splitlines()} == {"skipped"}
    assert (out / "a/one.npz").stat().st_mtime_ns == before
    np.testing.assert_array_equal(np.load(stack), matrix)  # skipped outputs are stacked too
    code, stdout, _ = run("embed", clips / "a/one.wav", "-o", out / "a", "-m", ckpt, "--jsonl", "-q", "--overwrite")
    assert code == 0 and json.loads(stdout)["status"] == "ok"


def test_same_outputs_across_batch_seconds_and_workers(run, tmp_path, ckpt, clips):
    for name, extra in (("b1", ["--batch-seconds", "0.5", "--workers", "0"]),
                        ("b2", ["--batch-seconds", "1000", "--workers", "2"]),
                        ("b3", ["--batch-seconds", "5", "--workers", "1"])):
        assert run("embed", clips, "-o", tmp_path / name, "-m", ckpt, "--pool", "none", "-q", *extra)[0] == 0
    for rel in ("a/one.npz", "a/two.npz", "b/three.npz", "b/deep/four.npz", "five.npz"):
        ref = _load(tmp_path / "b1" / rel)["embedding"]
        for name in ("b2", "b3"):
            np.testing.assert_array_equal(_load(tmp_path / name / rel)["embedding"], ref)


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--layer", "2"], "--layer 2 is out of range: this model has 2 layers"),
    (["--layer", "last"], "--layer 'last' is not valid"),
    (["--pool", "median"], "--pool 'median' is not valid"),
    (["--dtype", "int8"], "--dtype 'int8' is not valid"),
    (["--format", "wav"], "--format 'wav' is not valid for embed"),
    (["--overlap", "4"], "--overlap 4 must be at least 0 and less than --chunk-seconds (4)"),
    (["--chunk-seconds", "0"], "--chunk-seconds must be positive"),
    (["--pool", "none", "--stack", "s.npy"], "--stack needs pooled embeddings"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--shard", "0/2", "--stack", "s.npy"], "--stack needs every input in one process"),
])
def test_usage_errors_exit_2_in_one_line(run, tmp_path, ckpt, clips, args, message):
    if args[0] == "--device" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = run("embed", clips, "-o", tmp_path / "o", "-m", ckpt, *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_model_is_one_sentence(run, tmp_path, clips):
    code, _, err = run("embed", clips, "-o", tmp_path / "o", "-m", "mel256-ec-small")
    assert code == 3 and "mel256-ec-small.pt of the Hugging Face repo lpepino/encodecmae-v2 is not in the cache" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run("embed", clips, "-o", tmp_path / "o", "-m", tmp_path / "nope.pt")
    assert code == 3 and "nope.pt does not exist" in err


def test_released_name_from_hf_cache_in_a_fresh_process(tmp_path, fixture_dir, clips):
    """The default model name, resolved offline from a Hugging Face cache given by HF_HOME."""
    fill_hf_cache(tmp_path / "hf" / "hub", "lpepino/encodecmae-v2",
                  {"mel256-ec-base_st.pt": fixture_dir / "tiny_mel_st.pt"})
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    p = subprocess.run([sys.executable, "-m", "audiotok", "embed", str(clips / "b/three.wav"), "-o", str(tmp_path / "o"),
                        "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    z = _load(tmp_path / "o" / "three.npz")
    assert str(z["model"]) == "mel256-ec-base_st" and z["embedding"].shape == (64,)


# --- the shared bad inputs --------------------------------------------------------------------
ERRORS = {
    "empty.wav": "is empty (0 bytes)",
    "random_bytes.wav": "is not an audio file soundfile can read (format not recognised)",
    "not_audio.flac": "is not an audio file soundfile can read (format not recognised)",
    "nan_inf_float32_48k.wav": "contains 110 NaN and 2 infinite samples",
    "loop_a.wav": "is a symbolic link loop", "loop_b.wav": "is a symbolic link loop",
    "self_loop.wav": "is a symbolic link loop",
}
VALID = {"one_sample_24k.wav": 1, "tiny_100_samples_24k.wav": 1, "silence_3s_16k.wav": 225,
         "eight_channel_7.1_48k.wav": None, "-rf name.wav": None, "truncated_mid_data.wav": None, "caf\udce9.wav": None}


def test_bad_inputs(run, tmp_path, ckpt):
    src = shared_path("audio_bad")
    inp = tmp_path / "in"
    shutil.copytree(src, inp, symlinks=True)
    subprocess.run(["sh", str(src / "make_special_cases.sh"), str(inp / "special")], check=True)
    code, stdout, err = run("embed", inp, "-o", tmp_path / "out", "-m", ckpt, "--pool", "none", "--jsonl",
                            "--ext", "wav,flac")
    assert code == 1 and "Traceback" not in err
    recs = {os.path.basename(json.loads(x)["input"]): json.loads(x) for x in stdout.splitlines()}
    assert len(recs) == len(ERRORS) + len(VALID)
    for name, message in ERRORS.items():
        assert recs[name]["status"] == "error" and message in recs[name]["error"]
        assert f"{name}: {message}" in err
    for name, frames in VALID.items():
        rec = recs[name]
        assert rec["status"] == "ok", rec
        arr = _load(rec["output"])["embedding"]
        assert arr.ndim == 2 and arr.shape[1] == 64 and np.isfinite(arr).all()
        if frames is not None:
            assert arr.shape[0] == frames


def test_shards_together_equal_one_run(run, tmp_path, ckpt, clips):
    assert run("embed", clips, "-o", tmp_path / "one", "-m", ckpt, "-q")[0] == 0
    for k in (0, 1):
        assert run("embed", clips, "-o", tmp_path / "sh", "-m", ckpt, "-q", "--shard", f"{k}/2")[0] == 0
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.npz"))
    assert one == sorted(p.relative_to(tmp_path / "sh") for p in (tmp_path / "sh").rglob("*.npz"))
    for rel in one:
        np.testing.assert_array_equal(_load(tmp_path / "sh" / rel)["embedding"], _load(tmp_path / "one" / rel)["embedding"])
    assert len((tmp_path / "sh" / "manifest.jsonl").read_text().splitlines()) == 5
