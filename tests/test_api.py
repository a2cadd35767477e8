"""The Python API runs the same pipeline as the CLI: identical outputs, bit for bit."""

from __future__ import annotations

from pathlib import Path

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
    assert r.code == 2 and "holds outputs made with --bandwidth 6 (asked now: --bandwidth 24;" in r.err
    assert "--overwrite" in r.err
    (tmp_path / "o" / "settings.json").unlink()  # a folder from before settings.json: each output is compared
    r = cli("encode", src, "-o", tmp_path / "o", "-b", "24", "--quiet")
    assert r.code == 2 and "was made with bandwidth 6.0 (asked now: 24.0)" in r.err and "--overwrite" in r.err
    assert not (tmp_path / "o" / "settings.json").exists()  # the refused run does not record its settings
    r = cli("encode", src, "-o", tmp_path / "o", "-b", "24", "--quiet", "--overwrite")
    assert r.code == 0
    with np.load(tmp_path / "o" / "a.npz") as z:
        assert z["codes"].shape[0] == 32
    assert cli("encode", src, "-o", tmp_path / "n", "-f", "npy", "--quiet").code == 0
    r = cli("encode", src, "-o", tmp_path / "n", "-f", "npy", "-b", "3", "--quiet")
    assert r.code == 2 and "made with --bandwidth 6 (asked now: --bandwidth 3;" in r.err
    (tmp_path / "n" / "settings.json").unlink()
    r = cli("encode", src, "-o", tmp_path / "n", "-f", "npy", "-b", "3", "--quiet")
    assert r.code == 2 and "8 codebooks (asked now: 4" in r.err


def test_embed_rerun_with_other_settings_is_refused(cli, tmp_path):
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    ckpt = save_encodecmae_checkpoint(tmp_path / "m.pt", random_encodecmae_state("mel", dim=64, layers=2, heads=4),
                                      encodecmae_gin(64, 2, 4))
    write_wav(tmp_path / "in" / "a.wav", 0.8, seed=9)
    assert cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--quiet").code == 0
    r = cli("embed", tmp_path / "in", "-o", tmp_path / "e", "--model", ckpt, "--pool", "none", "--layer", "all", "--quiet")
    assert r.code == 2 and "made with --layer -1 (asked now: --layer all;" in r.err
    (tmp_path / "e" / "settings.json").unlink()  # a folder from before settings.json: each output is compared
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


def test_train_lm_equals_the_cli_bit_for_bit(cli, tmp_path):
    """``audiotok.train_lm`` and ``audiotok train lm`` on the same audio and encode outputs write the
    same checkpoint: every tensor equal, the same split and history."""
    import torch

    data, other = tmp_path / "data", tmp_path / "other"
    for i, sec in enumerate((1.3, 0.9, 1.6)):
        write_wav(data / f"f{i}.wav", sec, sr=16000, seed=300 + i)
    write_wav(other / "g.wav", 1.1, seed=310)
    assert cli("encode", other, "-o", tmp_path / "codes", "--quiet").code == 0  # an encode output as an input
    opts = dict(arch="whisper-gpt", size="micro", steps=3, batch_size=2, context=16, seed=4, val_fraction=0.25,
                device="cpu", workers=0)
    r = cli("train", "lm", data, tmp_path / "codes", "-o", tmp_path / "cli.pt", "--arch", "whisper-gpt", "--size",
            "micro", "--steps", "3", "--batch-size", "2", "--context", "16", "--seed", "4", "--val-fraction", "0.25",
            "--device", "cpu", "--workers", "0", "--quiet")
    assert r.code == 0, r
    logged: list[str] = []
    result = audiotok.train_lm([data, tmp_path / "codes"], tmp_path / "api.pt", log=logged.append, **opts)
    assert result.status == 0 and result.failed == [] and result.checkpoint == tmp_path / "api.pt"
    assert logged[-1] == f"checkpoint: {tmp_path / 'api.pt'}"
    a = torch.load(tmp_path / "cli.pt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "api.pt", map_location="cpu", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys() and len(a["state_dict"]) > 10
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["training"] == b["training"] == result.training
    assert sorted(a["training"]["train_files"] + a["training"]["val_files"]) == ["codes/g.npz", "data/f0.wav", "data/f1.wav",
                                                                                     "data/f2.wav"]
    assert a["config"] == b["config"] and a["tokenizer"] == b["tokenizer"]


def test_train_lm_usage_errors_and_failed_inputs(cli, tmp_path):
    write_wav(tmp_path / "in" / "a.wav", 1.2, seed=1)
    write_wav(tmp_path / "in" / "b.wav", 1.0, seed=2)
    with pytest.raises(UsageError, match="--arch 'gtp' is not valid"):
        audiotok.train_lm([tmp_path / "in"], tmp_path / "m.pt", arch="gtp")
    with pytest.raises(UsageError, match="--val-fraction 0.95 is not valid"):
        audiotok.train_lm([tmp_path / "in"], tmp_path / "m.pt", val_fraction=0.95)
    with pytest.raises(UsageError, match="does not exist"):
        audiotok.train_lm([tmp_path / "nope"], tmp_path / "m.pt")
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio")
    result = audiotok.train_lm([tmp_path / "in"], tmp_path / "m.pt", arch="token-gpt", steps=1, batch_size=2,
                               context=8, val_fraction=0.0, device="cpu", workers=0, log=lambda m: None)
    assert result.status == 1 and [p for p, _ in result.failed] == [str(tmp_path / "in" / "bad.wav")]
    assert sorted(result.training["train_files"]) == ["a.wav", "b.wav"]
    r = cli("train", "lm", tmp_path / "in", "-o", tmp_path / "c.pt", "--arch", "token-gpt", "--steps", "1",
            "--batch-size", "2", "--context", "8", "--val-fraction", "0", "--device", "cpu", "--workers", "0", "-q")
    assert r.code == 1 and "1 input(s) failed and are left out of training" in r.err and "bad.wav: " in r.err
    # --exclude leaves the bad file out (train lm and train mae take it like every command with inputs)
    r = cli("train", "lm", tmp_path / "in", "-o", tmp_path / "x.pt", "--arch", "token-gpt", "--steps", "1",
            "--batch-size", "2", "--context", "8", "--val-fraction", "0", "--device", "cpu", "--workers", "0", "-q",
            "--exclude", "bad.*")
    assert r.code == 0, r
    r = cli("train", "mae", tmp_path / "in", "-o", tmp_path / "mae.pt", "--device", "cpu", "--exclude", "*.wav", "-q")
    assert r.code == 2 and "no input files found; check the paths, --ext and --exclude" in r.err, r


def test_score_files_equals_the_cli(cli, offline_cache, tmp_path):
    """``audiotok.score_files`` and ``audiotok score``: the same records, corpus summary and per-frame
    arrays, bit for bit (an untrained token-gpt and EnCodec's LM, two models in one run)."""
    import json

    from audiotok.testing import save_random_lm_checkpoint

    for i, sec in enumerate((0.8, 1.7)):
        write_wav(tmp_path / "in" / f"f{i}.wav", sec, sr=22050, seed=400 + i)
    ckpt = save_random_lm_checkpoint(tmp_path / "tok.pt", offline_cache / "hub" / "checkpoints" /
                                     "encodec_24khz-d7cc33bc.th")
    r = cli("score", tmp_path / "in", "-m", "token-gpt", "-m", "encodec-lm", "--checkpoint", ckpt, "-o",
            tmp_path / "cli.jsonl", "--frames", tmp_path / "fcli", "--summary", tmp_path / "cli.json", "--device", "cpu",
            "-q")
    assert r.code == 0, r
    result = audiotok.score_files([tmp_path / "in"], models=["token-gpt", "encodec-lm"], checkpoints=[ckpt],
                                  output=tmp_path / "api.jsonl", frames=tmp_path / "fapi",
                                  summary_path=tmp_path / "api.json", device="cpu")
    assert result.summary.status == 0 and result.summary.ok == 2

    def records(path, frames):
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            rec["frames_output"] = str(Path(rec["frames_output"]).relative_to(frames))
            out.append(rec)
        return sorted(out, key=lambda x: (x["input"], x["model"]))

    a, b = records(tmp_path / "cli.jsonl", tmp_path / "fcli"), records(tmp_path / "api.jsonl", tmp_path / "fapi")
    assert len(a) == 4 and a == b
    assert json.loads((tmp_path / "cli.json").read_text()) == json.loads((tmp_path / "api.json").read_text())
    assert result.corpus == json.loads((tmp_path / "api.json").read_text())
    for rec in a:
        with np.load(tmp_path / "fcli" / rec["frames_output"]) as x, np.load(tmp_path / "fapi" / rec["frames_output"]) as y:
            for key in ("token", "surprisal", "entropy", "rank"):
                np.testing.assert_array_equal(x[key], y[key])


def _docs_example() -> str:
    """The first Python block of docs/api.md ("Files in, files out"), as a user would copy it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_docs_example_runs_as_a_script_from_stdin_and_as_a_module(offline_cache, tmp_path):
    """The docs/api.md example with default options and no ``__main__`` guard: run as a script, fed to
    ``python -`` and run with ``python -m`` (a main module imported by name, as notebooks' kernels
    are), every command works once: the decode workers never run the user's main module again."""
    import os
    import subprocess
    import sys

    from audiotok.testing import (
        encodecmae_gin,
        fill_hf_cache,
        random_encodecmae_state,
        save_encodecmae_checkpoint,
        save_random_lm_checkpoint,
    )

    from .conftest import REPO

    example = _docs_example()
    assert 'encode_files(["data/"], "tokens/"' in example and "if __name__" not in example
    mae = save_encodecmae_checkpoint(tmp_path / "mae.pt", random_encodecmae_state("mel", dim=64, layers=2, heads=4),
                                     encodecmae_gin(64, 2, 4))
    fill_hf_cache(tmp_path / "hf" / "hub", "lpepino/encodecmae-v2", {"mel256-ec-base_st.pt": mae})
    codec = offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th"
    env = {**os.environ, "TORCH_HOME": str(offline_cache), "AUDIOTOK_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    for way in ("script", "stdin", "module"):
        work = tmp_path / way
        write_wav(work / "data" / "a.wav", 0.6, seed=1)
        write_wav(work / "data" / "b" / "c.wav", 0.4, sr=16000, seed=2)
        save_random_lm_checkpoint(work / "wgpt.pt", codec, arch="whisper-gpt")
        # the whole example as a script; its first command (encode, decode workers) the other ways
        code = example if way == "script" else example.split("\naudiotok.decode_files")[0] + "\n"
        (work / "api_example.py").write_text(code)
        cmd, stdin = {"script": ([sys.executable, "api_example.py"], None),
                      "stdin": ([sys.executable, "-"], code),
                      "module": ([sys.executable, "-m", "api_example"], None)}[way]
        proc = subprocess.run(cmd, cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (way, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr and "bootstrapping phase" not in proc.stderr, (way, proc.stderr[-3000:])
        lines = proc.stdout.splitlines()  # each print once: the script ran once
        assert sorted(p.relative_to(work).as_posix() for p in (work / "tokens").rglob("*.npz")) == ["tokens/a.npz", "tokens/b/c.npz"]
        if way != "script":
            assert lines == ["2 0 []"], (way, lines)
            continue
        assert lines[:2] == ["2 0 []", "2"] and len(lines) == 3 and lines[2].endswith(" 0"), (way, lines)
        assert float(lines[2].split()[0]) > 0 and len((work / "scores.jsonl").read_text().splitlines()) == 2
        assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*.flac")) == ["audio/a.flac", "audio/b/c.flac"]
        assert np.load(work / "feats.npy").shape == (2, 64)


def test_train_mae_equals_the_cli_bit_for_bit(cli, tmp_path):
    """``audiotok.train_mae`` and ``audiotok train mae`` write the same checkpoint (every tensor, the
    split and the history with its baselines), the kept steps too."""
    import torch

    data = tmp_path / "data"
    for i, sec in enumerate((1.3, 0.9, 1.6)):
        write_wav(data / f"f{i}.wav", sec, sr=16000, seed=320 + i)
    r = cli("train", "mae", data, "-o", tmp_path / "cli.pt", "--steps", "2", "--batch-size", "2", "--crop-seconds",
            "0.64", "--val-fraction", "0.34", "--seed", "3", "--keep-steps", "0,1", "--optimizer", "reference",
            "--init", "reference", "--lr", "1e-3", "--device", "cpu", "--workers", "0", "--quiet")
    assert r.code == 0, r
    logged: list[str] = []
    result = audiotok.train_mae([data], tmp_path / "api.pt", steps=2, batch_size=2, crop_seconds=0.64, val_fraction=0.34,
                                seed=3, keep_steps=(0, 1), optimizer="reference", init="reference", lr=1e-3,
                                device="cpu", workers=0, log=logged.append)
    assert result.status == 0 and result.failed == [] and result.checkpoint == tmp_path / "api.pt"
    assert logged[-1] == f"checkpoint: {tmp_path / 'api.pt'}" and any("unigram CE" in m for m in logged)
    for name in ("{}.pt", "{}.step0.pt", "{}.step1.pt"):
        a = torch.load(tmp_path / name.format("cli"), map_location="cpu", weights_only=True)
        b = torch.load(tmp_path / name.format("api"), map_location="cpu", weights_only=True)
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (name, k)
        assert a["audiotok"]["training"] == b["audiotok"]["training"]
    final = torch.load(tmp_path / "api.pt", map_location="cpu", weights_only=True)["audiotok"]["training"]
    assert final == result.training and result.training["train_config"]["optimizer"] == "reference"
    assert [h["step"] for h in final["history"]] == [0, 1, 2]


def test_train_mae_usage_errors_raise_before_torch(tmp_path):
    import subprocess
    import sys

    write_wav(tmp_path / "in" / "a.wav", 0.5, seed=1)
    for kwargs, message in ((dict(size="huge"), "--size 'huge' is not valid"),
                            (dict(val_fraction=0.95), "--val-fraction 0.95 is not valid"),
                            (dict(optimizer="sgd"), "--optimizer 'sgd' is not valid"),
                            (dict(keep_steps=(5,), steps=2), "--keep-steps 5 is not a step")):
        with pytest.raises(UsageError, match=message):
            audiotok.train_mae([tmp_path / "in"], tmp_path / "m.pt", **kwargs)
    code = ("import sys, audiotok\n"
            "try:\n    audiotok.train_mae(['x'], 'm.pt', size='huge')\nexcept Exception:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


def test_probe_equals_the_cli(cli, tmp_path):
    import json

    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    ckpt = save_encodecmae_checkpoint(tmp_path / "m.pt", random_encodecmae_state(dim=32, layers=2, heads=4, ff_dim=64),
                                      encodecmae_gin(32, 2, 4, 64))
    for i in range(8):
        write_wav(tmp_path / "audio" / ("low" if i % 2 else "high") / f"{i}.wav", 0.5, seed=i)
    args = dict(labels_from_parent=True, model=ckpt, baseline="logmel,random", random_seeds=2, folds=2, probe="linear",
                threads=1)
    r = cli("probe", tmp_path / "audio", "--labels-from-parent", "--model", ckpt, "--baseline", "logmel,random",
            "--random-seeds", "2", "--folds", "2", "--probe", "linear", "--threads", "1", "-o", tmp_path / "cli.json")
    assert r.code == 0, r
    result = audiotok.probe([tmp_path / "audio"], out=tmp_path / "api.json", log=lambda m: None, **args)
    assert result.status == 0 and result.failed == []
    a, b = json.loads((tmp_path / "cli.json").read_text()), json.loads((tmp_path / "api.json").read_text())
    assert a == b == json.loads(json.dumps(result.report))
    with pytest.raises(UsageError, match="exactly one of --labels"):
        audiotok.probe([tmp_path / "audio"], model=ckpt)
    with pytest.raises(UsageError, match="--inner-folds 1 must be at least 2"):
        audiotok.probe([tmp_path / "audio"], labels_from_parent=True, inner_folds=1)
