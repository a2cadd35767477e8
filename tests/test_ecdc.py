"""``.ecdc`` read/write against the ``encodec`` package's own compress/decompress and its CLI.

Random-weight codecs and LMs sit under their official file names in a private torch hub cache
(``TORCH_HOME``), so the official code loads them offline (hashes are checked on download only).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from audiotok.errors import InputError
from audiotok.formats.ecdc import (
    EcdcContents,
    default_lm_loader,
    pack_codes,
    read_ecdc,
    segment_frames,
    unpack_codes,
    write_ecdc,
)
from audiotok.testing import save_encodec_checkpoint, synthetic_audio


def _random_lm(model_name: str, seed: int = 0):
    """A random LMModel with the hyper-parameters ``EncodecModel.get_lm_model`` uses."""
    from encodec.model import LMModel

    n_q, frame_rate = {"encodec_24khz": (32, 75), "encodec_48khz": (16, 150)}[model_name]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = LMModel(n_q, 1024, num_layers=5, dim=200, past_context=int(3.5 * frame_rate))
    lm.name = model_name.replace("encodec_", "encodec_lm_")  # official checkpoint key
    return lm.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the LM runs one tiny step per frame, and on a busy 2-core machine
    two threads make each step ~20x slower (spin-waiting), while one keeps it at ~15 ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def home(hub_cache, tmp_path_factory):
    """A private torch home: the session's random codecs (linked) plus random LMs."""
    home = tmp_path_factory.mktemp("ecdc_torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for f in (hub_cache / "hub" / "checkpoints").iterdir():
        (ckpt / f.name).symlink_to(f)
    for name in ("encodec_24khz", "encodec_48khz"):
        save_encodec_checkpoint(_random_lm(name), ckpt)
    return home


@pytest.fixture
def models_env(models, home, monkeypatch):
    """The models, with TORCH_HOME pointing at their cache (the official code reloads from it)."""
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    return models


@pytest.fixture(scope="module")
def models(home):
    """The official model classes loading the random weights from the private cache."""
    from encodec.compress import MODELS

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv("TORCH_HOME", str(home))
        warnings.simplefilter("ignore")
        return {name: MODELS[name]() for name in MODELS}


def _audio(model, seconds: float, extra: int = 0, seed: int = 3) -> torch.Tensor:
    n = int(seconds * model.sample_rate) + extra
    wav = synthetic_audio(n / model.sample_rate + 1, model.sample_rate, seed=seed, channels=model.channels)
    return torch.from_numpy(wav[:, :n].copy())


def _encode(model, wav):
    with torch.no_grad():
        frames = model.encode(wav[None])
    codes = [f[0][0].numpy() for f in frames]
    scales = [f[1].item() for f in frames] if model.normalize else None
    return frames, codes, scales


# (model, bandwidth kbps, seconds, extra samples, also check the official decompress output)
CASES = [
    ("encodec_24khz", 1.5, 0.5, 17, True),
    ("encodec_24khz", 6.0, 0.3, 0, False),
    ("encodec_24khz", 24.0, 0.3, 5, False),
    ("encodec_48khz", 3.0, 1.0, 801, True),  # 2 segments, the second one short
    ("encodec_48khz", 24.0, 0.4, 3, False),
]


@pytest.mark.parametrize("name,bandwidth,seconds,extra,check_audio", CASES)
def test_plain_matches_official_both_ways(models_env, name, bandwidth, seconds, extra, check_audio):
    from encodec.compress import compress, decompress

    model = models_env[name]
    model.set_target_bandwidth(bandwidth)
    wav = _audio(model, seconds, extra)
    frames, codes, scales = _encode(model, wav)
    assert [c.shape[1] for c in codes] == segment_frames(name, wav.shape[-1])

    official = compress(model, wav, use_lm=False)
    buf = io.BytesIO()
    write_ecdc(buf, name, wav.shape[-1], codes, scales)
    assert buf.getvalue() == official

    got = read_ecdc(io.BytesIO(official))
    assert isinstance(got, EcdcContents)
    assert (got.model_name, got.audio_length, got.n_codebooks, got.use_lm) == (
        name, wav.shape[-1], codes[0].shape[0], False)
    assert len(got.codes) == len(codes)
    for a, b in zip(got.codes, codes):
        assert a.dtype == np.int64 and np.array_equal(a, b)
    if model.normalize:
        assert got.scales == scales
    else:
        assert got.scales is None

    if not check_audio:  # equal bytes decode equally; the official decoder is run on a few cases
        return
    out, sr = decompress(buf.getvalue())
    with torch.no_grad():
        ref = model.decode(frames)[0, :, : wav.shape[-1]]
    assert sr == model.sample_rate and out.shape == wav.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,bandwidth,seconds", [("encodec_48khz", 6.0, 0.5)])
def test_official_cli_decodes_our_file(models_env, home, tmp_path, name, bandwidth, seconds):
    """``python -m encodec in.ecdc out.wav`` decodes what we wrote. torchaudio 2.9+ needs
    torchcodec to write wav files, which is not installed, so the subprocess swaps
    ``torchaudio.save`` for a soundfile writer with the same output (16-bit PCM); all the
    decoding is the CLI's own."""
    import soundfile as sf
    from encodec.compress import decompress

    model = models_env[name]
    model.set_target_bandwidth(bandwidth)
    wav = _audio(model, seconds, 11)
    _, codes, scales = _encode(model, wav)
    src, dst = tmp_path / "in.ecdc", tmp_path / "out.wav"
    with open(src, "wb") as f:
        write_ecdc(f, name, wav.shape[-1], codes, scales)

    shim = (
        "import runpy, soundfile, torchaudio\n"
        "def save(path, wav, sample_rate, encoding=None, bits_per_sample=None):\n"
        "    soundfile.write(str(path), wav.numpy().T, sample_rate, subtype='PCM_16')\n"
        "torchaudio.save = save\n"
        "runpy.run_module('encodec', run_name='__main__', alter_sys=True)\n"
    )
    env = {**os.environ, "TORCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", shim, str(src), str(dst)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data, sr = sf.read(str(dst), dtype="float32", always_2d=True)
    ref, _ = decompress(src.read_bytes())
    ref = ref.clamp(-0.99, 0.99).numpy().T
    assert sr == model.sample_rate and data.shape == ref.shape
    assert np.abs(data - ref).max() <= 1.5 / 32768


@pytest.mark.parametrize(
    "name,bandwidth,seconds",
    [("encodec_24khz", 6.0, 0.2), ("encodec_24khz", 24.0, 0.1), ("encodec_48khz", 3.0, 1.0)],  # 48 kHz: 2 segments
)
def test_lm_coded_matches_official(models_env, name, bandwidth, seconds):
    from encodec.compress import compress

    model = models_env[name]
    model.set_target_bandwidth(bandwidth)
    wav = _audio(model, seconds, 7)
    _, codes, scales = _encode(model, wav)
    official = compress(model, wav, use_lm=True)

    calls = []

    def loader(model_name):
        calls.append(model_name)
        return default_lm_loader(model_name)  # our resolution: TORCH_HOME cache, offline

    got = read_ecdc(io.BytesIO(official), lm_loader=loader)
    assert calls == [name] and got.use_lm
    assert len(got.codes) == len(codes)
    for a, b in zip(got.codes, codes):
        assert np.array_equal(a, b)
    assert got.scales == scales

    buf = io.BytesIO()
    write_ecdc(buf, name, wav.shape[-1], codes, scales, lm=default_lm_loader(name))
    assert buf.getvalue() == official

    # a truncated LM stream is reported, not silently padded
    cut = official[: len(official) // 2]
    with pytest.raises(InputError, match="ends before all codes were read; the file is truncated"):
        read_ecdc(io.BytesIO(cut), lm_loader=loader)


def test_lm_file_without_lm_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    from audiotok.errors import WeightsError

    data = _header(b'{"m": "encodec_24khz", "al": 2400, "nc": 2, "lm": true}') + b"\x00" * 8
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        read_ecdc(io.BytesIO(data))
    cached = tmp_path / "hub" / "checkpoints" / "encodec_lm_24khz-1608e3c0.th"
    assert str(info.value) == (
        "encodec_lm_24khz-1608e3c0.th is not in the torch hub cache and downloads are off; "
        f"put it at {cached} or pass --checkpoint PATH"
    )


def test_pack_matches_reference_bitpacker():
    from encodec.binary import BitPacker

    rng = np.random.default_rng(0)
    for k, t in [(1, 1), (2, 3), (3, 5), (32, 75), (16, 151), (4, 0)]:
        codes = rng.integers(0, 1024, (k, t))
        ref = io.BytesIO()
        packer = BitPacker(10, ref)
        for v in codes.T.reshape(-1).tolist():
            packer.push(v)
        packer.flush()
        assert pack_codes(codes) == ref.getvalue()
        assert np.array_equal(unpack_codes(pack_codes(codes), k, t), codes)


def _valid_file(nc: int = 2, frames_seconds: float = 0.1) -> bytes:
    al = int(frames_seconds * 24000)
    codes = [np.arange(nc * segment_frames("encodec_24khz", al)[0]).reshape(nc, -1) % 1024]
    buf = io.BytesIO()
    write_ecdc(buf, "encodec_24khz", al, codes)
    return buf.getvalue()


def _header(meta: bytes, version: int = 0, magic: bytes = b"ECDC") -> bytes:
    import struct

    return struct.pack("!4sBI", magic, version, len(meta)) + meta


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "this is not an .ecdc file (it does not start with the ECDC magic)"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "this is not an .ecdc file (it does not start with the ECDC magic)"),
        (_header(b"{}", version=1), "this .ecdc file has format version 1; only version 0 is supported"),
        (_header(b"{not json"), "the .ecdc header is not valid JSON; the file is corrupt"),
        (_header(b"[1, 2]"), "the .ecdc header is not a JSON object; the file is corrupt"),
        (_header(b'{"m": "encodec_24khz"}'), "the .ecdc header lacks al, nc, lm; the file is corrupt"),
        (_header(b'{"m": "encodec_96khz", "al": 10, "nc": 2, "lm": false}'),
         "the .ecdc file was made with model 'encodec_96khz', which is not supported; "
         "supported models are encodec_24khz, encodec_48khz"),
        (_header(b'{"m": "encodec_48khz", "al": 10, "nc": 32, "lm": false}'),
         "the .ecdc header gives 32 codebooks; encodec_48khz has 1 to 16"),
        (_header(b'{"m": "encodec_24khz", "al": -3, "nc": 2, "lm": false}'),
         "the .ecdc header gives audio length -3; it must be a positive whole number"),
        (b"ECDC\x00\xff\xff\xff\xff", "this .ecdc file announces a 4294967295-byte header; the file is corrupt"),
        (_header(b'{"m": "encodec_24khz", "al": 10, "nc": 2, "lm": false}')[:-5],
         "the .ecdc stream ends before all header bytes were read; the file is truncated"),
        # a huge announced length in a short file is reported as truncation, not allocated
        (_header(b'{"m": "encodec_24khz", "al": 100000000000, "nc": 32, "lm": false}') + b"\x00" * 100,
         "the .ecdc stream ends before all codes were read; the file is truncated"),
    ],
)
def test_bad_files_raise_input_error(data, message):
    with pytest.raises(InputError) as info:
        read_ecdc(io.BytesIO(data))
    assert str(info.value) == message


def test_truncated_codes_and_scales():
    data = _valid_file()
    assert read_ecdc(io.BytesIO(data)).codes[0].shape == (2, 8)
    for cut in (1, 5, 20):  # 20 bytes = all the codes
        with pytest.raises(InputError) as info:
            read_ecdc(io.BytesIO(data[:-cut]))
        assert str(info.value) == "the .ecdc stream ends before all codes were read; the file is truncated"

    # 48 kHz: truncated inside the second segment's scale
    al = 60000
    frames = segment_frames("encodec_48khz", al)
    assert frames == [150, 39]
    buf = io.BytesIO()
    write_ecdc(buf, "encodec_48khz", al, [np.zeros((2, t), dtype=np.int64) for t in frames], [0.5, 0.25])
    full = buf.getvalue()
    got = read_ecdc(io.BytesIO(full))
    assert got.scales == [0.5, 0.25] and [c.shape for c in got.codes] == [(2, 150), (2, 39)]
    first_end = len(full) - 4 - (2 * 39 * 10 + 7) // 8
    with pytest.raises(InputError, match="the file is truncated"):
        read_ecdc(io.BytesIO(full[: first_end + 2]))


def test_writer_rejects_codes_that_do_not_fit():
    ok = [np.zeros((2, 8), dtype=np.int64)]
    with pytest.raises(ValueError, match="shape"):
        write_ecdc(io.BytesIO(), "encodec_24khz", 2400, [np.zeros((2, 7), dtype=np.int64)])
    with pytest.raises(ValueError, match="1024"):
        write_ecdc(io.BytesIO(), "encodec_24khz", 2400, [ok[0] + 1024])
    with pytest.raises(ValueError, match="segment"):
        write_ecdc(io.BytesIO(), "encodec_24khz", 2400, ok * 2)
    with pytest.raises(ValueError, match="scale"):
        write_ecdc(io.BytesIO(), "encodec_48khz", 2400, [np.zeros((2, 8), dtype=np.int64)])
    with pytest.raises(ValueError, match="unknown EnCodec model"):
        write_ecdc(io.BytesIO(), "encodec_96khz", 2400, ok)
