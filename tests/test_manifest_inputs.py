"""Manifest inputs (JSONL/CSV with path and optional offset/duration segments), --exclude,
--dry-run and --keep-ext, from the reader up to the encode command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from audiotok.engine.sources import Source, discover, exclude, read_manifest_inputs
from audiotok.errors import InputError, UsageError
from audiotok.formats import audio

from .conftest import write_wav


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    write_wav(root / "talks" / "long.wav", 6.0, seed=1)
    write_wav(root / "a.wav", 1.0, seed=2)
    write_wav(root / "a.flac", 1.5, seed=3)
    write_wav(root / "cache" / "junk.wav", 0.5, seed=4)
    return root


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- the reader -------------------------------------------------------------------------------
def test_jsonl_manifest_segments_relative_paths_and_nemo_field(corpus):
    m = _jsonl(corpus / "list.jsonl", [
        {"path": "talks/long.wav", "offset": 1.5, "duration": 2.0},
        {"audio_filepath": "talks/long.wav", "offset": 4, "text": "NeMo rows carry more fields"},
        {"path": str(corpus / "a.wav")},
        {"path": "talks/long.wav", "offset": 1.5, "duration": 2.0},  # duplicate: once
        {"path": "gone.wav"},
    ])
    got = read_manifest_inputs(m)
    assert [(s.rel, s.offset, s.duration, s.error) for s in got] == [
        ("a.wav", 0.0, None, None),
        ("gone.wav", 0.0, None, "no such file or directory"),
        ("talks/long_1.500-3.500.wav", 1.5, 2.0, None),
        ("talks/long_4.000-end.wav", 4.0, None, None),
    ]
    assert got[2].path == str(corpus / "talks/long.wav") and got[2].is_segment and not got[0].is_segment


@pytest.mark.parametrize("name, text", [
    ("m.csv", "path,offset,duration\ntalks/long.wav,0.5,1\n"),
    ("m.jsonl", '{"path": "talks/long.wav", "offset": 0.5, "duration": 1}\n'),
])
def test_a_byte_order_mark_is_read_past(corpus, name, text):
    """Spreadsheet programs start CSV (and some tools JSONL) with a UTF-8 byte-order mark."""
    (corpus / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    (got,) = read_manifest_inputs(corpus / name)
    assert (got.rel, got.offset, got.duration, got.error) == ("long_0.500-1.500.wav", 0.5, 1.0, None)


def test_csv_manifest_with_empty_cells(corpus):
    m = corpus / "list.csv"
    m.write_text("path,offset,duration\ntalks/long.wav,0.5,1\na.wav,,\n\n")
    got = read_manifest_inputs(m)
    assert [(s.rel, s.offset, s.duration) for s in got] == [("a.wav", 0.0, None), ("talks/long_0.500-1.500.wav", 0.5, 1.0)]


@pytest.mark.parametrize("name, text, message", [
    ("m.jsonl", '{"path": "a.wav"}\n{"path": \n', "m.jsonl line 2 is not valid JSON"),
    ("m.jsonl", '["a.wav"]\n', "m.jsonl line 1 is not a JSON object"),
    ("m.jsonl", '{"file": "a.wav"}\n', 'm.jsonl line 1 has no path (a "path" or "audio_filepath" field)'),
    ("m.jsonl", '{"path": "a.wav", "offset": -1}\n', "m.jsonl line 1: offset must be a finite number of seconds, 0 or more, not -1"),
    ("m.jsonl", '{"path": "a.wav", "duration": 0}\n', "m.jsonl line 1: duration must be a finite number of seconds above 0, not 0"),
    ("m.jsonl", '{"path": "a.wav", "duration": NaN}\n', "m.jsonl line 1: duration must be a finite number of seconds above 0, not NaN"),
    ("m.jsonl", '{"path": "a.wav", "offset": true}\n', "m.jsonl line 1: offset must be a finite number of seconds, 0 or more, not true"),
    ("m.jsonl", '{"path": "a.wav", "duration": "1e999"}\n', 'm.jsonl line 1: duration must be a finite number of seconds above 0, not "1e999"'),
    ("m.csv", "path,duration\na.wav,ten\n", 'm.csv line 2: duration must be a finite number of seconds above 0, not "ten"'),
    ("m.csv", "file,offset\na.wav,1\n", "m.csv needs a header row with a path column"),
    ("m.jsonl", "\n\n", "lists no inputs"),
    ("m.txt", "a.wav\n", "must be a .jsonl or .csv file"),
])
def test_malformed_manifests_are_usage_errors_naming_the_line(corpus, name, text, message):
    (corpus / name).write_text(text)
    with pytest.raises(UsageError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_manifest_inputs(corpus / name)


# --- reading segments -------------------------------------------------------------------------
def test_read_segment_equals_the_slice_of_the_whole_file(corpus):
    path = str(corpus / "talks" / "long.wav")
    whole, info = audio.read(path)
    seg, seg_info = audio.read(path, offset=1.25, duration=2.0)
    assert seg.dtype == np.float32 and seg.shape == (1, 48000)
    np.testing.assert_array_equal(seg, whole[:, 30000:78000])
    assert (seg_info.sample_rate, seg_info.channels, seg_info.frames) == (24000, 1, 48000) and info.frames == 144000
    tail, tail_info = audio.read(path, offset=5.5)  # to the end
    np.testing.assert_array_equal(tail, whole[:, 132000:])
    end, _ = audio.read(path, offset=5.0, duration=1.0005)  # within 1 ms of the end: the rest of the file
    assert end.shape == (1, 24000)
    res, res_info = audio.read(path, sample_rate=16000, offset=1.0, duration=1.5)
    assert res.shape == (1, 24000) and res_info.frames == 36000


def test_segment_past_the_end_is_an_input_error(corpus):
    with pytest.raises(InputError, match=r"offset 7 s is past the end of the recording \(6.000 s\)"):
        audio.read(str(corpus / "talks" / "long.wav"), offset=7)
    # its output would be named long_5.000-105.000 but hold 1 s: refused, reading and probing alike
    message = r"asks for 5 s to 105 s, past the end of the recording \(6.000 s\); give a duration that ends within it"
    with pytest.raises(InputError, match=message):
        audio.read(str(corpus / "talks" / "long.wav"), offset=5, duration=100)
    with pytest.raises(InputError, match=message):
        audio.clip_info(audio.read_header(str(corpus / "talks" / "long.wav")), 5, 100)


# --- --exclude --------------------------------------------------------------------------------
def test_exclude_matches_relative_paths_components_and_names(corpus):
    found = discover([str(corpus)])
    assert [s.rel for s in found] == ["a.flac", "a.wav", "cache/junk.wav", "talks/long.wav"]

    def kept(*patterns):
        return [s.rel for s in exclude(found, list(patterns))[0]]

    assert kept("cache") == ["a.flac", "a.wav", "talks/long.wav"]
    assert kept("*.flac", "talks/*") == ["a.wav", "cache/junk.wav"]
    assert kept("*/junk.wav") == ["a.flac", "a.wav", "talks/long.wav"]
    assert kept("A.WAV") == ["a.flac", "a.wav", "cache/junk.wav", "talks/long.wav"]  # case-sensitive
    assert [s.rel for s in exclude(found, ["*.wav"])[1]] == ["a.wav", "cache/junk.wav", "talks/long.wav"]
    assert exclude([Source("x/y.wav", "y.wav")], [])[0][0].rel == "y.wav"


# --- the commands -----------------------------------------------------------------------------
def test_encode_manifest_segments_match_encoding_the_cut_audio(cli, corpus, tmp_path):
    m = _jsonl(tmp_path / "m.jsonl", [{"path": str(corpus / "talks/long.wav"), "offset": 2.0, "duration": 1.5},
                                      {"path": str(corpus / "talks/long.wav"), "offset": 9.0}])
    out = tmp_path / "o"
    r = cli("encode", "--manifest", m, "-o", out, "-q")
    assert r.code == 1, r
    seg = out / "long_2.000-3.500.npz"
    with np.load(seg) as z:
        codes = z["codes"]
    assert codes.shape == (8, 113) and codes.dtype == np.int16
    # the same samples as a file of their own encode to the same codes
    whole, _ = audio.read(str(corpus / "talks/long.wav"))
    cut = tmp_path / "cut" / "long_2.000-3.500.wav"
    cut.parent.mkdir()
    sf.write(str(cut), whole[0, 48000:84000], 24000, subtype="FLOAT")
    assert cli("encode", cut, "-o", tmp_path / "o2", "-q").code == 0
    with np.load(tmp_path / "o2" / "long_2.000-3.500.npz") as z:
        np.testing.assert_array_equal(z["codes"], codes)
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    ok = next(x for x in lines if x["status"] == "ok")
    assert (ok["offset"], ok["segment_duration"], ok["duration"]) == (2.0, 1.5, 1.5)
    bad = next(x for x in lines if x["status"] == "error")
    assert bad["offset"] == 9.0 and bad["error"] == "offset 9 s is past the end of the recording (6.000 s)"
    assert "offset 9 s is past the end" in r.err


def test_manifest_and_paths_together_and_missing_inputs(cli, corpus, tmp_path):
    m = _jsonl(tmp_path / "m.jsonl", [{"path": str(corpus / "a.wav")}])
    r = cli("encode", corpus / "a.flac", "--manifest", m, "-o", tmp_path / "o", "-q", "--keep-ext")
    assert r.code == 0, r
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npz")) == ["a.flac.npz", "a.wav.npz"]
    r = cli("encode", "-o", tmp_path / "o")
    assert r.code == 2 and "give input paths (or - for paths on stdin) or --manifest FILE" in r.err
    r = cli("encode", "--manifest", tmp_path / "nope.jsonl", "-o", tmp_path / "o")
    assert r.code == 2 and "nope.jsonl does not exist" in r.err and "Traceback" not in r.err


def test_keep_ext_keeps_same_stem_inputs_apart(cli, corpus, tmp_path):
    r = cli("encode", corpus / "a.wav", corpus / "a.flac", "-o", tmp_path / "o", "-q")
    assert r.code == 1 and "pass --keep-ext, rename one of them or run them separately" in r.err
    r = cli("encode", corpus / "a.wav", corpus / "a.flac", "-o", tmp_path / "k", "-q", "--keep-ext")
    assert r.code == 0, r
    with np.load(tmp_path / "k" / "a.wav.npz") as a, np.load(tmp_path / "k" / "a.flac.npz") as b:
        assert a["codes"].shape == (8, 75) and b["codes"].shape == (8, 113)
    r = cli("decode", tmp_path / "k", "-o", tmp_path / "d", "--keep-ext", "--dry-run", "--exclude", "a.flac*")
    assert r.code == 0 and not (tmp_path / "d").exists()
    assert r.out.splitlines() == [f"todo    {tmp_path}/k/a.wav.npz -> {tmp_path}/d/a.wav.npz.wav (1.000 s)",
                                  f"exclude {tmp_path}/k/a.flac.npz"]


def test_dry_run_lists_todo_skipped_refused_and_excluded_and_writes_nothing(cli, corpus, tmp_path):
    (corpus / "empty.wav").write_bytes(b"")
    out = tmp_path / "o"
    assert cli("encode", corpus / "a.flac", "-o", out, "-q").code == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = cli("encode", corpus, "-o", out, "--dry-run", "--exclude", "cache")
    assert r.code == 1, r  # an input would be refused
    assert r.out.splitlines() == [
        f"skip    {corpus}/a.flac ({out}/a.npz exists)",
        f"refuse  {corpus}/a.wav: has the same output {out}/a.npz as {corpus}/a.flac; "
        "pass --keep-ext, rename one of them or run them separately",
        f"refuse  {corpus}/empty.wav: is empty (0 bytes)",
        f"todo    {corpus}/talks/long.wav -> {out}/talks/long.npz (6.000 s)",
        f"exclude {corpus}/cache/junk.wav",
    ]
    assert r.err.strip() == "dry run: 1 to do (6.00 s of audio), 1 skipped, 2 refused, 1 excluded; nothing was written"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    r = cli("encode", corpus / "talks", "-o", tmp_path / "new", "--dry-run", "--jsonl")
    assert r.code == 0 and not (tmp_path / "new").exists()
    assert [json.loads(x) for x in r.out.splitlines()] == [
        {"input": f"{corpus}/talks/long.wav", "status": "todo", "output": f"{tmp_path}/new/long.npz",
         "duration": 6.0, "sample_rate": 24000, "channels": 1}]


def test_dry_run_needs_no_weights(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    r = cli("encode", corpus / "a.wav", "-o", tmp_path / "o", "--dry-run")
    assert r.code == 0 and r.out.startswith("todo ")
    r = cli("encode", corpus / "a.wav", "-o", tmp_path / "o")
    assert r.code == 3 and "is not in the torch hub cache" in r.err
    assert not (tmp_path / "o").exists()  # nothing computed, nothing created


def test_dry_run_prints_one_line_per_input_whatever_its_name(cli, tmp_path):
    write_wav(tmp_path / "in" / "two\nlines.wav", 0.3)
    write_wav(tmp_path / "in" / "tab\there.wav", 0.2)
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "o", "--dry-run")
    assert r.code == 0 and r.out.splitlines() == [
        f"todo    {tmp_path}/in/tab\\there.wav -> {tmp_path}/o/tab\\there.npz (0.200 s)",
        f"todo    {tmp_path}/in/two\\nlines.wav -> {tmp_path}/o/two\\nlines.npz (0.300 s)"]
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "o", "--dry-run", "--jsonl")  # JSON keeps the name exact
    assert [json.loads(x)["input"] for x in r.out.splitlines()] == [f"{tmp_path}/in/tab\there.wav",
                                                                   f"{tmp_path}/in/two\nlines.wav"]


def test_segments_of_one_recording_read_its_header_once(corpus, tmp_path):
    """A manifest of 1000 segments of one recording starts work at once: its header is read once,
    not once per segment (a compressed file's header can take a decoder pass to count frames)."""
    from audiotok.engine import pipeline
    from audiotok.jobs.encode import EncodeJob

    m = _jsonl(tmp_path / "m.jsonl", [{"path": str(corpus / "talks" / "long.wav"), "offset": i * 0.006,
                                       "duration": 0.006} for i in range(1000)])
    sources = read_manifest_inputs(m)
    job = EncodeJob(tmp_path / "o", "npz", "encodec_24khz", 6.0, None)
    calls = []
    probe = job.read_header
    job.read_header = lambda path: calls.append(path) or probe(path)
    plan = pipeline.plan(sources, job)
    assert len(plan) == 1000 and {r["status"] for r in plan} == {"todo"} and len(calls) == 1

    class Nothing:  # an adapter that fails every input: only the probing is looked at here
        def run(self, batch):
            return [(k, InputError("not computed")) for k, _ in batch]

        def flush(self):
            return []

        def reset(self):
            pass

    calls.clear()
    summary = pipeline.run(sources[:50], job, Nothing(), workers=0)
    assert len(summary.failed) == 50 and len(calls) == 1


def test_embed_manifest_segment_equals_embedding_the_cut_audio(cli, corpus, tmp_path):
    from .conftest import shared_path

    ckpt = shared_path("fixtures", "encodecmae", "tiny_mel_st.pt")
    m = _jsonl(tmp_path / "m.jsonl", [{"path": str(corpus / "talks/long.wav"), "offset": 0.5, "duration": 1.25}])
    r = cli("embed", "--manifest", m, "-o", tmp_path / "e", "-m", ckpt, "-q", "--pool", "none")
    assert r.code == 0, r
    whole, _ = audio.read(str(corpus / "talks/long.wav"))
    cut = tmp_path / "cut" / "long_0.500-1.750.wav"
    cut.parent.mkdir()
    sf.write(str(cut), whole[0, 12000:42000], 24000, subtype="FLOAT")
    assert cli("embed", cut, "-o", tmp_path / "e2", "-m", ckpt, "-q", "--pool", "none").code == 0
    with np.load(tmp_path / "e" / "long_0.500-1.750.npz") as a, np.load(tmp_path / "e2" / "long_0.500-1.750.npz") as b:
        np.testing.assert_array_equal(a["embedding"], b["embedding"])
        np.testing.assert_array_equal(a["timestamps"], b["timestamps"])
        assert a["embedding"].ndim == 2 and a["embedding"].shape[1] == 64
