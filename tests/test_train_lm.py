"""The training loop: deterministic resume, by-file split, loss goes down, mel statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok.lm.checkpoints import load_checkpoint
from audiotok.train.lm import Example, TrainConfig, lr_at, train
from audiotok.train.loop import split_by_file

TOKENIZER = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 6.0, "n_q": 8,
             "codebooks": [0], "codec_checkpoint": "x.th", "codec_sha256": "0" * 16}


def _examples(n: int = 5, T: int = 120):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        # a learnable pattern: tokens cycle through a short random motif; the mel hints the next token
        motif = rng.integers(0, 1024, 6)
        tok = np.resize(motif, T).astype(np.int16)
        mel = rng.standard_normal((T, 80)).astype(np.float32) - 4.0
        out.append(Example(f"f{i}.wav", tok, mel, T / 75))
    return out


def test_split_is_by_file_seeded_and_never_empty_for_training():
    ids = [f"f{i}" for i in range(10)]
    tr, va = split_by_file(ids, 0.2, seed=1)
    assert len(va) == 2 and set(tr) | set(va) == set(ids) and not set(tr) & set(va)
    assert split_by_file(ids, 0.2, seed=1) == (tr, va)
    assert split_by_file(ids, 0.2, seed=2) != (tr, va)
    assert split_by_file(["a"], 0.5, 0) == (["a"], [])
    assert split_by_file(ids, 0.0, 0) == (sorted(ids), [])


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(50, cfg) < 1e-3 and lr_at(99, cfg) == pytest.approx(1e-4, rel=0.05)


@pytest.mark.parametrize("arch", ["whisper-gpt", "token-gpt"])
def test_resume_continues_exactly_and_loss_falls(tmp_path, arch):
    ex = _examples()
    cfg = TrainConfig(steps=8, batch_size=4, lr=3e-3, seed=3, val_fraction=0.2)
    full = train(arch, "micro", ex, TOKENIZER, tmp_path / "full.pt", cfg, context=16, progress=False, log=lambda m: None)
    train(arch, "micro", ex, TOKENIZER, tmp_path / "part.pt", cfg, context=16, progress=False, log=lambda m: None,
          stop_after=5)  # a job cut short mid-epoch (8 steps per epoch here)
    assert load_checkpoint(tmp_path / "part.pt").training["step"] == 5
    resumed = train(arch, "micro", ex, TOKENIZER, tmp_path / "part.pt", cfg, context=16, resume=True,
                    progress=False, log=lambda m: None)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[k], v, atol=1e-6), k
    ck = load_checkpoint(tmp_path / "part.pt", arch, TOKENIZER)
    hist = ck.training["history"]
    assert ck.training["step"] == 8 and ck.training["val_files"] == split_by_file([e.id for e in ex], 0.2, 3)[1]
    assert hist[-1]["train_nll"] < hist[0]["train_nll"] and "val_nll" in hist[-1]
    if arch == "whisper-gpt":  # the fixed affine comes from the training files' mel
        train_ids = set(ck.training["train_files"])
        frames = np.concatenate([e.mel for e in ex if e.id in train_ids])
        np.testing.assert_allclose(ck.model.mel_mean.numpy(), frames.mean(0), atol=1e-4)
