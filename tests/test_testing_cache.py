"""The random test models are built once per machine: processes that need them at the same time
(the test workers at the start of a run) build different models, never the same one twice."""

from __future__ import annotations

import threading
import time

import torch

import audiotok.testing as testing


def test_a_build_lock_is_held_by_one_opener_at_a_time(tmp_path):
    path = tmp_path / "m.pt"
    with testing._build_lock(path, wait=True) as first:
        assert first is True
        with testing._build_lock(path, wait=False) as second:  # another open file: flock refuses it
            assert second is False
    with testing._build_lock(path, wait=False) as again:
        assert again is True


def test_prebuild_builds_a_model_another_process_holds_last_and_each_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_TEST_CACHE", str(tmp_path))
    monkeypatch.setattr(testing, "_ENCODEC_CACHE", {})
    built = []

    def fake_build(model, seed, path):
        built.append(model)
        state = {"w": torch.full((2,), float(len(built)))}
        torch.save(state, path)
        return state

    monkeypatch.setattr(testing, "_build_and_save", fake_build)
    a = tmp_path / f"encodec_24khz-seed0-{testing._builder_key('encodec_24khz', 0)}.pt"
    held, release = threading.Event(), threading.Event()

    def hold():  # another builder holds the 24 kHz model's lock for a while, then gives up
        with testing._build_lock(a, wait=True):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    testing.prebuild_random_encodecs(["encodec_24khz", "encodec_48khz"])
    t.join()
    assert built == ["encodec_48khz", "encodec_24khz"]  # the free one first, the held one after waiting
    assert time.monotonic() - t0 >= 0.25
    assert set(testing._ENCODEC_CACHE) == {("encodec_24khz", 0), ("encodec_48khz", 0)}

    monkeypatch.setattr(testing, "_ENCODEC_CACHE", {})  # a new process: both come from the disk
    testing.prebuild_random_encodecs(["encodec_24khz", "encodec_48khz"])
    assert built == ["encodec_48khz", "encodec_24khz"]
    assert torch.equal(testing._ENCODEC_CACHE[("encodec_48khz", 0)]["w"], torch.full((2,), 1.0))
