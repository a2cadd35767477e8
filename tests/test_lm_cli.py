"""audiotok train lm / audiotok score end to end on the shared recordings, torchrun training,
the EnCodec LM, reruns, comparisons and user errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from audiotok.engine.sinks import read_manifest
from audiotok.lm.checkpoints import load_checkpoint
from audiotok.testing import random_encodec_lm, save_encodec_lm_checkpoint

from .conftest import REPO, shared_path

SPEECH = ("alsa_front_center.wav", "puredata_voice2.wav", "freedesktop_audio_channel_side_left.oga")


def _main(*args) -> int:
    from audiotok.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


@pytest.fixture(scope="module")
def trained(hub_cache, tmp_path_factory):
    """A micro whisper-gpt and token-gpt trained a few steps on four shared speech files."""
    speech = shared_path("audio", "speech")
    root = tmp_path_factory.mktemp("lm")
    data = root / "data"
    data.mkdir()
    for name in SPEECH:
        os.symlink(speech / name, data / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(hub_cache))
        mp.setenv("AUDIOTOK_OFFLINE", "1")
        for arch in ("whisper-gpt", "token-gpt"):
            code = _main("train", "lm", data, "--arch", arch, "--size", "micro", "--steps", "4", "--batch-size", "4",
                         "--context", "32", "--val-fraction", "0.34", "--seed", "1", "--device", "cpu",
                         "--cache", root / "cache", "-o", root / f"{arch}.pt", "--workers", "0", "--quiet")
            assert code == 0
    return root


def test_train_writes_a_loadable_checkpoint_with_tokenizer_and_history(trained):
    ck = load_checkpoint(trained / "whisper-gpt.pt")
    assert ck.config.arch == "whisper-gpt" and ck.config.size == "micro" and ck.config.context == 32
    assert ck.tokenizer["codec"] == "encodec_24khz" and ck.tokenizer["bandwidth"] == 6.0
    assert ck.tokenizer["codebooks"] == [0] and ck.tokenizer["frame_rate"] == 75
    assert len(ck.tokenizer["codec_sha256"]) == 16
    assert ck.training["step"] == 4 and len(ck.training["val_files"]) == 1 and len(ck.training["train_files"]) == 2
    assert ck.training["history"][-1]["val_nll"] > 0
    assert not torch.allclose(ck.model.mel_std, torch.ones(80))  # training-set statistics stored
    cached = sorted(p.name for p in (trained / "cache").rglob("*.npz"))
    assert cached == sorted(n.rsplit(".", 1)[0] + ".npz" for n in SPEECH)


def test_score_end_to_end_records_frames_plot_and_summary(cli, trained, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    for name in SPEECH[:2]:
        os.symlink(trained / "data" / name, data / name)
    out = tmp_path / "scores.jsonl"
    bad = data / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    r = cli("score", data / SPEECH[0], data / SPEECH[1], bad, "--checkpoint", trained / "whisper-gpt.pt",
            "-o", out, "--summary", tmp_path / "summary.json", "--frames", tmp_path / "frames", "--plot", tmp_path / "plots",
            "--device", "cpu", "--workers", "0", "--quiet")
    assert r.code == 1, r  # one input is not audio
    assert r.out == ""  # records went to the file
    recs = read_manifest(out)
    assert recs[str(bad)]["status"] == "error"
    rec = recs[str(data / SPEECH[0])]
    assert rec["status"] == "ok" and rec["model"] == "whisper-gpt" and rec["context"] == 32 and rec["stride"] == 16
    assert rec["lm"]["arch"] == "whisper-gpt" and rec["lm"]["step"] == 4 and rec["lm"]["params"] > 0
    assert rec["tokenizer"]["codec"] == "encodec_24khz" and rec["tokenizer"]["bandwidth"] == 6.0
    assert rec["frames"] == math.ceil(1.428021 * 24000 / 320) == rec["tokens"]
    for key in ("nll", "bits_per_token", "perplexity", "total_bits", "bits_per_second", "accuracy", "entropy",
                "bits_per_frame", "nll_per_codebook"):
        assert key in rec
    assert rec["perplexity"] == pytest.approx(math.exp(rec["nll"]))
    with np.load(rec["frames_output"]) as z:
        assert z["surprisal"].shape == (rec["frames"], 1) and z["time"][1] == pytest.approx(1 / 75)
        assert z["surprisal"].mean() == pytest.approx(rec["nll"], rel=1e-5)
        assert np.all(z["rank"] >= 1) and z["token"].dtype == np.int16
        assert json.loads(str(z["record"]))["nll"] == pytest.approx(rec["nll"])
    assert rec["frames_output"] == str(tmp_path / "frames" / SPEECH[0].replace(".wav", ".whisper-gpt.npz"))
    assert (tmp_path / "plots" / SPEECH[0].replace(".wav", ".png")).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "summary.json").read_text())
    ok = [recs[str(data / n)] for n in SPEECH[:2]]
    nats = sum(x["total_nats"] for x in ok)
    assert summary["tokens"] == sum(x["tokens"] for x in ok) and summary["files"] == 2
    assert summary["perplexity"] == pytest.approx(math.exp(nats / summary["tokens"]))
    assert '"files": 2' in r.err and "bad.wav" in r.err and "Traceback" not in r.err
    assert (tmp_path / "frames" / "manifest.jsonl").is_file()

    # rerun: finished inputs are skipped (the summary still covers them); --overwrite scores again
    r2 = cli("score", data / SPEECH[0], data / SPEECH[1], "--checkpoint", trained / "whisper-gpt.pt", "-o", out,
             "--frames", tmp_path / "frames", "--plot", tmp_path / "plots", "--device", "cpu", "--workers", "0")
    assert r2.code == 0 and "0 done, 2 skipped" in r2.err and '"files": 2' in r2.err
    n_lines = len(out.read_text().splitlines())
    r3 = cli("score", data / SPEECH[0], "--checkpoint", trained / "whisper-gpt.pt", "-o", out, "--overwrite",
             "--device", "cpu", "--workers", "0")
    assert r3.code == 0 and len(out.read_text().splitlines()) == n_lines + 1


def test_scores_do_not_depend_on_batching(cli, trained):
    data = trained / "data"
    runs = []
    for extra in (["--batch-seconds", "0.5", "--rows", "1"], ["--batch-seconds", "60", "--rows", "5"]):
        r = cli("score", data / SPEECH[1], data / SPEECH[2], "--checkpoint", trained / "token-gpt.pt",
                "--device", "cpu", "--workers", "0", "--quiet", *extra)
        assert r.code == 0, r
        runs.append({json.loads(x)["input"]: json.loads(x) for x in r.out.splitlines()})
    assert len(runs[0]) == 2
    for k, rec in runs[0].items():
        assert rec["nll"] == runs[1][k]["nll"] and rec["accuracy"] == runs[1][k]["accuracy"]


def test_two_checkpoints_give_two_records_per_file_and_a_comparison_plot(cli, trained, tmp_path):
    data = trained / "data"
    r = cli("score", data / SPEECH[2], "--checkpoint", trained / "whisper-gpt.pt", "--checkpoint",
            trained / "token-gpt.pt", "--plot", tmp_path / "p", "--frames", tmp_path / "f", "--device", "cpu", "--workers", "0", "--quiet")
    assert r.code == 0, r
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["model"] for x in lines] == ["whisper-gpt", "token-gpt"]
    assert lines[0]["frames"] == lines[1]["frames"] and lines[0]["nll"] != lines[1]["nll"]
    stem = SPEECH[2].rsplit(".", 1)[0]
    assert (tmp_path / "p" / f"{stem}.png").is_file()
    assert sorted(p.name for p in (tmp_path / "f").glob("*.npz")) == [f"{stem}.token-gpt.npz", f"{stem}.whisper-gpt.npz"]
    summaries = json.loads(r.err.strip().splitlines()[-1])
    assert [s["model"] for s in summaries] == ["whisper-gpt", "token-gpt"]


def test_score_refuses_another_tokenizer_and_bad_options(cli, trained, tmp_path):
    data = trained / "data"
    ck = trained / "whisper-gpt.pt"
    r = cli("score", data / SPEECH[2], "--checkpoint", ck, "--bandwidth", "12", "--device", "cpu")
    assert r.code == 3 and "differs in bandwidth" in r.err and "Traceback" not in r.err
    r = cli("score", data / SPEECH[2], "--model", "token-gpt", "--checkpoint", ck, "--device", "cpu")
    assert r.code == 3 and "holds a whisper-gpt model, not token-gpt" in r.err
    r = cli("score", data / SPEECH[2], "--model", "gpt-9")
    assert r.code == 2 and "--model 'gpt-9' is not valid" in r.err
    r = cli("score", data / SPEECH[2], "--model", "whisper-gpt")
    assert r.code == 2 and "needs --checkpoint" in r.err
    r = cli("score", data / SPEECH[2], "--checkpoint", ck, "-o", tmp_path)
    assert r.code == 2 and "is a directory" in r.err
    r = cli("train", "lm", data, "--arch", "bert", "-o", tmp_path / "x.pt")
    assert r.code == 2 and "--arch 'bert' is not valid" in r.err
    r = cli("train", "lm", data, "-o", ck)
    assert r.code == 2 and "pass --resume" in r.err
    r = cli("train", "lm", data, "-o", tmp_path / "new.pt", "--resume")
    assert r.code == 2 and "no checkpoint" in r.err


def test_encodec_lm_scores_every_codebook(cli, trained, offline_cache, tmp_path, monkeypatch):
    save_encodec_lm_checkpoint(random_encodec_lm(8, seed=4), _hub_copy(offline_cache, tmp_path, monkeypatch))
    r = cli("score", trained / "data" / SPEECH[2], "--model", "encodec-lm", "-b", "1.5", "--device", "cpu", "--workers", "0", "--quiet")
    assert r.code == 0, r
    rec = json.loads(r.out)
    assert rec["model"] == "encodec-lm" and rec["codebooks"] == [0, 1] and rec["context"] == 262 and rec["stride"] == 1
    assert rec["tokens"] == 2 * rec["frames"] and len(rec["nll_per_codebook"]) == 2
    assert rec["bits_per_frame"] == pytest.approx(2 * rec["bits_per_token"])
    assert rec["lm"]["checkpoint"].endswith("encodec_lm_24khz-1608e3c0.th")


def test_train_on_an_encode_folder(cli, trained, tmp_path):
    r = cli("encode", trained / "data" / SPEECH[0], trained / "data" / SPEECH[1], "-o", tmp_path / "codes", "--workers", "0", "--quiet")
    assert r.code == 0, r
    r = cli("train", "lm", tmp_path / "codes", "--arch", "whisper-gpt", "--steps", "2", "--batch-size", "2",
            "--context", "16", "--device", "cpu", "-o", tmp_path / "m.pt", "--workers", "0", "--quiet")
    assert r.code == 0, r
    ck = load_checkpoint(tmp_path / "m.pt")
    assert sorted(ck.training["train_files"] + ck.training["val_files"]) == ["alsa_front_center.npz", "puredata_voice2.npz"]


def _records(r) -> dict:
    return {(os.path.basename(x["input"]).rsplit(".", 1)[0], x["model"]): x for x in map(json.loads, r.out.splitlines())}


def test_score_reads_encode_outputs_and_gives_the_audio_scores(cli, trained, offline_cache, tmp_path, monkeypatch):
    data = trained / "data"
    r = cli("encode", data / SPEECH[0], data / SPEECH[2], "-b", "24", "-o", tmp_path / "codes", "--workers", "0", "--quiet")
    assert r.code == 0, r
    models = ("--checkpoint", trained / "whisper-gpt.pt", "--checkpoint", trained / "token-gpt.pt")
    common = ("--device", "cpu", "--workers", "0", "--quiet")
    from_audio = cli("score", data / SPEECH[0], data / SPEECH[2], *models, *common)
    from_codes = cli("score", tmp_path / "codes", *models, *common)  # .npz is among score's default extensions
    assert from_audio.code == 0 and from_codes.code == 0, (from_audio, from_codes)
    a, c = _records(from_audio), _records(from_codes)
    assert sorted(a) == sorted(c) and len(a) == 4
    for k in a:  # the same codes and the same mel: the same numbers, bit for bit
        for field in ("nll", "accuracy", "entropy", "frames", "tokens", "total_bits", "nll_per_codebook"):
            assert a[k][field] == c[k][field], (k, field)
        assert c[k]["input"].endswith(".npz")
    # encodec-lm reads its own codebooks out of the 24 kbps codes (32 codebooks held, 2 read at 1.5 kbps)
    save_encodec_lm_checkpoint(random_encodec_lm(8, seed=4), _hub_copy(offline_cache, tmp_path, monkeypatch))
    lm_audio = cli("score", data / SPEECH[2], "--model", "encodec-lm", "-b", "1.5", *common)
    lm_codes = cli("score", tmp_path / "codes" / SPEECH[2].replace(".oga", ".npz"), "--model", "encodec-lm", "-b", "1.5", *common)
    assert lm_audio.code == 0 and lm_codes.code == 0
    assert json.loads(lm_audio.out)["nll"] == json.loads(lm_codes.out)["nll"]


def test_score_refuses_codes_that_do_not_fit_the_model(cli, trained, tmp_path, offline_cache, monkeypatch):
    data = trained / "data"
    r = cli("encode", data / SPEECH[1], "-b", "1.5", "-o", tmp_path / "low", "--workers", "0", "--quiet")
    assert r.code == 0, r
    common = ("--device", "cpu", "--workers", "0", "--quiet")
    save_encodec_lm_checkpoint(random_encodec_lm(8, seed=4), _hub_copy(offline_cache, tmp_path, monkeypatch))
    r = cli("score", tmp_path / "low", "--model", "encodec-lm", "-b", "6", *common)
    assert r.code == 1 and "holds 2 codebook(s) but the model reads 8" in r.err and "Traceback" not in r.err
    # codes of other codec weights
    npz = tmp_path / "low" / SPEECH[1].replace(".wav", ".npz")
    with np.load(npz) as z:
        fields = {k: z[k] for k in z.files}
    settings = json.loads(str(fields["settings"]))
    fields["settings"] = np.array(json.dumps({**settings, "weights_sha256": "0123456789abcdef"}))
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "x.npz", **fields)
    r = cli("score", other, "--checkpoint", trained / "token-gpt.pt", *common)
    assert r.code == 1 and "other codec weights (sha256 0123456789abcdef)" in r.err
    # whisper-gpt needs the mel, from the source audio the codes file names
    fields["settings"] = np.array(json.dumps(settings))
    fields["source"] = np.array(str(tmp_path / "gone.wav"))
    np.savez(other / "x.npz", **fields)
    r = cli("score", other, "--checkpoint", trained / "whisper-gpt.pt", *common)
    assert r.code == 1 and "gone.wav" in r.err and "which is not there" in r.err
    r = cli("score", other, "--checkpoint", trained / "token-gpt.pt", *common)  # token-only: no audio needed
    assert r.code == 0, r
    # per-frame arrays inside the input folder would be read as inputs next time
    r = cli("score", other, "--checkpoint", trained / "token-gpt.pt", "--frames", other / "frames", *common)
    assert r.code == 2 and "--frames" in r.err and "read as inputs by the next run" in r.err


@pytest.mark.slow
def test_torchrun_two_processes_train_a_loadable_checkpoint(trained, hub_cache, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(hub_cache), "AUDIOTOK_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "audiotok", "train", "lm", str(trained / "data"), "--arch", "token-gpt", "--steps", "3",
           "--batch-size", "2", "--context", "16", "--device", "cpu", "--cache", str(trained / "cache"),
           "-o", str(tmp_path / "ddp.pt"), "--workers", "0", "--quiet"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp.pt", "token-gpt")
    assert ck.training["world_size"] == 2 and ck.training["step"] == 3
    assert not list(tmp_path.glob(".ddp.pt.tmp*"))


def test_score_shards_partition_the_inputs_and_equal_one_run(trained, hub_cache, tmp_path, monkeypatch):
    """`score --shard K/N` scores each input exactly once across the shares, with the scores of a
    single run (records of share K go to FILE.shard-K-of-N.jsonl)."""
    monkeypatch.setenv("TORCH_HOME", str(hub_cache))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    data, ck = trained / "data", trained / "token-gpt.pt"
    assert _main("score", data, "--checkpoint", ck, "-o", tmp_path / "one.jsonl", "--device", "cpu", "-q") == 0
    for k in range(2):
        assert _main("score", data, "--checkpoint", ck, "-o", tmp_path / "s.jsonl", "--shard", f"{k}/2",
                     "--device", "cpu", "-q") == 0
    one = {r["input"]: r for r in map(json.loads, (tmp_path / "one.jsonl").read_text().splitlines())}
    parts = [[json.loads(x) for x in (tmp_path / f"s.shard-{k}-of-2.jsonl").read_text().splitlines()] for k in range(2)]
    inputs = [[r["input"] for r in p] for p in parts]
    assert all(inputs) and not set(inputs[0]) & set(inputs[1])
    assert sorted(inputs[0] + inputs[1]) == sorted(one)
    for r in parts[0] + parts[1]:
        assert r["nll"] == one[r["input"]]["nll"] and r["tokens"] == one[r["input"]]["tokens"]


# --- messages and weights of score (issue 17) ---------------------------------------------------
@pytest.fixture
def two_clips(tmp_path):
    from .conftest import write_wav

    write_wav(tmp_path / "in" / "a.wav", 0.8, seed=11)
    write_wav(tmp_path / "in" / "b.wav", 0.6, seed=12)
    return tmp_path / "in"


def _hub_copy(offline_cache, tmp_path, monkeypatch, drop_official: bool = False):
    """A private copy of the random-weight torch hub cache (TORCH_HOME points at it)."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(offline_cache, home)
    if drop_official:
        (home / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th").unlink()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def test_score_names_its_codec_option_when_codec_weights_are_missing(cli, offline_cache, two_clips, tmp_path,
                                                                     monkeypatch):
    from audiotok.testing import save_random_lm_checkpoint

    ckpt = save_random_lm_checkpoint(tmp_path / "tok.pt", offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th")
    _hub_copy(offline_cache, tmp_path, monkeypatch, drop_official=True)
    r = cli("score", two_clips, "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert r.code == 3 and "pass --codec-checkpoint PATH" in r.err and "pass --checkpoint" not in r.err, r


def test_a_token_model_scores_codes_without_codec_weights(cli, offline_cache, two_clips, tmp_path, monkeypatch):
    """Codes files scored by a trained token-only LM need no codec: the codes' weights hash is
    checked against the one the LM recorded. The scores equal those with the codec present."""
    from audiotok.testing import save_random_lm_checkpoint

    ckpt = save_random_lm_checkpoint(tmp_path / "tok.pt", offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th")
    assert cli("encode", two_clips, "-o", tmp_path / "tok", "-q").code == 0
    r = cli("score", tmp_path / "tok", "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert r.code == 0, r
    _hub_copy(offline_cache, tmp_path, monkeypatch, drop_official=True)
    again = cli("score", tmp_path / "tok", "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert again.code == 0, again
    assert [json.loads(x)["nll"] for x in again.out.splitlines()] == [json.loads(x)["nll"] for x in r.out.splitlines()]
    r = cli("score", two_clips, "--checkpoint", ckpt, "--device", "cpu", "-q")  # audio still needs the codec
    assert r.code == 3 and "encodec_24khz-d7cc33bc.th is not in the torch hub cache" in r.err, r


def test_score_finds_the_lm_codec_file_by_the_name_it_records(cli, offline_cache, two_clips, tmp_path, monkeypatch):
    """An LM trained with other codec weights (recorded by name and sha256) is scored with that file
    from the torch hub cache, not with the official weights (which its tokens do not come from)."""
    import torch as _torch

    from audiotok.testing import save_random_lm_checkpoint

    hub = _hub_copy(offline_cache, tmp_path, monkeypatch)
    state = _torch.load(hub / "encodec_24khz-d7cc33bc.th", weights_only=True)
    name = next(k for k, v in state.items() if v.dtype.is_floating_point and v.ndim > 1)
    state[name] = state[name] * 1.001
    _torch.save(state, hub / "mycodec.th")
    ckpt = save_random_lm_checkpoint(tmp_path / "tok.pt", hub / "mycodec.th")
    r = cli("score", two_clips, "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert r.code == 0, r
    given = cli("score", two_clips, "--checkpoint", ckpt, "--codec-checkpoint", hub / "mycodec.th", "--device", "cpu", "-q")
    assert given.out == r.out
    (hub / "mycodec.th").rename(tmp_path / "mycodec.th")
    r = cli("score", two_clips, "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert r.code == 3 and f"{ckpt} was trained on tokens of the codec weights mycodec.th (sha256 " in r.err, r
    assert "put the file there or pass --codec-checkpoint PATH" in r.err


def test_a_custom_encodec_lm_is_not_labelled_official(cli, offline_cache, two_clips, tmp_path):
    import shutil

    custom = tmp_path / "my_lm.th"
    shutil.copy(offline_cache / "hub" / "checkpoints" / "encodec_lm_24khz-1608e3c0.th", custom)
    r = cli("score", two_clips / "a.wav", "-m", "encodec-lm", "--checkpoint", custom, "--device", "cpu", "-q")
    assert r.code == 0, r
    assert json.loads(r.out)["lm"]["size"] == "custom" and "encodec-lm (custom)" in r.err
    r = cli("score", two_clips / "a.wav", "-m", "encodec-lm", "--device", "cpu", "-q", "--exclude", "b.wav")
    assert json.loads(r.out)["lm"]["size"] == "official" and "encodec-lm (official)" in r.err


def test_score_exclude(cli, offline_cache, two_clips, tmp_path):
    r = cli("score", two_clips, "-m", "encodec-lm", "--device", "cpu", "-q", "--exclude", "b.wav")
    assert r.code == 0 and [os.path.basename(json.loads(x)["input"]) for x in r.out.splitlines()] == ["a.wav"], r
