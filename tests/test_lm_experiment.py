"""What the hybrid-vs-tokens experiment relies on: early stopping on validation, the information
control trained end to end, count-model baselines, paired bootstrap intervals, and `train lm` on
encode folders of any bandwidth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiotok.errors import UsageError
from audiotok.lm.checkpoints import load_checkpoint
from audiotok.train.lm import Example, TrainConfig, evaluate, train
from benchmarks.lmexp.count_lm import CountLM, fit_count_lm
from benchmarks.lmexp.paired import paired_difference

from .conftest import shared_path

TOKENIZER = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 3.0, "n_q": 4,
             "codebooks": [0], "codec_checkpoint": "x.th", "codec_sha256": "0" * 16}


def _examples(n=4, T=96, K=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        codes = np.resize(rng.integers(0, 1024, (K, 5)), (K, T)).astype(np.int16)
        mel = rng.standard_normal((T, 80)).astype(np.float32) - 4.0
        out.append(Example(f"f{i}.wav", codes[0].copy(), mel, T / 75, codes))
    return out


def test_early_stopping_keeps_the_weights_of_the_best_validation(tmp_path):
    ex = _examples(5)
    cfg = TrainConfig(steps=200, batch_size=4, lr=3e-2, seed=0, patience=2, eval_every=3)
    ck = train("token-gpt", "micro", ex[:3], TOKENIZER, tmp_path / "m.pt", cfg, context=16, progress=False,
               log=lambda m: None, val_examples=ex[3:])  # validation files never seen in training: overfits
    es = ck.training["early_stopping"]
    vals = [h["val_nll"] for h in ck.training["history"]]
    assert es["stopped_at"] < 200 and es["best_val_nll"] == min(vals)
    assert [h["step"] for h in ck.training["history"]][-1] == es["stopped_at"]
    assert es["stopped_at"] - es["best_step"] == 2 * 3  # two validations without improvement
    assert ck.training["val_files"] == ["f3.wav", "f4.wav"] and ck.training["train_files"] == ["f0.wav", "f1.wav", "f2.wav"]
    loaded = load_checkpoint(tmp_path / "m.pt", "token-gpt", TOKENIZER)
    again = evaluate(loaded.model, loaded.config, TOKENIZER, ex[3:], torch.device("cpu"))
    assert again["nll"] == pytest.approx(es["best_val_nll"], abs=1e-5)


def test_info_control_trains_on_every_codebook(tmp_path):
    ex = _examples(4)
    tok = {**TOKENIZER, "codebooks": [0, 1, 2, 3]}
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, seed=1, val_fraction=0.25)
    ck = train("info-control", "micro", ex, tok, tmp_path / "i.pt", cfg, context=16, progress=False,
               log=lambda m: None, model_options={"n_codebooks": 4})
    assert ck.config.n_codebooks == 4 and ck.model.tok_emb.weight.shape[0] == 4 * 1025
    loaded = load_checkpoint(tmp_path / "i.pt", "info-control", tok)
    assert loaded.training["history"][-1]["val_nll"] < math.log(1024) + 1
    bare = [Example(e.id, e.tokens, e.mel, e.duration) for e in ex]  # codebook 0 only (an older cache)
    with pytest.raises(UsageError, match="has 1 codebook.*the information control needs 4"):
        train("info-control", "micro", bare, tok, tmp_path / "j.pt", cfg, context=16, progress=False,
              log=lambda m: None, model_options={"n_codebooks": 4})


def test_count_models_normalise_and_bigram_learns_transitions():
    rng = np.random.default_rng(0)
    seqs = [np.resize(rng.permutation(50), 400) for _ in range(3)]  # deterministic successor of each token
    uni = CountLM(1).fit(seqs)
    bi = CountLM(2, k=1.0).fit(seqs)
    assert uni.distribution(None).sum() == pytest.approx(1.0)
    assert bi.distribution(7).sum() == pytest.approx(1.0)
    s = seqs[0]
    p = np.exp(-bi.surprisal(s))
    assert p[1:].min() > 0.2 and bi.surprisal(s).mean() < uni.surprisal(s).mean() - 1.0
    assert bi.surprisal(s)[0] == pytest.approx(uni.surprisal(s)[0])  # the first token: unigram
    assert bi.accuracy(s) > 0.3 and uni.accuracy(s) < 0.1
    # smoothing is chosen on validation: tokens unseen in training need a large constant
    best = fit_count_lm(1, [np.zeros(100, int)], [np.arange(100)], grid=(0.001, 100.0))
    assert best.add == 100.0


def test_paired_bootstrap_intervals():
    rng = np.random.default_rng(1)
    tokens = rng.integers(100, 1000, 40).astype(float)
    b = tokens * rng.uniform(4.0, 6.0, 40)
    same = paired_difference(b, b, tokens)
    assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    better = paired_difference(b - 0.2 * tokens + rng.normal(0, 5, 40), b, tokens, n_boot=1000, seed=2)
    assert better["high"] < 0 and better["low"] < better["diff"] < better["high"]
    assert better["diff"] == pytest.approx(-0.2, abs=0.02)
    assert better["rel"] == pytest.approx(better["diff"] / (b.sum() / tokens.sum()))
    noisy = paired_difference(b + rng.normal(0, 200, 40), b, tokens, n_boot=1000)
    assert noisy["low"] < 0 < noisy["high"] and noisy["files"] == 40


@pytest.fixture()
def encoded_15(cli, hub_cache, tmp_path, monkeypatch):
    """Two shared speech files encoded at 1.5 kbps (codebooks 0 and 1)."""
    monkeypatch.setenv("TORCH_HOME", str(hub_cache))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    speech = shared_path("audio", "speech")
    r = cli("encode", speech / "alsa_front_center.wav", speech / "puredata_voice2.wav", "-b", "1.5",
            "-o", tmp_path / "codes", "--workers", "0", "--quiet")
    assert r.code == 0, r
    return tmp_path / "codes"


def test_train_lm_reads_encode_folders_of_any_bandwidth(cli, encoded_15, tmp_path):
    common = ["--steps", "2", "--batch-size", "2", "--context", "16", "--device", "cpu", "--workers", "0", "--quiet"]
    r = cli("train", "lm", encoded_15, "--arch", "token-gpt", "-o", tmp_path / "t.pt", "--patience", "1",
            "--eval-every", "1", *common)
    assert r.code == 0, r
    ck = load_checkpoint(tmp_path / "t.pt")
    assert ck.tokenizer["codebooks"] == [0] and ck.training["early_stopping"]["patience"] == 1
    assert ck.training["eval_every"] == 1 and len(ck.training["history"]) >= 1
    r = cli("train", "lm", encoded_15, "--arch", "token-gpt", "-o", tmp_path / "t.pt", "--resume", "--patience", "2",
            *common)
    assert r.code == 2 and "--patience keeps the best weights in memory and cannot --resume" in r.err
    r = cli("train", "lm", encoded_15, "--arch", "info-control", "-b", "1.5", "-o", tmp_path / "i.pt", *common)
    assert r.code == 0, r
    ck = load_checkpoint(tmp_path / "i.pt")
    assert ck.config.n_codebooks == 2 and ck.tokenizer["codebooks"] == [0, 1]
    r = cli("train", "lm", encoded_15, "--arch", "info-control", "-b", "3", "-o", tmp_path / "j.pt", *common)
    assert r.code == 2 and "holds 2 codebook(s) but the model reads 4" in r.err and "Traceback" not in r.err
