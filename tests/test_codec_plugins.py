"""A codec registered from outside the package (``tests/plugins/toycodec.py``: 16 kHz, 12.5 frames
per second, 1280-sample frames, 4 codebooks of 2048 codes) goes through every command with no
change inside ``audiotok/``: encode (CLI through ``AUDIOTOK_PLUGINS`` and the API, ``--n-q``),
decode, Parquet shards, ``train lm --codec`` (token-gpt and whisper-gpt: vocabulary 2048, a mel
with hop 1280), ``score`` (of audio and of codes files), ``audiotok models``; and the weights of a
codec registered after import resolve from its spec."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audiotok.registry import CODECS, CodecSpec, get_codec, register_codec, unregister_codec

from .conftest import REPO, write_wav
from .plugins import toycodec

TOY = toycodec.NAME
LENGTHS = (6.0, 5.0, 4.3, 3.7)  # seconds, at 22.05 kHz (resampled to 16 kHz)


def _audio_dir(root):
    folder = root / "in"
    for i, seconds in enumerate(LENGTHS):
        write_wav(folder / f"f{i}.wav", seconds, sr=22050, seed=i)
    return folder


def _cli(*args, check: bool = True, env_extra: dict | None = None):
    """``audiotok ARGS`` in a fresh process that knows the toy codec only through AUDIOTOK_PLUGINS."""
    env = dict(os.environ, AUDIOTOK_PLUGINS="tests.plugins.toycodec", PYTHONPATH=str(REPO), AUDIOTOK_OFFLINE="1")
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=str(REPO))
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _frames(n_samples: int) -> int:
    return -(-n_samples // toycodec.HOP)


def test_toy_codec_facts_come_from_its_spec():
    spec = get_codec(TOY)
    assert (spec.sample_rate, spec.frame_rate, spec.hop, spec.codebook_size) == (16000, 12.5, 1280, 2048)
    assert spec.codebook_counts == [1, 2, 4] and spec.n_codebooks(spec.bandwidth_default) == 2
    # exact frame counts: the float expression gave 8 frames for 8960 samples (7 frames of 1280)
    assert spec.segment_frames(8960) == [7] and spec.segment_frames(8961) == [8]
    # a bandwidth read back as float32 keeps its codebook count
    assert [spec.n_codebooks(float(np.float32(b))) for b in spec.bandwidths] == [1, 2, 4]
    assert spec.choose_bandwidth(n_q=4) == spec.bandwidths[-1] and spec.choose_bandwidth() == spec.bandwidths[1]


def test_n_q_choices_are_checked_with_one_sentence():
    from audiotok.errors import UsageError

    spec = get_codec(TOY)
    with pytest.raises(UsageError, match=r"^--n-q 3 is not valid for toy16k; choose one of 1, 2, 4 \(codebooks\)$"):
        spec.choose_bandwidth(n_q=3)
    with pytest.raises(UsageError, match="gives 2 codebooks of toy16k, not --n-q 4"):
        spec.choose_bandwidth(0.275, n_q=4)
    assert get_codec("encodec_24khz").choose_bandwidth(n_q=32) == 24.0


@pytest.mark.slow
def test_plugin_codec_through_every_command(tmp_path, cli):
    """The Done-when of issue 19: encodes (CLI and API), decodes, trains a token-gpt, scores. Fresh
    processes that know the codec only through ``AUDIOTOK_PLUGINS`` list it, encode with it and
    refuse an LM of it when it is not registered; the other commands run in this process (where
    this module's import registered it), as they would after the variable's import."""
    from audiotok import Encoder

    src = _audio_dir(tmp_path)
    listing = json.loads(_cli("models", "--json").stdout)
    toy = next(c for c in listing["codecs"] if c["name"] == TOY)
    assert (toy["frame_rate"], toy["hop"], toy["codebook_size"], toy["codebook_counts"]) == (12.5, 1280, 2048, [1, 2, 4])
    assert "ecdc" not in toy["formats"] and toy["weights_cached"] is None

    # encode --n-q: 4 codebooks of 11-bit codes, the frame count of 1280-sample frames
    recs = [json.loads(line) for line in _cli("encode", src, "-o", tmp_path / "codes", "-m", TOY, "--n-q", 4,
                                              "--jsonl", "--quiet").stdout.splitlines()]
    assert len(recs) == len(LENGTHS) and all(r["n_q"] == 4 and r["model"] == TOY for r in recs)
    enc = Encoder(TOY, n_q=4)
    high = 0
    for i, seconds in enumerate(LENGTHS):
        with np.load(tmp_path / "codes" / f"f{i}.npz") as z:
            codes, n = z["codes"], int(z["n_samples"])
            assert str(z["model"]) == TOY and float(z["frame_rate"]) == 12.5 and int(z["n_q"]) == 4
        assert n == round(seconds * 16000) and codes.shape == (4, _frames(n))
        wav, sr = sf.read(src / f"f{i}.wav", dtype="float32")
        assert np.array_equal(enc.encode(wav, sr).codes, codes)  # the API gives the CLI's codes
        high = max(high, int(codes.max()))
    assert 1024 <= high < 2048  # ids above EnCodec's 1024 survive the files

    # .ecdc is EnCodec's format: one sentence, usage error
    res = cli("encode", src, "-o", tmp_path / "bad", "-m", TOY, "-f", "ecdc", "--quiet")
    assert res.code == 2 and res.err.strip().count("\n") == 0
    assert "ecdc holds only EnCodec codes" in res.err

    # decode: audio at the codec's rate, the original length
    assert cli("decode", tmp_path / "codes", "-o", tmp_path / "wav", "--quiet").code == 0
    for i, seconds in enumerate(LENGTHS):
        info = sf.info(str(tmp_path / "wav" / f"f{i}.wav"))
        assert info.samplerate == 16000 and info.frames == round(seconds * 16000)

    # train lm --codec: a token-gpt whose vocabulary is the codec's 2048 codes
    ckpt = tmp_path / "lm.pt"
    assert cli("train", "lm", src, "-o", ckpt, "--codec", TOY, "--arch", "token-gpt", "--size", "micro", "--steps", 3,
               "--batch-size", 2, "--context", 16, "--val-fraction", 0.25, "--quiet").code == 0
    from audiotok.lm.checkpoints import load_checkpoint

    ck = load_checkpoint(ckpt)
    assert ck.config.vocab == 2048 and ck.config.bos == 2048
    assert ck.tokenizer["codec"] == TOY and ck.tokenizer["frame_rate"] == 12.5 and ck.tokenizer["sample_rate"] == 16000
    assert ck.tokenizer["n_q"] == 2 and ck.tokenizer["codec_sha256"] is None

    # score the audio and the codes encode wrote: same numbers, the codec taken from the checkpoint
    assert cli("score", src, "--checkpoint", ckpt, "-o", tmp_path / "audio.jsonl", "--quiet").code == 0
    assert cli("score", tmp_path / "codes", "--checkpoint", ckpt, "-o", tmp_path / "codes.jsonl", "--quiet").code == 0
    # without the plugin, score says which codec the LM needs and how to register it
    proc = _cli("score", src, "--checkpoint", ckpt, "--quiet", check=False, env_extra={"AUDIOTOK_PLUGINS": ""})
    assert proc.returncode == 2 and f"was trained on tokens of the codec '{TOY}', which is not registered here" in proc.stderr
    by_audio = {os.path.basename(r["input"]).split(".")[0]: r for r in map(json.loads, open(tmp_path / "audio.jsonl"))}
    by_codes = {os.path.basename(r["input"]).split(".")[0]: r for r in map(json.loads, open(tmp_path / "codes.jsonl"))}
    assert set(by_audio) == set(by_codes) == {f"f{i}" for i in range(len(LENGTHS))}
    for key, rec in by_audio.items():
        assert rec["status"] == "ok" and rec["tokenizer"]["codec"] == TOY and rec["model"] == "token-gpt"
        assert rec["tokens"] == _frames(round(LENGTHS[int(key[1:])] * 16000))
        assert rec["bits_per_second"] == pytest.approx(rec["bits_per_frame"] * rec["tokens"] / LENGTHS[int(key[1:])])
        assert rec["nll"] == pytest.approx(by_codes[key]["nll"], abs=1e-6)


def test_plugin_codec_trains_and_scores_whisper_gpt(tmp_path):
    """Whisper-GPT on the toy codec: the mel runs at 16 kHz with one frame per 1280 samples."""
    from audiotok import score_files, train_lm
    from audiotok.lm.mel import causal_log_mel

    src = _audio_dir(tmp_path)
    result = train_lm([str(src)], tmp_path / "w.pt", codec=TOY, arch="whisper-gpt", size="micro", steps=2,
                      batch_size=2, context=16, val_fraction=0.25, workers=0, log=lambda m: None)
    assert result.status == 0
    cached = sorted((tmp_path / "w.pt.cache").rglob("*.npz"))
    assert len(cached) == len(LENGTHS)
    with np.load(cached[0]) as z:
        n = int(z["n_samples"])
        assert z["mel"].shape == (_frames(n), 80) and z["codes"].shape == (2, _frames(n))
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    assert causal_log_mel(x, 16000, 1280).shape == (_frames(5000), 80)

    out = tmp_path / "scores.jsonl"
    scored = score_files([str(src)], checkpoints=[tmp_path / "w.pt"], output=out, workers=0,
                         frames=tmp_path / "frames", plot=tmp_path / "plots")
    assert not scored.summary.failed
    recs = [json.loads(line) for line in open(out)]
    assert len(recs) == len(LENGTHS) and all(r["status"] == "ok" and r["model"] == "whisper-gpt" for r in recs)
    assert all(math.isfinite(r["nll"]) for r in recs)
    with np.load(tmp_path / "frames" / "f0.whisper-gpt.npz") as z:
        assert z["time"].shape == (_frames(round(LENGTHS[0] * 16000)),) and z["time"][1] == 1 / 12.5
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(LENGTHS)


def test_plugin_codec_parquet_shards_decode(tmp_path):
    from audiotok import decode_files, encode_files

    src = _audio_dir(tmp_path)
    encode_files([str(src)], tmp_path / "shards", model=TOY, n_q=1, fmt="parquet", workers=0)
    decode_files([str(tmp_path / "shards")], tmp_path / "wav", workers=0)
    outs = sorted((tmp_path / "wav").rglob("*.wav"))
    assert len(outs) == len(LENGTHS) and all(sf.info(str(p)).samplerate == 16000 for p in outs)


def test_weights_of_a_codec_registered_after_import_resolve_from_its_spec(tmp_path, monkeypatch):
    """weights.py reads the registry when it resolves, not a snapshot taken at import."""
    import torch

    from audiotok.jobs.models import list_models
    from audiotok.weights import ENCODEC_CHECKPOINTS, cached_weights, resolve_codec_weights

    origin = tmp_path / "mirror" / "toyweights.th"
    origin.parent.mkdir()
    torch.save(toycodec.ToyNet(seed=5).state_dict(), origin)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("AUDIOTOK_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = CodecSpec(name="toy16k_w", sample_rate=16000, channels=1, frame_rate=12.5, bandwidths=(0.1375,),
                     codebook_size=2048, n_q=1, implementation=toycodec.load, checkpoint="toyweights.th",
                     weights_url=origin.as_uri())
    register_codec(spec)
    try:
        assert ENCODEC_CHECKPOINTS["toy16k_w"] == "toyweights.th"
        assert cached_weights(spec) is None
        facts = next(c for c in list_models()["codecs"] if c["name"] == "toy16k_w")
        assert facts["weights_cached"] is False and facts["weights_source"] == origin.as_uri()
        path = resolve_codec_weights(spec)  # downloaded into the torch hub cache
        assert path == tmp_path / "torch" / "hub" / "checkpoints" / "toyweights.th" and cached_weights(spec) == path
        codec = spec.load(path)
        assert codec.checkpoint_path == str(path)
        monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
        path.unlink()
        from audiotok.errors import WeightsError

        with pytest.raises(WeightsError, match="toyweights.th is not in the torch hub cache and downloads are off"):
            resolve_codec_weights(spec)
    finally:
        unregister_codec("toy16k_w")
    assert "toy16k_w" not in CODECS and "toy16k_w" not in ENCODEC_CHECKPOINTS


def test_encodec_facts_and_lm_defaults_are_unchanged():
    """EnCodec 24 kHz through the generic paths: the same numbers as the literals they replace."""
    from audiotok.lm.gpt import BOS, VOCAB, GPTConfig
    from audiotok.lm.mel import MEL_HOP, MEL_SAMPLE_RATE, causal_log_mel, mel_n_fft
    from audiotok.lm.tokenizer import tokenizer_spec

    tok = tokenizer_spec()
    assert (tok.codec, tok.sample_rate, tok.frame_rate, tok.hop, tok.codebook_size) == ("encodec_24khz", 24000, 75, 320, 1024)
    assert isinstance(tok.frame_rate, int)  # records and checkpoints keep writing 75, not 75.0
    assert (VOCAB, BOS, MEL_SAMPLE_RATE, MEL_HOP, mel_n_fft(320), mel_n_fft(1920)) == (1024, 1024, 24000, 320, 1024, 2048)
    assert GPTConfig.make("token-gpt", "micro").vocab == 1024
    x = np.random.default_rng(1).standard_normal(24000).astype(np.float32)
    assert np.array_equal(causal_log_mel(x).numpy(), causal_log_mel(x, 24000, 320).numpy())
    spec = get_codec("encodec_24khz")
    # the frames EnCodec's encoder gives (ceil(n / 320)); the float expression said 22 for 6720
    assert spec.segment_frames(6720) == [21] and spec.segment_frames(6721) == [22]
    assert [spec.n_codebooks(b) for b in spec.bandwidths] == [2, 4, 8, 16, 32]
    assert spec.choose_bandwidth() == 6.0 and get_codec("encodec_48khz").choose_bandwidth() == 6.0


def test_train_lm_codec_and_n_q_errors_come_before_torch(tmp_path):
    from audiotok import encode_files, train_lm
    from audiotok.errors import UsageError

    src = _audio_dir(tmp_path)
    with pytest.raises(UsageError, match=r"^--codec 'nope' is not a known codec; choose one of .*toy16k"):
        train_lm([str(src)], tmp_path / "a.pt", codec="nope")
    with pytest.raises(UsageError, match=r"^--n-q 3 is not valid for toy16k"):
        train_lm([str(src)], tmp_path / "a.pt", codec=TOY, n_q=3)
    with pytest.raises(UsageError, match=r"^--codec encodec_48khz codes 2 channels, but the LMs read one stream"):
        train_lm([str(src)], tmp_path / "a.pt", codec="encodec_48khz")
    with pytest.raises(UsageError, match=r"^--bandwidth 6 is not valid for toy16k"):
        encode_files([str(src)], tmp_path / "o", model=TOY, bandwidth=6.0)
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "o").exists()
