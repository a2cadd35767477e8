"""audiotok encode / decode: outputs, metadata, agreement with the official model, invariance to
batching, workers and shards, reruns, killed runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotok.codecs.encodec import CodecEncoder
from audiotok.codecs.streaming import LAYOUTS
from audiotok.engine.sinks import read_manifest
from audiotok.formats import audio
from audiotok.testing import random_encodec, synthetic_audio

from .conftest import REPO, run_in_batches, shared_path, write_wav


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and "manifest" not in p.name
            and p.name != "settings.json"}


def _codes(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return z["codes"]


def test_encode_mirrors_tree_and_writes_codes_with_metadata(cli, tmp_path):
    src = tmp_path / "in"
    write_wav(src / "a" / "one.wav", 1.3, sr=24000, seed=1)
    write_wav(src / "a" / "b" / "two.wav", 2.05, sr=44100, seed=2, channels=2)
    write_wav(src / "three.flac", 0.5, sr=16000, seed=3)
    out = tmp_path / "out"
    r = cli("encode", src, "-o", out, "--quiet")
    assert r.code == 0, r
    assert sorted(_tree(out)) == ["a/b/two.npz", "a/one.npz", "three.npz"]
    with np.load(out / "a" / "b" / "two.npz") as z:
        n = math.ceil(2.05 * 44100 * 24000 / 44100)
        assert z["codes"].dtype == np.int16
        assert z["codes"].shape == (8, math.ceil(n / 320))
        assert str(z["model"]) == "encodec_24khz" and float(z["bandwidth"]) == 6.0
        assert int(z["sample_rate"]) == 24000 and int(z["frame_rate"]) == 75
        assert int(z["n_samples"]) == n and int(z["n_q"]) == 8
        assert str(z["source"]).endswith("two.wav")
        assert 0 <= z["codes"].min() and z["codes"].max() <= 1023
        assert len(np.unique(z["codes"][0])) > 5  # filled codebooks: codes vary
    recs = read_manifest(out / "manifest.jsonl")
    rec = recs[str(src / "a" / "b" / "two.wav")]
    assert rec["status"] == "ok" and rec["sample_rate"] == 44100 and rec["channels"] == 2
    assert rec["frames"] == math.ceil(n / 320) and rec["n_q"] == 8 and rec["bandwidth"] == 6.0
    assert rec["model"] == "encodec_24khz" and abs(rec["duration"] - 2.05) < 1e-3
    assert rec["output"] == str(out / "a" / "b" / "two.npz")
    # the compute path is recorded: on the CPU the stream runs channels last
    assert rec["numerics"]["stream_layout"] == "nwc" and rec["numerics"]["stream_shared"] == "4x12160"


@pytest.mark.parametrize("bandwidth,n_q", [(1.5, 2), (3, 4), (12, 16), (24, 32)])
def test_bandwidths_24k(cli, tmp_path, bandwidth, n_q):
    write_wav(tmp_path / "x.wav", 0.7, seed=4)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "-b", bandwidth, "--quiet")
    assert r.code == 0, r
    assert _codes(tmp_path / "o" / "x.npz").shape == (n_q, math.ceil(0.7 * 24000 / 320))


def test_invalid_bandwidth_is_usage_error(cli, tmp_path):
    write_wav(tmp_path / "x.wav", 0.2)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "-b", "5")
    assert r.code == 2
    assert "--bandwidth 5 is not valid for encodec_24khz; choose one of 1.5, 3, 6, 12, 24" in r.err
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "-m", "encodec_48khz", "-b", "1.5")
    assert r.code == 2 and "choose one of 3, 6, 12, 24" in r.err
    assert "Traceback" not in r.err


def test_npy_format_and_48k_npy_refused(cli, tmp_path):
    write_wav(tmp_path / "x.wav", 0.5)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "-f", "npy", "--quiet")
    assert r.code == 0, r
    codes = np.load(tmp_path / "o" / "x.npy")
    assert codes.shape == (8, 38) and codes.dtype == np.int16
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "-f", "npy", "-m", "encodec_48khz")
    assert r.code == 2 and "fits only encodec_24khz" in r.err


def test_no_gpu_is_a_clear_usage_error(cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    write_wav(tmp_path / "x.wav", 0.2)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "--device", "cuda")
    assert r.code == 2
    assert "no CUDA GPU is available; use --device cpu" in r.err


def test_missing_weights_offline_names_file_and_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    write_wav(tmp_path / "x.wav", 0.2)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o")
    assert r.code == 3  # weights missing: nothing computed (1 would mean some inputs failed)
    assert "encodec_24khz-d7cc33bc.th is not in the torch hub cache" in r.err
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th") in r.err
    assert "Traceback" not in r.err
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "--checkpoint", tmp_path / "nope.th")
    assert r.code == 3 and "nope.th does not exist" in r.err


def test_explicit_checkpoint(cli, tmp_path, offline_cache, monkeypatch):
    ckpt = offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    write_wav(tmp_path / "x.wav", 0.4)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o", "--checkpoint", ckpt, "--quiet")
    assert r.code == 0, r
    bad = tmp_path / "bad.th"
    torch.save({"foo": torch.zeros(2)}, bad)
    r = cli("encode", tmp_path / "x.wav", "-o", tmp_path / "o2", "--checkpoint", bad)
    assert r.code == 3 and "does not hold encodec_24khz weights" in r.err


# --- agreement with the official model ------------------------------------------------------

def _official_codes(model, wav: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        frames = model.encode(torch.from_numpy(wav)[None])
    return torch.cat([f[0][0] for f in frames], dim=-1).numpy()


def _shared_audio_capped(folder: Path, seconds: float) -> Path:
    """The shared recordings as they are (links), except that files longer than ``seconds`` are cut
    to their first ``seconds`` in their own format and rate."""
    root = shared_path("audio")
    for p in sorted(root.rglob("*")):
        if p.suffix.lower().lstrip(".") not in audio_exts():
            continue
        dst = folder / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        info = sf.info(str(p))
        if info.duration <= seconds:
            dst.symlink_to(p)
            continue
        data, sr = sf.read(str(p), frames=int(seconds * info.samplerate), always_2d=True, dtype="float32")
        sf.write(str(dst), data, sr, format=info.format, subtype=info.subtype)
    return folder


@pytest.mark.slow
def test_codes_agree_with_official_per_file_encode_on_shared_audio(cli, tmp_path):
    # 78 s of the 197 (each file whole or its first 8 s); files of 30 s or more take the lone-row
    # stream, whose codes equal the shared rows' (test_lone_file_codes_equal_codes_among_neighbours)
    root = _shared_audio_capped(tmp_path / "in", 8.0)
    out = tmp_path / "o"
    r = cli("encode", root, "-o", out, "--quiet")
    assert r.code == 0, r
    official = random_encodec("encodec_24khz")  # same seed as the cached checkpoint
    official.set_target_bandwidth(6)
    same = total = 0
    for p in sorted(root.rglob("*")):
        if p.suffix.lower().lstrip(".") not in audio_exts():
            continue
        wav, _ = audio.read(str(p), 24000, 1)
        ref = _official_codes(official, wav)
        ours = _codes(out / p.relative_to(root).with_suffix(".npz"))
        assert ours.shape == ref.shape
        same += int((ours == ref).sum())
        total += ref.size
    assert total > 40_000
    assert same / total >= 0.99, same / total


def audio_exts():
    from audiotok.engine.sources import AUDIO_EXTENSIONS

    return AUDIO_EXTENSIONS


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [24000, 14400 + 7, 24000 + 319, 8 * 24000 + 211])
def test_streaming_latents_equal_whole_file_encoder(n, layout):
    """Window-by-window encoding equals the official whole-file model.encoder on every frame,
    the last frame of a file that ends mid-frame included (rel. max err <= 1e-4), in both
    activation layouts (``ncw``: the official one; ``nwc``: channels last, the CPU's)."""
    from audiotok.codecs.inference import for_inference
    from audiotok.codecs.streaming import StreamingEncoder

    official = random_encodec("encodec_24khz")
    ours = random_encodec("encodec_24khz")
    for_inference(ours)
    x = synthetic_audio(n / 24000, seed=7)
    assert x.shape[1] == n
    with torch.inference_mode():
        ref = official.encoder(torch.from_numpy(x)[None])[0]
        enc = StreamingEncoder(ours.encoder, layout)
        W, S = 24000, 4
        state = enc.init_state(S)
        pieces = []
        padded = np.zeros(-(-n // W) * W, dtype=np.float32)
        padded[:n] = x[0]
        for w in range(len(padded) // W):
            batch = torch.zeros(S, 1, W)
            batch[2, 0] = torch.from_numpy(padded[w * W:(w + 1) * W])
            batch[0, 0] = torch.randn(W)  # a neighbour with other content
            fresh = torch.full((S,), w == 0)
            ends = [W, W, min(W, n - w * W), W]
            pieces.append(enc(batch, state, fresh, ends)[2])
        got = torch.cat(pieces, dim=-1)[:, : math.ceil(n / 320)]
    assert got.shape == ref.shape
    err = (got - ref).abs().max(dim=0).values / ref.abs().max()
    assert err.max().item() <= 1e-4, err.max().item()
    assert err[-1].item() <= 1e-4, err[-1].item()  # the frame the file's end falls in


def test_48k_codes_and_scales_equal_official(tmp_path, cli):
    wav_path = write_wav(tmp_path / "s.wav", 2.5, sr=48000, seed=9, channels=2)
    r = cli("encode", wav_path, "-o", tmp_path / "o", "-m", "encodec_48khz", "-b", "12", "--quiet")
    assert r.code == 0, r
    official = random_encodec("encodec_48khz")
    official.set_target_bandwidth(12)
    wav, _ = audio.read(str(wav_path), 48000, 2)
    with torch.inference_mode():
        frames = official.encode(torch.from_numpy(wav)[None])
    ref = torch.cat([f[0][0] for f in frames], dim=-1).numpy()
    with np.load(tmp_path / "o" / "s.npz") as z:
        assert z["codes"].shape == ref.shape == (8, 150 + 150 + 78)
        assert (z["codes"] == ref).mean() >= 0.99
        np.testing.assert_allclose(z["scales"], [f[1].item() for f in frames], rtol=1e-6)
        assert z["scales"].dtype == np.float32 and int(z["frame_rate"]) == 150


# --- same codes whatever the batching -------------------------------------------------------

def test_channels_last_stream_is_as_accurate_as_the_official_layout(one_thread):
    """Against the same encoder computed in float64, the channels-last stream's latents carry at most
    1.75x the rounding error of the official float32 model (measured 1.2-1.4x; oneDNN's channels-last
    kernel alone summed the long reductions with 2-5x the error and moved 0.2 % of frames' codes,
    so those layers run as GEMMs: ``codecs/layout.GEMM_REDUCTION``)."""
    import copy

    from audiotok.codecs.inference import for_inference
    from audiotok.codecs.streaming import StreamingEncoder

    m = random_encodec("encodec_24khz")
    for_inference(m)
    rows, W = 4, 12160
    x = torch.stack([torch.from_numpy(synthetic_audio(2 * W / 24000, seed=30 + r))[0] for r in range(rows)])[:, None]
    with torch.inference_mode():
        exact = copy.deepcopy(m).double().encoder(x.double())
        official = m.encoder(x)
        enc = StreamingEncoder(m.encoder, "nwc")
        state = enc.init_state(rows)
        ours = torch.cat([enc(x[..., w * W:(w + 1) * W], state, torch.full((rows,), w == 0), [W] * rows)
                          for w in range(2)], dim=-1)

    def err(y):
        return float((y.double() - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())

    assert err(ours) <= 1.75 * err(official), (err(ours), err(official))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adapter_codes_independent_of_batch_size(layout):
    lens = [0.07, 0.4, 1.0, 1.7, 2.2, 3.1, 0.9, 2.6]
    wavs = [synthetic_audio(s, seed=i) for i, s in enumerate(lens)]
    results = []
    for batch_size in (1, 3, 32):
        enc = CodecEncoder(random_encodec("encodec_24khz"), 6.0, torch.device("cpu"), layout=layout)
        assert enc.numerics()["stream_layout"] == layout
        results.append(run_in_batches(enc, list(enumerate(wavs)), batch_size))
    for i in range(len(wavs)):
        assert results[0][i].codes.shape == (8, math.ceil(len(wavs[i][0]) / 320))
        for other in results[1:]:
            np.testing.assert_array_equal(results[0][i].codes, other[i].codes)


def test_cli_codes_identical_across_batch_seconds_and_workers(cli, tmp_path):
    src = tmp_path / "in"
    for i, s in enumerate([0.3, 1.1, 2.6, 4.0, 0.05, 1.9]):
        write_wav(src / f"f{i}.wav", s, sr=22050, seed=10 + i)
    runs = {}
    for name, args in {"b1w0": ["--batch-seconds", "0.1", "--workers", "0"],
                       "b3w2": ["--batch-seconds", "3", "--workers", "2"],
                       "big": ["--batch-seconds", "1000", "--workers", "1"]}.items():
        r = cli("encode", src, "-o", tmp_path / name, "--quiet", *args)
        assert r.code == 0, r
        runs[name] = {k: _codes(v) for k, v in _tree(tmp_path / name).items()}
    assert len(runs["big"]) == 6
    for name in ("b1w0", "b3w2"):
        assert runs[name].keys() == runs["big"].keys()
        for k in runs["big"]:
            np.testing.assert_array_equal(runs[name][k], runs["big"][k])


# --- reruns, shards, torchrun, killed runs --------------------------------------------------

def test_rerun_skips_and_overwrite_redoes(cli, tmp_path):
    write_wav(tmp_path / "in" / "x.wav", 0.5)
    out = tmp_path / "o"
    assert cli("encode", tmp_path / "in", "-o", out, "--quiet").code == 0
    mtime = (out / "x.npz").stat().st_mtime_ns
    r = cli("encode", tmp_path / "in", "-o", out, "--quiet", "--jsonl")
    assert r.code == 0
    assert json.loads(r.out.strip())["status"] == "skipped"
    assert (out / "x.npz").stat().st_mtime_ns == mtime
    r = cli("encode", tmp_path / "in", "-o", out, "--quiet", "--overwrite", "--jsonl")
    assert json.loads(r.out.strip())["status"] == "ok"
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["ok", "skipped", "ok"]


def test_shards_together_equal_one_run(cli, tmp_path):
    src = tmp_path / "in"
    for i in range(5):
        write_wav(src / f"d{i % 2}" / f"f{i}.wav", 0.4 + 0.3 * i, seed=20 + i)
    assert cli("encode", src, "-o", tmp_path / "one", "--quiet").code == 0
    for k in range(2):
        assert cli("encode", src, "-o", tmp_path / "two", "--quiet", "--shard", f"{k}/2").code == 0
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 5
    for k in one:
        np.testing.assert_array_equal(_codes(one[k]), _codes(two[k]))
    recs = read_manifest(tmp_path / "two" / "manifest.jsonl")
    assert len(recs) == 5 and all(r["status"] == "ok" for r in recs.values())
    assert not list((tmp_path / "two").glob("manifest.rank-*")) and not list((tmp_path / "two").glob(".manifest*"))
    r = cli("encode", src, "-o", tmp_path / "x", "--shard", "2/2")
    assert r.code == 2 and "K must be in 0..N-1" in r.err


def _env(hub_cache) -> dict:
    env = dict(os.environ, TORCH_HOME=str(hub_cache), AUDIOTOK_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(cli, tmp_path, hub_cache):
    src = tmp_path / "in"
    for i in range(4):
        write_wav(src / f"f{i}.wav", 0.5 + 0.4 * i, seed=30 + i)
    assert cli("encode", src, "-o", tmp_path / "one", "--quiet").code == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "audiotok", "encode", str(src), "-o", str(tmp_path / "two"), "--quiet", "--device", "cpu"]
    # torchrun gives each rank OMP_NUM_THREADS=1 unless told; a thread count of 1 rounds a few
    # layers differently from 2 or more, so the ranks get this process's count (docs/encode.md)
    env = dict(_env(hub_cache), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 4
    for k in one:
        np.testing.assert_array_equal(_codes(one[k]), _codes(two[k]))
    assert len(read_manifest(tmp_path / "two" / "manifest.jsonl")) == 4
    assert not list((tmp_path / "two").glob("manifest.rank-*"))


@pytest.mark.slow
def test_killed_run_leaves_only_complete_outputs_and_rerun_completes(cli, tmp_path, hub_cache):
    src = tmp_path / "in"
    for i in range(12):
        write_wav(src / f"f{i:02d}.wav", 1.5, sr=44100, seed=40 + i)
    clean_cmd = [sys.executable, "-m", "audiotok", "encode", str(src), "-o", str(tmp_path / "clean"), "--quiet"]
    done = subprocess.run(clean_cmd, env=_env(hub_cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # the clean run has a process of its own
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "audiotok", "encode", str(src), "-o", str(out), "--quiet", "--workers", "1",
           "--batch-seconds", "3"]
    proc = subprocess.Popen(cmd, env=_env(hub_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("*.npz"))
    assert 3 <= len(finished) < 12, "the run should have been killed mid-way"
    clean = _tree(tmp_path / "clean")
    for p in finished:  # every file that looks finished is complete and equals a clean run's
        np.testing.assert_array_equal(_codes(p), _codes(clean[p.name]))
    rerun = subprocess.run(cmd, env=_env(hub_cache), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    killed = {k: v for k, v in _tree(out).items() if not k.startswith(".")}
    assert killed.keys() == clean.keys()
    for k in clean:
        np.testing.assert_array_equal(_codes(killed[k]), _codes(clean[k]))
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 12 and all(r["status"] in ("ok", "skipped") for r in recs.values())


# --- inputs: stdin, odd names, globs, decode -----------------------------------------------

def test_stdin_paths_odd_names_and_jsonl(cli, tmp_path):
    a = write_wav(tmp_path / "in" / "with space.wav", 0.3, seed=1)
    b = write_wav(tmp_path / "in" / "-rf name.wav", 0.3, seed=2)
    r = cli("encode", "-", "-o", tmp_path / "o", "--quiet", "--jsonl", stdin=f"{a}\n{b}\n\n".encode())
    assert r.code == 0, r
    recs = [json.loads(line) for line in r.out.splitlines()]
    assert sorted(Path(x["output"]).name for x in recs) == ["-rf name.npz", "with space.npz"]
    r = cli("encode", "-o", tmp_path / "o2", "--quiet", "--", str(b))
    assert r.code == 0 and (tmp_path / "o2" / "-rf name.npz").is_file()


def test_glob_and_ext(cli, tmp_path):
    write_wav(tmp_path / "in" / "a.wav", 0.3, seed=1)
    write_wav(tmp_path / "in" / "sub" / "b.flac", 0.3, seed=2)
    r = cli("encode", str(tmp_path / "in" / "**" / "*.flac"), "-o", tmp_path / "o", "--quiet")
    assert r.code == 0 and sorted(_tree(tmp_path / "o")) == ["sub/b.npz"]
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "o2", "--quiet", "--ext", "wav")
    assert r.code == 0 and sorted(_tree(tmp_path / "o2")) == ["a.npz"]
    r = cli("encode", tmp_path / "nothing-here", "-o", tmp_path / "o3", "--quiet")
    assert r.code == 2 and f"{tmp_path / 'nothing-here'} does not exist; check the path" in r.err
    assert not (tmp_path / "o3").exists()  # refused before any work
    r = cli("encode", tmp_path / "in" / "a.wav", str(tmp_path / "in" / "*.ogg"), "-o", tmp_path / "o3", "--quiet")
    assert r.code == 2 and "no file matches" in r.err and "*.ogg" in r.err
    r = cli("encode", "-", "-o", tmp_path / "o4", "--quiet", stdin=f"{tmp_path / 'in' / 'a.wav'}\n{tmp_path / 'gone.wav'}\n".encode())
    assert r.code == 1 and "no such file or directory" in r.err  # paths from stdin: a record each, the run goes on
    assert sorted(_tree(tmp_path / "o4")) == ["in/a.npz"]  # relative to the common folder of a.wav and gone.wav


def test_outputs_beside_inputs_and_same_name_collisions(cli, tmp_path):
    """-o may be the input folder (codes land beside the audio); a.wav and a.flac in one folder
    would share a.npz: the first in sorted order gets it, the other fails with a clear reason."""
    src = tmp_path / "in"
    write_wav(src / "a.wav", 0.4, seed=1)
    write_wav(src / "b.wav", 0.4, seed=2)
    r = cli("encode", src, "-o", src, "--quiet")
    assert r.code == 0, r
    names = sorted(p.name for p in src.iterdir() if p.name != ".audiotok")
    assert names == ["a.npz", "a.wav", "b.npz", "b.wav", "manifest.jsonl", "settings.json"]

    dup = tmp_path / "dup"
    write_wav(dup / "x.wav", 0.4, seed=3)
    sf.write(str(dup / "x.flac"), synthetic_audio(0.5, seed=4)[0], 24000)
    r = cli("encode", dup, "-o", tmp_path / "o", "--quiet")
    assert r.code == 1
    assert "x.wav: has the same output" in r.err and "x.flac" in r.err
    (rec,) = [x for x in read_manifest(tmp_path / "o" / "manifest.jsonl").values() if x["status"] == "ok"]
    assert rec["input"].endswith("x.flac") and _codes(tmp_path / "o" / "x.npz").shape == (8, 38)
    bad = [x for x in read_manifest(tmp_path / "o" / "manifest.jsonl").values() if x["status"] == "error"]
    assert [Path(x["input"]).name for x in bad] == ["x.wav"]


def test_output_that_would_replace_an_input_is_a_usage_error(cli, tmp_path):
    wav = write_wav(tmp_path / "in" / "c.wav", 0.3, seed=1)
    r = cli("decode", wav, "-o", tmp_path / "in", "--format", "wav", "--quiet")
    assert r.code == 2 and "would overwrite the input" in r.err and "c.wav" in r.err
    assert wav.read_bytes()[:4] == b"RIFF" and sorted(p.name for p in (tmp_path / "in").iterdir()) == ["c.wav"]


@pytest.mark.parametrize("model,bw", [("encodec_24khz", 6), ("encodec_48khz", 6)])
@pytest.mark.parametrize("fmt", ["npz", "ecdc"])
def test_decode_round_trip_equals_official_decode(cli, tmp_path, model, bw, fmt):
    sr, ch = (24000, 1) if model == "encodec_24khz" else (48000, 2)
    wav_path = write_wav(tmp_path / "in" / "x.wav", 1.7, sr=sr, channels=ch, seed=3)
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "codes", "-m", model, "-b", bw, "-f", fmt, "--quiet")
    assert r.code == 0, r
    r = cli("decode", tmp_path / "codes", "-o", tmp_path / "wav", "--quiet", "--format", "flac")
    assert r.code == 0, r
    data, out_sr = sf.read(tmp_path / "wav" / "x.flac", always_2d=True)
    assert out_sr == sr and data.shape == (int(1.7 * sr), ch)
    (rec,) = read_manifest(tmp_path / "wav" / "manifest.jsonl").values()
    if model == "encodec_24khz":  # the decoder's compute path is recorded
        assert rec["numerics"]["stream_layout"] == "nwc" and rec["numerics"]["stream_window"] == 300
    official = random_encodec(model)
    official.set_target_bandwidth(bw)
    x, _ = audio.read(str(wav_path), sr, ch)
    with torch.inference_mode():
        ref = official.decode(official.encode(torch.from_numpy(x)[None]))[0, :, : x.shape[1]].numpy()
    ref16 = np.round(np.clip(ref, -1, 1) * 32767) / 32768
    assert np.abs(data.T - ref16).max() < 0.05  # only the rare codes that differ change the audio
    assert np.mean(np.abs(data.T - ref16) < 2e-4) > 0.95


def test_decode_bad_codes_file(cli, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.save(tmp_path / "float.npy", np.zeros((8, 3), dtype=np.float32))
    r = cli("decode", tmp_path / "bad.npz", tmp_path / "float.npy", "-o", tmp_path / "o", "--quiet")
    assert r.code == 1
    assert "bad.npz: is not a valid .npz codes file" in r.err
    assert "float.npy: holds a float32 array" in r.err


@pytest.mark.slow
def test_long_file_encodes_in_bounded_memory(tmp_path, hub_cache):
    """A 40 s file: peak RSS grows by far less than whole-file encoding needs (the first conv layer
    alone would hold 32 x 0.96M floats = 123 MB; several such activations live at once: the official
    whole-file encode of a minute grew it by 970 MB)."""
    n = 40 * 24000
    path = tmp_path / "long.wav"
    sf.write(str(path), (0.3 * np.sin(np.arange(n) * 0.05)).astype(np.float32), 24000, subtype="PCM_16")
    code = (
        "import resource, sys\n"
        "from audiotok.cli import main\n"
        "from audiotok.codecs.encodec import load_codec, CodecEncoder\n"
        "import numpy as np, torch\n"
        "enc = CodecEncoder(load_codec('encodec_24khz'), 6.0, torch.device('cpu'))\n"
        "enc.run([(0, np.zeros((1, 48000), np.float32))]); enc.flush()  # warm: allocator, kernels\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "encode", str(path), "-o", str(tmp_path / "o"), "--quiet",
                           "--workers", "0"], env=_env(hub_cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = (int(v) / 1024 for v in proc.stdout.strip().splitlines()[-1].split())
    assert after - before < 100, (before, after)
    assert _codes(tmp_path / "o" / "long.npz").shape == (8, n // 320)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_encode_matches_cpu(cli, tmp_path):
    for i in range(3):
        write_wav(tmp_path / "in" / f"f{i}.wav", 1.0 + i, seed=i)
    assert cli("encode", tmp_path / "in", "-o", tmp_path / "cpu", "--device", "cpu", "--quiet").code == 0
    assert cli("encode", tmp_path / "in", "-o", tmp_path / "gpu", "--device", "cuda", "--quiet").code == 0
    for k, p in _tree(tmp_path / "cpu").items():
        assert (_codes(p) == _codes(tmp_path / "gpu" / k)).mean() >= 0.99


@pytest.mark.parametrize("use_lm", [False, True])
def test_official_ecdc_decodes_with_audiotok_and_ours_with_official(cli, tmp_path, use_lm):
    """Both directions of .ecdc compatibility through the command line."""
    from encodec.compress import compress, decompress

    wav_path = write_wav(tmp_path / "x.wav", 0.8, seed=5)
    official = random_encodec("encodec_24khz")
    official.set_target_bandwidth(6)
    x, _ = audio.read(str(wav_path), 24000, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the official LM coder steps frame by frame
    try:
        blob = compress(official, torch.from_numpy(x), use_lm=use_lm)
    finally:
        torch.set_num_threads(before)
    (tmp_path / "codes").mkdir()
    (tmp_path / "codes" / "official.ecdc").write_bytes(blob)
    r = cli("decode", tmp_path / "codes", "-o", tmp_path / "dec", "--quiet")
    assert r.code == 0, r
    ours, sr = sf.read(tmp_path / "dec" / "official.wav", always_2d=True)
    ref, ref_sr = decompress(blob)
    assert sr == ref_sr == 24000 and ours.shape == (x.shape[1], 1)
    assert np.abs(ours[:, 0] - np.clip(ref[0].numpy(), -1, 1)).max() < 1e-3
    if not use_lm:
        # ours -> official: the official decompress reads exactly the codes audiotok wrote
        y_path = write_wav(tmp_path / "y" / "y.wav", 3.1, seed=6)
        for fmt in ("ecdc", "npz"):  # one folder per format: a folder holds one setting (settings.json)
            r = cli("encode", y_path, "-o", tmp_path / f"ours-{fmt}", "-f", fmt, "--quiet")
            assert r.code == 0, r
        y, _ = audio.read(str(y_path), 24000, 1)
        wav, sr = decompress((tmp_path / "ours-ecdc" / "y.ecdc").read_bytes())
        ours_codes = torch.from_numpy(_codes(tmp_path / "ours-npz" / "y.npz").astype(np.int64))
        with torch.inference_mode():
            ref = official.decode([(ours_codes[None], None)])[0, :, : y.shape[1]]
            frames = official.encode(torch.from_numpy(y)[None])
        assert sr == 24000 and wav.shape == (1, y.shape[1])
        assert torch.allclose(wav, ref, atol=1e-5)
        # and they are the codes the official encoder gives (all but rare float-rounding ties)
        assert (ours_codes.numpy() == frames[0][0][0].numpy()).mean() >= 0.99


@pytest.mark.parametrize("layout", LAYOUTS)
def test_streaming_rows_are_independent_of_neighbours_and_position(layout):
    """Every call has a fixed shape (rows x window); a row's latents must not depend on what the
    other rows hold or where it sits (in both activation layouts)."""
    from audiotok.codecs.encodec import CPU_SHARED
    from audiotok.codecs.inference import for_inference
    from audiotok.codecs.streaming import StreamingEncoder

    m = random_encodec("encodec_24khz")
    for_inference(m)
    enc = StreamingEncoder(m.encoder, layout)
    rows, W = CPU_SHARED.rows, CPU_SHARED.window
    x = torch.from_numpy(synthetic_audio(2 * W / 24000, seed=3))[0]
    outs = []
    with torch.inference_mode():
        for pos in range(rows):
            for seed in (1, 2):
                state = enc.init_state(rows)
                batch = torch.randn(rows, 1, 2 * W, generator=torch.Generator().manual_seed(seed))
                if seed == 2:
                    batch[(pos + 1) % rows] = 0.0  # an idle neighbour
                batch[pos, 0] = x
                first = enc(batch[..., :W], state, torch.ones(rows, dtype=torch.bool))[pos]
                second = enc(batch[..., W:], state, torch.zeros(rows, dtype=torch.bool))[pos]
                outs.append(torch.cat([first, second], dim=-1))
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seconds", [2.5, 4.2])
def test_lone_file_codes_equal_codes_among_neighbours(seconds, layout):
    """A file alone gets the codes it gets beside others: short files (shared 4-row calls, here
    2.5 s) and long ones (lone 1-row calls; the threshold is lowered to 4 s to keep the test fast)."""
    from audiotok.codecs.encodec import CPU_LONE, CPU_SHARED

    wav = synthetic_audio(seconds, seed=11)
    others = [(k, synthetic_audio(3.0 + 0.7 * k, seed=20 + k)) for k in range(1, 6)]
    enc = CodecEncoder(random_encodec("encodec_24khz"), 6.0, torch.device("cpu"), lone_seconds=4.0, layout=layout)
    assert enc.shared_shape == CPU_SHARED and enc.lone_shape == CPU_LONE
    alone = dict(enc.run([(0, wav)]) + enc.flush())[0].codes
    crowd = dict(enc.run(others[:2] + [(0, wav)] + others[2:]) + enc.flush())[0].codes
    assert alone.shape == (8, math.ceil(wav.shape[-1] / 320))
    np.testing.assert_array_equal(alone, crowd)


def test_console_entry_exit_codes_and_stdout_survive_the_fast_exit(tmp_path, hub_cache):
    """``python -m audiotok`` ends with os._exit once torch is loaded: exit codes and every JSON
    line on stdout must still come out."""
    for i in range(3):
        write_wav(tmp_path / "in" / f"f{i}.wav", 0.3, seed=i)
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio at all")
    cmd = [sys.executable, "-m", "audiotok", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--jsonl",
           "--quiet"]
    proc = subprocess.run(cmd, env=_env(hub_cache), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert sorted(x["status"] for x in lines) == ["error", "ok", "ok", "ok"]
    assert "bad.wav: is not an audio file" in proc.stderr
    (tmp_path / "in" / "bad.wav").unlink()
    proc = subprocess.run(cmd + ["--overwrite"], env=_env(hub_cache), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stderr[-2000:]
    proc = subprocess.run(cmd + ["-b", "5"], env=_env(hub_cache), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--bandwidth 5 is not valid" in proc.stderr


def test_usage_errors_and_finished_reruns_do_not_load_torch(tmp_path, hub_cache):
    """Option errors come at once, and a rerun over finished outputs skips without importing torch;
    missing weights still fail before any work."""
    write_wav(tmp_path / "in" / "a.wav", 0.3, seed=1)
    out = tmp_path / "o"
    code = (
        "import sys\n"
        "from audiotok.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(rc, 'torch' in sys.modules)\n"
    )

    def run(*args, env=None):
        proc = subprocess.run([sys.executable, "-c", code, "encode", str(tmp_path / "in"), "-o", str(out), "--quiet",
                               *args], env=env or _env(hub_cache), capture_output=True, text=True, timeout=300)
        return proc.stdout.split()[-2:], proc.stderr

    assert run("-b", "5")[0] == ["2", "False"]
    assert run("--device", "tpu")[0] == ["2", "False"]
    assert run()[0] == ["0", "True"]
    no_weights = dict(_env(hub_cache), TORCH_HOME=str(tmp_path / "empty"))
    assert run()[0] == ["0", "False"]
    assert read_manifest(out / "manifest.jsonl")[str(tmp_path / "in" / "a.wav")]["status"] == "skipped"
    (rc, torch_loaded), err = run("--overwrite", env=no_weights)
    assert (rc, torch_loaded) == ("3", "False") and "encodec_24khz-d7cc33bc.th is not in the torch hub cache" in err


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1500, 300 * 320, 24000 * 5 + 17])
def test_streaming_decoder_equals_official_whole_file_decode(n, layout):
    """24 kHz decode runs as a stream of 300-frame windows: the audio equals the official
    whole-file ``model.decode`` up to float rounding, for short, window-exact and odd lengths, in
    both activation layouts."""
    from audiotok.codecs.encodec import CodecDecoder, EncodedItem

    official = random_encodec("encodec_24khz")
    official.set_target_bandwidth(6)
    x = synthetic_audio(n / 24000, seed=8)
    with torch.inference_mode():
        codes = official.encode(torch.from_numpy(x)[None])[0][0]
        ref = official.decode([(codes, None)])[0, :, :n].numpy()
    dec = CodecDecoder(random_encodec("encodec_24khz"), torch.device("cpu"), layout=layout)
    assert dec.numerics() == {"stream_window": 300, "stream_layout": layout}
    got = dec.decode(EncodedItem(codes[0].numpy().astype(np.int16), None, n))
    assert got.shape == ref.shape == (1, n) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.slow
def test_long_file_decodes_in_bounded_memory(tmp_path, hub_cache):
    """Decoding a minute of codes: the official decoder would hold 32 x 1.44M floats (184 MB) per
    activation; the stream's peak grows by little more than the output (6 MB)."""
    n = 60 * 24000
    codes = np.random.default_rng(0).integers(0, 1024, size=(8, n // 320)).astype(np.int16)
    from audiotok.codecs.encodec import EncodedItem
    from audiotok.formats.codes import write_codes

    with open(tmp_path / "long.npz", "wb") as f:
        write_codes(f, "npz", EncodedItem(codes, None, n), "encodec_24khz", 6.0, "long.wav")
    code = (
        "import resource, sys\n"
        "from audiotok.cli import main\n"
        "from audiotok.codecs.encodec import load_codec, CodecDecoder, EncodedItem\n"
        "import numpy as np, torch\n"
        "dec = CodecDecoder(load_codec('encodec_24khz'), torch.device('cpu'))\n"
        "dec.decode(EncodedItem(np.zeros((8, 600), np.int16), None, 600 * 320))  # warm\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "decode", str(tmp_path / "long.npz"), "-o", str(tmp_path / "o"),
                           "--quiet"], env=_env(hub_cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = (int(v) / 1024 for v in proc.stdout.strip().splitlines()[-1].split())
    assert after - before < 80, (before, after)
    data, sr = sf.read(tmp_path / "o" / "long.wav")
    assert sr == 24000 and data.shape == (n,)


def test_loading_a_codec_leaves_the_rng_alone_and_imports_no_compiler(hub_cache):
    """``load_codec`` draws the modules' initial weights inside ``fork_rng`` (a caller's seeded
    stream continues as if nothing was loaded) and builds on the CPU: the meta device's reference
    ops import ``torch._dynamo``, which cost every run ~1 s of startup."""
    code = (
        "import sys, torch\n"
        "from audiotok.codecs.encodec import load_codec\n"
        "torch.manual_seed(7)\n"
        "before = torch.random.get_rng_state()\n"
        "m = load_codec('encodec_24khz')\n"
        "print(torch.equal(before, torch.random.get_rng_state()), 'torch._dynamo' in sys.modules,\n"
        "      m.encoder.model[0].conv.conv.weight.shape[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(hub_cache), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "False", "32"]
