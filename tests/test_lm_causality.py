"""The causality tests of docs/references.md, Whisper-GPT: tokens, mel slices and model masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok.lm.gpt import BOS, GPTConfig, build_gpt
from audiotok.lm.mel import causal_log_mel
from audiotok.testing import random_encodec, synthetic_audio


@pytest.fixture(scope="module")
def codec():
    return random_encodec("encodec_24khz", seed=3)


def _codes(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        frames = model.encode(torch.from_numpy(x)[None, None])
    return frames[0][0][0].numpy()


@pytest.mark.parametrize("t", [6, 7, 40])
def test_future_samples_do_not_change_past_codes_or_mel(codec, t):
    """Spec test 1. EnCodec's causal convolutions reflect-pad the *start* of a file, so its first six
    frames also see samples up to 2240 (7 hops); from frame 6 on, and for every mel frame, the rule is exact."""
    x = synthetic_audio(0.75, seed=5)[0]  # 18000 samples, 57 frames (last one partial)
    y = x.copy()
    cut = (t + 1) * 320
    rng = np.random.default_rng(t)
    y[cut:] = rng.uniform(-1, 1, y.shape[0] - cut).astype(np.float32)
    cx, cy = _codes(codec, x), _codes(codec, y)
    mx, my = causal_log_mel(x), causal_log_mel(y)
    assert cx.shape == (32, 57) and mx.shape == (57, 80)
    assert np.array_equal(cx[:, : t + 1], cy[:, : t + 1])
    assert torch.equal(mx[: t + 1], my[: t + 1])
    # the perturbation is real: later codes and mel slices do change
    assert not np.array_equal(cx[:, t + 1:], cy[:, t + 1:])
    assert not torch.equal(mx[t + 1:], my[t + 1:])


@pytest.mark.parametrize("t", [0, 1, 3])
def test_future_samples_do_not_change_past_mel_at_the_start(t):
    x = synthetic_audio(0.2, seed=6)[0]
    y = x.copy()
    y[(t + 1) * 320:] *= -0.5
    mx, my = causal_log_mel(x), causal_log_mel(y)
    assert torch.equal(mx[: t + 1], my[: t + 1]) and not torch.equal(mx[t + 1:], my[t + 1:])


def test_mel_frames_end_where_tokens_end():
    for n in (1, 319, 320, 321, 24000, 24001):
        assert causal_log_mel(np.zeros(n, np.float32)).shape == (-(-n // 320), 80)
    # frame t sees exactly samples [(t + 1) * 320 - 1024, (t + 1) * 320): an impulse at sample 1000
    # shows in frames 3, 4 and 5 only
    x = np.zeros(4000, np.float32)
    x[1000] = 1.0
    m = causal_log_mel(x)
    lit = torch.nonzero(m.max(dim=1).values > -9.0).flatten().tolist()
    assert lit == [3, 4, 5]


def test_mel_of_silence_is_the_floor():
    m = causal_log_mel(np.zeros(960, np.float32))
    assert torch.all(m == -10.0)


@pytest.mark.parametrize("arch", ["whisper-gpt", "token-gpt"])
@pytest.mark.parametrize("t", [0, 5, 30])
def test_future_inputs_do_not_change_past_logits(arch, t):
    torch.manual_seed(0)
    model = build_gpt(GPTConfig.make(arch, "micro", context=48)).eval()
    L = 48
    tokens = torch.randint(0, 1024, (2, L))
    tokens[:, 0] = BOS
    mel = torch.randn(2, L, 80) * 2 - 5
    with torch.no_grad():
        ref = model(tokens, mel)
        tok2 = tokens.clone()
        tok2[:, t + 1:] = torch.randint(0, 1024, (2, L - t - 1))
        mel2 = mel.clone()
        mel2[:, t + 1:] += torch.randn(2, L - t - 1, 80) * 3
        for tk, ml in ((tok2, mel), (tokens, mel2), (tok2, mel2)):
            out = model(tk, ml)
            assert torch.equal(out[:, : t + 1], ref[:, : t + 1])
        changed = model(tok2, mel2)
    assert not torch.allclose(changed[:, t + 1:], ref[:, t + 1:])
    if arch == "whisper-gpt":  # the mel path matters, at the same step and after it
        mel3 = mel.clone()
        mel3[:, t] += 3.0
        with torch.no_grad():
            out = model(tokens, mel3)
        assert torch.equal(out[:, :t], ref[:, :t]) and not torch.allclose(out[:, t:], ref[:, t:])
