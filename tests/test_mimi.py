"""Mimi (``-m mimi``): parity with the official moshi package on random weights in both official
layouts (fixture made by ``tests/fixtures/mimi/make_fixture.py``), strict loading, streaming equal
to whole-file encoding, batching invariance, and the CLI end to end (npz, Parquet, decode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotok.codecs.mimi import MimiDecoder, MimiEncoder, StreamShape, load_weights
from audiotok.codecs.mimi_weights import MimiConfig
from audiotok.errors import WeightsError
from audiotok.formats.codes import EncodedItem
from audiotok.registry import get_codec

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mimi"
LAYOUTS = ["model.safetensors", "tokenizer-test.safetensors"]  # transformers, moshi


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE / "reference.npz") as z:
        return {k: z[k] for k in z.files}


def clip(ref, i: int) -> np.ndarray:
    return (ref[f"audio_{i}"].astype(np.float32) / 32768)[None]


COMPUTE = ["ncw", "nwc"]  # how the network holds activations (the CPU's default: nwc)


def with_layout(codec, layout: str):
    codec.net = load_weights(Path(codec.checkpoint_path), torch.device("cpu"), layout)
    return codec


@pytest.fixture(scope="module", params=COMPUTE)
def codec(request):
    """The fixture codec, computed in each activation layout (every test that takes it runs twice)."""
    return with_layout(get_codec("mimi").load(FIXTURE / "model.safetensors", "cpu"), request.param)


@pytest.fixture
def run_cli(cli):
    """``audiotok ARGS`` in-process and offline (the shared ``cli`` fixture): (exit code, stdout, stderr)."""

    def run(*args):
        r = cli(*args)
        return r.code, r.out, r.err

    return run


def encode(codec, audios, shape=None, bandwidth=1.1, **kw):
    kw = {"shared": shape, "lone": shape, **kw} if shape else kw
    enc = MimiEncoder(codec, bandwidth, torch.device("cpu"), **kw)
    got = dict(enc.run(list(enumerate(audios))))
    got.update(enc.flush())
    return [got[i] for i in range(len(audios))]


# --- facts -------------------------------------------------------------------------------------------
def test_mimi_facts_come_from_the_registry():
    s = get_codec("mimi")
    assert (s.sample_rate, s.channels, s.frame_rate, s.hop, s.codebook_size, s.n_q) == (24000, 1, 12.5, 1920, 2048, 32)
    assert s.default_bandwidth == 1.1 and s.n_codebooks(1.1) == 8 and s.n_codebooks(4.4) == 32
    assert [s.n_codebooks(b) for b in s.bandwidths] == list(range(1, 33))
    assert s.bandwidth_for(16) == 2.2
    # whole frames of 1920 samples, counted exactly (the float expression says 8 for 13440)
    assert s.segment_frames(13440) == [7] and s.segment_frames(1) == [1] and s.segment_frames(1921) == [2]
    assert not s.ecdc and (s.checkpoint, s.hub_repo) == ("model.safetensors", "kyutai/mimi") and "kyutai/mimi" in s.weights_source


# --- parity with moshi -------------------------------------------------------------------------------
@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_codes_and_audio_equal_the_official_model(ref, layout, compute):
    """Codes of moshi 0.2.13's ``MimiModel.encode`` (whole file) on >= 99.9 % of frames, and its
    ``decode`` within 1e-4, from the weights in either official layout, computed in either
    activation layout."""
    codec = with_layout(get_codec("mimi").load(FIXTURE / layout, "cpu"), compute)
    assert MimiDecoder(codec, torch.device("cpu")).numerics()["stream_layout"] == compute
    items = encode(codec, [clip(ref, 0), clip(ref, 1)])  # 73000 samples: two 38400-sample windows
    frames = same = 0
    for i, item in enumerate(items):
        want = ref[f"codes_{i}"]
        assert item.codes.dtype == np.int16 and item.codes.shape == want.shape
        assert item.n_samples == ref[f"audio_{i}"].shape[0]
        frames += want.shape[1]
        same += int((item.codes == want).all(0).sum())
    assert same / frames >= 0.999, f"{frames - same} of {frames} frames differ"
    dec = MimiDecoder(codec, torch.device("cpu"))
    for i in range(2):
        want = ref[f"decoded_{i}"]
        item = EncodedItem(ref[f"codes_{i}"], None, want.shape[0])
        audio = dict(dec.run([(i, item)]))[i]
        assert audio.shape == (1, want.shape[0]) and audio.dtype == np.float32
        assert np.abs(audio[0] - want).max() < 1e-4


def test_both_layouts_hold_the_same_network():
    a = load_weights(FIXTURE / "model.safetensors", torch.device("cpu"))
    b = load_weights(FIXTURE / "tokenizer-test.safetensors", torch.device("cpu"))
    for la, lb in zip(a.enc_layers + a.dec_layers, b.enc_layers + b.dec_layers):
        assert torch.equal(la.in_proj, lb.in_proj)  # transformers' rotary permutation undone exactly
    assert a.config.sliding_window == 16 and a.config.num_quantizers == 8


def test_transformers_5_module_names_load_too(tmp_path):
    """A state dict saved under transformers 5.x's module names (``encoder.encoder_seanet...``)."""
    prefixes = {"encoder.layers.": "encoder.encoder_seanet.layers.",
                "encoder_transformer.": "encoder.encoder_transformer.", "downsample.": "encoder.downsample.",
                "upsample.": "decoder.upsample.", "decoder_transformer.": "decoder.decoder_transformer.",
                "decoder.layers.": "decoder.decoder_seanet.layers."}

    def rename(sd):
        for k in list(sd):
            new = next((v + k[len(p):] for p, v in prefixes.items() if k.startswith(p)), k)
            sd[new] = sd.pop(k)

    a = load_weights(FIXTURE / "model.safetensors", torch.device("cpu"))
    b = load_weights(_variant(tmp_path, rename), torch.device("cpu"))
    assert torch.equal(a.down.weight, b.down.weight) and torch.equal(a.dec_layers[1].linear2, b.dec_layers[1].linear2)


# --- streaming and batching ---------------------------------------------------------------------------
def _long_audio(ref, seconds: float = 9.0) -> np.ndarray:
    x = np.concatenate([clip(ref, 0), clip(ref, 1)], axis=1)
    reps = int(np.ceil(seconds * 24000 / x.shape[1]))
    return np.tile(x, reps)[:, : int(seconds * 24000) + 77]


def test_streaming_equals_whole_file(codec, ref):
    """Windows of 2 frames (state carried: convolution context, the 16-step attention cache,
    rotary offsets) give the latents of one window holding the whole file up to float rounding
    (attention sums over other key sets), and so its codes except at a rare near-tie; decoding in
    windows of 3 frames gives the audio of one window."""
    x = _long_audio(ref)
    n = x.shape[1]
    W = -(-n // 1920) * 1920
    padded = np.zeros((1, 1, W), dtype=np.float32)
    padded[0, :, :n] = x
    net = codec.net
    whole = net.encode_window(torch.from_numpy(padded), net.init_encoder_state(1), torch.tensor([True]))
    state, parts = net.init_encoder_state(1), []
    for s in range(0, W, 3840):
        parts.append(net.encode_window(torch.from_numpy(padded[:, :, s:s + 3840]), state, torch.tensor([s == 0])))
    assert (torch.cat(parts, dim=-1) - whole).abs().max() < 1e-5
    one = encode(codec, [x], StreamShape(1, W))[0]
    small = encode(codec, [x], StreamShape(1, 3840))[0]
    assert one.codes.shape == small.codes.shape == (8, W // 1920)
    assert (small.codes == one.codes).all(0).mean() >= 0.98
    a = MimiDecoder(codec, torch.device("cpu"), window=3).decode(one)
    b = MimiDecoder(codec, torch.device("cpu"), window=one.codes.shape[1]).decode(one)
    assert a.shape == b.shape == (1, n) and np.abs(a - b).max() < 1e-4


def _state_numel(state) -> int:
    return sum(t.numel() for t in state["ctx"]) + sum(t.numel() for kv in state["kv"] for t in kv.values())


def test_state_stays_bounded(codec, ref):
    """The state a row carries (convolution context, attention cache of `sliding_window` steps) has
    one size however long the file: memory does not grow with its length."""
    net = codec.net
    x = torch.from_numpy(_long_audio(ref, 8.0)[:, : 50 * 3840].reshape(1, 1, -1).copy())
    enc, dec = net.init_encoder_state(1), net.init_decoder_state(1)
    size = (_state_numel(enc), _state_numel(dec))
    for i in range(50):
        emb = net.encode_window(x[:, :, i * 3840:(i + 1) * 3840], enc, torch.tensor([i == 0]))
        net.decode_window(net.dequantize(net.quantize(emb, 8)), dec, torch.tensor([i == 0]))
    assert (_state_numel(enc), _state_numel(dec)) == size
    assert all(kv["k"].shape[2] == net.config.sliding_window for kv in enc["kv"])
    assert int(enc["offset"][0]) == 50 * 3840 // 960  # rotary positions go on counting


def test_codes_do_not_depend_on_batching_or_neighbours(codec, ref):
    """Each file's codes are the same alone, in a batch, in another order, and in rows that held
    other files before (state reset at each file's first window)."""
    long = _long_audio(ref, 5.0)
    files = [clip(ref, 0), long, clip(ref, 1)[:, :5000], long[:, 1000:40000], clip(ref, 1), long[:, 7:]]
    # files of 4 s or more run alone in their own shape (as files of 30 s or more do by default)
    kw = {"shared": StreamShape(2, 7680), "lone": StreamShape(1, 11520), "lone_seconds": 4.0}
    alone = [encode(codec, [f], **kw)[0].codes for f in files]
    together = encode(codec, files, **kw)
    backwards = encode(codec, files[::-1], **kw)[::-1]
    for a, b, c in zip(alone, together, backwards):
        np.testing.assert_array_equal(a, b.codes)
        np.testing.assert_array_equal(a, c.codes)
    # one at a time through one adapter (rows reused, state reset per file)
    enc = MimiEncoder(codec, 1.1, torch.device("cpu"), **kw)
    shapes = {k: v for k, v in enc.numerics().items() if k not in ("threads", "lanes")}  # lanes: tests/test_lanes.py
    assert shapes == {"stream_shared": "2x7680", "stream_lone": "1x11520", "lone_seconds": 4.0,
                      "stream_layout": codec.net.layout}
    for i, f in enumerate(files):
        got = dict(enc.run([(i, f)]) + enc.flush())
        np.testing.assert_array_equal(alone[i], got[i].codes)


def test_fewer_codebooks_are_a_prefix(codec, ref):
    eight = encode(codec, [clip(ref, 0)])[0].codes
    one = encode(codec, [clip(ref, 0)], bandwidth=0.1375)[0].codes
    four = encode(codec, [clip(ref, 0)], bandwidth=0.55)[0].codes
    assert one.shape == (1, 39) and four.shape == (4, 39)
    np.testing.assert_array_equal(eight[:4], four)
    np.testing.assert_array_equal(eight[:1], one)
    with pytest.raises(WeightsError, match="16 codebooks asked .* hold 8"):
        MimiEncoder(codec, 2.2, torch.device("cpu"))


# --- strict loading ----------------------------------------------------------------------------------
def _variant(tmp_path, edit, layout="model.safetensors", config=True) -> Path:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(FIXTURE / layout))
    edit(sd)
    out = tmp_path / layout
    save_file(sd, str(out))
    if config:
        shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("decoder.layers.14.conv.bias"), "1 tensors are missing, the first decoder.layers.14.conv.bias"),
    (lambda sd: sd.update(extra=torch.zeros(1)), "1 tensors are unexpected, the first extra"),
    (lambda sd: sd.update({"downsample.conv.weight": torch.zeros(32, 32, 3)}),
     r"downsample.conv.weight has shape \[32, 32, 3\], expected \[32, 32, 4\]"),
    (lambda sd: sd.pop("encoder_transformer.layers.1.self_attn.k_proj.weight"),
     "missing, the first encoder_transformer.layers.1.self_attn.q_proj.weight"),
    (lambda sd: sd.update({"upsample.conv.weight": torch.full((32, 1, 4), float("nan"))}), "holds NaN values in upsample.conv.weight"),
])
def test_a_wrong_file_is_refused(tmp_path, edit, message):
    with pytest.raises(WeightsError, match=message):
        load_weights(_variant(tmp_path, edit), torch.device("cpu"))


def test_refusals_through_the_cli(tmp_path, run_cli, ref):
    """A file that is not Mimi's weights (or not there) is exit 3 with one sentence."""
    from safetensors.torch import save_file

    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "a.wav"), ref["audio_1"], 24000)
    for sub in ("alone", "foreign"):
        (tmp_path / sub).mkdir()
    cases = {
        # the moshi-layout file without its config.json: the released configuration, which it does not fit
        "alone": (_variant(tmp_path / "alone", lambda sd: None, "tokenizer-test.safetensors", config=False),
                  "the default kyutai/mimi configuration"),
        "text": (tmp_path / "text.safetensors", "could not read"),
        "missing": (tmp_path / "nope.safetensors", "does not exist"),
        "foreign": (tmp_path / "foreign" / "model.safetensors", "neither the transformers layout"),
    }
    cases["text"][0].write_text("not weights")
    save_file({"layer.weight": torch.zeros(2)}, str(cases["foreign"][0]))
    for name, (path, message) in cases.items():
        code, _, err = run_cli("encode", tmp_path / "in", "-o", tmp_path / f"o_{name}", "-m", "mimi",
                               "--checkpoint", path, "--quiet")
        assert code == 3 and message in err and "Traceback" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1, err
    cfg = tmp_path / "badcfg"
    cfg.mkdir()
    shutil.copy(FIXTURE / "model.safetensors", cfg / "model.safetensors")
    (cfg / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    code, _, err = run_cli("encode", tmp_path / "in", "-o", tmp_path / "o_cfg", "-m", "mimi",
                           "--checkpoint", cfg / "model.safetensors", "--quiet")
    assert code == 3 and "is not a Mimi config.json" in err, err
    code, _, err = run_cli("encode", tmp_path / "in", "-o", tmp_path / "o_bw", "-m", "mimi", "-b", "6",
                           "--checkpoint", FIXTURE / "model.safetensors", "--quiet")
    assert code == 2 and "not valid for mimi" in err, err


def test_missing_default_weights_name_the_files(tmp_path, run_cli, ref, monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "a.wav"), ref["audio_1"], 24000)
    code, _, err = run_cli("encode", tmp_path / "in", "-o", tmp_path / "o", "-m", "mimi", "--quiet")
    assert code == 3 and "model.safetensors and config.json of the Hugging Face repo kyutai/mimi" in err, err
    assert "--checkpoint" in err and not list(tmp_path.rglob("*.npz"))


def test_default_weights_come_from_the_hub_cache_and_models_says_they_are_cached(tmp_path, run_cli, ref, monkeypatch):
    import huggingface_hub.constants as hfc

    from audiotok.jobs.models import codec_facts
    from audiotok.registry import get_codec
    from audiotok.testing import fill_hf_cache

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert codec_facts(get_codec("mimi"))["weights_cached"] is False
    fill_hf_cache(tmp_path / "hf", "kyutai/mimi", {"model.safetensors": FIXTURE / "model.safetensors",
                                                   "config.json": FIXTURE / "config.json"})
    facts = codec_facts(get_codec("mimi"))
    assert facts["weights_cached"] is True and facts["weights_file"] == "model.safetensors"
    assert Path(facts["weights_path"]).read_bytes() == (FIXTURE / "model.safetensors").read_bytes()
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "a.wav"), ref["audio_1"], 24000, subtype="PCM_16")
    code, _, err = run_cli("encode", tmp_path / "in", "-o", tmp_path / "o", "-m", "mimi", "--quiet")
    assert code == 0, err
    with np.load(tmp_path / "o" / "a.npz") as z:
        np.testing.assert_array_equal(z["codes"], ref["codes_1"])


def test_config_json_is_read():
    c = MimiConfig.from_json(FIXTURE / "config.json")
    assert (c.hidden_size, c.num_filters, c.num_hidden_layers, c.sliding_window, c.codebook_dim) == (32, 2, 2, 16, 8)
    assert c.hop == 1920 and c.downsample_stride == 2
    assert MimiConfig().hop == 1920 and MimiConfig().num_quantizers == 32


# --- the CLI end to end -------------------------------------------------------------------------------
def test_encode_and_decode_through_the_cli(tmp_path, run_cli, ref):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(str(src / "a.wav"), ref["audio_0"], 24000, subtype="PCM_16")
    sf.write(str(src / "sub" / "b.wav"), ref["audio_1"], 24000, subtype="PCM_16")
    code, out, err = run_cli("encode", src, "-o", tmp_path / "codes", "-m", "mimi", "--checkpoint",
                             FIXTURE / "model.safetensors", "--quiet", "--jsonl")
    assert code == 0, err
    recs = {Path(r["input"]).name: r for r in map(json.loads, out.splitlines())}
    assert recs["a.wav"]["frames"] == 39 and recs["a.wav"]["n_q"] == 8 and recs["a.wav"]["bandwidth"] == 1.1
    assert recs["a.wav"]["weights_sha256"] and recs["a.wav"]["numerics"]["stream_shared"] == "4x38400"
    assert recs["a.wav"]["numerics"]["stream_layout"] == "nwc"  # the CPU computes channels last
    for name, i in (("a.npz", 0), ("sub/b.npz", 1)):
        with np.load(tmp_path / "codes" / name) as z:
            np.testing.assert_array_equal(z["codes"], ref[f"codes_{i}"])
            assert str(z["model"]) == "mimi" and int(z["sample_rate"]) == 24000
            assert int(z["n_samples"]) == ref[f"audio_{i}"].shape[0]
    code, _, err = run_cli("decode", tmp_path / "codes", "-o", tmp_path / "wav", "--checkpoint",
                           FIXTURE / "tokenizer-test.safetensors", "--quiet")
    assert code == 0, err
    for name, i in (("a.wav", 0), ("sub/b.wav", 1)):
        wav, sr = sf.read(str(tmp_path / "wav" / name), dtype="float32")
        assert sr == 24000 and wav.shape == ref[f"decoded_{i}"].shape
        assert np.abs(wav - ref[f"decoded_{i}"]).max() < 1e-3  # the WAV holds 16-bit samples
    # Parquet shards hold the same codes
    code, _, err = run_cli("encode", src, "-o", tmp_path / "ds", "-m", "mimi", "-f", "parquet", "--checkpoint",
                           FIXTURE / "model.safetensors", "--quiet")
    assert code == 0, err
    from audiotok.formats.datasets import read_parquet_dataset

    table = read_parquet_dataset(tmp_path / "ds").to_pylist()
    assert len(table) == 2
    for row in table:
        i = 0 if row["id"].startswith("a") else 1
        np.testing.assert_array_equal(np.array(row["codes"], dtype=np.int16), ref[f"codes_{i}"])
    # --format ecdc is EnCodec's; npy holds bare 24 kHz EnCodec codes
    code, _, err = run_cli("encode", src, "-o", tmp_path / "e", "-m", "mimi", "-f", "ecdc", "--quiet")
    assert code == 2 and "ecdc holds only EnCodec codes" in err


def test_python_api(ref):
    from audiotok import Encoder

    enc = Encoder("mimi", checkpoint=FIXTURE / "model.safetensors", device="cpu")
    assert enc.bandwidth == 1.1 and enc.frame_rate == 12.5
    item = enc.encode(ref["audio_1"].astype(np.float32) / 32768, sample_rate=24000)
    np.testing.assert_array_equal(item.codes, ref["codes_1"])

