"""Whisper-GPT as the paper builds it: the token model plus a scale-matched branch; every arch is
causal; the controls come from the same code path; checkpoints of every arch round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok.errors import WeightsError
from audiotok.lm.checkpoints import GPTScorer, LMCheckpoint, load_checkpoint, save_checkpoint
from audiotok.lm.gpt import BOS, SIZES, GPTConfig, aligned_mel, build_gpt, count_params
from audiotok.train.lm import Example
from benchmarks.lmexp.controls import ARMS, arm_options, shuffle_mel

TOKENIZER = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 6.0, "n_q": 8,
             "codebooks": [0], "codec_checkpoint": "encodec_24khz-d7cc33bc.th", "codec_sha256": "ab" * 8}
BRANCH = ("spec_in.", "spec.", "fuse.", "mel_")


def _model(arch, size="micro", context=32, seed=0, **opts):
    torch.manual_seed(seed)
    return build_gpt(GPTConfig.make(arch, size, context=context, **opts)).eval()


def _normal_mel(model, B, L, seed=0):
    """Raw log-mel whose normalised value is N(0, 1) under the model's fixed affine."""
    g = torch.Generator().manual_seed(seed)
    return model.mel_mean + model.mel_std * torch.randn(B, L, 80, generator=g)


@pytest.mark.parametrize("size", list(SIZES))
def test_hybrid_is_the_token_model_plus_the_branch(size):
    tok = build_gpt(GPTConfig.make("token-gpt", size))
    hyb = build_gpt(GPTConfig.make("whisper-gpt", size))
    tshapes = {k: v.shape for k, v in tok.state_dict().items()}
    hshapes = {k: v.shape for k, v in hyb.state_dict().items()}
    # every parameter of the token model is in the hybrid, with the same shape; the rest is the branch
    assert {k: hshapes[k] for k in tshapes} == tshapes
    assert all(k.startswith(BRANCH) for k in set(hshapes) - set(tshapes))
    extra = count_params(hyb) - count_params(tok)
    branch = sum(p.numel() for n, p in hyb.named_parameters() if n.startswith(BRANCH))
    assert extra == branch and 0.002 < extra / count_params(tok) < 0.20  # large, add: 0.5 %


def test_sizes_small_matches_the_paper_and_large_is_ten_times():
    small = count_params(build_gpt(GPTConfig.make("token-gpt", "small")))
    large = count_params(build_gpt(GPTConfig.make("token-gpt", "large")))
    assert abs(small - 3.1e6) / 3.1e6 < 0.05
    assert 9.0 < large / small < 12.0


@pytest.mark.parametrize("fusion", ["proj", "add"])
@pytest.mark.parametrize("size", ["micro", "small"])
def test_fused_streams_have_comparable_scale_at_init(fusion, size):
    model = _model("whisper-gpt", size, context=64, fusion=fusion)
    tokens = torch.randint(0, 1024, (4, 64), generator=torch.Generator().manual_seed(1))
    mel = _normal_mel(model, 4, 64)
    with torch.no_grad():
        e, s = model.streams(tokens, mel)
        if fusion == "proj":  # each half's contribution after the projection
            d = e.shape[-1]
            te, tm = e @ model.fuse.weight[:, :d].T, s @ model.fuse.weight[:, d:].T
        else:
            te, tm = e, model.fuse(s) - model.fuse.bias
    ratio = te.pow(2).mean().item() / tm.pow(2).mean().item()  # token energy / mel energy
    assert 0.25 < ratio < 4.0, ratio
    assert 0.5 < e.pow(2).mean().sqrt().item() / s.pow(2).mean().sqrt().item() < 2.0


def test_the_legacy_layout_is_mel_dominated_which_is_why_it_was_replaced():
    model = _model("whisper-gpt", "small", context=64, fusion="legacy")
    tokens = torch.randint(0, 1024, (4, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e, s = model.streams(tokens, _normal_mel(model, 4, 64))
    share = e.pow(2).sum().item() / (e.pow(2).sum().item() + s.pow(2).sum().item())
    assert share < 0.01  # under 1 % of the energy entering the backbone comes from the tokens


ARCH_CASES = [("whisper-gpt", {"fusion": "proj"}), ("whisper-gpt", {"fusion": "add"}),
              ("whisper-gpt", {"fusion": "legacy"}), ("token-gpt", {}), ("info-control", {"n_codebooks": 4})]


def _inputs(model, B, L, seed):
    g = torch.Generator().manual_seed(seed)
    K = model.n_in
    tokens = torch.randint(0, 1024, (B, K, L), generator=g)
    tokens[:, :, 0] = BOS
    mel = _normal_mel(model, B, L, seed) if model.uses_mel else None
    return (tokens if K > 1 else tokens[:, 0]), mel


@pytest.mark.parametrize("arch,opts", ARCH_CASES)
@pytest.mark.parametrize("t", [0, 5, 30])
def test_every_arch_is_causal(arch, opts, t):
    """Spec test 2 for every arch: changing inputs after position t leaves logits[:t+1] unchanged."""
    model = _model(arch, context=48, **opts)
    tokens, mel = _inputs(model, 2, 48, seed=t)
    tokens2 = tokens.clone()
    tokens2[..., t + 1:] = torch.randint(0, 1024, tokens2[..., t + 1:].shape, generator=torch.Generator().manual_seed(9))
    mel2 = None
    if mel is not None:
        mel2 = mel.clone()
        mel2[:, t + 1:] += 5.0
    with torch.no_grad():
        a, b = model(tokens, mel), model(tokens2, mel2)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)  # the change is seen later


def _scorer(model):
    return GPTScorer(LMCheckpoint(model, model.cfg, TOKENIZER, {}), torch.device("cpu"))


@pytest.mark.parametrize("lag", [1, 0, -1])
def test_the_mel_of_the_predicted_frame_is_unseen_unless_leaky(lag):
    """Through the scorer's alignment: the logits scoring c_t do not depend on the raw mel m_t
    (causal arm); the leaky controls' do (lag 0 at position t, lag -1 already at t - 1), which is
    what they exist to show."""
    model = _model("whisper-gpt", context=40, mel_lag=lag)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, (8, 40)).astype(np.int16)
    mel = (model.mel_mean + model.mel_std * torch.randn(40, 80, generator=torch.Generator().manual_seed(0))).numpy()
    sc = _scorer(model)
    t = 17
    mel2 = mel.copy()
    mel2[t] += 4.0
    with torch.no_grad():
        outs = []
        for m in (mel, mel2):
            tok, mi, tgt = sc.inputs(codes, m)
            outs.append(sc.logits(tok[None], mi[None], torch.zeros(1, dtype=torch.long))[0, :, 0])
    same_at_t = torch.allclose(outs[0][: t + 1], outs[1][: t + 1], atol=1e-5)
    assert same_at_t == (lag == 1)
    assert not torch.allclose(outs[0][t + 1:], outs[1][t + 1:], atol=1e-4)
    assert torch.equal(aligned_mel(mel, lag)[t + lag], torch.as_tensor(mel[t]))


def test_controls_are_built_by_the_same_code_path():
    real = arm_options("whisper-gpt", "micro", 8)
    shuffled = arm_options("whisper-gpt-shuffled", "micro", 8)
    leaky = arm_options("whisper-gpt-leaky", "micro", 8)
    assert real[:3] == shuffled[:3] and (real[3], shuffled[3]) == (None, "shuffle-mel")
    cfg_real = GPTConfig.make(real[0], real[1], **real[2]).to_dict()
    cfg_leak = GPTConfig.make(leaky[0], leaky[1], **leaky[2]).to_dict()
    assert {k for k in cfg_real if cfg_real[k] != cfg_leak[k]} == {"mel_lag"}
    assert type(build_gpt(GPTConfig.make(**{"arch": leaky[0], "size": leaky[1], **leaky[2]}))) is type(
        build_gpt(GPTConfig.make(real[0], real[1], **real[2])))
    info = arm_options("info-control", "micro", 8)
    assert info[:3] == ("info-control", "micro", {"n_codebooks": 8})
    assert arm_options("token-gpt-large", "micro", 8)[:2] == ("token-gpt", "large")
    assert set(ARMS) >= {"token-gpt", "whisper-gpt", "whisper-gpt-shuffled", "whisper-gpt-leaky", "info-control"}
    with pytest.raises(ValueError, match="unknown arm"):
        arm_options("nope", "micro", 8)


def test_shuffled_mel_comes_from_another_file_and_keeps_the_tokens():
    rng = np.random.default_rng(0)
    ex = [Example(f"f{i}", rng.integers(0, 1024, 30 + 7 * i).astype(np.int16),
                  np.full((30 + 7 * i, 80), float(i), np.float32), 1.0) for i in range(5)]
    out = shuffle_mel(ex, seed=3)
    assert [e.id for e in out] == [e.id for e in ex]
    for a, b in zip(ex, out):
        assert np.array_equal(a.tokens, b.tokens) and b.mel.shape == a.mel.shape
        assert b.mel[0, 0] != a.mel[0, 0]  # never its own mel
    assert {int(b.mel[0, 0]) for b in out} == set(range(5))  # a permutation of the donors
    assert [b.mel[0, 0] for b in shuffle_mel(ex, seed=3)] == [b.mel[0, 0] for b in out]  # seeded
    one = shuffle_mel(ex[:1], seed=0, donors=ex)
    assert one[0].mel[0, 0] != 0.0
    with pytest.raises(ValueError, match="at least two files"):
        shuffle_mel(ex[:1], seed=0)


@pytest.mark.parametrize("arch,opts", ARCH_CASES + [("whisper-gpt", {"mel_lag": 0}), ("whisper-gpt", {"mel_lag": -1})])
def test_checkpoints_of_every_arch_round_trip(tmp_path, arch, opts):
    model = _model(arch, context=32, seed=4, **opts)
    tok = {**TOKENIZER, "codebooks": list(range(model.n_in))}
    path = save_checkpoint(tmp_path / "lm.pt", model, model.cfg, tok, {"step": 3})
    ck = load_checkpoint(path, arch, tok)
    assert ck.config == model.cfg and ck.identity["fusion"] == model.cfg.fusion
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v), k
    tokens, mel = _inputs(model, 2, 32, seed=1)
    with torch.no_grad():
        assert torch.equal(ck.model.eval()(tokens, mel), model(tokens, mel))


def _v1_blob(model):
    """A checkpoint as version 1 wrote it: no fusion / mel_lag / n_codebooks in the config."""
    conf = {k: v for k, v in model.cfg.to_dict().items() if k not in ("fusion", "mel_lag", "n_codebooks")}
    return {"format": "audiotok-lm", "version": 1, "config": conf, "tokenizer": TOKENIZER, "training": {"step": 5},
            "state_dict": model.state_dict(), "mel_norm": None, "optimizer": None, "scheduler": None, "extra": {}}


@pytest.mark.parametrize("arch", ["whisper-gpt", "token-gpt"])
def test_version_1_checkpoints_still_load_and_score_the_same(tmp_path, arch):
    old = _model(arch, context=32, seed=2, **({"fusion": "legacy"} if arch == "whisper-gpt" else {}))
    torch.save(_v1_blob(old), tmp_path / "v1.pt")
    ck = load_checkpoint(tmp_path / "v1.pt", arch, TOKENIZER)
    assert ck.config.fusion == "legacy" and ck.config.mel_lag == 1
    tokens, mel = _inputs(old, 2, 32, seed=3)
    with torch.no_grad():
        assert torch.equal(ck.model.eval()(tokens, mel), old(tokens, mel))


def test_other_checkpoint_versions_are_refused_by_name(tmp_path):
    blob = _v1_blob(_model("token-gpt", context=32))
    blob["version"] = 7
    torch.save(blob, tmp_path / "v7.pt")
    with pytest.raises(WeightsError) as exc:
        load_checkpoint(tmp_path / "v7.pt")
    msg = str(exc.value)
    assert "has format version 7" in msg and "reads versions 1, 2" in msg and "\n" not in msg


def test_info_control_reads_every_codebook():
    model = _model("info-control", context=16, n_codebooks=3)
    assert model.tok_emb.weight.shape == (3 * 1025, 64) and not model.uses_mel
    tokens = torch.randint(0, 1024, (1, 3, 16), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[0, 2, 4] = (changed[0, 2, 4] + 1) % 1024  # the finest codebook of one frame
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])
    with pytest.raises(ValueError, match="takes 3 codebook"):
        model(tokens[:, :2])
    sc = _scorer(model)
    codes = np.arange(3 * 10, dtype=np.int16).reshape(3, 10)
    tok, mel, tgt = sc.inputs(codes, None)
    assert tok.shape == (3, 10) and mel is None and torch.equal(tgt, torch.as_tensor(codes[:1], dtype=torch.long))
    assert torch.equal(tok[:, 0], torch.full((3,), BOS)) and torch.equal(tok[:, 1:], torch.as_tensor(codes[:, :-1]).long())
    with pytest.raises(ValueError, match="needs 3 codebooks"):
        sc.inputs(codes[:2], None)
