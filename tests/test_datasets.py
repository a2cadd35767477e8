"""--format parquet: shards that pandas and Hugging Face ``datasets`` read directly, holding the same
arrays as the per-file outputs; resumable reruns; settings checked; atomic shards."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from audiotok.errors import UsageError
from audiotok.formats.datasets import ShardWriter, nested_list_array, read_parquet_dataset

from .conftest import shared_path, write_wav


def _untagged(path) -> str:
    """A shard's name without the run's tag (``shard-000-00000-1a2b3c4d.parquet`` -> ``shard-000-00000.parquet``)."""
    import re

    name = getattr(path, "name", None) or str(path).rsplit("/", 1)[-1]
    assert re.fullmatch(r"shard-\d{3}-\d{5}-[0-9a-f]{8}\.parquet", name), name
    return re.sub(r"-[0-9a-f]{8}\.parquet$", ".parquet", name)


def _shards(folder) -> list[str]:
    return sorted(_untagged(p) for p in folder.iterdir())


def _row(i: int, n: int = 10) -> dict:
    codes = np.arange(2 * n, dtype=np.int16).reshape(2, n) + i
    return {"id": f"f{i}.wav", "codes": codes, "shape": np.asarray(codes.shape, np.int32), "model": "m"}


def test_nested_list_arrays_round_trip_any_shape():
    pa_type = __import__("pyarrow").float32()
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((4, 3), np.float32)]
    got = nested_list_array(arrays, pa_type).to_pylist()
    assert [np.asarray(g, np.float32).tolist() for g in got] == [a.tolist() for a in arrays]
    cube = [np.arange(24, dtype=np.float32).reshape(2, 3, 4)]
    assert np.array_equal(np.asarray(nested_list_array(cube, pa_type).to_pylist()[0]), cube[0])
    flat = [np.arange(3, dtype=np.float32), np.arange(5, dtype=np.float32)]
    assert nested_list_array(flat, pa_type).to_pylist() == [[0, 1, 2], [0, 1, 2, 3, 4]]


def test_shards_rotate_by_size_are_atomic_and_resumable(tmp_path):
    w = ShardWriter(tmp_path / "data", {"kind": "codes", "model": "m"}, max_bytes=100)
    targets = [w.add(_row(i), _row(i)["codes"].nbytes) for i in range(5)]  # 40 bytes each: 3 rows per shard
    w.close()
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert [_untagged(n) for n in names] == ["shard-000-00000.parquet", "shard-000-00001.parquet"]  # no temp files
    assert [_untagged(t) for t in targets] == ["shard-000-00000.parquet"] * 3 + ["shard-000-00001.parquet"] * 2
    assert targets[0].name == names[0] and targets[3].name == names[1]
    first = pq.ParquetFile(tmp_path / "data" / names[0])
    assert first.metadata.num_row_groups == 1 and first.metadata.num_rows == 3
    again = ShardWriter(tmp_path / "data", {"kind": "codes", "model": "m"})
    assert [again.has(f"f{i}.wav") for i in range(6)] == [True] * 5 + [False]
    again.add(_row(5), 40)
    again.close()
    assert _untagged(again.written[0]) == "shard-000-00002.parquet" and again.tag != w.tag
    table = read_parquet_dataset(tmp_path)
    assert table.column("id").to_pylist() == [f"f{i}.wav" for i in range(6)]
    assert np.array_equal(np.asarray(table.column("codes")[4].as_py(), np.int16), _row(4)["codes"])


def test_other_settings_are_refused_and_overwrite_replaces_this_ranks_shards(tmp_path):
    for rank in (0, 1):
        w = ShardWriter(tmp_path, {"model": "m"}, rank=rank, world=2)
        w.add(_row(rank), 1)
        w.close()
    with pytest.raises(UsageError, match=r"holds Parquet shards made with other settings \(model\); "
                                         "write to another -o or pass --overwrite"):
        ShardWriter(tmp_path, {"model": "other"})
    assert ShardWriter(tmp_path, {"model": "other"}, check_settings=False).has("f1.wav")
    w = ShardWriter(tmp_path, {"model": "other"}, rank=1, world=2, overwrite=True)
    assert not w.has("f1.wav")
    w.add(_row(7), 1)
    w.close()
    assert _shards(tmp_path) == ["shard-000-00000.parquet", "shard-001-00000.parquet"]
    assert pq.read_table(w.written[0]).column("id").to_pylist() == ["f7.wav"]


def test_a_damaged_shard_is_one_clear_error(tmp_path):
    (tmp_path / "shard-000-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="shard-000-00000.parquet is not a readable Parquet shard .*; "
                                         "remove it or pass --overwrite"):
        ShardWriter(tmp_path, {})


@pytest.fixture
def clips(tmp_path):
    root = tmp_path / "clips"
    write_wav(root / "a.wav", 1.0, seed=1)
    write_wav(root / "b" / "c.flac", 0.6, sr=16000, seed=2)
    return root


def _codes_of(npz):
    with np.load(npz) as z:
        return z["codes"]


def test_encode_parquet_equals_npz_and_reads_in_pandas_and_datasets(cli, clips, tmp_path, monkeypatch):
    r = cli("encode", clips, "-o", tmp_path / "npz", "-q")
    assert r.code == 0, r
    out = tmp_path / "pq"
    r = cli("encode", clips, "-o", out, "-q", "--format", "parquet", "--jsonl")
    assert r.code == 0, r
    recs = [json.loads(x) for x in r.out.splitlines()]
    (shard,) = (out / "data").iterdir()
    assert _untagged(shard) == "shard-000-00000.parquet"
    assert {x["id"]: x["output"] for x in recs} == {"a.wav": str(shard), "b/c.flac": str(shard)}

    import pandas as pd

    df = pd.read_parquet(out / "data").set_index("id")
    assert sorted(df.index) == ["a.wav", "b/c.flac"]
    for rid, npz in (("a.wav", "a.npz"), ("b/c.flac", "b/c.npz")):
        codes = np.stack(df.loc[rid, "codes"])
        assert codes.dtype == np.int16
        np.testing.assert_array_equal(codes, _codes_of(tmp_path / "npz" / npz))
        assert list(df.loc[rid, "shape"]) == list(codes.shape)
    assert df.loc["b/c.flac", "sample_rate"] == 16000 and df.loc["b/c.flac", "duration"] == pytest.approx(0.6)
    assert (df["model"] == "encodec_24khz").all() and (df["bandwidth"] == 6.0).all()
    assert df.loc["a.wav", "n_samples"] == 24000 and df.loc["a.wav", "offset"] == 0.0

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 2
    row = ds[ds["id"].index("a.wav")]
    np.testing.assert_array_equal(np.asarray(row["codes"], np.int16), _codes_of(tmp_path / "npz" / "a.npz"))

    # resumable: a rerun skips both, a new input becomes a new shard, other settings are refused
    r = cli("encode", clips, "-o", out, "-q", "--format", "parquet", "--jsonl")
    assert r.code == 0 and [json.loads(x)["status"] for x in r.out.splitlines()] == ["skipped", "skipped"]
    write_wav(clips / "d.wav", 0.5, seed=3)
    r = cli("encode", clips, "-o", out, "-q", "--format", "parquet", "--jsonl")
    assert r.code == 0 and sorted(json.loads(x)["status"] for x in r.out.splitlines()) == ["ok", "skipped", "skipped"]
    assert _shards(out / "data") == ["shard-000-00000.parquet", "shard-000-00001.parquet"]
    r = cli("encode", clips, "-o", out, "-q", "--format", "parquet", "-b", "1.5")
    assert r.code == 2 and "made with other settings (bandwidth)" in r.err and "Traceback" not in r.err
    r = cli("encode", clips, "-o", out, "--format", "parquet", "--dry-run")
    assert r.code == 0 and r.out.count("skip    ") == 3


def test_encode_parquet_manifest_segments_and_keep_ext_ids(cli, clips, tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": str(clips / "a.wav"), "offset": 0.25, "duration": 0.5}) + "\n")
    write_wav(clips / "a.flac", 0.3, seed=9)
    r = cli("encode", clips / "a.flac", clips / "a.wav", "--manifest", m, "-o", tmp_path / "pq", "-q",
            "--format", "parquet")
    assert r.code == 0, r  # a.wav and a.flac need no --keep-ext: rows are named by their input
    table = read_parquet_dataset(tmp_path / "pq")
    rows = {r["id"]: r for r in table.select(["id", "offset", "duration", "shape"]).to_pylist()}
    assert rows == {"a.flac": {"id": "a.flac", "offset": 0.0, "duration": pytest.approx(0.3), "shape": [8, 23]},
                    "a.wav": {"id": "a.wav", "offset": 0.0, "duration": 1.0, "shape": [8, 75]},
                    "a_0.250-0.750.wav": {"id": "a_0.250-0.750.wav", "offset": 0.25, "duration": 0.5, "shape": [8, 38]}}


def test_embed_parquet_equals_npz(cli, clips, tmp_path):
    ckpt = shared_path("fixtures", "encodecmae", "tiny_mel_st.pt")
    assert cli("embed", clips, "-o", tmp_path / "npz", "-m", ckpt, "-q", "--pool", "none").code == 0
    r = cli("embed", clips, "-o", tmp_path / "pq", "-m", ckpt, "-q", "--pool", "none", "--format", "parquet")
    assert r.code == 0, r
    import pandas as pd

    df = pd.read_parquet(tmp_path / "pq" / "data").set_index("id")
    with np.load(tmp_path / "npz" / "b" / "c.npz") as z:
        expected, stamps = z["embedding"], z["timestamps"]
    got = np.stack(df.loc["b/c.flac", "embedding"])
    assert got.dtype == np.float32 and got.shape == expected.shape and list(df.loc["b/c.flac", "shape"]) == list(expected.shape)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(df.loc["b/c.flac", "timestamps"], stamps)
    assert df.loc["a.wav", "pooling"] == "none" and df.loc["a.wav", "model_sample_rate"] == 24000
    r = cli("embed", clips, "-o", tmp_path / "pq", "-m", ckpt, "--format", "parquet", "--stack", tmp_path / "s.npy")
    assert r.code == 2 and "--stack reads per-file outputs" in r.err
    r = cli("embed", clips, "-o", tmp_path / "pq", "-m", ckpt, "--format", "parquet", "--dry-run", "--pool", "none")
    (shard,) = (tmp_path / "pq" / "data").iterdir()
    assert r.code == 0 and r.out.splitlines() == [
        f"skip    {clips}/a.wav ({shard} exists)", f"skip    {clips}/b/c.flac ({shard} exists)"]


def test_unknown_format_names_parquet(cli, clips, tmp_path):
    r = cli("encode", clips, "-o", tmp_path / "o", "--format", "zarr")
    assert r.code == 2 and "choose one of npz, npy, ecdc or parquet (dataset shards)" in r.err


def test_parquet_job_reports_target_shards():
    from audiotok.formats.datasets import DatasetJob

    class Inner:
        read_header = load = None

    w = SimpleNamespace(done={"x.wav": "data/shard-000-00004.parquet"}, has=lambda i: i == "x.wav",
                        shard_path=lambda: "data/shard-000-00007.parquet")
    job = DatasetJob(Inner(), w, None, {})
    from audiotok.engine.sources import Source

    assert job.is_done(Source("x.wav", "x.wav")) and not job.is_done(Source("y.wav", "y.wav"))
    assert job.target(Source("x.wav", "x.wav")) == "data/shard-000-00004.parquet"
    assert job.target(Source("y.wav", "y.wav")) == "data/shard-000-00007.parquet"
    assert job.label == "inner"


def test_ctrl_c_keeps_the_rows_finished_so_far(tmp_path):
    """run_job closes the dataset job after Ctrl-C: the rows of finished inputs are written as a
    shard, and a rerun would skip exactly those."""
    from audiotok.engine.distributed import current_share
    from audiotok.engine.runner import RunOptions, run_job
    from audiotok.engine.sources import discover
    from audiotok.formats.codes import EncodedItem
    from audiotok.formats.datasets import parquet_job
    from audiotok.jobs.encode import EncodeJob

    for i, sec in enumerate((0.5, 0.4, 0.3)):
        write_wav(tmp_path / "in" / f"{i}.wav", sec, seed=i)
    sources = discover([str(tmp_path / "in")])
    share = current_share(None)

    class InterruptedAdapter:
        calls = 0

        def run(self, batch):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return [(k, EncodedItem(np.full((2, 5), k, np.int16), None, 1600)) for k, _ in batch]

        def flush(self):
            return []

        def reset(self):
            pass

    out = tmp_path / "o"
    job = parquet_job(EncodeJob(out, "npz", "encodec_24khz", 1.5, None), out, "codes",
                      {"model": "encodec_24khz", "bandwidth": 1.5}, share, overwrite=False)
    opts = RunOptions(batch_seconds=0.1, workers=0)
    with pytest.raises(KeyboardInterrupt):  # propagates once the shard and the manifest are closed
        run_job(sources, share, job, InterruptedAdapter(), out, opts)
    table = read_parquet_dataset(out)
    assert table.column("id").to_pylist() == ["0.wav"]  # the longest input went first and finished
    assert ShardWriter(out / "data", {"kind": "codes", "model": "encodec_24khz", "bandwidth": 1.5}).has("0.wav")
