"""Lanes (``engine.lanes``): DAC's spans and the row streams of Mimi and EnCodec 24 kHz
(``codecs.rows.LanedRows``) run side by side on the CPU, one torch thread each. What a user relies on: the same codes for every ``--threads`` from 1 to 4 (each
call rounds as a one-thread call), the same codes however files spread over lanes, a failing call
failing its own files only, and the outputs saying how the codes were computed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from audiotok.codecs.dac import Chunking, DacCodec, DacEncoder
from audiotok.codecs.encodec import CodecEncoder
from audiotok.codecs.mimi import MimiEncoder, StreamShape
from audiotok.engine.lanes import MAX_LANES, Lanes, lane_plan
from audiotok.errors import InputError
from audiotok.registry import get_codec
from audiotok.testing import random_encodec, save_dac_checkpoint, synthetic_audio

from .conftest import run_in_batches, write_wav

MIMI = Path(__file__).resolve().parent / "fixtures" / "mimi" / "model.safetensors"


@pytest.fixture(scope="module")
def dac16(tmp_path_factory):
    return save_dac_checkpoint(tmp_path_factory.mktemp("lanes") / "dac16.pth", "dac_16khz", seed=3)


def test_lanes_pin_one_torch_thread_each_and_leave_the_caller_alone():
    before = torch.get_num_threads()
    lanes = Lanes(2)
    try:
        assert torch.get_num_threads() == before
        seen = [lanes.submit(lambda: (torch.get_num_threads(), threading.get_ident()), lane=j).result()
                for j in (0, 1, 0)]
        assert [s[0] for s in seen] == [1, 1, 1]
        assert seen[0][1] == seen[2][1] != seen[1][1] != threading.get_ident()  # a lane is one thread
        boom = lanes.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            boom.result()
        # the least loaded lane takes a call (outstanding cost)
        gate = threading.Event()
        held = lanes.submit(gate.wait, cost=10.0, lane=0)
        assert lanes.least_loaded() == 1 and lanes.loads() == [10.0, 0.0]
        gate.set()
        held.result()
    finally:
        lanes.close()
    inline = Lanes(1)  # one lane: the caller's thread, at once
    assert inline.submit(threading.get_ident).result() == threading.get_ident()
    assert inline.submit(lambda: 1 / 0).exception() is not None


def test_lane_plan_follows_the_thread_count_up_to_the_cap():
    before = torch.get_num_threads()
    try:
        for threads, plan in ((1, (1, 1)), (2, (2, 1)), (MAX_LANES, (MAX_LANES, 1)), (2 * MAX_LANES, (MAX_LANES, 2))):
            torch.set_num_threads(threads)
            assert lane_plan(torch.device("cpu")) == plan
        assert lane_plan("cuda") == (1, 2 * MAX_LANES)
    finally:
        torch.set_num_threads(before)


def test_dac_codes_in_lanes_equal_one_thread_alone(dac16, one_thread):
    """Files (one chunked into 5 spans) through 1, 2 and 3 lanes, in batches of 1 and all: the codes
    of each file alone through one thread."""
    codec = DacCodec(get_codec("dac_16khz"), dac16)
    small = Chunking(whole=40, chunk=25, context=6)  # 0.8 s whole; longer files in 0.5 s spans
    wavs = [synthetic_audio(s, 16000, seed=i) for i, s in enumerate([0.3, 2.3, 0.05, 0.9, 1.4])]
    def encoder(lanes):
        return DacEncoder(codec.model, codec.spec, 6.0, torch.device("cpu"), chunking=small, lanes=lanes)

    alone = {i: encoder(Lanes(1)).encode(w) for i, w in enumerate(wavs)}
    assert len(small.spans(alone[1].codes.shape[1])) == 5
    for n in (2, 3):
        lanes = Lanes(n)
        try:
            for size in (1, len(wavs)):
                enc = encoder(lanes)
                assert enc.numerics()["threads"] == 1 and enc.numerics()["lanes"] == n
                got = run_in_batches(enc, list(enumerate(wavs)), size)
                for i in alone:
                    np.testing.assert_array_equal(got[i].codes, alone[i].codes, err_msg=f"{n} lanes, batch {size}")
        finally:
            lanes.close()


def test_dac_a_failing_call_fails_its_file_alone(dac16):
    codec = DacCodec(get_codec("dac_16khz"), dac16)
    lanes = Lanes(2)
    try:
        enc = DacEncoder(codec.model, codec.spec, 6.0, torch.device("cpu"), lanes=lanes)
        real = enc._call

        def flaky(x, lo, hi):
            if x.shape[0] == 320 * 7:  # the file of 7 frames
                raise RuntimeError("simulated out of memory")
            return real(x, lo, hi)

        enc._call = flaky
        wavs = [synthetic_audio(s, 16000, seed=i) for i, s in enumerate([0.3, 0.14, 0.5])]
        got = run_in_batches(enc, list(enumerate(wavs)), 3)
        assert isinstance(got[1], InputError) and "model step failed (RuntimeError: simulated" in str(got[1])
        assert got[0].codes.shape == (12, 15) and got[2].codes.shape == (12, 25)
    finally:
        lanes.close()


@pytest.fixture(scope="module")
def mimi():
    return get_codec("mimi").load(MIMI, "cpu")


def _mimi_files() -> list[np.ndarray]:
    return [synthetic_audio(s, 24000, seed=20 + i) for i, s in enumerate([0.4, 5.2, 1.1, 0.08, 2.5, 4.3])]


@pytest.mark.parametrize("codec", ["mimi", "encodec_24khz"])
def test_row_streams_in_lanes_equal_one_thread_alone(codec, mimi, one_thread):
    """Files (two long enough for the lone shape; for EnCodec one shorter than 8 frames, encoded whole)
    through 1, 2 and 3 lanes and batches of 1, 2 and all: each file's codes equal its codes alone
    through one thread, and the lanes' progress reaches the pipeline's callback in the caller's thread."""
    cpu = torch.device("cpu")
    if codec == "mimi":
        files = _mimi_files()
        kw = {"shared": StreamShape(2, 7680), "lone": StreamShape(1, 11520), "lone_seconds": 4.0}

        def make(lanes):
            return MimiEncoder(mimi, 1.1, cpu, lanes=lanes, **kw)
    else:
        files = [synthetic_audio(s, 24000, seed=40 + i) for i, s in enumerate([0.4, 4.6, 1.1, 0.05, 2.5, 0.9])]
        model = random_encodec("encodec_24khz")

        def make(lanes):
            return CodecEncoder(model, 6.0, cpu, lanes=lanes, lone_seconds=4.0)
    alone = [make(Lanes(1)) for _ in files]
    ref = [dict(e.run([(i, f)]) + e.flush())[i].codes for i, (e, f) in enumerate(zip(alone, files))]
    for n in (2, 3):
        lanes = Lanes(n)
        try:
            for size in (1, 2, len(files)):
                enc = make(lanes)
                assert enc.numerics()["threads"] == 1 and enc.numerics()["lanes"] == n
                calls = []
                enc.on_progress = lambda key, done, total, calls=calls: calls.append((key, threading.get_ident()))
                got = run_in_batches(enc, list(enumerate(files)), size)
                for i, r in enumerate(ref):
                    np.testing.assert_array_equal(got[i].codes, r, err_msg=f"{n} lanes, batch {size}, file {i}")
                assert calls and {t for _, t in calls} == {threading.get_ident()}
        finally:
            lanes.close()


def test_mimi_a_failing_lane_fails_the_files_it_held(mimi):
    kw = {"shared": StreamShape(2, 7680), "lone": StreamShape(1, 11520), "lone_seconds": 4.0}
    lanes = Lanes(2)
    try:
        enc = MimiEncoder(mimi, 1.1, torch.device("cpu"), lanes=lanes, **kw)
        real = enc._encode_window

        def flaky(x, state, fresh, ends):
            if threading.current_thread().name.startswith("audiotok-lane1"):
                raise RuntimeError("simulated failure")
            return real(x, state, fresh, ends)

        for rows in enc.rows.schedulers:
            rows.shared.encode_window = rows.lone.encode_window = flaky
        files = _mimi_files()[:4]
        got = run_in_batches(enc, list(enumerate(files)), 4)
        failed = {k for k, v in got.items() if isinstance(v, Exception)}
        assert failed and len(failed) < len(files) and set(got) == set(range(len(files)))
        assert all("model step failed (RuntimeError: simulated failure)" in str(got[k]) for k in failed)
        # the next batch runs (the failing lane's streams were reset)
        enc2 = MimiEncoder(mimi, 1.1, torch.device("cpu"), lanes=lanes, **kw)
        ok = run_in_batches(enc2, [(9, files[0])], 1)
        assert ok[9].codes.shape[0] == 8
    finally:
        lanes.close()


@pytest.mark.parametrize("model", ["dac_16khz", "mimi", "encodec_24khz"])
def test_codes_identical_for_every_thread_count_through_the_cli(cli, tmp_path, dac16, model):
    """``--threads`` 1, 2 and 3 write the same codes (1 lane of 1 thread; 2 and 3 lanes of one),
    and the outputs record the threads of a call and the lanes."""
    src = tmp_path / "in"
    for i, s in enumerate([0.4, 11.5, 1.3, 2.2] if model == "dac_16khz" else [0.4, 3.5, 1.3, 2.2]):
        write_wav(src / f"f{i}.wav", s, sr=16000, seed=60 + i)
    weights = {"dac_16khz": ["--checkpoint", dac16], "mimi": ["--checkpoint", MIMI]}.get(model, [])  # EnCodec: the test cache
    codes = {}
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}"
        r = cli("encode", src, "-o", out, "-m", model, *weights, "--threads", threads, "-q",
                "--batch-seconds", "2", "--jsonl")
        assert r.code == 0, r.err
        for rec in map(json.loads, r.out.splitlines()):
            assert rec["numerics"]["threads"] == 1 and rec["numerics"].get("lanes", 1) == threads, rec
        codes[threads] = {}
        for p in sorted(out.glob("*.npz")):
            with np.load(p) as z:
                codes[threads][p.name] = z["codes"].copy()
        assert len(codes[threads]) == 4
    for threads in (2, 3):
        for name, c in codes[1].items():
            np.testing.assert_array_equal(codes[threads][name], c, err_msg=f"--threads {threads}: {name}")
