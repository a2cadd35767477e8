"""EnCodecMAE network and loader: official fixture parity, v1 layout, large heads, EnCodec front-end,
batch independence, chunking/overlap, checkpoint errors and Hugging Face cache resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiotok.embedders.chunking import MaeEmbedder, plan_chunks
from audiotok.embedders.encodecmae import build_model, load_mae, parse_gin, read_checkpoint, resolve_layers
from audiotok.errors import UsageError, WeightsError
from audiotok.testing import (
    encodecmae_gin,
    fill_hf_cache,
    random_encodecmae_state,
    save_encodecmae_checkpoint,
    synthetic_audio,
)

from .conftest import FIXTURE_ATOL, FIXTURE_RTOL, shared_path

ATOL, RTOL = FIXTURE_ATOL, FIXTURE_RTOL
NAMES = "abcd"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is fastest and immune to a busy machine's oversubscription."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fixture_dir():
    return shared_path("fixtures", "encodecmae")


@pytest.fixture(scope="module")
def expected(fixture_dir):
    return dict(np.load(fixture_dir / "expected.npz"))


@pytest.fixture(scope="module")
def tiny(fixture_dir):
    return load_mae(fixture_dir / "tiny_mel_st.pt")


def _embedder(model, **kw) -> MaeEmbedder:
    return MaeEmbedder(model, "test", **kw)


# --- fixture parity ------------------------------------------------------------------------
def test_fixture_loads_strictly_with_its_sizes(tiny, fixture_dir):
    cfg = tiny.cfg
    assert (cfg.frontend, cfg.in_features, cfg.dim, cfg.layers, cfg.heads, cfg.ff_dim) == ("mel", 256, 64, 2, 4, 128)
    assert cfg.mel_norm == (-6.12, 4.82)
    ckpt = read_checkpoint(fixture_dir / "tiny_mel_st.pt")
    assert ckpt.layout == "v2"
    sd = tiny.state_dict()
    assert torch.equal(sd["blocks.1.att_layer.wq.weight"], ckpt.state["visible_encoder.encoder_layers.1.att_layer.wq.weight"])
    assert torch.equal(sd["ff.2.bias"], ckpt.state["visible_encoder.encoder_layers.1.ff_layer.2.bias"])
    assert torch.equal(sd["pos_scale"], ckpt.state["masker.positional_encoder.scale"])
    assert not any(k.startswith(("decoder", "head")) for k in sd)


@pytest.mark.parametrize("x", NAMES)
def test_fixture_front_end(tiny, expected, x):
    wav = torch.from_numpy(expected[f"wav_{x}"][:96000])
    feat = tiny.features(wav[None])[0].numpy()
    ref = expected[f"feat_{x}"]
    assert feat.shape == ref.shape and feat.dtype == np.float32
    np.testing.assert_allclose(feat, ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("x", NAMES)
def test_fixture_every_layer_matches_reference(tiny, expected, x):
    """last and all layers, frame level, through the batched/padded embedder (all four inputs in one batch)."""
    wavs = [expected[f"wav_{k}"] for k in NAMES]
    emb_all = _embedder(tiny, layer="all", pool="none").embed_many(wavs, 24000)[NAMES.index(x)]
    emb_last = _embedder(tiny, layer=-1, pool="none").embed_many(wavs, 24000)[NAMES.index(x)]
    ref_all, ref_last = expected[f"all_{x}"], expected[f"last_{x}"]
    t = ref_last.shape[0]
    extra = {"a": 0, "b": 0, "c": 2, "d": 0}[x]  # c: the 1200-sample tail the reference drops gives 2 frames
    assert emb_all.array.shape == (2, t + extra, 64) and emb_all.array.dtype == np.float32
    assert emb_last.array.shape == (t + extra, 64)
    np.testing.assert_allclose(emb_all.array[:, :t], ref_all, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(emb_last.array[:t], ref_last, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(emb_last.array[:t], ref_all[-1], atol=ATOL, rtol=RTOL)


def test_fixture_negative_and_intermediate_layers(tiny, expected):
    wav = expected["wav_b"]
    first = _embedder(tiny, layer=0, pool="none").embed(wav, 24000)
    minus2 = _embedder(tiny, layer=-2, pool="none").embed(wav, 24000)
    np.testing.assert_allclose(first, expected["all_b"][0], atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(first, minus2)


def test_tail_chunk_is_embedded_and_short_clips_are_padded(tiny, expected):
    wav = expected["wav_c"]
    res = _embedder(tiny, pool="none").embed_many([wav, wav[:100], wav[:1]], 24000)
    tail = _embedder(tiny, pool="none").embed(wav[192000:], 24000)
    np.testing.assert_array_equal(res[0].array[600:], tail)  # the tail = a chunk on its own
    assert res[1].array.shape == (1, 64) and res[2].array.shape == (1, 64)
    assert np.isfinite(res[2].array).all()
    np.testing.assert_allclose(res[0].timestamps[600:], (192000 + 318.5 + 318 * np.arange(2)) / 24000)


def test_pooling_shapes_and_values(tiny, expected):
    wav = expected["wav_b"]
    frames = expected["last_b"]
    for pool, shape in (("mean", (64,)), ("max", (64,)), ("meanstd", (128,))):
        out = _embedder(tiny, pool=pool).embed(wav, 24000)
        assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(_embedder(tiny, pool="mean").embed(wav, 24000), frames.mean(0), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(_embedder(tiny, pool="max").embed(wav, 24000), frames.max(0), atol=1e-5, rtol=1e-4)
    ms = _embedder(tiny, pool="meanstd").embed(wav, 24000)
    np.testing.assert_allclose(ms[64:], frames.std(0), atol=1e-5, rtol=1e-4)
    allm = _embedder(tiny, layer="all", pool="mean").embed(wav, 24000)
    assert allm.shape == (2, 64)
    np.testing.assert_allclose(allm, expected["all_b"].mean(1), atol=1e-5, rtol=1e-4)


def test_resampled_and_stereo_input(tiny):
    e = _embedder(tiny, pool="none")
    x48 = synthetic_audio(2.0, 48000, seed=3, channels=2)
    out = e.embed(x48, 48000)
    assert out.shape == (e.adapter.cfg.frames(48000), 64)
    from audiotok.formats.audio import mix_channels, resample

    ref = e.embed(resample(mix_channels(x48, 1), 48000, 24000)[0], 24000)
    np.testing.assert_array_equal(out, ref)


# --- batch independence -------------------------------------------------------------------
def test_same_embeddings_whatever_the_batch(tiny):
    rng = np.random.default_rng(0)
    lengths = [int(v) for v in rng.integers(50, 24000 * 9, size=16)] + [96000, 1, 96000 + 1200]
    clips = [synthetic_audio(n / 24000, seed=i)[0][:n] for i, n in enumerate(lengths)]
    e = _embedder(tiny, pool="none", layer="all")
    alone = [e.embed_many([c], 24000)[0].array for c in clips]
    for size in (3, 16):
        for start in range(0, len(clips), size):
            got = e.embed_many(clips[start:start + size], 24000)
            for k, r in enumerate(got):
                assert r.array.shape == alone[start + k].shape
                np.testing.assert_array_equal(r.array, alone[start + k])
    rev = e.embed_many(clips[::-1], 24000)[::-1]
    for a, b in zip(rev, alone):
        np.testing.assert_array_equal(a.array, b)


def test_padding_masks_match_unpadded_computation(tiny, expected):
    """A chunk padded inside a bigger batch shape equals the same chunk run alone, unpadded."""
    wav = torch.from_numpy(expected["wav_d"][:20000])
    f = tiny.features(wav[None])
    alone = tiny(f, torch.tensor([f.shape[1]]), [1])[0][0]
    padded = torch.zeros(3, 75, 256)
    padded[1, : f.shape[1]] = f[0]
    padded[0] = 5.0
    out = tiny(padded, torch.tensor([75, f.shape[1], 3]), [1])[0][1, : f.shape[1]]
    np.testing.assert_allclose(out.numpy(), alone.numpy(), atol=1e-6, rtol=1e-5)


# --- overlap ------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [0.0, 1.0, 2.0, 0.03])
def test_overlap_each_frame_once(tiny, overlap):
    clip = synthetic_audio(10.3, seed=5)[0]
    e = _embedder(tiny, pool="none", overlap=overlap)
    r = e.embed_many([clip], 24000)[0]
    ts = r.timestamps
    assert r.array.shape == (ts.shape[0], 64)
    assert np.all(np.diff(ts) > 0)  # increasing: nothing twice
    assert np.diff(ts).max() <= 920 / 24000  # no hole wider than the one the reference leaves between chunks
    assert ts[0] == pytest.approx(318.5 / 24000) and ts[-1] > 10.3 - 0.05
    if overlap == 0:
        plain = _embedder(tiny, pool="none").embed(clip, 24000)
        np.testing.assert_array_equal(r.array, plain)
    else:  # frames in the middle of a chunk equal the chunk computed on its own
        hop = 96000 - round(overlap * 24000)
        own = _embedder(tiny, pool="none").embed(clip[hop:hop + 96000], 24000)
        centre = (hop + 48000 + 318.5) / 24000
        i = int(np.argmin(np.abs(ts - centre)))
        j = int(np.argmin(np.abs(318.5 / 24000 + np.arange(own.shape[0]) * 318 / 24000 - (ts[i] - hop / 24000))))
        np.testing.assert_array_equal(r.array[i], own[j])


def test_plan_chunks_rule(tiny):
    cfg = tiny.cfg
    plan = plan_chunks(193200, 96000, 0, cfg)
    assert [(s, n) for s, n, _, _ in plan] == [(0, 96000), (96000, 96000), (192000, 1200)]
    assert [(lo, hi) for _, _, lo, hi in plan] == [(0, 300), (0, 300), (0, 2)]
    plan = plan_chunks(200000, 96000, 48000, cfg)
    assert [s for s, *_ in plan] == [0, 48000, 96000, 144000]
    # the overlap [48000, 96000) of chunks 0 and 1 is split at 72000
    assert plan[0][3] == sum(1 for t in range(300) if 318 * t + 318.5 < 72000)


# --- other layouts and sizes ---------------------------------------------------------------
def _naive_forward(sd: dict, feats: torch.Tensor, heads: int, layer_out: int | None = None) -> torch.Tensor:
    """Independent per-head loop implementation of the spec (unbatched, float64)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = feats.double() @ sd["wav_encoder.post_net.weight"].T + sd["wav_encoder.post_net.bias"]
    t, d = x.shape
    pe = torch.zeros(t, d, dtype=torch.float64)
    for p in range(t):
        for i in range(0, d, 2):
            angle = p / (10000 ** (i / d))
            pe[p, i] = math.sin(angle)
            if i + 1 < d:
                pe[p, i + 1] = math.cos(angle)
    x = x + sd["masker.positional_encoder.scale"] * pe
    n_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visible_encoder.encoder_layers."))
    hd = d // heads

    def ln(y, name):
        return torch.nn.functional.layer_norm(y, (d,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    x0 = x1 = x
    for i in range(n_layers):
        p = f"visible_encoder.encoder_layers.{i}."
        q, k, v = (x0 @ sd[p + f"att_layer.{w}.weight"].T for w in ("wq", "wk", "wv"))
        att = torch.zeros_like(q)
        for h in range(heads):
            idx = [c for c in range(heads * hd) if c % heads == h]
            s = q[:, idx] @ k[:, idx].T / math.sqrt(hd)
            att[:, idx] = torch.softmax(s, dim=-1) @ v[:, idx]
        a = att @ sd[p + "att_layer.wo.weight"].T
        x0 = ln(x0 + a, p + "norm1")
        x1 = x1 + a
        hdn = torch.relu(x0 @ sd[p + "ff_layer.0.weight"].T + sd[p + "ff_layer.0.bias"])
        f = hdn @ sd[p + "ff_layer.2.weight"].T + sd[p + "ff_layer.2.bias"]
        x0 = ln(x0 + f, p + "norm2")
        x1 = x1 + f
        if layer_out == i:
            return x0
    return x0 + ln(x1, "visible_encoder.final_norm")


def test_large_heads_not_dividing_dim(tmp_path):
    """D = 64 with 12 heads: head width 5, q/k/v project to 60, out maps 60 -> 64 (like large: 1024/12)."""
    sd = random_encodecmae_state("mel", dim=64, layers=2, heads=12, ff_dim=96, seed=7)
    assert sd["visible_encoder.encoder_layers.0.att_layer.wq.weight"].shape == (60, 64)
    path = save_encodecmae_checkpoint(tmp_path / "large.pt", sd, encodecmae_gin(64, 2, 12, 96))
    model = load_mae(path)
    assert (model.cfg.heads, model.cfg.head_dim) == (12, 5)
    wav = synthetic_audio(1.3, seed=1)[0]
    feats = model.features(torch.from_numpy(wav)[None])
    ours = _embedder(model, pool="none").embed(wav, 24000)
    ref = _naive_forward(sd, feats[0], heads=12)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4, rtol=1e-4)
    ours0 = _embedder(model, pool="none", layer=0).embed(wav, 24000)
    np.testing.assert_allclose(ours0, _naive_forward(sd, feats[0], 12, layer_out=0).numpy(), atol=1e-4, rtol=1e-4)


def test_v1_folder_gives_the_same_outputs(tmp_path, fixture_dir, expected, tiny):
    ckpt = read_checkpoint(fixture_dir / "tiny_mel_st.pt")
    folder = save_encodecmae_checkpoint(tmp_path / "v1", ckpt.state, ckpt.config_text, layout="v1")
    raw = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    assert "feat_projector.weight" in raw and "positional_encoder.scale" in raw and "extra_head.layer.weight" in raw
    v1 = read_checkpoint(folder)
    assert v1.layout == "v1"
    model = build_model(v1)
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    out = _embedder(model, layer="all", pool="none").embed(expected["wav_b"], 24000)
    np.testing.assert_allclose(out, expected["all_b"], atol=ATOL, rtol=RTOL)


def test_encodec_front_end_matches_the_encodec_encoder(tmp_path):
    import encodec

    sd = random_encodecmae_state("ec", dim=32, layers=2, heads=4, ff_dim=48, seed=3)
    path = save_encodecmae_checkpoint(tmp_path / "ec.pt", sd, encodecmae_gin(32, 2, 4, 48, frontend="ec"))
    model = load_mae(path)
    assert (model.cfg.frontend, model.cfg.in_features, model.cfg.frame_rate) == ("ec", 128, 75.0)
    m = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    # the reference layout: its EncodecEncoder wraps encodec's SEANetEncoder, whose Sequential is .model
    seanet = {k[len("wav_encoder.encoder.model."):]: v for k, v in sd.items() if k.startswith("wav_encoder.encoder.")}
    assert set(seanet) == set(m.encoder.state_dict())
    m.encoder.load_state_dict(seanet)
    wav = torch.from_numpy(synthetic_audio(1.01, seed=4)[0])
    with torch.no_grad():
        ref = m.encoder(wav[None, None])[0].T  # [T, 128]
    ours = model.features(wav[None])[0]
    assert ours.shape == (math.ceil(wav.shape[0] / 320), 128) == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5, rtol=1e-4)
    emb = _embedder(model, pool="none").embed(wav.numpy(), 24000)
    np.testing.assert_allclose(emb, _naive_forward(sd, ref, heads=4).numpy(), atol=1e-4, rtol=1e-4)
    # checkpoints written with the SEANet keys one level up (audiotok train mae before 2026-12-03) load the same
    short = {("wav_encoder.encoder." + k[len("wav_encoder.encoder.model."):] if k.startswith("wav_encoder.encoder.")
              else k): v for k, v in sd.items()}
    old = load_mae(save_encodecmae_checkpoint(tmp_path / "ec_short.pt", short, encodecmae_gin(32, 2, 4, 48, "ec")))
    assert old.cfg.frontend == "ec"
    assert torch.equal(old.features(wav[None])[0], ours)
    # v1 layout of an EC model (wav_encoder.model.*)
    folder = save_encodecmae_checkpoint(tmp_path / "ec_v1", sd, encodecmae_gin(32, 2, 4, 48, "ec"), layout="v1")
    assert any(k.startswith("wav_encoder.model.model.") for k in torch.load(folder / "model.pt", weights_only=True)["state_dict"])
    np.testing.assert_array_equal(_embedder(load_mae(folder), pool="none").embed(wav.numpy(), 24000), emb)


def test_bf16_and_fp16_close_to_fp32(tiny, expected):
    wav = expected["wav_a"]
    ref = expected["last_a"]
    for dtype, tol in (("bfloat16", 0.25), ("float16", 0.05)):
        out = _embedder(tiny, pool="none", dtype=dtype).embed(wav, 24000)
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert np.abs(out - ref).max() < tol
        assert not np.array_equal(out, ref)


# --- errors -------------------------------------------------------------------------------
def test_strict_load_errors(tmp_path, fixture_dir):
    ckpt = read_checkpoint(fixture_dir / "tiny_mel_st.pt")
    cases = {
        "missing": ({k: v for k, v in ckpt.state.items() if k != "visible_encoder.encoder_layers.1.norm2.bias"},
                    "tensor for blocks.1.norm2.bias is missing"),
        "unexpected": ({**ckpt.state, "visible_encoder.extra.weight": torch.zeros(1)},
                       "unexpected tensor visible_encoder.extra.weight"),
        "ff not shared": ({**ckpt.state, "visible_encoder.encoder_layers.1.ff_layer.0.bias": torch.zeros(128)},
                          "differs from layer 0's copy"),
    }
    for name, (state, message) in cases.items():
        path = save_encodecmae_checkpoint(tmp_path / f"{name}.pt", state, ckpt.config_text)
        with pytest.raises(WeightsError, match=message):
            load_mae(path)
    bad_heads = ckpt.config_text.replace("NUM_ENCODER_HEADS = 4", "NUM_ENCODER_HEADS = 5")
    path = save_encodecmae_checkpoint(tmp_path / "heads.pt", ckpt.state, bad_heads)
    with pytest.raises(WeightsError, match="does not fit 5 heads"):
        load_mae(path)
    path = save_encodecmae_checkpoint(tmp_path / "noattn.pt", {k: v for k, v in ckpt.state.items() if "wq" not in k},
                                      ckpt.config_text)
    with pytest.raises(WeightsError, match="noattn.pt: the checkpoint has no .*wq.weight tensor"):
        load_mae(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not read .*junk.pt"):
        load_mae(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_mae(tmp_path / "nope.pt")


def test_api_rejects_samples_by_channels(tiny):
    with pytest.raises(UsageError, match=r"looks like \[samples, channels\]"):
        _embedder(tiny).embed(np.zeros((24000, 2), np.float32), 24000)


def test_layer_and_option_errors():
    assert resolve_layers("all", 3) == [0, 1, 2]
    assert resolve_layers(-1, 3) == [2] and resolve_layers("-3", 3) == [0] and resolve_layers(1, 3) == [1]
    for bad in (3, -4, "x"):
        with pytest.raises(UsageError):
            resolve_layers(bad, 3)


def test_gin_parser_reads_the_fixture_config(fixture_dir):
    macros, bindings = parse_gin(read_checkpoint(fixture_dir / "tiny_mel_st.pt").config_text)
    assert macros["MODEL_DIM"] == 64 and macros["NUM_ENCODER_HEADS"] == 4
    assert macros["QUANTIZER_WEIGHTS"][0] == pytest.approx(0.22407463) and len(macros["QUANTIZER_WEIGHTS"]) == 8
    assert bindings["encoder/MultiHeadAttention.num_heads"] == 4
    assert bindings["encoder/transformers.TransformerEncoder.ff_dim"] == 128
    assert bindings["MelspectrogramProcessor.norm_stats"] == [-6.12, 4.82]
    assert bindings["EncodecMAE.visible_encoder"] == "@encoder/encodecmae.models.transformers.TransformerEncoder"


# --- Hugging Face cache ---------------------------------------------------------------------
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "hf"
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_released_names_resolve_from_the_hf_cache(hf_cache, fixture_dir, tmp_path, expected):
    from audiotok import load_embedder
    from audiotok.weights import resolve_encodecmae

    fill_hf_cache(hf_cache, "lpepino/encodecmae-v2", {"mel256-ec-base_st.pt": fixture_dir / "tiny_mel_st.pt"})
    path = resolve_encodecmae("mel256-ec-base_st")
    assert path.name == "mel256-ec-base_st.pt" and str(hf_cache) in str(path)
    emb = load_embedder("mel256-ec-base_st", layer=-1, pool="none")
    assert (emb.model_name, emb.pooling, emb.dim, emb.sample_rate) == ("mel256-ec-base_st", "none", 64, 24000)
    assert emb.frame_rate == pytest.approx(24000 / 318)
    np.testing.assert_allclose(emb.embed(expected["wav_a"], 24000), expected["last_a"], atol=ATOL, rtol=RTOL)
    # a v1 repo: folder with model.pt + config.gin
    ckpt = read_checkpoint(fixture_dir / "tiny_mel_st.pt")
    v1 = save_encodecmae_checkpoint(tmp_path / "v1", ckpt.state, ckpt.config_text, layout="v1")
    fill_hf_cache(hf_cache, "lpepino/encodecmae-base", {"model.pt": v1 / "model.pt", "config.gin": v1 / "config.gin"})
    folder = resolve_encodecmae("base")
    assert (folder / "model.pt").is_file() and (folder / "config.gin").is_file()
    assert resolve_encodecmae("encodecmae-base") == folder


def test_missing_from_the_hf_cache_is_one_sentence(hf_cache):
    from audiotok.weights import resolve_encodecmae

    with pytest.raises(WeightsError) as err:
        resolve_encodecmae("mel256-ec-large")
    msg = str(err.value)
    assert "mel256-ec-large.pt" in msg and "lpepino/encodecmae-v2" in msg and "downloads are off" in msg
    assert "\n" not in msg
    with pytest.raises(WeightsError, match="unknown EnCodecMAE model 'foo'"):
        resolve_encodecmae("foo")
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_encodecmae("./missing/model.pt")


def test_import_audiotok_stays_light():
    import subprocess
    import sys

    code = "import sys, audiotok; assert 'torch' not in sys.modules; f = audiotok.load_embedder; assert callable(f)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
