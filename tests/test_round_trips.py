"""Round trips between the commands: decode reads Parquet shards, score reads .ecdc, and codes
files whose metadata disagrees with their arrays are refused."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiotok.errors import InputError
from audiotok.formats.codes import EncodedItem, read_codes, write_codes

from .conftest import write_wav


@pytest.fixture
def clips(tmp_path):
    root = tmp_path / "clips"
    write_wav(root / "a.wav", 0.7, seed=1)
    write_wav(root / "b" / "c.flac", 0.4, sr=16000, seed=2)
    return root


def test_decode_reads_parquet_shards_like_npz(cli, clips, tmp_path):
    """`decode DS/data` (or one shard) writes one file per row, named by the row's id, equal to the
    audio decoded from the .npz of the same input; the manifest names the shard and the row."""
    assert cli("encode", clips, "-o", tmp_path / "npz", "-q").code == 0
    assert cli("encode", clips, "-o", tmp_path / "ds", "-q", "--format", "parquet", "--shard-mb", "0.001").code == 0
    assert cli("decode", tmp_path / "npz", "-o", tmp_path / "from_npz", "-q").code == 0
    r = cli("decode", tmp_path / "ds" / "data", "-o", tmp_path / "from_pq", "-q", "--jsonl")
    assert r.code == 0, r
    got = sorted(p.relative_to(tmp_path / "from_pq").as_posix() for p in (tmp_path / "from_pq").rglob("*.wav"))
    assert got == ["a.wav", "b/c.wav"]
    for name in got:
        np.testing.assert_array_equal(sf.read(tmp_path / "from_pq" / name)[0], sf.read(tmp_path / "from_npz" / name)[0])
    recs = {x["row"]: x for x in map(json.loads, r.out.splitlines())}
    assert set(recs) == {"a.wav", "b/c.flac"} and all(x["input"].endswith(".parquet") for x in recs.values())
    assert recs["a.wav"]["output"] == str(tmp_path / "from_pq" / "a.wav") and recs["a.wav"]["codec"] == "encodec_24khz"
    r = cli("decode", tmp_path / "ds" / "data", "-o", tmp_path / "from_pq", "--jsonl", "-q")  # a rerun skips both
    assert r.code == 0 and [json.loads(x)["status"] for x in r.out.splitlines()] == ["skipped", "skipped"]
    r = cli("decode", tmp_path / "ds", "-o", tmp_path / "one", "-q", "--exclude", "b/*", "--dry-run")
    assert r.code == 0 and len(r.out.splitlines()) == 2 and r.out.splitlines()[1].startswith("exclude ")


def test_score_reads_ecdc_like_npz(cli, offline_cache, clips, tmp_path):
    from audiotok.testing import save_random_lm_checkpoint

    ckpt = save_random_lm_checkpoint(tmp_path / "tok.pt", offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th")
    for fmt in ("npz", "ecdc"):
        assert cli("encode", clips, "-o", tmp_path / fmt, "-q", "-f", fmt).code == 0
    scores = {}
    for fmt in ("npz", "ecdc"):
        r = cli("score", tmp_path / fmt, "--checkpoint", ckpt, "--device", "cpu", "-q")
        assert r.code == 0, r
        scores[fmt] = {Path(x["input"]).stem: x["nll"] for x in map(json.loads, r.out.splitlines())}
    assert scores["ecdc"] == scores["npz"] and set(scores["npz"]) == {"a", "c"}
    r = cli("score", tmp_path / "ecdc" / "a.ecdc", "--checkpoint", ckpt, "--device", "cpu", "-q")
    assert r.code == 0 and json.loads(r.out)["nll"] == scores["npz"]["a"], r


def _npz(tmp_path, **change) -> str:
    item = EncodedItem(np.arange(8 * 38, dtype=np.int16).reshape(8, 38) % 1024, None, 12000)
    buf = io.BytesIO()
    write_codes(buf, "npz", item, "encodec_24khz", 6.0, "a.wav")
    with np.load(io.BytesIO(buf.getvalue())) as z:
        fields = {k: z[k] for k in z.files}
    fields.update({k: np.asarray(v) for k, v in change.items()})
    path = tmp_path / "x.npz"
    np.savez(path, **fields)
    return str(path)


@pytest.mark.parametrize("change, message", [
    ({"bandwidth": np.float32(24.0)}, "declares bandwidth 24 kbps (32 codebooks) but holds 8 codebooks"),
    ({"bandwidth": np.float32(5.0)}, "declares bandwidth 5 kbps, which encodec_24khz does not have"),
    ({"n_q": 4}, "declares 4 codebooks (n_q) but holds 8"),
    ({"sample_rate": 48000}, "declares a sample rate of 48000 Hz but encodec_24khz runs at 24000 Hz"),
    ({"frame_rate": 150.0}, "declares 150 frames per second but encodec_24khz has 75"),
    ({"settings": json.dumps({"model": "encodec_24khz", "bandwidth": 12.0})},
     "records bandwidth 12 in its settings but declares 6"),
])
def test_codes_whose_metadata_disagrees_with_the_arrays_are_refused(tmp_path, change, message):
    assert read_codes(_npz(tmp_path)).bandwidth == 6.0  # the file as written reads
    with pytest.raises(InputError, match=re.escape(message) + r".*; the file is corrupt or was edited"):
        read_codes(_npz(tmp_path, **change))


def test_decode_refuses_a_file_declaring_another_bandwidth(cli, tmp_path):
    write_wav(tmp_path / "in" / "a.wav", 0.5, seed=4)
    assert cli("encode", tmp_path / "in", "-o", tmp_path / "tok", "-q").code == 0
    with np.load(tmp_path / "tok" / "a.npz") as z:
        fields = {k: z[k] for k in z.files}
    np.savez(tmp_path / "tok" / "a.npz", **{**fields, "bandwidth": np.float32(24.0)})
    r = cli("decode", tmp_path / "tok", "-o", tmp_path / "wav", "-q")
    assert r.code == 1 and "a.npz: declares bandwidth 24 kbps (32 codebooks) but holds 8 codebooks" in r.err, r
    assert not (tmp_path / "wav" / "a.wav").exists()


@pytest.mark.parametrize("fmt", ["npz", "ecdc"])
def test_lengths_where_float_frame_counts_round_up_still_round_trip(cli, tmp_path, fmt):
    """6720 samples at 24 kHz are 21 frames (ceil(6720 / 320)); ceil(6720 / 24000 * 75) in floats
    is 22. Encode wrote 21 and decode refused them as corrupt; now every format agrees on 21."""
    from audiotok.registry import CODECS

    assert CODECS["encodec_24khz"].segment_frames(6720) == [21]
    assert CODECS["encodec_48khz"].segment_frames(2 * 47520 + 13440) == [150, 150, 42]
    write_wav(tmp_path / "in" / "odd.wav", 6720 / 24000, seed=4)
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "tok", "-q", "--format", fmt)
    assert r.code == 0, r
    if fmt == "npz":
        assert np.load(tmp_path / "tok" / "odd.npz")["codes"].shape == (8, 21)
    r = cli("decode", tmp_path / "tok", "-o", tmp_path / "wav", "-q")
    assert r.code == 0, r
    assert sf.info(str(tmp_path / "wav" / "odd.wav")).frames == 6720
