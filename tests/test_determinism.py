"""Same audio, same numbers: codes and embeddings are a function of the audio, the model, its
weights, the settings, the device type and the thread count, and nothing else. Every comparison
here is between fresh processes started at the same time, more of them than cores, so that each is
descheduled at unpredictable moments (the conditions that once flipped a timed kernel choice from
run to run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, write_wav


def _at_once(runs: dict[str, list], env) -> None:
    """``audiotok ARGS`` for every run, all started at once: more processes than cores, so each is
    descheduled at unpredictable moments by the others (the load under which a timed kernel choice
    once flipped from run to run); every run must succeed."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "audiotok", *map(str, args)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, args in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, (name, err[-3000:])


def _env(hub_cache, **extra) -> dict:
    env = dict(os.environ, TORCH_HOME=str(hub_cache), AUDIOTOK_OFFLINE="1", PYTHONPATH=str(REPO), **extra)
    env.pop("WORLD_SIZE", None)
    return env


def _audiotok(*args, env) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _codes(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(root.rglob("*.npz")):
        with np.load(p) as z:
            out[str(p.relative_to(root))] = z["codes"].copy()
    return out


def _corpus(folder: Path) -> Path:
    """Files of several rates and lengths: shared-row files, a file past the lone threshold, and
    one shorter than the 8-frame minimum the stream needs."""
    for i, (sec, sr) in enumerate([(0.05, 24000), (0.7, 22050), (2.3, 44100), (4.1, 16000), (6.2, 24000),
                                   (1.4, 48000)]):
        write_wav(folder / f"clip{i}.wav", sec, sr=sr, seed=60 + i)
    write_wav(folder / "long" / "talk.wav", 31.0, sr=24000, seed=77)  # lone-row stream (>= 30 s)
    return folder


@pytest.mark.slow
def test_encode_identical_across_fresh_processes_settings_and_shards_under_load(tmp_path, hub_cache):
    src = _corpus(tmp_path / "in")
    _at_once({
        "a": ["encode", src, "-o", tmp_path / "a", "--quiet", "--workers", "0", "--batch-seconds", "1000"],
        "b": ["encode", src, "-o", tmp_path / "b", "--quiet", "--workers", "2", "--batch-seconds", "0.5"],
        **{f"shard{k}": ["encode", src, "-o", tmp_path / "shards", "--quiet", "--shard", f"{k}/2"] for k in (0, 1)},
    }, _env(hub_cache))
    ref = _codes(tmp_path / "a")
    assert len(ref) == 7 and ref["long/talk.npz"].shape == (8, 31 * 75)
    for other in ("b", "shards"):  # each a fresh process, so equality is also a repeat across processes
        got = _codes(tmp_path / other)
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{other}/{k}")


@pytest.mark.slow
def test_encode_records_what_codes_depend_on(tmp_path, hub_cache):
    src = tmp_path / "in"
    write_wav(src / "x.wav", 1.0, seed=3)
    _audiotok("encode", src, "-o", tmp_path / "o", "--quiet", "--threads", "1", env=_env(hub_cache))
    with np.load(tmp_path / "o" / "x.npz") as z:
        settings = json.loads(str(z["settings"]))
    num = settings["numerics"]
    assert settings["model"] == "encodec_24khz" and settings["bandwidth"] == 6.0
    assert len(settings["weights_sha256"]) == 16
    assert num["device_type"] == "cpu" and num["threads"] == 1 and num["stream_shared"] == "4x12160"
    assert num["stream_lone"] == "1x48640" and num["lone_seconds"] == 30.0
    assert {"torch", "numpy", "encodec", "audiotok", "cpu_capability"} <= num.keys()
    rec = json.loads((tmp_path / "o" / "manifest.jsonl").read_text().splitlines()[-1])
    assert rec["numerics"] == num and rec["weights_sha256"] == settings["weights_sha256"]


@pytest.mark.slow
def test_thread_count_is_honoured_and_runs_with_it_repeat(tmp_path, hub_cache):
    src = tmp_path / "in"
    for i, sec in enumerate((1.3, 3.7)):
        write_wav(src / f"f{i}.wav", sec, sr=32000, seed=90 + i)
    names = ("t1a", "t1b", "t1c")  # three at once: more than the cores even when nothing else runs
    _at_once({n: ["encode", src, "-o", tmp_path / n, "--quiet", "--threads", "1"] for n in names}, _env(hub_cache))
    a = _codes(tmp_path / "t1a")
    assert len(a) == 2
    for other in names[1:]:
        b = _codes(tmp_path / other)
        assert b.keys() == a.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_embed_identical_across_fresh_processes_and_batching_under_load(tmp_path, hub_cache):
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    ckpt = save_encodecmae_checkpoint(tmp_path / "mae.pt", random_encodecmae_state("mel", dim=64, layers=2, heads=4),
                                      encodecmae_gin(64, 2, 4))
    src = _corpus(tmp_path / "in")
    _at_once({name: ["embed", src, "-o", tmp_path / name, "--model", ckpt, "--pool", "none", "--quiet", *args]
              for name, args in {"a": ["--workers", "0", "--batch-seconds", "1000"],
                                 "b": ["--workers", "2", "--batch-seconds", "0.5"]}.items()}, _env(hub_cache))
    assert len(list((tmp_path / "a").rglob("*.npz"))) == 7
    for p in sorted((tmp_path / "a").rglob("*.npz")):
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        with np.load(p) as x, np.load(q) as y:
            np.testing.assert_array_equal(x["embedding"], y["embedding"])
