"""Output folders shared by several runs: concurrent runs into one -o never lose or duplicate data
(claims: each output is made by one run), and one folder holds one setting (OUT/settings.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from audiotok.engine.sharing import Claims

from .conftest import REPO, write_wav


def _env(hub_cache) -> dict:
    return dict(os.environ, TORCH_HOME=str(hub_cache), AUDIOTOK_OFFLINE="1", PYTHONPATH=str(REPO))


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_two_processes_writing_parquet_at_once_keep_every_row_once(hub_cache, tmp_path):
    """Two encode runs started together into one Parquet -o, with overlapping inputs: every input is
    one row (nothing lost, nothing twice), each input was encoded by one run, the manifest lines are whole."""
    names = [f"x{i}.wav" for i in range(8)]
    for i, name in enumerate(names):
        write_wav(tmp_path / "in" / name, 0.5, seed=i)
    out = tmp_path / "P"
    first, second = names[:6], names[3:]  # 3 inputs in both runs
    cmds = [[sys.executable, "-m", "audiotok", "encode", *[str(tmp_path / "in" / n) for n in part], "-o", str(out),
             "--format", "parquet", "--shard-mb", "0.001", "--batch-seconds", "0.5", "--threads", "1", "--quiet"]
            for part in (first, second)]
    procs = [subprocess.Popen(c, env=_env(hub_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    import pyarrow.parquet as pq

    ids = pq.read_table(out / "data", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == names  # every input once: no row lost, none twice
    records = _manifest(out)
    assert len(records) == 6 + 5  # one whole line per input per run
    ok = [r["input"] for r in records if r["status"] == "ok"]
    assert sorted(Path(p).name for p in ok) == names  # each input encoded by exactly one of the runs
    for r in records:
        if r["status"] == "skipped":
            assert Path(r["input"]).name in names[3:6]
    assert not (out / ".audiotok").exists()  # every claim released, the last run removed the folder


def test_an_output_another_live_run_holds_is_left_to_it(cli, tmp_path):
    """A claim held by a live run (here: this test process) makes the run skip that input with a
    record saying so; a claim left by a run that is gone is taken over."""
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(tmp_path / "in" / name, 0.5, seed=len(name))
    out = tmp_path / "o"
    other = Claims(out).open()
    try:
        assert other.take("b.npz") is None
        r = cli("encode", tmp_path / "in", "-o", out, "--log-every", "0", "--jsonl")
        assert r.code == 0, r
        recs = {Path(x["input"]).name: x for x in map(json.loads, r.out.splitlines())}
        assert recs["a.wav"]["status"] == recs["c.wav"]["status"] == "ok"
        assert recs["b.wav"]["status"] == "skipped" and not (out / "b.npz").exists()
        assert recs["b.wav"]["note"].startswith(f"being made by another run (pid {os.getpid()} on ")
        assert "1 made by another run into the same -o" in r.err
    finally:
        other.close()
    # a run killed with SIGKILL leaves its run file unlocked and its claim: the claim counts as free
    dead = Claims(out).open()
    dead.take("b.npz")
    os.close(dead._run_fd)  # what the kernel does when the process dies: the lock is gone, the files stay
    r = cli("encode", tmp_path / "in", "-o", out, "-q", "--jsonl")
    assert r.code == 0 and (out / "b.npz").is_file(), r
    statuses = {Path(x["input"]).name: x["status"] for x in map(json.loads, r.out.splitlines())}
    assert statuses == {"a.wav": "skipped", "b.wav": "ok", "c.wav": "skipped"}
    assert not (out / ".audiotok").exists()  # the last run to leave removes the claims folder


def test_a_row_written_meanwhile_by_another_run_is_not_written_twice(tmp_path):
    """An input found undone at the start, whose row another run writes before this run reaches
    it, is skipped ("made by another run meanwhile"): the shards hold it once."""
    from audiotok.engine.distributed import current_share
    from audiotok.engine.runner import RunOptions, run_job
    from audiotok.engine.sources import discover
    from audiotok.formats import audio
    from audiotok.formats.codes import EncodedItem
    from audiotok.formats.datasets import ShardWriter, codes_row, parquet_job, read_parquet_dataset
    from audiotok.jobs.encode import EncodeJob

    for i in range(5):
        write_wav(tmp_path / "in" / f"{i}.wav", 1.0 - 0.1 * i, seed=i)  # processed in this order (longest first)
    sources = discover([str(tmp_path / "in")])
    out = tmp_path / "o"
    settings = {"model": "encodec_24khz", "bandwidth": 1.5}

    class Adapter:
        calls = 0

        def run(self, batch):
            self.calls += 1
            if self.calls == 1:  # meanwhile, another run writes the row of the last input
                other = ShardWriter(out / "data", {"kind": "codes", **settings})
                last = sources[-1]
                other.add(*codes_row(last, audio.read_header(last.path), EncodedItem(np.zeros((2, 3), np.int16), None, 960),
                                     settings))
                other.close()
            return [(k, EncodedItem(np.full((2, 5), k, np.int16), None, 1600)) for k, _ in batch]

        def flush(self):
            return []

        def reset(self):
            pass

    share = current_share(None)
    job = parquet_job(EncodeJob(out, "npz", "encodec_24khz", 1.5, None), out, "codes", settings, share,
                      overwrite=False, shard_mb=1e-6)
    records = []
    summary = run_job(sources, share, job, Adapter(), out, RunOptions(batch_seconds=0.1, workers=0),
                      record=lambda o: records.append(o.record))
    assert summary.ok == 4 and summary.skipped == 1 and summary.elsewhere == 1
    (skipped,) = [r for r in records if r["status"] == "skipped"]
    assert skipped["input"].endswith("4.wav") and skipped["note"] == "made by another run into the same output folder meanwhile"
    ids = read_parquet_dataset(out).column("id").to_pylist()
    assert sorted(ids) == [f"{i}.wav" for i in range(5)]


def test_claims_are_taken_per_output_and_released(tmp_path):
    a, b, c = Claims(tmp_path).open(), Claims(tmp_path).open(), Claims(tmp_path).open()
    try:
        assert a.take("x") is None and a.take("x") is None  # taking one's own claim again is fine
        assert b.take("x").startswith("another run (pid ")
        a.release("x")
        assert b.take("x") is None and a.take("x") is not None
        c.take("y")
        a.close()
        assert (tmp_path / ".audiotok" / "claims").is_dir()  # kept while other runs are there
    finally:
        a.close()
        b.close()
        c.close()
    assert not (tmp_path / ".audiotok").exists()


# --- one output folder, one setting ------------------------------------------------------------
def _other_weights(offline_cache, tmp_path) -> Path:
    """A copy of the cached 24 kHz weights with one tensor changed: another sha256, still loadable."""
    import torch

    state = torch.load(offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th", weights_only=True)
    name = next(k for k, v in state.items() if v.dtype.is_floating_point and v.ndim > 1)
    state[name] = state[name] * 1.001
    path = tmp_path / "other.th"
    torch.save(state, path)
    return path


def _settings(folder: Path) -> dict:
    return json.loads((folder / "settings.json").read_text())


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
            and ".audiotok" not in p.parts}


def test_a_folder_holds_one_setting_whatever_the_input_root(cli, offline_cache, tmp_path):
    """The first run writes OUT/settings.json; a later run with another bandwidth or other weights is
    refused (naming the setting) even from another input root (whose outputs are new paths), and
    writes nothing; --dry-run says the same; --overwrite goes ahead and records the new setting."""
    data = tmp_path / "data"
    write_wav(data / "speech" / "a.wav", 0.5, seed=1)
    write_wav(data / "music" / "b.wav", 0.5, seed=2)
    tok = tmp_path / "tok"
    assert cli("encode", data, "-o", tok, "-q").code == 0
    first = _settings(tok)
    assert first["command"] == "encode" and first["settings"]["bandwidth"] == 6.0
    assert first["settings"]["model"] == "encodec_24khz" and len(first["settings"]["weights_sha256"]) == 16
    before = _tree(tok)
    for extra in ([], ["--dry-run"]):
        r = cli("encode", data / "speech", "-o", tok, "-q", "-b", "12", *extra)
        assert r.code == 2 and "Traceback" not in r.err, r
        assert f"audiotok: error: {tok} holds outputs made with --bandwidth 6 (asked now: --bandwidth 12; " in r.err
        assert "pass --overwrite to redo these inputs with the new settings" in r.err
        assert _tree(tok) == before  # tok/a.npz (the new root's output path) was not written
    r = cli("encode", data / "speech", "-o", tok, "-q", "-b", "12", "--overwrite")
    assert r.code == 0, r
    assert f"note: --overwrite: {tok}/settings.json now records --bandwidth 12 (was --bandwidth 6)" in r.err
    assert _settings(tok)["settings"]["bandwidth"] == 12.0 and (tok / "a.npz").is_file()

    # .npy holds no settings: the folder's file is what refuses other weights (was a silent skip)
    other = _other_weights(offline_cache, tmp_path)
    assert cli("encode", data, "-o", tmp_path / "npy", "-f", "npy", "-q").code == 0
    r = cli("encode", data, "-o", tmp_path / "npy", "-f", "npy", "-q", "--checkpoint", other)
    assert r.code == 2 and "holds outputs made with weights (sha256) " in r.err, r
    r = cli("encode", data, "-o", tmp_path / "npy", "-f", "ecdc", "-q")
    assert r.code == 2 and "made with --format npy (asked now: --format ecdc;" in r.err, r
    r = cli("encode", data, "-o", tmp_path / "npy", "-f", "npy", "-q", "--keep-ext")
    assert r.code == 2 and "made with --keep-ext off (asked now: --keep-ext on;" in r.err, r


def test_decode_records_codec_weights_and_refuses_other_weights(cli, offline_cache, tmp_path):
    """Decoded WAV and FLAC carry a JSON comment (codec, weights sha256, bandwidth, source); the
    manifest has the same; a rerun with other --checkpoint weights is refused, from any input root."""
    import soundfile as sf

    from audiotok.jobs.decode import read_decoded_comment
    from audiotok.weights import file_sha256

    write_wav(tmp_path / "data" / "s" / "a.wav", 0.5, seed=1)
    write_wav(tmp_path / "data" / "m" / "b.wav", 0.5, seed=2)
    assert cli("encode", tmp_path / "data", "-o", tmp_path / "tok", "-q", "-b", "3").code == 0
    official = file_sha256(offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th", 16)
    for fmt in ("wav", "flac"):
        out = tmp_path / fmt
        r = cli("decode", tmp_path / "tok", "-o", out, "-f", fmt, "-q")
        assert r.code == 0, r
        made = read_decoded_comment(str(out / "s" / f"a.{fmt}"))
        assert {k: made[k] for k in ("codec", "weights_sha256", "bandwidth")} == \
            {"codec": "encodec_24khz", "weights_sha256": official, "bandwidth": 3.0}
        assert made["source"] == str(tmp_path / "tok" / "s" / "a.npz") and made["numerics"]["device_type"] == "cpu"
        assert sf.info(str(out / "s" / f"a.{fmt}")).frames == 12000
        (rec,) = [x for x in _manifest(out) if x["input"].endswith("a.npz")]
        assert rec["codec"] == "encodec_24khz" and rec["weights_sha256"] == official and rec["bandwidth"] == 3.0
        assert _settings(out)["settings"] == {"format": fmt, "keep_ext": False, "weights": "official"}
    other = _other_weights(offline_cache, tmp_path)
    r = cli("decode", tmp_path / "tok" / "s", "-o", tmp_path / "wav", "-q", "--checkpoint", other)
    assert r.code == 2 and f"made with weights official (asked now: weights sha256:{file_sha256(other, 16)};" in r.err, r
    assert not (tmp_path / "wav" / "a.wav").exists()


def test_embed_folder_refuses_other_pooling_from_another_root(cli, tmp_path):
    from .conftest import shared_path

    ckpt = shared_path("fixtures", "encodecmae", "tiny_mel_st.pt")
    write_wav(tmp_path / "data" / "s" / "a.wav", 0.5, seed=1)
    write_wav(tmp_path / "data" / "m" / "b.wav", 0.5, seed=2)
    emb = tmp_path / "emb"
    assert cli("embed", tmp_path / "data", "-o", emb, "-m", ckpt, "-q").code == 0
    assert _settings(emb)["settings"]["pooling"] == "mean" and len(_settings(emb)["settings"]["weights_sha256"]) == 16
    r = cli("embed", tmp_path / "data" / "s", "-o", emb, "-m", ckpt, "-q", "--pool", "max")
    assert r.code == 2 and "made with --pool mean (asked now: --pool max;" in r.err, r
    assert not (emb / "a.npz").exists()
    r = cli("encode", tmp_path / "data", "-o", emb, "-q")
    assert r.code == 2 and "made with the command embed (asked now: the command encode;" in r.err, r


def test_score_frames_folder_holds_one_setting_per_model(cli, offline_cache, tmp_path):
    from audiotok.testing import save_random_lm_checkpoint

    write_wav(tmp_path / "in" / "a.wav", 0.5, seed=3)
    codec = offline_cache / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th"
    one = save_random_lm_checkpoint(tmp_path / "one.pt", codec, seed=1)
    two = save_random_lm_checkpoint(tmp_path / "two.pt", codec, seed=2)
    frames = tmp_path / "frames"
    args = ("score", tmp_path / "in", "--device", "cpu", "-q", "--frames", frames)
    assert cli(*args, "--checkpoint", one, "-o", tmp_path / "s.jsonl").code == 0
    r = cli(*args, "--checkpoint", two, "-o", tmp_path / "s.jsonl")
    assert r.code == 2 and "holds outputs made with token-gpt.lm_sha256 " in r.err, r
    assert cli(*args, "--checkpoint", one, "-m", "token-gpt", "-m", "encodec-lm", "-o", tmp_path / "s.jsonl").code == 0
    assert set(_settings(frames)["settings"]) >= {"token-gpt.lm_sha256", "encodec-lm.lm_sha256"}
