"""Model sizes, single-file checkpoints and the tokenizer check."""

from __future__ import annotations

import pytest
import torch

from audiotok.errors import WeightsError
from audiotok.lm.checkpoints import load_checkpoint, save_checkpoint
from audiotok.lm.encodec_lm import load_encodec_lm
from audiotok.lm.gpt import GPTConfig, build_gpt
from audiotok.testing import random_encodec_lm, save_encodec_lm_checkpoint

TOKENIZER = {"codec": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "bandwidth": 6.0, "n_q": 8,
             "codebooks": [0], "codec_checkpoint": "encodec_24khz-d7cc33bc.th", "codec_sha256": "ab" * 8}


def _saved(tmp_path, arch="whisper-gpt"):
    torch.manual_seed(0)
    cfg = GPTConfig.make(arch, "micro", context=32)
    model = build_gpt(cfg)
    if arch == "whisper-gpt":
        model.mel_mean.copy_(torch.linspace(-6, -2, 80))
        model.mel_std.copy_(torch.linspace(0.5, 2, 80))
    path = save_checkpoint(tmp_path / "lm.pt", model, cfg, TOKENIZER, {"step": 7})
    return model, path


def test_checkpoint_round_trip_holds_config_tokenizer_and_mel_stats(tmp_path):
    model, path = _saved(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["lm.pt"]  # no temp file left behind
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["arch"] == "whisper-gpt" and blob["config"]["context"] == 32
    assert blob["tokenizer"] == TOKENIZER and blob["training"]["step"] == 7
    assert blob["mel_norm"]["mean"][0] == pytest.approx(-6.0) and blob["mel_norm"]["std"][-1] == pytest.approx(2.0)
    ck = load_checkpoint(path, "whisper-gpt", dict(TOKENIZER))
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v)
    assert ck.identity["arch"] == "whisper-gpt" and ck.identity["step"] == 7


@pytest.mark.parametrize("key,value", [("codec_sha256", "cd" * 8), ("bandwidth", 1.5), ("codec", "encodec_48khz")])
def test_loading_refuses_another_tokenizer(tmp_path, key, value):
    _, path = _saved(tmp_path)
    with pytest.raises(WeightsError, match=f"differs in {key}") as exc:
        load_checkpoint(path, "whisper-gpt", {**TOKENIZER, key: value})
    assert "not comparable" in str(exc.value) and "\n" not in str(exc.value)


def test_loading_refuses_another_arch_and_other_files(tmp_path):
    _, path = _saved(tmp_path, "token-gpt")
    with pytest.raises(WeightsError, match="holds a token-gpt model, not whisper-gpt"):
        load_checkpoint(path, "whisper-gpt")
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="is not an audiotok LM checkpoint"):
        load_checkpoint(other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="damaged"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_encodec_lm_loads_the_official_layout_from_the_hub_cache(tmp_path, monkeypatch):
    lm = random_encodec_lm(32, seed=2)
    ckpt_dir = tmp_path / "hub" / "checkpoints"
    save_encodec_lm_checkpoint(lm, ckpt_dir)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    loaded = load_encodec_lm("encodec_24khz")
    assert loaded.n_q == 32 and loaded.checkpoint_path.endswith("encodec_lm_24khz-1608e3c0.th")
    for k, v in lm.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="encodec_lm_24khz-1608e3c0.th is not in the torch hub cache"):
        load_encodec_lm("encodec_24khz")
    bad = tmp_path / "bad.th"
    torch.save({"x": torch.zeros(2)}, bad)
    with pytest.raises(WeightsError, match="does not hold EnCodec LM weights"):
        load_encodec_lm("encodec_24khz", bad)
