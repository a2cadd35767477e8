"""DAC (dac_16khz, dac_24khz, dac_44khz): registry facts, parity with the official package's
``encode`` / ``decode`` (tests/fixtures/dac, made by its script beside it), strict loading of the
descript weights layout, encode / decode / Parquet through the CLI, codes independent of batching,
workers and shards, and the fixed chunking of long files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotok.codecs.dac import Chunking, DacCodec, DacDecoder, DacEncoder
from audiotok.codecs.layout import LAYOUTS
from audiotok.errors import UsageError
from audiotok.formats.codes import EncodedItem
from audiotok.registry import get_codec
from audiotok.testing import save_dac_checkpoint, synthetic_audio

from .conftest import run_in_batches, shared_path, write_wav

FIXTURE = Path(__file__).parent / "fixtures" / "dac"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Random-weight official-layout checkpoints of the three models (small channel counts)."""
    root = tmp_path_factory.mktemp("dac")
    return {m: save_dac_checkpoint(root / f"{m}.pth", m, seed=i) for i, m in
            enumerate(("dac_16khz", "dac_24khz", "dac_44khz"))}


def _top(model: str) -> str:
    return f"{get_codec(model).bandwidths[-1]!r}"  # every codebook (the exact bandwidth)


def _codes(path) -> np.ndarray:
    with np.load(path) as z:
        return z["codes"].copy()


def test_dac_facts_in_the_registry():
    s16, s24, s44 = (get_codec(f"dac_{k}khz") for k in (16, 24, 44))
    assert (s16.sample_rate, s16.frame_rate, s16.hop, s16.n_q, s16.codebook_size) == (16000, 50, 320, 12, 1024)
    assert (s24.sample_rate, s24.frame_rate, s24.hop, s24.n_q) == (24000, 75, 320, 32)
    assert (s44.sample_rate, s44.frame_rate, s44.hop, s44.n_q) == (44100, 86.1328125, 512, 9)
    for s in (s16, s24, s44):
        assert s.channels == 1 and not s.ecdc and [s.n_codebooks(b) for b in s.bandwidths] == list(range(1, s.n_q + 1))
    assert (s16.bandwidths[-1], s24.bandwidths[-1], round(s44.bandwidths[-1], 2)) == (6.0, 24.0, 7.75)
    assert (s16.checkpoint, s24.checkpoint, s44.checkpoint) == ("weights_16khz.pth", "weights_24khz.pth", "weights_44khz.pth")
    base = "https://github.com/descriptinc/descript-audio-codec/releases/download/"
    assert s44.weights_url == base + "0.0.1/weights.pth" and s24.weights_url == base + "0.0.4/weights_24khz.pth"
    assert s16.weights_url == base + "0.0.5/weights_16khz.pth"
    # whole frames: ceil(n / hop), where the float expression would say 14 for 6656 = 13 * 512 samples
    assert s44.segment_frames(6656) == [13] and s44.segment_frames(6657) == [14] and s16.segment_frames(1) == [1]
    # a bandwidth as printed (or rounded) names the exact one
    assert s44.check_bandwidth(7.75) == s44.check_bandwidth(7.75195) == 9 * 44100 / 512 * 10 / 1000
    assert s44.n_codebooks(s44.check_bandwidth(0.86)) == 1 and s24.check_bandwidth(6) == 6.0
    with pytest.raises(UsageError, match="not valid for dac_44khz"):
        s44.check_bandwidth(7.7)


# --- parity with the official package ----------------------------------------------------------

def _use_layout(codec, layout: str) -> None:
    codec.model.encoder.use_layout(layout)
    codec.model.decoder.use_layout(layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clip", range(4))
def test_codes_and_audio_equal_the_official_encode_and_decode(clip, layout):
    """The fixture: official ``model.encode(model.preprocess(x, 44100))`` codes and
    ``model.decode(quantizer.from_codes(codes))`` audio of 1 s of three shared recordings and a
    synthetic signal, on a random-weight model saved by the official ``model.save``. Loaded
    strictly through audiotok; the audio goes through the same adapter as ``encode``'s. In the
    official layout and channels last (the CPU's default)."""
    from audiotok import Encoder

    ref = np.load(FIXTURE / "parity.npz")
    x = _fixture_input(str(ref["names"][clip]), float(ref["offsets"][clip]))
    spec = get_codec("dac_44khz")
    enc = Encoder("dac_44khz", bandwidth=spec.bandwidths[-1], checkpoint=FIXTURE / "weights_small.pth", device="cpu")
    _use_layout(enc.codec, layout)
    item = enc.encode(x, 44100)
    want = ref[f"codes{clip}"]
    assert item.codes.shape == want.shape == (9, -(-x.shape[0] // 512))
    assert (item.codes == want).all(0).mean() >= 0.999
    wav = enc.codec.decoder().decode(item)
    assert wav.shape == (1, x.shape[0])
    np.testing.assert_allclose(wav[0], ref[f"decoded{clip}"], atol=1e-4, rtol=0)
    # fewer codebooks: the official encode's first n_q rows
    few = Encoder("dac_44khz", bandwidth=spec.bandwidths[2], checkpoint=FIXTURE / "weights_small.pth", device="cpu")
    _use_layout(few.codec, layout)
    few = few.encode(x, 44100)
    assert (few.codes == want[:3]).all(0).mean() >= 0.999


def test_channels_last_is_as_accurate_as_the_official_layout():
    """Against the same network computed in float64, the channels-last encoder's latent and
    decoder's audio carry at most 1.4x the rounding error of the official float32 layout's (measured
    1.09x and 1.17-1.19x; with oneDNN's channels-last kernel on the 7-tap layers of 64 and 128
    channels the encoder's was 1.8x: ``codecs/dac.ENCODER_GEMM_REDUCTION``). At the released encoder
    width and half the released decoder's, one torch thread."""
    import copy

    from audiotok.codecs.dac import DacConfig, Decoder, Encoder, WNConv
    from audiotok.testing import dac_kwargs

    config = DacConfig.from_kwargs(dac_kwargs("dac_44khz", encoder_dim=64, decoder_dim=768), "test")
    torch.manual_seed(3)
    x = torch.from_numpy(synthetic_audio(0.5, config.sample_rate, seed=8)[None, :, :22016])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for net, inp in ((Encoder(config), x), (Decoder(config), torch.randn(1, config.latent, 24))):
            net.eval()
            for m in net.modules():
                if isinstance(m, WNConv):
                    torch.nn.init.normal_(m.weight_v, std=0.05)
                    m.fold()
            with torch.inference_mode():
                exact = copy.deepcopy(net).double()(inp.double())
                official = net(inp)
                net.use_layout("nwc")
                ours = net(inp)
            assert ours.shape == official.shape == exact.shape

            e_ours, e_official = (float((y.double() - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())
                                  for y in (ours, official))
            assert e_ours <= 1.4 * e_official, (type(net).__name__, e_ours, e_official)
    finally:
        torch.set_num_threads(threads)


def test_channels_last_on_the_cpu_recorded_and_one_weight_held(ckpt):
    """On the CPU both networks compute channels last, say so in the encoder's and decoder's
    numerics, and each convolution holds its folded weight once (for that layout only)."""
    from audiotok.codecs.dac import WNConv

    spec = get_codec("dac_44khz")
    codec = DacCodec(spec, ckpt["dac_44khz"])
    assert codec.encoder(spec.bandwidths[0]).numerics()["dac_encoder_layout"] == "nwc"
    assert codec.decoder().numerics()["dac_decoder_layout"] == "nwc"
    for net in (codec.model.encoder, codec.model.decoder):
        for m in net.modules():
            if isinstance(m, WNConv):
                assert m.weight is None and (m.weight_nwc.conv is None) != (m.weight_nwc.gemm is None)
    codec.model.encoder.use_layout("ncw")
    assert codec.encoder(spec.bandwidths[0]).numerics()["dac_encoder_layout"] == "ncw"
    conv = codec.model.encoder.block[0]
    assert conv.weight is not None and conv.weight_nwc is None


def _fixture_input(name: str, offset: float, sr: int = 44100) -> np.ndarray:
    """1 s of the fixture's input as make_fixture.py read it: a shared recording (at 44.1 kHz mono
    through audiotok's reader) or ``synthetic:SEED``, rounded to 16-bit values."""
    if name.startswith("synthetic:"):
        x = synthetic_audio(1.0 + offset, sr, seed=int(name.split(":")[1]))[0]
    else:
        from audiotok.formats import audio

        x = audio.read(str(shared_path("audio", name)), sample_rate=sr, channels=1)[0][0]
    a = int(offset * sr)
    x = x[a:a + sr]
    return (np.round(np.clip(x, -1, 32767 / 32768) * 32768) / 32768).astype(np.float32)


# --- strict loading -------------------------------------------------------------------------------

def test_weights_are_loaded_strictly_and_refused_in_one_sentence(cli, tmp_path, ckpt):
    write_wav(tmp_path / "in" / "a.wav", 0.3, sr=16000)
    good = torch.load(ckpt["dac_16khz"], weights_only=True)

    def refused(name, blob=None, raw=None, model="dac_16khz"):
        path = tmp_path / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            torch.save(blob, path)
        r = cli("encode", tmp_path / "in", "-o", tmp_path / f"o_{name}", "-m", model, "-b", _top(model),
                "--checkpoint", path, "-q")
        assert r.code == 3 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r
        return r.err

    assert "could not read" in refused("cut.pth", raw=ckpt["dac_16khz"].read_bytes()[:5000])
    missing = {**good, "state_dict": {k: v for k, v in good["state_dict"].items() if "quantizers.11" not in k}}
    assert "does not hold the DAC weights" in refused("missing.pth", missing) and "Missing key" in refused(
        "missing2.pth", missing)
    extra = {**good, "state_dict": {**good["state_dict"], "encoder.block.0.weight": torch.zeros(1)}}
    assert "Unexpected key" in refused("extra.pth", extra)
    shape = {**good, "state_dict": {**good["state_dict"], "quantizer.quantizers.0.codebook.weight": torch.zeros(512, 8)}}
    assert "size mismatch" in refused("shape.pth", shape)
    assert "descript layout" in refused("plain.pth", good["state_dict"])  # a bare state dict (no metadata)
    assert "no metadata kwargs" in refused("nometa.pth", {"state_dict": good["state_dict"], "metadata": {}})
    nan = {**good, "state_dict": {**good["state_dict"]}}
    nan["state_dict"]["encoder.block.0.bias"] = torch.full_like(good["state_dict"]["encoder.block.0.bias"], float("nan"))
    assert "NaN" in refused("nan.pth", nan)
    err = refused("other.pth", raw=ckpt["dac_16khz"].read_bytes(), model="dac_44khz")  # 16 kHz weights for 44.1
    assert "holds a DAC model of 16000 Hz" in err and "releases/download/0.0.1/weights.pth" in err
    # no file given and none cached, offline: names the file and where to put it
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "o_none", "-m", "dac_16khz", "-b", "6", "-q")
    assert r.code == 3 and "weights_16khz.pth" in r.err and "--checkpoint" in r.err, r


# --- the CLI end to end ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["dac_16khz", "dac_44khz"])
def test_encode_decode_and_parquet_end_to_end(cli, tmp_path, ckpt, model):
    spec = get_codec(model)
    src = tmp_path / "in"
    lens = {"a.wav": (0.9, 22050), "b/c.wav": (0.013, 16000), "d.flac": (1.7, 44100)}
    for name, (sec, sr) in lens.items():
        write_wav(src / name, sec, sr=sr, seed=len(name))
    r = cli("encode", src, "-o", tmp_path / "codes", "-m", model, "-b", _top(model), "--checkpoint", ckpt[model],
            "-q", "--jsonl")
    assert r.code == 0, r
    recs = {Path(x["input"]).name: x for x in map(json.loads, r.out.splitlines())}
    from audiotok.formats import audio

    for name in lens:
        out = tmp_path / "codes" / Path(name).with_suffix(".npz")
        wav, _ = audio.read(str(src / name), spec.sample_rate, 1)
        n = wav.shape[-1]
        with np.load(out) as z:
            assert z["codes"].shape == (spec.n_q, -(-n // spec.hop)) and z["codes"].dtype == np.int16
            assert int(z["n_samples"]) == n and str(z["model"]) == model and float(z["frame_rate"]) == spec.frame_rate
            num = json.loads(str(z["settings"]))["numerics"]
        assert num["dac_whole_seconds"] == pytest.approx(10, abs=0.02) and num["dac_chunk_seconds"] == pytest.approx(8, abs=0.02)
        assert num["dac_context_seconds"] == pytest.approx(1, abs=0.02)
        assert recs[Path(name).name]["numerics"]["dac_chunk_frames"] == num["dac_chunk_frames"]
        # the file's codes are the adapter's on the same audio, alone
        codec = DacCodec(spec, ckpt[model])
        direct = codec.encoder(spec.bandwidths[-1]).encode(wav)
        np.testing.assert_array_equal(_codes(out), direct.codes)
    r = cli("decode", tmp_path / "codes", "-o", tmp_path / "wav", "--checkpoint", ckpt[model], "-q")
    assert r.code == 0, r
    for name in lens:
        out = tmp_path / "wav" / Path(name).with_suffix(".wav")
        info = sf.info(str(out))
        with np.load(tmp_path / "codes" / Path(name).with_suffix(".npz")) as z:
            assert (info.samplerate, info.channels, info.frames) == (spec.sample_rate, 1, int(z["n_samples"]))
    # Parquet shards hold the same codes, and decode reads them back
    r = cli("encode", src, "-o", tmp_path / "pq", "-m", model, "-b", _top(model), "--checkpoint", ckpt[model],
            "--format", "parquet", "-q")
    assert r.code == 0, r
    import pandas as pd

    df = pd.read_parquet(tmp_path / "pq" / "data").set_index("id")
    for name in lens:
        np.testing.assert_array_equal(np.stack(df.loc[name, "codes"]),
                                      _codes(tmp_path / "codes" / Path(name).with_suffix(".npz")))
    r = cli("decode", tmp_path / "pq", "-o", tmp_path / "pqwav", "--checkpoint", ckpt[model], "-q")
    assert r.code == 0, r
    a, _ = sf.read(str(tmp_path / "wav" / "a.wav"))
    b, _ = sf.read(str(next((tmp_path / "pqwav").rglob("a*.wav"))))
    np.testing.assert_array_equal(a, b)
    # .ecdc holds only EnCodec codes
    r = cli("encode", src, "-o", tmp_path / "e", "-m", model, "-b", _top(model), "--checkpoint", ckpt[model],
            "-f", "ecdc", "-q")
    assert r.code == 2 and "ecdc holds only EnCodec codes" in r.err


def test_24khz_model_and_fewer_codebooks(cli, tmp_path, ckpt):
    write_wav(tmp_path / "in" / "x.wav", 0.5, sr=24000, seed=4)
    spec = get_codec("dac_24khz")
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "all", "-m", "dac_24khz", "-b", "24", "--checkpoint",
            ckpt["dac_24khz"], "-q")
    assert r.code == 0, r
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "few", "-m", "dac_24khz", "-b", "6", "--checkpoint",
            ckpt["dac_24khz"], "-q")
    assert r.code == 0, r
    full, few = _codes(tmp_path / "all" / "x.npz"), _codes(tmp_path / "few" / "x.npz")
    assert full.shape == (32, 38) and few.shape == (spec.n_codebooks(6.0), 38) == (8, 38)
    np.testing.assert_array_equal(few, full[:8])  # residual quantization: a prefix of the codebooks
    r = cli("decode", tmp_path / "few", "-o", tmp_path / "wav", "--checkpoint", ckpt["dac_24khz"], "-q")
    assert r.code == 0 and sf.info(str(tmp_path / "wav" / "x.wav")).frames == 12000
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "bad", "-m", "dac_24khz", "-b", "5", "--checkpoint",
            ckpt["dac_24khz"], "-q")
    assert r.code == 2 and "not valid for dac_24khz" in r.err


# --- codes independent of batching, workers, shards ---------------------------------------------

def test_adapter_codes_independent_of_batches_and_neighbours(ckpt):
    spec = get_codec("dac_16khz")
    codec = DacCodec(spec, ckpt["dac_16khz"])
    wavs = [synthetic_audio(s, 16000, seed=i) for i, s in enumerate([0.07, 0.4, 1.0, 1.7, 0.9, 2.3])]
    results = []
    for size in (1, 2, 6):
        results.append(run_in_batches(codec.encoder(6.0), list(enumerate(wavs)), size))
    for i, w in enumerate(wavs):
        assert results[0][i].codes.shape == (12, -(-w.shape[-1] // 320))
        for other in results[1:]:
            np.testing.assert_array_equal(results[0][i].codes, other[i].codes)
    assert len({tuple(np.unique(r.codes[0])) for r in results[0].values()}) > 1  # codes vary with the audio


def test_cli_codes_identical_across_batch_seconds_workers_and_shards(cli, tmp_path, ckpt):
    src = tmp_path / "in"
    for i, s in enumerate([0.3, 1.1, 2.6, 0.05, 1.9]):
        write_wav(src / f"d{i % 2}" / f"f{i}.wav", s, sr=22050, seed=10 + i)
    base = ["-m", "dac_16khz", "--checkpoint", ckpt["dac_16khz"], "-q"]
    runs = {"b1w0": ["--batch-seconds", "0.1", "--workers", "0"], "b3w2": ["--batch-seconds", "3", "--workers", "2"],
            "big": ["--batch-seconds", "1000", "--workers", "1"]}
    for name, args in runs.items():
        assert cli("encode", src, "-o", tmp_path / name, *base, *args).code == 0
    for k in range(2):
        assert cli("encode", src, "-o", tmp_path / "shards", *base, "--shard", f"{k}/2").code == 0
    ref = {p.relative_to(tmp_path / "big"): _codes(p) for p in (tmp_path / "big").rglob("*.npz")}
    assert len(ref) == 5
    for name in ("b1w0", "b3w2", "shards"):
        got = {p.relative_to(tmp_path / name): _codes(p) for p in (tmp_path / name).rglob("*.npz")}
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}/{k}")


# --- long files: fixed chunking -----------------------------------------------------------------

def test_chunks_are_fixed_by_the_length_and_cover_every_frame():
    c = Chunking(whole=861, chunk=689, context=86)
    assert c.spans(861) == [(0, 861, 0, 861)]
    spans = c.spans(2000)
    assert [(s, e) for _, _, s, e in spans] == [(0, 689), (689, 1378), (1378, 2000)]
    assert [(lo, hi) for lo, hi, _, _ in spans] == [(0, 775), (603, 1464), (1292, 2000)]
    assert Chunking.for_spec(get_codec("dac_44khz")) == c  # the documented 10 s / 8 s / 1 s
    assert Chunking.for_spec(get_codec("dac_16khz")) == Chunking(500, 400, 50)


@pytest.mark.parametrize("model", ["dac_16khz", "dac_44khz"])
def test_chunked_codes_and_audio_equal_whole_file_and_memory_is_bounded(ckpt, model):
    """A file longer than the whole-file limit is cut into chunks with context wider than the
    receptive field: its codes equal the whole-file codes (float rounding aside: >= 99.9 % of
    frames), its decoded audio the whole-file decode, and no model call sees more than a chunk."""
    spec = get_codec(model)
    codec = DacCodec(spec, ckpt[model])
    small = Chunking(whole=40, chunk=30, context=12)  # the receptive field is 8 frames (encoder), 10 (decoder)
    x = synthetic_audio(130 / spec.frame_rate + 0.003, spec.sample_rate, seed=3)
    whole = DacEncoder(codec.model, spec, spec.bandwidths[-1], torch.device("cpu"), Chunking(10 ** 6, 1, 1))
    chunked = DacEncoder(codec.model, spec, spec.bandwidths[-1], torch.device("cpu"), small)
    seen = []
    real_encode = codec.model.encode
    codec.model.encode = lambda seg, n_q: (seen.append(seg.shape[-1]), real_encode(seg, n_q))[1]
    try:
        a, b = whole.encode(x), chunked.encode(x)
    finally:
        del codec.model.encode
    assert a.codes.shape == b.codes.shape == (spec.n_q, 131)
    assert (a.codes == b.codes).all(0).mean() >= 0.999
    assert seen[0] == 131 * spec.hop and max(seen[1:]) == (30 + 2 * 12) * spec.hop and len(seen) == 1 + 5
    wa = DacDecoder(codec.model, spec, torch.device("cpu"), Chunking(10 ** 6, 1, 1)).decode(a)
    wb = DacDecoder(codec.model, spec, torch.device("cpu"), small).decode(a)
    assert wa.shape == wb.shape == (1, x.shape[-1])
    np.testing.assert_allclose(wb, wa, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_encoder_head_in_tiles_equals_the_whole_computation(ckpt, layout, model="dac_44khz"):
    """The encoder's first layers computed in tiles with a halo (on the CPU, always) give the
    whole computation's latent bit for bit with one torch thread per call (what lanes run), at the
    released channel count (64: the kernels the released models run), with the default and a small
    tile; with two threads per call up to float rounding; short inputs are not tiled. In both
    layouts."""
    from audiotok.codecs.dac import TILE_HALO, TILE_SAMPLES, DacConfig, Encoder, WNConv
    from audiotok.testing import dac_kwargs

    config = DacConfig.from_kwargs(dac_kwargs(model, encoder_dim=64), "test")
    torch.manual_seed(1)
    enc = Encoder(config).eval()
    for m in enc.modules():
        if isinstance(m, WNConv):
            torch.nn.init.normal_(m.weight_v, std=0.05)
            m.fold()
    enc.use_layout(layout)
    n = (TILE_SAMPLES * 2 + 3 * TILE_HALO) // config.hop * config.hop  # three tiles, the last one short
    x = torch.from_numpy(synthetic_audio(n / config.sample_rate, config.sample_rate, seed=5)[None, :, :n])
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            for per_call in (1, 2):
                torch.set_num_threads(per_call)
                enc.tiling = None
                whole = enc(x)
                for tile, halo in ((TILE_SAMPLES, TILE_HALO), (4096, 512))[:3 - per_call]:
                    enc.tile_for_inference(tile, halo)
                    assert enc.tiling[0] + 2 * enc.tiling[1] < n
                    got = enc(x)
                    if per_call == 1:
                        assert torch.equal(got, whole), (tile, halo)
                    else:
                        assert float((got - whole).abs().max() / whole.abs().max()) < 1e-4, (tile, halo)
            short = x[..., :TILE_SAMPLES]
            enc.tiling = None
            whole = enc(short)
            enc.tile_for_inference()
            assert torch.equal(enc(short), whole)
    finally:
        torch.set_num_threads(threads)
    codec = DacCodec(get_codec(model), ckpt[model])
    assert codec.model.encoder.tiling is not None  # on for inference on the CPU, recorded in outputs
    assert codec.encoder(get_codec(model).bandwidths[0]).numerics()["dac_encoder_tile"] == f"{TILE_SAMPLES}+{TILE_HALO}"


def test_long_file_through_the_cli_is_chunked_and_decodes(cli, tmp_path, ckpt):
    """12.5 s at 16 kHz (past the 10 s whole-file limit): 2 chunks, every frame present, and the
    chunked codes agree with one whole-file call."""
    n = 12 * 16000 + 8077
    path = tmp_path / "in" / "long.wav"
    path.parent.mkdir()
    sf.write(str(path), synthetic_audio(n / 16000, 16000, seed=8)[0], 16000, subtype="FLOAT")
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "o", "-m", "dac_16khz", "--checkpoint", ckpt["dac_16khz"], "-q")
    assert r.code == 0, r
    codes = _codes(tmp_path / "o" / "long.npz")
    assert codes.shape == (12, -(-n // 320))
    spec = get_codec("dac_16khz")
    codec = DacCodec(spec, ckpt["dac_16khz"])
    x, _ = sf.read(str(path), dtype="float32")
    whole = DacEncoder(codec.model, spec, 6.0, torch.device("cpu"), Chunking(10 ** 6, 1, 1)).encode(x[None])
    assert (whole.codes == codes).all(0).mean() >= 0.999
    r = cli("decode", tmp_path / "o", "-o", tmp_path / "w", "--checkpoint", ckpt["dac_16khz"], "-q")
    assert r.code == 0 and sf.info(str(tmp_path / "w" / "long.wav")).frames == n


def test_decode_refuses_codes_that_do_not_fit(ckpt):
    spec = get_codec("dac_16khz")
    dec = DacCodec(spec, ckpt["dac_16khz"]).decoder()
    ((_, err),) = dec.run([(0, EncodedItem(np.zeros((12, 5), np.int16), None, 320 * 7))])
    assert "5 frames of codes do not fit 2240 samples" in str(err)
    ((_, err),) = dec.run([(0, EncodedItem(np.zeros((13, 7), np.int16), None, 320 * 7))])
    assert "13 codebooks" in str(err)


def test_dac_is_imported_only_when_chosen(tmp_path):
    """The registry, option checks and a dry run know the DAC models without importing torch or
    audiotok.codecs.dac; a rounded bandwidth is accepted there too."""
    import os
    import subprocess
    import sys

    from .conftest import REPO

    write_wav(tmp_path / "in" / "a.wav", 0.2, sr=44100)
    code = ("import sys\nfrom audiotok.cli import main\n"
            "try:\n    main(['encode', sys.argv[1], '-o', sys.argv[2], '-m', 'dac_44khz', '-b', '7.75', '--dry-run'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('torch' in sys.modules, 'audiotok.codecs.dac' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in"), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False False" and "todo" in proc.stdout


@pytest.mark.slow
def test_codes_identical_across_fresh_processes(tmp_path, ckpt):
    """Two fresh processes with other batching and workers write the same codes (nothing in the
    DAC path is chosen at run time: no timed kernels, no shape from the batch)."""
    import os
    import subprocess
    import sys

    from .conftest import REPO

    src = tmp_path / "in"
    for i, (sec, sr) in enumerate([(0.05, 16000), (0.7, 22050), (2.3, 44100), (11.0, 16000)]):
        write_wav(src / f"c{i}.wav", sec, sr=sr, seed=40 + i)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUDIOTOK_OFFLINE": "1"}
    for name, args in {"a": ["--workers", "0", "--batch-seconds", "1000"],
                       "b": ["--workers", "2", "--batch-seconds", "0.5"]}.items():
        proc = subprocess.run([sys.executable, "-m", "audiotok", "encode", str(src), "-o", str(tmp_path / name),
                               "-m", "dac_16khz", "--checkpoint", str(ckpt["dac_16khz"]), "--quiet", *args],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for p in sorted((tmp_path / "a").glob("*.npz")):
        np.testing.assert_array_equal(_codes(p), _codes(tmp_path / "b" / p.name), err_msg=p.name)
    assert _codes(tmp_path / "a" / "c3.npz").shape == (12, 550)  # 11 s: past the whole-file limit, chunked
