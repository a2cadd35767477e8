"""`train lm --codec` and `score` with the built-in codecs beyond EnCodec (issue 19 item 7): Mimi
(2048 codes, 12.5 Hz) and DAC 44.1 kHz (1024 codes, hop 512) train token-gpt and whisper-gpt, the
checkpoint records the codec, and `score` tokenises with it (audio and encode's codes give the same
numbers). Weights: the parity fixtures (random weights in the official layouts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .conftest import write_wav

FIXTURES = Path(__file__).parent / "fixtures"
CODECS = {"mimi": (FIXTURES / "mimi" / "model.safetensors", 2048, 1920, 24000),
          "dac_44khz": (FIXTURES / "dac" / "weights_small.pth", 1024, 512, 44100)}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_train_lm_and_score_with_another_codec(tmp_path, codec):
    from audiotok import encode_files, score_files, train_lm
    from audiotok.lm.checkpoints import load_checkpoint

    weights, vocab, hop, rate = CODECS[codec]
    src = tmp_path / "in"
    for i, seconds in enumerate((2.0, 1.6, 1.3)):
        write_wav(src / f"f{i}.wav", seconds, sr=22050, seed=i)
    for arch in ("token-gpt", "whisper-gpt"):
        ckpt = tmp_path / f"{arch}.pt"
        result = train_lm([str(src)], ckpt, codec=codec, codec_checkpoint=weights, arch=arch, size="micro", steps=2,
                          batch_size=2, context=8, val_fraction=0.34, workers=0, log=lambda m: None)
        assert result.status == 0
        ck = load_checkpoint(ckpt)
        assert ck.config.vocab == vocab and ck.config.bos == vocab
        assert ck.tokenizer["codec"] == codec and ck.tokenizer["sample_rate"] == rate
        assert ck.tokenizer["frame_rate"] == pytest.approx(rate / hop)
        out = tmp_path / f"{arch}.jsonl"
        scored = score_files([str(src)], checkpoints=[ckpt], codec_checkpoint=weights, output=out, workers=0)
        assert not scored.summary.failed
        recs = {Path(r["input"]).stem: r for r in map(json.loads, open(out))}
        assert sorted(recs) == ["f0", "f1", "f2"]
        for r in recs.values():
            assert r["status"] == "ok" and r["tokenizer"]["codec"] == codec and math.isfinite(r["nll"])
            assert r["nll"] < math.log(vocab + 1) + 1.0  # a distribution over the codec's codes
    # token-gpt scores encode's codes files exactly as it scores the audio
    assert encode_files([str(src)], tmp_path / "codes", model=codec, checkpoint=weights, workers=0).failed == []
    score_files([str(tmp_path / "codes")], checkpoints=[tmp_path / "token-gpt.pt"], codec_checkpoint=weights,
                output=tmp_path / "codes.jsonl", workers=0)
    by_codes = {Path(r["input"]).stem: r for r in map(json.loads, open(tmp_path / "codes.jsonl"))}
    by_audio = {Path(r["input"]).stem: r for r in map(json.loads, open(tmp_path / "token-gpt.jsonl"))}
    for key, rec in by_audio.items():
        assert by_codes[key]["nll"] == pytest.approx(rec["nll"], abs=1e-6)
