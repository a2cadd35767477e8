"""Positive controls of the hybrid-vs-tokens experiment: a pipeline that cannot find a planted
signal is broken. The codec latent the LM features keep is exactly what the codes quantise; fed
through the whisper-gpt branch at lag 0 (the slice that determines the target) it must win by far,
at lag 1 it must not; the parameter-matched token baseline has the hybrid's size; the bootstrap
resamples seeds as well as files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok.codecs.encodec import CodecEncoder
from audiotok.engine import pipeline
from audiotok.engine.sources import Source
from audiotok.errors import WeightsError
from audiotok.lm.adapter import LMFeatures
from audiotok.lm.checkpoints import load_checkpoint, load_scorer, save_checkpoint, tokenizer_info
from audiotok.lm.gpt import SIZES, GPTConfig, aligned_mel, build_gpt, count_params
from audiotok.testing import random_encodec, synthetic_audio
from audiotok.train.data import cache_dir, lm_cache, read_cached
from audiotok.train.lm import Example, TokenCropSampler, TrainConfig, evaluate, train
from benchmarks.lmexp.controls import arm_options, kmeans_mel_tokens, matched_shape
from benchmarks.lmexp.paired import paired_difference, paired_difference_seeds

from .conftest import write_wav


def _nearest(x: np.ndarray, book: np.ndarray) -> np.ndarray:
    x, book = x.astype(np.float64), book.astype(np.float64)
    return ((x ** 2).sum(1)[:, None] - 2 * x @ book.T + (book ** 2).sum(1)[None]).argmin(1)


def test_the_kept_latent_is_what_the_codes_quantise(tmp_path):
    """Through the real feature path (streamed codes, the latent kept beside them, the cache):
    c_t is the nearest level-0 codeword of z_t for every frame, so z_t at lag 0 determines the target."""
    model = random_encodec("encodec_24khz")
    tok = tokenizer_info(model, 1.5, [0, 1])
    enc = CodecEncoder(model, 1.5, torch.device("cpu"))
    book = model.quantizer.vq.layers[0]._codebook.embed.numpy()
    # one file shorter than the streamed minimum (encoded whole), one streamed over several calls
    sources = [Source(str(write_wav(tmp_path / f"{n}.wav", s, seed=i)), f"{n}.wav", None)
               for i, (n, s) in enumerate([("short", 0.08), ("long", 1.3)])]
    job = lm_cache(cache_dir(tmp_path / "cache", {**tok, "codec_sha256": "random"}), tok["codec"])
    summary = pipeline.run(sources, job, LMFeatures(enc, with_mel=True, with_latent=True), workers=0)
    assert not summary.failed
    for s in sources:
        e = read_cached(job.target(s), s.rel, tok)
        T = e.tokens.shape[0]
        assert e.latent.shape == (T, book.shape[1]) and e.mel.shape == (T, 80) and e.codes.shape == (2, T)
        assert np.array_equal(_nearest(e.latent, book), e.tokens.astype(np.int64)), s.rel
    # without the option nothing is kept (and the cache holds no latent)
    item = pipeline.run_in_memory(LMFeatures(CodecEncoder(model, 1.5, torch.device("cpu")), with_mel=True),
                                  [synthetic_audio(0.5)])[0]
    assert item.latent is None


def test_a_latent_checkpoint_round_trips_and_score_refuses_it(tmp_path):
    """The control's checkpoint keeps its features; ``audiotok score`` (which computes only the mel)
    refuses it with one sentence instead of failing on the width."""
    codec = random_encodec("encodec_24khz")
    tok = tokenizer_info(codec, 1.5, [0])
    arch, size, opts, _ = arm_options("latent-lag0", "micro", 2, latent_dim=7)
    torch.manual_seed(0)
    model = build_gpt(GPTConfig.make(arch, size, context=16, **opts))
    path = save_checkpoint(tmp_path / "z.pt", model, model.cfg, tok, {"step": 1})
    ck = load_checkpoint(path, "whisper-gpt", tok)
    assert ck.config == model.cfg and ck.config.features == "latent" and ck.config.n_mels == 7
    with pytest.raises(WeightsError, match="reads the codec's latent") as exc:
        load_scorer("whisper-gpt", path, codec, None, torch.device("cpu"))
    assert "\n" not in str(exc.value)
    blob = torch.load(path, weights_only=True)
    blob["config"]["features"] = "fbank"
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="features = 'fbank'"):
        load_checkpoint(tmp_path / "bad.pt")


def _planted(n_files=20, T=400, D=8, K=8, rho=0.5, seed=0):
    """Files whose latent z_t is an AR(1) process and whose coarse token is the nearest of K
    codewords (a residual quantiser with 3 levels gives the information control its codebooks)."""
    rng = np.random.default_rng(seed)
    books = [s * rng.standard_normal((K, D)) for s in (1.0, 0.6, 0.4)]
    out = []
    for i in range(n_files):
        z = np.zeros((T, D))
        z[0] = rng.standard_normal(D)
        for t in range(1, T):
            z[t] = rho * z[t - 1] + np.sqrt(1 - rho ** 2) * rng.standard_normal(D)
        codes, r = [], z.copy()
        for b in books:
            c = _nearest(r, b)
            codes.append(c)
            r = r - b[c]
        codes = np.array(codes, np.int16)
        out.append(Example(f"f{i:02d}", codes[0].copy(), None, T / 75, codes, z.astype(np.float32)))
    return out


TOK3 = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 3.0, "n_q": 3,
        "codebooks": [0], "codec_checkpoint": "x.th", "codec_sha256": "0" * 16}



@pytest.mark.slow
def test_the_planted_latent_is_found_at_lag_0_and_not_at_lag_1(tmp_path, one_thread):
    """The positive control, end to end through ``train`` and the scorer: at lag 0 the branch gets
    z_t, of which c_t is a function, and must at least halve token-gpt's NLL with top-1 >= 80 %
    within 200 micro steps; at lag 1 it gets z_(t-1) and stays near the information control."""
    ex = _planted()
    train_set, val = ex[:-2], ex[-2:]
    D = ex[0].latent.shape[1]
    cfg = TrainConfig(steps=200, batch_size=8, lr=3e-3, seed=0, eval_every=200)
    scores = {}
    for arm in ("token-gpt", "latent-lag0", "latent-lag1", "info-control"):
        arch, size, opts, _ = arm_options(arm, "micro", 3, latent_dim=D)
        tok = {**TOK3, "codebooks": [0, 1, 2]} if arch == "info-control" else TOK3
        ck = train(arch, size, train_set, tok, tmp_path / f"{arm}.pt", cfg, context=32, progress=False,
                   log=lambda m: None, model_options=opts, val_examples=val)
        scores[arm] = evaluate(ck.model, ck.config, tok, val, torch.device("cpu"))
        if arm.startswith("latent"):
            assert ck.config.features == "latent" and ck.config.n_mels == D
    nll = {a: s["nll"] for a, s in scores.items()}
    assert nll["latent-lag0"] <= 0.5 * nll["token-gpt"], nll
    assert scores["latent-lag0"]["accuracy"] >= 0.8, scores
    assert scores["latent-lag1"]["accuracy"] < 0.6 and nll["latent-lag1"] > 2 * nll["latent-lag0"], nll
    assert abs(nll["latent-lag1"] - nll["info-control"]) < 0.25, nll


def test_the_latent_goes_through_the_mel_alignment():
    """The latent takes the mel's place in the crops: same ``aligned_mel``, a zero vector at BOS."""
    ex = _planted(n_files=2, T=50, D=5)
    arch, size, opts, _ = arm_options("latent-lag1", "micro", 3, latent_dim=5)
    cfg = GPTConfig.make(arch, size, context=16, **opts)
    assert cfg.feature_fill == 0.0 and cfg.n_mels == 5
    sampler = TokenCropSampler(ex, 16, True, cfg.mel_lag, 1, cfg.features, cfg.feature_fill)
    assert sampler.width == 5
    seq_tok, seq_feat = sampler.seqs[0]
    assert np.array_equal(seq_feat, aligned_mel(ex[0].latent, 1, 0.0).numpy())
    assert np.all(seq_feat[0] == 0.0) and np.array_equal(seq_feat[1:], ex[0].latent[:-1])
    tokens, feats, targets = sampler.sample(4, torch.Generator().manual_seed(0))
    assert feats.shape == (4, 16, 5) and tokens.shape == (4, 16)
    with pytest.raises(ValueError, match="has no codec latent"):
        Example("x", ex[0].tokens, None, 1.0).features("latent")
    with pytest.raises(ValueError, match="needs feature_dim"):
        GPTConfig.make("whisper-gpt", "micro", features="latent")
    with pytest.raises(ValueError, match="unknown features"):
        GPTConfig.make("whisper-gpt", "micro", features="fbank")


@pytest.mark.parametrize("size", ["micro", "tiny", "small"])
def test_the_matched_token_model_has_the_hybrids_parameter_count(size):
    hybrid = count_params(build_gpt(GPTConfig.make("whisper-gpt", size)))
    token = count_params(build_gpt(GPTConfig.make("token-gpt", size)))
    arch, _, opts, _ = arm_options("token-gpt-matched", size, 8)
    matched = build_gpt(GPTConfig.make(arch, size, **opts))
    assert arch == "token-gpt" and not matched.uses_mel
    assert matched.cfg.layers == SIZES[size]["layers"] and matched.cfg.dim >= SIZES[size]["dim"]  # wider, not deeper
    assert matched.cfg.dim % matched.cfg.heads == 0 and matched.cfg.ff == 4 * matched.cfg.dim
    # the closest count on the grid of widths (multiples of the heads), closer than the token model's
    n = count_params(matched)
    assert abs(n - hybrid) < abs(token - hybrid)
    for step in (-matched.cfg.heads, matched.cfg.heads):
        dim = matched.cfg.dim + step
        other = count_params(build_gpt(GPTConfig.make("token-gpt", size, shape={"dim": dim, "ff": 4 * dim})))
        assert abs(n - hybrid) <= abs(other - hybrid)
    assert matched_shape("micro") == {"dim": 70, "ff": 280}  # 281,934 parameters against the (add) hybrid's 287,008
    assert matched_shape("micro", "proj") == {"dim": 72, "ff": 288}  # 293,416 against the proj hybrid's 291,104
    assert arm_options("token-gpt-matched", "micro", 8, fusion="proj")[2]["shape"] == {"dim": 72, "ff": 288}
    with pytest.raises(ValueError, match="shape sets"):
        GPTConfig.make("token-gpt", size, shape={"width": 3})


def test_kmeans_mel_tokens_are_the_cluster_of_each_slice():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 80)) * 3
    ex = []
    for i in range(3):
        lab = rng.integers(0, 4, 60)
        mel = (centres[lab] + 0.1 * rng.standard_normal((60, 80))).astype(np.float32)
        ex.append(Example(f"f{i}", lab.astype(np.int16), mel, 1.0))
    out = kmeans_mel_tokens(ex, k=4, seed=0)(ex)
    for a, b in zip(ex, out):
        # the same partition as the planted labels (cluster ids are a permutation of them)
        pairs = set(zip(a.tokens.tolist(), b.tokens.tolist()))
        assert len(pairs) == 4 and len({p[1] for p in pairs}) == 4
        assert np.array_equal(b.codes[0], b.tokens) and np.array_equal(a.mel, b.mel)


def test_the_bootstrap_over_seeds_is_wider_than_over_files_when_seeds_disagree():
    rng = np.random.default_rng(3)
    tokens = rng.integers(200, 800, 30).astype(float)
    b = tokens[None] * rng.uniform(3.5, 4.5, 30)[None]
    close = b - 0.1 * tokens[None] + rng.normal(0, 2, (3, 30))  # three seeds that agree
    apart = close + np.array([-0.15, 0.0, 0.15])[:, None] * tokens[None]  # the same mean, seeds far apart
    one = paired_difference(close.mean(0), b[0], tokens, n_boot=1000)
    agree = paired_difference_seeds(close, b, tokens, n_boot=1000)
    spread = paired_difference_seeds(apart, b, tokens, n_boot=1000)
    assert agree["diff"] == pytest.approx(one["diff"]) == pytest.approx(spread["diff"])
    assert agree["diff"] == pytest.approx(-0.1, abs=0.01) and agree["high"] < 0
    assert agree["seeds_a"] == 3 and agree["seeds_b"] == 1 and agree["files"] == 30
    width = {k: r["high"] - r["low"] for k, r in (("one", one), ("agree", agree), ("apart", spread))}
    assert width["apart"] > 3 * width["agree"] and width["agree"] < 2 * width["one"]
    same = paired_difference_seeds(b, b, tokens, n_boot=200)
    assert same["diff"] == 0.0 and same["low"] == 0.0 == same["high"]
