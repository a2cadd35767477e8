"""Progress: audio seconds within files, rate, ETA, units that fit the corpus, log lines when stderr
is not a terminal, and the adapters reporting how far into a file they are."""

from __future__ import annotations

import io
import re
import threading

import numpy as np
import pytest
import torch

from audiotok.engine.progress import Progress, format_clock, pick_unit

from .conftest import shared_path, write_wav


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Done:
    def __init__(self, status="ok"):
        self.status, self.error, self.source = status, None, None


@pytest.mark.parametrize("total, unit", [(0.0, "s"), (59.0, "s"), (119.9, "s"), (120.0, "min"), (1800.0, "min"),
                                         (7199.0, "min"), (7200.0, "h"), (360000.0, "h")])
def test_unit_fits_the_corpus(total, unit):
    assert pick_unit(total)[0] == unit


def test_clock_format():
    assert [format_clock(s) for s in (0, 59.4, 61, 3599, 3600, 86399)] == \
        ["0:00", "0:59", "1:01", "59:59", "1:00:00", "23:59:59"]


def test_status_counts_seconds_within_a_file_with_rate_and_eta():
    clock = FakeClock()
    p = Progress(enabled=False, clock=clock)
    p.set_total(3, 1800.0)  # a 30-minute corpus: minutes
    clock.now += 30.0
    p.update_file(0, 450.0)  # a quarter of the audio is through the model, no file finished yet
    assert p.status() == "0/3 files, 7.50/30.0 min of audio (25%), 15.0x real time, elapsed 0:30, ETA 1:30"
    clock.now += 30.0
    p.update_file(0, 600.0)
    p.advance(600.0, Done(), key=0)  # the file is finished: its partial count is replaced, not added
    assert p.seconds_done() == 600.0
    assert p.status() == "1/3 files, 10.0/30.0 min of audio (33%), 10.0x real time, elapsed 1:00, ETA 2:00"


def test_status_before_any_audio_has_no_rate_or_eta_and_small_corpora_count_seconds():
    clock = FakeClock()
    p = Progress(enabled=False, clock=clock)
    p.set_total(2, 42.0)
    clock.now += 5
    assert p.status() == "0/2 files, 0.00/42 s of audio (0%), elapsed 0:05"
    p.update_file("a", 21.0)
    assert p.status() == "0/2 files, 21/42 s of audio (50%), 4.2x real time, elapsed 0:05, ETA 0:05"


def test_hours_for_large_corpora():
    clock = FakeClock()
    p = Progress(enabled=False, clock=clock)
    p.set_total(1000, 36000.0)
    clock.now += 60
    p.advance(3600.0, Done(), key=1)
    assert p.status().startswith("1/1000 files, 1.00/10.0 h of audio (10%), 60.0x real time, elapsed 1:00, ETA 9:00")


def test_log_lines_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    seen = threading.Event()

    class Watch(io.StringIO):
        def write(self, s):
            stream.write(s)
            if stream.getvalue().count("\n") >= 2:
                seen.set()
            return len(s)

    p = Progress(terminal=False, log_every=0.01, stream=Watch(), label="encode")
    with p:
        p.set_total(1, 1800.0)
        p.update_file(0, 90.0)
        assert seen.wait(30), "no log lines were printed"
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("encode: 0/1 file, 1.50/30.0 min of audio (5%)") for line in lines), lines


def test_no_log_lines_with_log_every_zero_or_disabled():
    for kw in ({"log_every": 0}, {"enabled": False, "log_every": 0.01}):
        stream = io.StringIO()
        with Progress(terminal=False, stream=stream, **kw) as p:
            p.set_total(1, 10.0)
            assert p._thread is None
        assert stream.getvalue() == ""


def test_terminal_bar_shows_the_status():
    stream = io.StringIO()
    with Progress(terminal=True, stream=stream, label="embed") as p:
        p.set_total(2, 100.0)
        p.update_file(0, 50.0)
    out = stream.getvalue()
    assert "embed" in out and "0/2 files, 50/100 s of audio (50%)" in out


class Recorder:
    def __init__(self):
        self.within: list[tuple[object, float]] = []
        self.finished: list[tuple[object, float]] = []

    def set_total(self, files, seconds):
        self.total = seconds

    def update_file(self, key, seconds):
        self.within.append((key, seconds))

    def advance(self, seconds, outcome, key=None):
        self.finished.append((key, seconds))


@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_encode_pipeline_reports_seconds_within_a_long_file(tmp_path, one_thread):
    from audiotok.codecs.encodec import CodecEncoder
    from audiotok.engine import pipeline
    from audiotok.engine.sources import discover
    from audiotok.jobs.encode import EncodeJob
    from audiotok.testing import random_encodec

    wav = write_wav(tmp_path / "in" / "long.wav", 6.0, sr=16000)  # resampled to 24 kHz: seconds stay file seconds
    rec = Recorder()
    adapter = CodecEncoder(random_encodec("encodec_24khz"), 6.0, torch.device("cpu"))
    summary = pipeline.run(discover([str(wav)]), EncodeJob(tmp_path / "o", "npz", "encodec_24khz", 6.0, None),
                           adapter, workers=0, progress=rec)
    assert summary.ok == 1
    n = 6 * 24000
    window = adapter.shared_shape.window  # a 6 s file shares the 4-row calls
    steps = -(-n // window)
    assert [k for k, _ in rec.within] == [0] * (steps - 1)
    assert [s for _, s in rec.within] == pytest.approx([6.0 * k * window / n for k in range(1, steps)])
    assert rec.finished == [(0, 6.0)]


def test_decoder_reports_frames_within_a_file(one_thread):
    from audiotok.codecs.encodec import CodecDecoder
    from audiotok.formats.codes import EncodedItem
    from audiotok.testing import random_encodec

    dec = CodecDecoder(random_encodec("encodec_24khz"), torch.device("cpu"), window=100)
    calls = []
    dec.on_progress = lambda key, done, total: calls.append((key, done, total))
    item = EncodedItem(np.zeros((2, 250), np.int16), None, 250 * 320)
    (key, wav), = dec.run([("k", item)])
    assert key == "k" and wav.shape == (1, 250 * 320)
    assert calls == [("k", 100, 250), ("k", 200, 250), ("k", 250, 250)]


def test_embed_adapter_reports_chunks_within_a_file(one_thread):
    from audiotok.embedders.chunking import MaeAdapter
    from audiotok.embedders.encodecmae import load_mae

    net = load_mae(shared_path("fixtures", "encodecmae", "tiny_mel_st.pt"))
    adapter = MaeAdapter(net, chunk_seconds=1.0, rows=1)
    calls = []
    adapter.on_progress = lambda key, done, total: calls.append((key, done, total))
    out = adapter.run([("x", np.zeros((1, 3 * 24000 + 100), np.float32) + 0.01)]) + adapter.flush()
    assert [k for k, _ in out] == ["x"]
    assert calls == [("x", 1, 4), ("x", 2, 4), ("x", 3, 4)]


def test_cli_prints_progress_lines_in_a_log(cli, tmp_path):
    """stderr captured by pytest is not a terminal: progress comes as plain lines, never a bar."""
    wav = write_wav(tmp_path / "long.wav", 10.0)
    r = cli("encode", wav, "-o", tmp_path / "o", "--log-every", "0.05")
    assert r.code == 0, r
    lines = [line for line in r.err.splitlines() if line.startswith("encode: ")]
    assert lines, r.err
    pattern = re.compile(r"encode: [01]/1 file, \d+(\.\d+)?/10 s of audio \(\d+%\)(, [\d.]+x real time)?, elapsed \d+:\d\d")
    assert all(pattern.match(line) for line in lines), lines
    short = write_wav(tmp_path / "short.wav", 1.0)
    r = cli("encode", short, "-o", tmp_path / "o2", "--log-every", "0")
    assert r.code == 0 and not [line for line in r.err.splitlines() if line.startswith("encode: ")]


class _TimedLines(io.StringIO):
    """A non-terminal stderr that notes when each progress line arrives."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def write(self, s: str) -> int:
        import time

        for line in s.splitlines():
            if line.strip():
                self.lines.append((time.monotonic(), line))
        return super().write(s)


def test_a_long_file_logs_growing_seconds_at_the_log_interval(tmp_path, one_thread):
    """Issue 9 item 1 (the 30-minute file that printed nothing for an hour): in a non-terminal log the
    lines come every ``log_every`` seconds while one long file is still being encoded, each with more
    seconds of that file done than the one before."""
    import time

    from audiotok.codecs.encodec import CodecEncoder
    from audiotok.engine import pipeline
    from audiotok.engine.sources import discover
    from audiotok.jobs.encode import EncodeJob
    from audiotok.testing import random_encodec

    wav = write_wav(tmp_path / "long.wav", 32.0)  # past the 30 s of the lone-row stream
    adapter = CodecEncoder(random_encodec("encodec_24khz"), 6.0, torch.device("cpu"))
    stream = _TimedLines()
    progress = Progress(unit="audio", log_every=0.1, stream=stream, terminal=False, label="encode")
    t0 = time.monotonic()
    with progress:
        summary = pipeline.run(discover([str(wav)]), EncodeJob(tmp_path / "o", "npz", "encodec_24khz", 6.0, None),
                               adapter, workers=0, progress=progress)
    t1 = time.monotonic()
    assert summary.ok == 1
    within = [(t, float(m.group(1))) for t, line in stream.lines
              if (m := re.match(r"encode: 0/1 file, ([\d.]+)/32 s of audio", line))]
    seconds = [s for _, s in within]
    assert len({s for s in seconds if 0 < s < 32}) >= 2, stream.lines  # seconds within the file, before it ends
    assert seconds == sorted(seconds)
    times = [t0] + [t for t, _ in stream.lines] + [t1]
    # the interval is 0.1 s; 5 s leaves room for a loaded machine (the default interval is 10 s)
    assert max(b - a for a, b in zip(times, times[1:])) < 5.0, [round(b - a, 2) for a, b in zip(times, times[1:])]


def test_lm_tokenising_reports_seconds_within_a_file(offline_cache, tmp_path, one_thread):
    """`train lm` / `score` tokenise through LMFeatures (and ScoreAdapter): progress moves within a
    long file as encode's does, instead of sitting at 0 until the file is done."""
    from audiotok.codecs.encodec import CodecEncoder, load_codec
    from audiotok.engine import pipeline
    from audiotok.engine.sources import discover
    from audiotok.lm.adapter import LMFeatures, ScoreAdapter
    from audiotok.train.data import lm_cache

    wav = write_wav(tmp_path / "in" / "long.wav", 6.0)
    encoder = CodecEncoder(load_codec("encodec_24khz"), 6.0, torch.device("cpu"))
    rec = Recorder()
    summary = pipeline.run(discover([str(wav)]), lm_cache(tmp_path / "cache"), LMFeatures(encoder, with_mel=True),
                           workers=0, progress=rec)
    assert summary.ok == 1 and rec.finished == [(0, 6.0)]
    seconds = [s for _, s in rec.within]
    assert len(seconds) >= 2 and seconds == sorted(seconds) and 0 < seconds[0] < seconds[-1] < 6.0

    score = ScoreAdapter(LMFeatures(encoder, with_mel=False), [])
    seen = []
    pipeline.attach_progress(score, SimpleProgress(seen), {7: pipeline.AudioInfo(24000, 1, 48000)})
    encoder.on_progress(7, 1, 2)  # the encoder inside the score adapter reports to the run's progress
    assert seen == [(7, 1.0)]


class SimpleProgress:
    def __init__(self, seen):
        self.seen = seen

    def update_file(self, key, seconds):
        self.seen.append((key, seconds))
