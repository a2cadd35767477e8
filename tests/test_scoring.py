"""Scoring from logits: direct NLL agreement, sliding windows, batch independence, EnCodec LM stream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiotok.lm.checkpoints import EncodecLMScorer, GPTScorer, LMCheckpoint
from audiotok.lm.gpt import BOS, GPTConfig, build_gpt
from audiotok.lm.scoring import WindowScorer, corpus_summary, file_scores, token_stats, window_spans
from audiotok.testing import random_encodec_lm

TOKENIZER = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 6.0, "n_q": 8,
             "codebooks": [0], "codec_checkpoint": "x.th", "codec_sha256": "0" * 16}


def _scorer(arch: str, context: int = 32, seed: int = 0) -> GPTScorer:
    torch.manual_seed(seed)
    model = build_gpt(GPTConfig.make(arch, "micro", context=context))
    return GPTScorer(LMCheckpoint(model, model.cfg, TOKENIZER, {"step": 0}), torch.device("cpu"))


def _item(T: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1024, (8, T)).astype(np.int16), (rng.standard_normal((T, 80)) - 5).astype(np.float32)


@pytest.mark.parametrize("arch", ["whisper-gpt", "token-gpt"])
def test_scores_equal_direct_nll_from_logits(arch):
    sc = _scorer(arch)
    codes, mel = _item(20, 1)
    fs = WindowScorer(sc, rows=3).score([(codes, mel)])[0]
    c = torch.from_numpy(codes[0].astype(np.int64))
    tokens = torch.cat([torch.tensor([BOS]), c[:-1]])[None]
    m = torch.cat([torch.full((1, 80), -10.0), torch.from_numpy(mel[:-1])])[None]
    with torch.no_grad():
        logits = sc.model(tokens, m)[0]
    nll = F.cross_entropy(logits, c, reduction="none").numpy()
    np.testing.assert_allclose(fs.surprisal[:, 0], nll, rtol=1e-5, atol=1e-5)
    rec = file_scores(fs, duration=20 / 75, frame_rate=75)
    assert rec["tokens"] == 20 and rec["frames"] == 20
    assert rec["nll"] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert rec["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert rec["bits_per_token"] == pytest.approx(nll.mean() / math.log(2), rel=1e-5)
    assert rec["total_bits"] == pytest.approx(nll.sum() / math.log(2), rel=1e-5)
    assert rec["bits_per_second"] == pytest.approx(nll.sum() / math.log(2) / (20 / 75), rel=1e-5)
    acc = float((logits.argmax(-1) == c).float().mean())
    assert rec["accuracy"] == pytest.approx(acc)
    p = logits.softmax(-1)
    assert rec["entropy"] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-4)
    assert np.array_equal(fs.token[:, 0], codes[0])
    ranks = 1 + (logits > logits.gather(1, c[:, None])).sum(1)
    assert np.array_equal(fs.rank[:, 0], ranks.numpy())


@pytest.mark.parametrize("n", [1, 5, 32, 33, 47, 48, 49, 64, 100, 1000])
def test_windows_score_every_position_once_with_half_context_history(n):
    context, stride = 32, 16
    spans = window_spans(n, context)
    covered = np.zeros(n, int)
    for i, w in enumerate(spans):
        assert w.end - w.start <= context and w.start <= w.score_from < w.end
        covered[w.score_from:w.end] += 1
        if i > 0:
            assert w.score_from - w.start >= context - stride and w.end - w.start == context
    assert np.all(covered == 1)
    assert spans[0].start == 0 and spans[-1].end == n


def test_windowed_scoring_of_a_long_file_matches_per_window_logits():
    sc = _scorer("whisper-gpt", context=16)
    codes, mel = _item(75, 2)
    fs = WindowScorer(sc, rows=4).score([(codes, mel)])[0]
    tok, m, tgt = sc.inputs(codes, mel)
    expected = np.full(75, np.nan)
    for w in window_spans(75, 16):
        with torch.no_grad():
            logits = sc.model(tok[:, w.start:w.end], m[None, w.start:w.end])[0]
        s, _, _ = token_stats(logits, tgt[0, w.start:w.end])
        expected[w.score_from:w.end] = s[w.score_from - w.start:].numpy()
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(fs.surprisal[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert sc.context == 16 and sc.stride == 8


@pytest.mark.parametrize("arch", ["whisper-gpt", "token-gpt"])
def test_scores_do_not_depend_on_batch_neighbours_or_rows(arch):
    sc = _scorer(arch, context=24)
    items = [_item(T, s) for s, T in enumerate([5, 60, 24, 31, 1])]
    together = WindowScorer(sc, rows=4).score(items)
    alone = [WindowScorer(sc, rows=4).score([it])[0] for it in items]
    shuffled = WindowScorer(sc, rows=4).score(items[::-1])[::-1]
    for a, b, c in zip(together, alone, shuffled):
        assert np.array_equal(a.surprisal, b.surprisal) and np.array_equal(a.surprisal, c.surprisal)
        assert np.array_equal(a.rank, b.rank) and np.array_equal(a.entropy, c.entropy)


def test_encodec_lm_stream_equals_the_official_frame_by_frame_loop():
    lm = random_encodec_lm(4, seed=1)
    sc = EncodecLMScorer(lm, {**TOKENIZER, "n_q": 4, "codebooks": [0, 1, 2, 3]}, torch.device("cpu"), chunk=64)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, (4, 300))
    short = codes[:, :70]
    fs, fs_short = WindowScorer(sc, rows=2).score([(codes, None), (short, None)])
    x = torch.from_numpy(np.concatenate([np.zeros((4, 1), np.int64), 1 + codes[:, :-1]], axis=1))[None]
    t = torch.arange(4)
    with torch.no_grad():  # the official forward over the whole sequence (its mask keeps 262 frames per layer)
        probas = lm(x)[0][0]  # [1024, 4, T]
        ref = -torch.log(probas[torch.as_tensor(codes), t[:, None], torch.arange(300)]).T.numpy()
        states, offset, loop = None, 0, []  # and encodec.compress's frame-by-frame loop, for the start
        for i in range(8):
            p, states, offset = lm(x[:, :, i:i + 1], states, offset)
            loop.append(-torch.log(p[0, torch.as_tensor(codes[:, i]), t, 0]).numpy())
    np.testing.assert_allclose(np.stack(loop), ref[:8], atol=2e-5)
    assert fs.surprisal.shape == (300, 4)
    np.testing.assert_allclose(fs.surprisal, ref, atol=2e-5)
    np.testing.assert_allclose(fs_short.surprisal, ref[:70], atol=2e-5)
    rec = file_scores(fs, duration=4.0, frame_rate=75)
    assert rec["tokens"] == 1200 and len(rec["nll_per_codebook"]) == 4
    np.testing.assert_allclose(rec["nll_per_codebook"], ref.mean(0), rtol=1e-5)
    assert rec["bits_per_frame"] == pytest.approx(ref.sum() / math.log(2) / 300, rel=1e-5)


def test_corpus_summary_is_token_weighted():
    recs = [
        {"status": "ok", "tokens": 10, "frames": 10, "total_nats": 10 * 2.0, "duration": 1.0, "accuracy": 0.5,
         "entropy": 3.0, "nll_per_codebook": [2.0]},
        {"status": "ok", "tokens": 90, "frames": 90, "total_nats": 90 * 4.0, "duration": 2.0, "accuracy": 0.1,
         "entropy": 5.0, "nll_per_codebook": [4.0]},
        {"status": "error", "error": "bad"},
    ]
    s = corpus_summary(recs)
    nll = (20 + 360) / 100
    assert s["files"] == 2 and s["tokens"] == 100
    assert s["nll"] == pytest.approx(nll) and s["perplexity"] == pytest.approx(math.exp(nll))
    assert s["perplexity"] != pytest.approx((math.exp(2) + math.exp(4)) / 2)
    assert s["bits_per_second"] == pytest.approx(380 / math.log(2) / 3.0)
    assert s["accuracy"] == pytest.approx((5 + 9) / 100) and s["nll_per_codebook"] == [pytest.approx(nll)]
