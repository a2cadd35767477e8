"""Hostile inputs and faults (issue 8): planted links, crafted codes files, FIFOs, unreadable
folders, full disks, killed and terminated runs, NaN checkpoints, long and odd names. Each test
shows the clear record or exit status and that valid inputs of the same run still complete with
outputs equal to a clean run's."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from audiotok.errors import InputError, WeightsError
from tests.conftest import REPO, write_wav


def _records(out: Path) -> dict[str, dict]:
    from audiotok.engine.sinks import read_manifest

    return read_manifest(out / "manifest.jsonl")


def _codes(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return z["codes"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory, hub_cache):
    """Two valid clips and their codes from a clean run (the reference for every faulty run)."""
    import pytest as _pytest

    root = tmp_path_factory.mktemp("clean")
    inp = root / "in"
    write_wav(inp / "a.wav", 1.0, seed=1)
    write_wav(inp / "b.wav", 0.6, seed=2)
    mp = _pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(hub_cache))
    mp.setenv("AUDIOTOK_OFFLINE", "1")
    from audiotok.cli import main

    try:
        main(["encode", str(inp), "-o", str(root / "out"), "-q"])
    except SystemExit as exc:
        assert exc.code == 0
    finally:
        mp.undo()
    return inp, {n: _codes(root / "out" / f"{n}.npz") for n in ("a", "b")}


def _inputs_with(tmp_path: Path, clean) -> Path:
    """A fresh input folder holding the two valid clips."""
    import shutil

    inp = tmp_path / "in"
    shutil.copytree(clean[0], inp)
    return inp


def _assert_clean(out: Path, clean, names=("a", "b")) -> None:
    recs = _records(out)
    for n in names:
        np.testing.assert_array_equal(_codes(out / f"{n}.npz"), clean[1][n])
        assert [r["status"] for k, r in recs.items() if k.endswith(f"{n}.wav")] == ["ok"]


# --- 1. writes that cannot be redirected ------------------------------------------------------


def test_a_link_planted_at_the_temp_name_redirects_nothing(tmp_path, monkeypatch):
    from audiotok import files
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    names = iter(["deadbeef", "cafef00d"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    planted = out / f".x.npz.tmp-{os.getpid()}-deadbeef"
    planted.symlink_to(victim)
    files.atomic_write(out / "x.npz", lambda f: f.write(b"new data"))
    assert victim.read_text() == "precious"
    assert (out / "x.npz").read_bytes() == b"new data" and not (out / "x.npz").is_symlink()
    assert planted.is_symlink()  # left alone, never written through


def test_links_in_the_output_folder_are_not_written_through(cli, tmp_path, clean):
    inp = _inputs_with(tmp_path, clean)
    write_wav(inp / "sub" / "c.wav", 0.5, seed=3)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"precious")
    (out / "a.npz").symlink_to(victim)  # an output name pointing at an unrelated file
    (out / "sub").symlink_to(elsewhere)  # an output subfolder leading outside -o
    r = cli("encode", inp, "-o", out, "-q", "--jsonl")
    assert r.code == 1, r
    assert victim.read_bytes() == b"precious" and list(elsewhere.iterdir()) == []
    assert not (out / "a.npz").is_symlink()
    _assert_clean(out, clean)
    rec = _records(out)[str(inp / "sub" / "c.wav")]
    assert rec["status"] == "error"
    assert rec["error"].startswith(f"the output folder {out / 'sub'} is a link leading outside {out}")


def test_a_linked_manifest_is_refused(cli, tmp_path, clean):
    inp = _inputs_with(tmp_path, clean)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.log"
    victim.write_text("precious\n")
    (out / "manifest.jsonl").symlink_to(victim)
    r = cli("encode", inp, "-o", out, "-q")
    assert r.code == 1
    assert r.err.strip().splitlines()[-1] == (
        f"audiotok: error: {out / 'manifest.jsonl'} is a symbolic link; audiotok does not write through links "
        "in its output folder; remove the link and rerun")
    assert victim.read_text() == "precious\n"


def test_stale_temp_files_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    from audiotok.files import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "d").mkdir()
    stale = [tmp_path / f".a.npz.tmp-{dead_pid}", tmp_path / "d" / f".b.npz.tmp-{dead_pid}-0123abcd"]
    live = tmp_path / f".c.npz.tmp-{os.getpid()}-0123abcd"
    others = [tmp_path / ".notes.tmp-x", tmp_path / f".backup.tmp-{dead_pid}"]  # not names audiotok writes
    for p in (*stale, live, *others):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 2
    assert [p.exists() for p in stale] == [False, False] and live.exists() and all(p.exists() for p in others)


# --- 2. --stack rows and paths ---------------------------------------------------------------


def test_stack_rows_always_match_path_records(tmp_path):
    from audiotok.formats.stack import read_stack, write_stack

    names = ["new\nline.wav", "tab\there.wav", os.fsdecode(b"caf\xe9.wav"), "plain.wav"]
    items = []
    for i, name in enumerate(names):
        target = tmp_path / f"e{i}.npy"
        np.save(target, np.full(4, i, np.float32))
        items.append((str(tmp_path / name), target))
    items.insert(2, (str(tmp_path / "missing.wav"), tmp_path / "missing.npy"))  # failed input: no row
    n = write_stack(tmp_path / "feats.npy", items)
    matrix, paths = read_stack(tmp_path / "feats.npy")
    lines = (tmp_path / "feats.paths.jsonl").read_bytes().split(b"\n")
    assert n == 4 and matrix.shape == (4, 4) and len(lines) == 5 and lines[-1] == b""
    assert paths == [str(tmp_path / nm) for nm in names]
    assert os.fsencode(paths[2]).endswith(b"caf\xe9.wav")
    np.testing.assert_array_equal(matrix[:, 0], [0, 1, 2, 3])


# --- 3. decode bombs and crafted codes files --------------------------------------------------


def _npz(path: Path, **arrays) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def _lying_npz(path: Path, frames: int) -> Path:
    """An .npz whose codes header declares [8, frames] int16 over a few bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False, "shape": (8, frames)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("codes.npy", header.getvalue() + bytes(4096))
        for k, v in {"model": np.array("encodec_24khz"), "n_samples": np.array(frames * 320),
                     "bandwidth": np.array(6.0, np.float32)}.items():
            b = io.BytesIO()
            np.save(b, v)
            zf.writestr(f"{k}.npy", b.getvalue())
    path.write_bytes(buf.getvalue())
    return path


def _lm_ecdc(path: Path, samples: int) -> Path:
    meta = json.dumps({"m": "encodec_24khz", "al": samples, "nc": 8, "lm": True}).encode()
    path.write_bytes(b"ECDC" + bytes([0]) + len(meta).to_bytes(4, "big") + meta + bytes(200))
    return path


def test_crafted_codes_files_fail_alone_and_valid_ones_decode(cli, tmp_path, clean):
    from audiotok.formats.codes import read_codes

    cin = tmp_path / "codes"
    cin.mkdir()
    r = cli("encode", clean[0] / "a.wav", "-o", cin, "-q")
    assert r.code == 0
    good = read_codes(str(cin / "a.npz")).item
    from audiotok.formats.ecdc import segment_frames

    seg = segment_frames("encodec_48khz", 96000)  # 2 s at 48 kHz: segments of 1 s every 0.99 s
    c48 = np.zeros((4, sum(seg)), np.int16)
    base48 = {"model": np.array("encodec_48khz"), "bandwidth": np.array(6.0, np.float32),
              "n_samples": np.array(96000, np.int64)}
    expected = {
        "bomb": (_lying_npz(cin / "bomb.npz", 10**8), "declares codes of shape (8, 100000000)"),
        "lm_bomb": (_lm_ecdc(cin / "lm_bomb.ecdc", 10**12), "the .ecdc header gives audio length 1000000000000"),
        "short_scales": (_npz(cin / "short_scales.npz", codes=c48, scales=np.ones(len(seg) - 1, np.float32), **base48),
                         f"holds {len(seg) - 1} scales for {len(seg)} segments of 48 kHz codes; the file is corrupt"),
        "zero": (_npz(cin / "zero.npz", codes=np.zeros((8, 0), np.int16), model=np.array("encodec_24khz"),
                      n_samples=np.array(0), bandwidth=np.array(6.0, np.float32)),
                 "holds no frames of codes (shape [n_q, 0]); there is nothing to decode"),
        "nan_scales": (_npz(cin / "nan_scales.npz", codes=c48, scales=np.r_[np.nan, np.ones(len(seg) - 1)].astype(np.float32),
                            **base48), "holds scales that are NaN, infinite or not positive"),
        "no_scales": (_npz(cin / "no_scales.npz", codes=c48, **base48),
                      "holds 48 kHz codes without their scales array"),
        "length": (_npz(cin / "length.npz", codes=good.codes, model=np.array("encodec_24khz"),
                        n_samples=np.array(10**9), bandwidth=np.array(6.0, np.float32)),
                   f"holds {good.codes.shape[1]} frames of codes but declares 1000000000 samples"),
    }
    out = tmp_path / "out"
    r = cli("decode", cin, "-o", out, "-q")
    assert r.code == 1, r
    assert "Traceback" not in r.err
    recs = _records(out)
    for name, (path, message) in expected.items():
        rec = recs[str(path)]
        assert rec["status"] == "error" and message in rec["error"], (name, rec)
    ok = recs[str(cin / "a.npz")]
    assert ok["status"] == "ok" and ok["channels"] == 1 and ok["out_channels"] == 1
    clean_out = tmp_path / "clean_out"
    assert cli("decode", cin / "a.npz", "-o", clean_out, "-q").code == 0
    assert (out / "a.wav").read_bytes() == (clean_out / "a.wav").read_bytes()


def test_declared_sizes_are_checked_before_allocating(tmp_path):
    from audiotok.formats.codes import read_codes

    with pytest.raises(InputError, match=r"declares codes of shape \(8, 100000000\) \(1600000000 bytes\)"):
        read_codes(str(_lying_npz(tmp_path / "x.npz", 10**8)))
    npy = tmp_path / "x.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (32, 10**9)})
    npy.write_bytes(header.getvalue() + bytes(64))
    with pytest.raises(InputError, match="declares the array of shape"):
        read_codes(str(npy))


# --- 4. non-finite weights and results --------------------------------------------------------


def _poison(state: dict) -> dict:
    key = next(k for k, v in state.items() if hasattr(v, "is_floating_point") and v.is_floating_point())
    state = dict(state)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    return state


def test_nan_encodec_weights_are_refused(cli, tmp_path, hub_cache, clean):
    import torch

    from audiotok.weights import ENCODEC_CHECKPOINTS

    src = hub_cache / "hub" / "checkpoints" / ENCODEC_CHECKPOINTS["encodec_24khz"]
    bad = tmp_path / "nan.th"
    torch.save(_poison(torch.load(src, weights_only=True)), bad)
    r = cli("encode", clean[0], "-o", tmp_path / "out", "--checkpoint", bad, "-q")
    assert r.code == 3 and "Traceback" not in r.err
    assert f"checkpoint {bad} holds NaN values in" in r.err and "the file is damaged" in r.err
    assert not list((tmp_path / "out").glob("*.npz"))


def test_nan_mae_and_lm_checkpoints_are_refused(tmp_path):
    import torch

    from audiotok.embedders.encodecmae import LoadedCheckpoint, build_model
    from audiotok.lm.checkpoints import load_checkpoint, save_checkpoint
    from audiotok.lm.gpt import GPTConfig, build_gpt
    from audiotok.testing import encodecmae_gin, random_encodecmae_state

    state = random_encodecmae_state(dim=32, layers=1, heads=2)
    with pytest.raises(WeightsError, match="holds NaN values in"):
        build_model(LoadedCheckpoint(_poison(state), encodecmae_gin(32, 1, 2), "v2", Path("mae.pt")))
    cfg = GPTConfig.make("token-gpt", "micro")
    model = build_gpt(cfg)
    tok = {"codec": "encodec_24khz", "bandwidth": 6.0, "frame_rate": 75}
    path = save_checkpoint(tmp_path / "lm.pt", model, cfg, tok, {})
    blob = torch.load(path, weights_only=True)
    blob["state_dict"] = _poison(blob["state_dict"])
    torch.save(blob, path)
    with pytest.raises(WeightsError, match=f"checkpoint {path} holds NaN values in"):
        load_checkpoint(path)


def test_non_finite_results_are_error_records_not_ok():
    from audiotok.embedders.chunking import Embedding
    from audiotok.engine.pipeline import nonfinite

    assert nonfinite(Embedding(np.array([1.0, np.nan], np.float32), np.zeros(1), 10)) == "NaN"
    assert nonfinite([np.array([np.inf])]) == "infinite"
    assert nonfinite(Embedding(np.ones(3, np.float32), np.zeros(1), 10)) is None


def test_a_non_finite_result_is_an_error_record_and_the_others_complete():
    """A model result with NaN (one input) is that input's error record; the other inputs of the
    run get the same results as a run without it."""
    from audiotok.engine.pipeline import run
    from audiotok.engine.sources import Source
    from audiotok.formats.audio import AudioInfo

    class Job:
        def __init__(self):
            self.written = {}

        def is_done(self, source):
            return False

        def read_header(self, path):
            return AudioInfo(10, 1, 10)

        def load(self, path):
            return path, AudioInfo(10, 1, 10)

        def finish(self, source, info, result):
            self.written[source.path] = result
            return {}

    class Adapter:
        def run(self, batch):
            return [(k, np.full(3, np.nan if p == "nan" else len(p), np.float32)) for k, p in batch]

        def flush(self):
            return []

        def reset(self):
            pass

    def go(names):
        job, records = Job(), {}
        run([Source(n, n) for n in names], job, Adapter(), workers=0, batch_seconds=100,
            record_sink=lambda o: records.__setitem__(o.source.path, o.record))
        return job.written, records

    written, records = go(["a", "nan", "ccc"])
    clean_written, _ = go(["a", "ccc"])
    assert records["nan"]["status"] == "error" and records["nan"]["error"].startswith("gave NaN values from the model")
    assert "nan" not in written and written.keys() == clean_written.keys()
    for k in clean_written:
        np.testing.assert_array_equal(written[k], clean_written[k])
        assert records[k]["status"] == "ok"


@pytest.mark.skipif(not hasattr(__import__("socket"), "AF_UNIX"), reason="needs UNIX sockets")
def test_a_socket_among_the_inputs_is_recorded_never_opened(cli, tmp_path, clean):
    import socket

    inp = _inputs_with(tmp_path, clean)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(inp / "s.wav"))
    try:
        out = tmp_path / "out"
        r = cli("encode", inp, "-o", out, "-q")
    finally:
        sock.close()
    assert r.code == 1
    assert _records(out)[str(inp / "s.wav")]["error"] == "is a socket, not a regular file; it was skipped without being opened"
    _assert_clean(out, clean)


# --- 5. full disk ---------------------------------------------------------------------------


def _limited_env(hub_cache) -> dict:
    env = dict(os.environ, TORCH_HOME=str(hub_cache), AUDIOTOK_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


def _file_size_limit(limit: int):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_fails_inputs_one_by_one_and_keeps_finished_outputs(tmp_path, hub_cache, clean):
    inp = _inputs_with(tmp_path, clean)
    write_wav(inp / "long.wav", 8.0, seed=4)  # its codes (9.6 KB) exceed the limit, the others' (< 2 KB) do not
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "audiotok", "encode", str(inp), "-o", str(out), "-q"],
                       env=_limited_env(hub_cache), capture_output=True, text=True, timeout=600,
                       preexec_fn=_file_size_limit(6_000))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        "audiotok: error: the output folder could not take more data (File too large)")
    rec = _records(out)[str(inp / "long.wav")]
    assert rec["status"] == "error" and rec["error"] == "output could not be written (File too large)"
    assert not (out / "long.npz").exists() and not [p for p in out.iterdir() if ".tmp-" in p.name]
    _assert_clean(out, clean)


def test_decode_on_a_full_disk_gives_records_not_an_assertion(tmp_path, hub_cache, clean, cli):
    cin = tmp_path / "codes"
    assert cli("encode", clean[0], "-o", cin, "-q").code == 0
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "audiotok", "decode", str(cin), "-o", str(out), "-q"],
                       env=_limited_env(hub_cache), capture_output=True, text=True, timeout=600,
                       preexec_fn=_file_size_limit(40_000))  # a.wav (48 KB) does not fit, b.wav (29 KB) does
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "AssertionError" not in r.stderr
    recs = _records(out)
    assert recs[str(cin / "a.npz")]["error"] == "output could not be written (File too large)"
    assert recs[str(cin / "b.npz")]["status"] == "ok"


def test_a_manifest_write_that_fails_does_not_end_the_run(tmp_path):
    from audiotok.engine.sinks import Manifest, read_manifest

    m = Manifest(tmp_path / "manifest.jsonl")
    m.append({"input": "a", "status": "ok"})
    real = m._f

    class Full:  # a manifest file on a full disk: writes to /dev/full fail with ENOSPC
        def __init__(self):
            self._dev = open("/dev/full", "wb", buffering=0)

        def fileno(self):
            return self._dev.fileno()

        def write(self, s):
            return os.write(self._dev.fileno(), s)

        def flush(self):
            pass

        def close(self):
            self._dev.close()
            real.close()

    m._f = Full()
    m.append({"input": "b", "status": "ok"})
    m.append({"input": "c", "status": "ok"})  # written after reopening
    m.close()
    assert m.failure == "No space left on device" and m.lost == 1
    assert set(read_manifest(tmp_path / "manifest.jsonl")) == {"a", "c"}


# --- 6. FIFOs, devices ----------------------------------------------------------------------


def test_a_fifo_is_recorded_never_opened(cli, tmp_path, clean):
    inp = _inputs_with(tmp_path, clean)
    os.mkfifo(inp / "x.wav")
    out = tmp_path / "out"
    r = cli("encode", inp, "-o", out, "-q")
    assert r.code == 1
    assert _records(out)[str(inp / "x.wav")]["error"] == (
        "is a FIFO (named pipe), not a regular file; it was skipped without being opened")
    _assert_clean(out, clean)


def test_the_readers_do_not_block_on_a_fifo(tmp_path):
    from audiotok.formats import audio
    from audiotok.formats.codes import read_codes

    fifo = tmp_path / "x.npz"
    os.mkfifo(fifo)
    errors = []

    def read_both():
        for reader in (audio.read_header, audio.read, read_codes):
            try:
                reader(str(fifo))
            except InputError as exc:
                errors.append(str(exc))

    t = threading.Thread(target=read_both, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "a reader blocked on a FIFO"
    assert errors == ["is a FIFO (named pipe), not a regular file; it was skipped without being opened"] * 3


# --- 7. killed and terminated runs ------------------------------------------------------------


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_long_run(tmp_path, hub_cache, n=6):
    inp = tmp_path / "many"
    for i in range(n):
        write_wav(inp / f"c{i:02d}.wav", 5.0, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "encode", str(inp), "-o", str(out), "-q",
                             "--workers", "1", "--batch-seconds", "4"],
                            env=_limited_env(hub_cache), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        man = out / "manifest.jsonl"
        if man.exists() and man.read_text().count("\n") >= 1 and _children(proc.pid):
            return proc, inp, out
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the run did not start working: {proc.stderr.read()}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(tmp_path, hub_cache):
    proc, _, _ = _start_long_run(tmp_path, hub_cache)
    children = _children(proc.pid)
    assert children
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "worker or resource tracker outlived its killed parent"
    err = proc.stderr.read()  # the tracker cleaned up the pool's semaphores without a word about it
    assert "leaked semaphore" not in err and "resource_tracker" not in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_like_ctrl_c(tmp_path, hub_cache):
    proc, inp, out = _start_long_run(tmp_path, hub_cache)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: finished outputs are on disk" in err and "Traceback" not in err
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    deadline = time.monotonic() + 60  # the resource tracker exits once it sees its pipe close
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)]
    for _name, rec in _records(out).items():  # what is listed as finished is complete
        assert rec["status"] == "ok" and _codes(Path(rec["output"])).shape[0] == 8


def test_ctrl_c_while_starting_is_not_a_traceback():
    from audiotok.engine.interrupts import quiet_startup

    with pytest.raises(SystemExit) as info:
        with quiet_startup():
            raise KeyboardInterrupt
    assert info.value.code == 130


# --- 8. user errors are one sentence --------------------------------------------------------


def test_o_naming_an_existing_file(cli, tmp_path, clean):
    target = tmp_path / "file.txt"
    target.write_text("x")
    r = cli("encode", clean[0], "-o", target)
    assert r.code == 2
    assert r.err.strip() == (f"audiotok: error: -o {target} is an existing file, not a folder; choose a folder "
                             "(it is created if missing)")


def _without_permission_override():
    """In the child, before exec: as root, drop the capabilities that let root ignore permission
    bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so the exec'd process
    obeys file modes like any user. A normal user obeys them anyway."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _run_unprivileged(code: str, *args) -> subprocess.CompletedProcess:
    """``python -c code`` in a process that obeys file permissions."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), preexec_fn=_without_permission_override)


@pytest.fixture
def open_tmp(tmp_path):
    yield tmp_path
    for p in tmp_path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


def test_a_read_only_output_folder(open_tmp):
    ro = open_tmp / "ro"
    ro.mkdir(mode=0o555)
    ro.chmod(0o555)
    code = ("import sys\nfrom audiotok.engine.sinks import prepare_output_dir\nfrom audiotok.errors import OutputError\n"
            "try:\n    prepare_output_dir(sys.argv[1])\nexcept OutputError as e:\n    print(e)\n")
    r = _run_unprivileged(code, str(ro / "out"))
    assert r.stdout.strip() == f"cannot write to -o {ro / 'out'} (Permission denied); choose a writable folder", r


def test_a_read_only_output_folder_through_the_cli(open_tmp, monkeypatch):
    ro = open_tmp / "ro"
    ro.mkdir()
    write_wav(open_tmp / "a.wav", 0.2)
    ro.chmod(0o555)
    code = "import sys\nfrom audiotok.cli import main\nmain(sys.argv[1:])"
    monkeypatch.setenv("TORCH_HOME", "/nonexistent")  # -o is checked before weights are looked for
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    r = _run_unprivileged(code, "encode", str(open_tmp / "a.wav"), "-o", str(ro), "-q")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"audiotok: error: cannot write to -o {ro} (Permission denied); choose a writable folder"


@pytest.mark.parametrize("change, message", [
    ({"context": 0}, "has context = 0 in its model config"),
    ({"heads": "four"}, "has heads = 'four' in its model config"),
    ({"unknown_key": 1}, "has a model config audiotok cannot read"),
    ({"dim": 30}, "does not load into the token-gpt model its config describes"),
])
def test_malformed_lm_checkpoints_are_one_sentence(tmp_path, change, message):
    import torch

    from audiotok.lm.checkpoints import load_checkpoint, save_checkpoint
    from audiotok.lm.gpt import GPTConfig, build_gpt

    cfg = GPTConfig.make("token-gpt", "micro")
    tok = {"codec": "encodec_24khz", "bandwidth": 6.0, "frame_rate": 75}
    path = save_checkpoint(tmp_path / "lm.pt", build_gpt(cfg), cfg, tok, {})
    blob = torch.load(path, weights_only=True)
    blob["config"].update(change)
    torch.save(blob, path)
    with pytest.raises(WeightsError, match=message):
        load_checkpoint(path)


def test_lm_checkpoint_missing_a_tensor(tmp_path):
    import torch

    from audiotok.lm.checkpoints import load_checkpoint, save_checkpoint
    from audiotok.lm.gpt import GPTConfig, build_gpt

    cfg = GPTConfig.make("token-gpt", "micro")
    path = save_checkpoint(tmp_path / "lm.pt", build_gpt(cfg), cfg, {"codec": "encodec_24khz", "bandwidth": 6.0}, {})
    blob = torch.load(path, weights_only=True)
    blob["state_dict"].pop(next(iter(blob["state_dict"])))
    torch.save(blob, path)
    with pytest.raises(WeightsError, match="Missing key"):
        load_checkpoint(path)


@pytest.mark.parametrize("heads", ["0", "'four'"])
def test_malformed_mae_configs_are_one_sentence(heads):
    from audiotok.embedders.encodecmae import LoadedCheckpoint, build_model
    from audiotok.testing import encodecmae_gin, random_encodecmae_state

    state = random_encodecmae_state(dim=32, layers=1, heads=2)
    gin = encodecmae_gin(32, 1, 2).replace("NUM_ENCODER_HEADS = 2", f"NUM_ENCODER_HEADS = {heads}")
    with pytest.raises(WeightsError, match="mae.pt: "):
        build_model(LoadedCheckpoint(state, gin, "v2", Path("mae.pt")))


@pytest.mark.parametrize("damage, message", [
    ("missing", "the checkpoint has no wav_encoder.post_net.weight tensor, so it is not an EnCodecMAE model"),
    ("unexpected", "unexpected tensor extra.weight; this is not a checkpoint audiotok can read"),
    ("size", "the checkpoint's config says MODEL_DIM = 32 but its tensors have 3"),
])
def test_malformed_mae_tensors_are_one_sentence(damage, message):
    import torch

    from audiotok.embedders.encodecmae import LoadedCheckpoint, build_model
    from audiotok.testing import encodecmae_gin, random_encodecmae_state

    state = dict(random_encodecmae_state(dim=32, layers=1, heads=2))
    if damage == "missing":
        state.pop("wav_encoder.post_net.weight")
    elif damage == "unexpected":
        state["extra.weight"] = torch.zeros(2)
    else:
        key = next(k for k, v in state.items() if v.ndim == 2)
        state[key] = torch.zeros(3, 3)
    with pytest.raises(WeightsError) as err:
        build_model(LoadedCheckpoint(state, encodecmae_gin(32, 1, 2), "v2", Path("mae.pt")))
    assert str(err.value) == f"mae.pt: {message}"


# --- 9. unreadable folders --------------------------------------------------------------------


def test_an_unreadable_subfolder_gives_a_record(open_tmp):
    (open_tmp / "in" / "locked").mkdir(parents=True)
    write_wav(open_tmp / "in" / "a.wav", 0.2)
    write_wav(open_tmp / "in" / "locked" / "b.wav", 0.2)
    (open_tmp / "in" / "locked").chmod(0o000)
    code = ("import sys, json\nfrom audiotok.engine.sources import discover\n"
            "print(json.dumps([(s.path, s.error) for s in discover([sys.argv[1]])]))")
    r = _run_unprivileged(code, str(open_tmp / "in"))
    got = json.loads(r.stdout)
    assert got == [[str(open_tmp / "in" / "a.wav"), None],
                   [str(open_tmp / "in" / "locked"),
                    "is a folder that cannot be read (Permission denied); its files were not processed"]]


def test_an_unreadable_subfolder_through_encode(open_tmp, hub_cache, clean):
    import shutil

    inp = open_tmp / "in"
    shutil.copytree(clean[0], inp)
    (inp / "locked").mkdir()
    shutil.copy(clean[0] / "a.wav", inp / "locked" / "c.wav")
    (inp / "locked").chmod(0o000)
    out = open_tmp / "out"
    r = subprocess.run([sys.executable, "-m", "audiotok", "encode", str(inp), "-o", str(out), "-q"],
                       env=_limited_env(hub_cache), capture_output=True, text=True, timeout=600,
                       preexec_fn=_without_permission_override)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    rec = _records(out)[str(inp / "locked")]
    assert rec["status"] == "error"
    assert rec["error"] == "is a folder that cannot be read (Permission denied); its files were not processed"
    _assert_clean(out, clean)


# --- 10. long names -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [250, 255])
def test_names_up_to_the_file_system_limit(cli, tmp_path, clean, length):
    import shutil

    name = "n" * (length - 4) + ".wav"
    (tmp_path / "in").mkdir()
    shutil.copy(clean[0] / "a.wav", tmp_path / "in" / name)
    out = tmp_path / "out"
    r = cli("encode", tmp_path / "in" / name, "-o", out, "-q")
    assert r.code == 0, r
    np.testing.assert_array_equal(_codes(out / (name[:-4] + ".npz")), clean[1]["a"])


def test_temp_names_stay_within_the_limit():
    from audiotok.files import NAME_MAX, temp_name

    for name in ("x.npz", "y" * 255, os.fsdecode(b"\xe9" * 255)):
        assert len(os.fsencode(temp_name(name))) <= NAME_MAX


# --- 11. options before `--` ------------------------------------------------------------------


def test_the_documented_dash_name_example(cli, tmp_path, clean, monkeypatch):
    import shutil

    shutil.copy(clean[0] / "a.wav", tmp_path / "-odd-name.wav")
    monkeypatch.chdir(tmp_path)
    r = cli("encode", "-o", "tokens/", "-q", "--", "-odd-name.wav")
    assert r.code == 0, r
    np.testing.assert_array_equal(_codes(tmp_path / "tokens" / "-odd-name.npz"), clean[1]["a"])
    readme = (REPO / "README.md").read_text()
    assert "audiotok encode -o tokens/ -- -odd-name.wav" in readme


# --- 13. messages -----------------------------------------------------------------------------


def test_messages_name_the_problem(cli, tmp_path, clean):
    import soundfile as sf

    inp = _inputs_with(tmp_path, clean)
    rng = np.random.default_rng(0)
    (inp / "noise.wav").write_bytes(b"RIFF" + rng.bytes(4000))
    sf.write(inp / "loud.wav", (50 * np.sin(np.arange(4800) / 5)).astype(np.float32), 24000, subtype="FLOAT")
    out = tmp_path / "out"
    r = cli("encode", inp, "-o", out, "-q")
    assert r.code == 1
    recs = _records(out)
    noise = recs[str(inp / "noise.wav")]["error"]
    assert "<_io" not in noise and "pipe" not in noise
    loud = recs[str(inp / "loud.wav")]
    assert loud["status"] == "ok" and loud["warning"].startswith("peaks at 50, above full scale (1.0)")
    assert f"warning: {inp / 'loud.wav'} peaks at 50" in r.err
    _assert_clean(out, clean)


def test_a_lying_flac_header_neither_inflates_progress_nor_memory(tmp_path):
    import soundfile as sf

    from audiotok.formats import audio
    path = tmp_path / "liar.flac"
    sf.write(path, np.zeros(4800, np.float32), 48000, format="FLAC")
    data = bytearray(path.read_bytes())
    # STREAMINFO: the 36-bit total sample count ends at byte 8 + 18 + 4 + ... (offsets 8+13..8+17)
    start = 4 + 4 + 13
    total = (1 << 36) - 1
    data[start] = (data[start] & 0xF0) | (total >> 32)
    data[start + 1:start + 5] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    info = audio.read_header(str(path))
    assert info.frames == len(data) * audio.FRAMES_PER_BYTE  # capped: 2**36 frames would be 397 h
    with pytest.raises(InputError) as err:  # libsndfile cannot seek to the declared end
        audio.read(str(path))
    assert str(err.value).startswith("cannot be decoded as audio (") and "too large" not in str(err.value)


def test_embed_stack_with_names_that_break_lines(cli, tmp_path, clean):
    import shutil

    from audiotok.formats.stack import read_stack
    from tests.conftest import shared_path

    ckpt = shared_path("fixtures", "encodecmae", "tiny_mel_st.pt")
    inp = tmp_path / "in"
    inp.mkdir()
    names = [b"new\nline.wav", b"tab\there.wav", b"caf\xe9.wav", b"plain.wav"]
    for i, name in enumerate(names):
        shutil.copy(clean[0] / ("a.wav" if i % 2 else "b.wav"), os.path.join(os.fsencode(inp), name))
    out = tmp_path / "emb"
    r = cli("embed", inp, "-o", out, "-m", ckpt, "-q", "--stack", tmp_path / "feats.npy")
    assert r.code == 0, r
    matrix, paths = read_stack(tmp_path / "feats.npy")
    assert matrix.shape[0] == len(paths) == 4
    assert sorted(os.fsencode(os.path.basename(p)) for p in paths) == sorted(names)
    for row, p in zip(matrix, paths):
        emb = out / (os.path.basename(p)[:-4] + ".npz")
        with np.load(emb) as z:
            np.testing.assert_array_equal(row, z["embedding"])


def test_a_damaged_score_output_file_is_read_past(cli, tmp_path, clean):
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(b"\xff\xfe garbage\n[1, 2]\n{\"input\": 5, \"lm\": 3}\n{\"status\": \"ok\"\n"
                       b'{"input": "x", "status": "ok", "lm": {"sha256": ["a list"]}, "tokenizer": {"codebooks": 5}}\n'
                       b'{"input": [1], "status": "ok", "lm": {}}\n')
    r = cli("score", clean[0] / "b.wav", "--model", "encodec-lm", "--device", "cpu", "--workers", "0", "-q",
            "-o", scores)
    assert r.code == 0, r
    last = json.loads(scores.read_bytes().splitlines()[-1])
    assert last["status"] == "ok" and last["input"] == str(clean[0] / "b.wav") and np.isfinite(last["nll"])


# --- 8. every command's output paths are checked before any work ------------------------------

_AUDIO = "{inp}"
_FILE_OUTPUTS = [  # (arguments, the option's wording in the message, the path given to it)
    (["score", _AUDIO, "-m", "encodec-lm", "--device", "cpu", "-o", "{f}/s.jsonl"], "the folder of -o", "{f}"),
    (["score", _AUDIO, "-m", "encodec-lm", "--device", "cpu", "--summary", "{f}/s.json"], "the folder of --summary", "{f}"),
    (["score", _AUDIO, "-m", "encodec-lm", "--device", "cpu", "--frames", "{f}"], "--frames", "{f}"),
    (["score", _AUDIO, "-m", "encodec-lm", "--device", "cpu", "--plot", "{f}"], "--plot", "{f}"),
    (["probe", _AUDIO, "--labels-from-parent", "-o", "{f}/r.json"], "the folder of -o", "{f}"),
    (["probe", _AUDIO, "--labels-from-parent", "--plot", "{f}/p.png"], "the folder of --plot", "{f}"),
    (["train", "lm", _AUDIO, "-o", "{f}/lm.pt"], "the folder of -o", "{f}"),
    (["train", "mae", _AUDIO, "-o", "{f}/mae.pt"], "the folder of -o", "{f}"),
    (["train", "lm", _AUDIO, "-o", "{ok}/lm.pt", "--cache", "{f}"], "--cache", "{f}"),
    (["embed", _AUDIO, "-o", "{ok}/emb", "-m", "{ok}/missing.pt", "--stack", "{f}/feats.npy"], "the folder of --stack",
     "{f}"),
]


def _fill(args: list[str], **paths) -> list[str]:
    return [a.format(**paths) for a in args]


@pytest.mark.parametrize("args, what, shown", _FILE_OUTPUTS, ids=lambda x: None)
def test_output_paths_naming_a_file_are_one_sentence(cli, tmp_path, clean, args, what, shown):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = cli(*_fill(args, inp=str(clean[0]), f=str(f), ok=str(tmp_path / "ok")))
    assert r.code == 2, r
    assert r.err.strip() == (f"audiotok: error: {what} {shown.format(f=f)} is an existing file, not a folder; "
                             "choose a folder (it is created if missing)")
    assert f.read_text() == "x"


def test_output_paths_in_a_read_only_folder_are_one_sentence(open_tmp, clean):
    """The same commands with the output in a read-only folder: exit 1 and one sentence, before any
    model is loaded (TORCH_HOME points nowhere) and before any training or embedding."""
    ro = open_tmp / "ro"
    ro.mkdir()
    ok = open_tmp / "ok"
    ok.mkdir()
    runs = [_fill(a, inp=str(clean[0]), f=str(ro / "x"), ok=str(ok)) for a, _, _ in _FILE_OUTPUTS]
    ro.chmod(0o555)
    code = ("import contextlib, io, json, sys\nfrom audiotok.cli import main\nout = []\n"
            "for argv in json.loads(sys.argv[1]):\n    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n        try:\n            main(argv)\n            c = 0\n"
            "        except SystemExit as e:\n            c = e.code\n    out.append([c, err.getvalue()])\n"
            "print(json.dumps(out))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(runs)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO), TORCH_HOME="/nonexistent", AUDIOTOK_OFFLINE="1"),
                       preexec_fn=_without_permission_override)
    got = json.loads(r.stdout)
    for (args, what, _), (code_, err) in zip(_FILE_OUTPUTS, got):
        assert (code_, err.strip()) == (1, f"audiotok: error: cannot write to {what} {ro / 'x'} (Permission denied); "
                                           "choose a writable folder"), args
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("args", [["probe", "{inp}", "--labels-from-parent", "-o", "{d}"],
                                  ["probe", "{inp}", "--labels-from-parent", "--plot", "{d}"],
                                  ["embed", "{inp}", "-o", "{d}/emb", "-m", "{d}/missing.pt", "--stack", "{d}/s"]])
def test_a_folder_given_for_a_report_file(cli, tmp_path, clean, args):
    (tmp_path / "s.npy").mkdir()
    r = cli(*_fill(args, inp=str(clean[0]), d=str(tmp_path)))
    assert r.code == 2
    opt, shown = args[-2], tmp_path / "s.npy" if args[0] == "embed" else tmp_path
    assert r.err.strip() == f"audiotok: error: {opt} {shown} is a folder; {opt} takes a file path"


def test_an_os_error_escaping_a_command_is_one_sentence(cli, tmp_path, clean, monkeypatch):
    """The net under every command: a write at the end of a command that fails (here the
    --summary of score on a full disk) is one sentence and exit 1."""
    import errno

    from audiotok.jobs import score

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.json"))

    monkeypatch.setattr(score, "score_files", full)
    r = cli("score", clean[0], "-m", "encodec-lm", "--summary", tmp_path / "s.json")
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.strip() == (f"audiotok: error: could not use {tmp_path / 's.json'} (No space left on device); "
                             "free space or choose another path, then rerun")


# --- 7. training stops on SIGTERM like Ctrl-C ---------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_training_with_a_complete_checkpoint(tmp_path, hub_cache, clean):
    from audiotok.lm.checkpoints import load_checkpoint

    ckpt = tmp_path / "lm.pt"
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "train", "lm", str(clean[0]), "-o", str(ckpt), "-q",
                             "--arch", "token-gpt", "--steps", "100000", "--val-fraction", "0", "--workers", "0"],
                            env=_limited_env(hub_cache), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not ckpt.is_file() and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint after 300 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == (f"interrupted: {ckpt} holds the last checkpoint saved; rerun with "
                                            "--resume to continue from it")
    assert "Traceback" not in err
    assert load_checkpoint(ckpt).config.arch == "token-gpt"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --- 8. unusable weights in decode -------------------------------------------------------------


def test_decode_with_unusable_weights_exits_3(cli, tmp_path, clean):
    cin = tmp_path / "codes"
    assert cli("encode", clean[0], "-o", cin, "-q").code == 0
    r = cli("decode", cin, "-o", tmp_path / "d1", "-q", "--checkpoint", tmp_path / "missing.th")
    assert r.code == 3
    assert r.err.strip() == f"audiotok: error: checkpoint file {tmp_path / 'missing.th'} does not exist; check the --checkpoint path"
    junk = tmp_path / "junk.th"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    r = cli("decode", cin, "-o", tmp_path / "d2", "-q", "--checkpoint", junk)
    assert r.code == 3 and "Traceback" not in r.err
    assert r.err.strip().startswith(f"audiotok: error: could not read {junk} as a weights-only torch checkpoint "
                                    "(refused by the weights-only unpickler: ")
    assert "weights_only` set to `False`" not in r.err  # torch's advice to load unsafely is not passed on
    assert not list((tmp_path / "d2").glob("*.wav"))


# --- 12. score reruns compare the settings of the records ---------------------------------------


def test_score_rerun_with_another_tokenizer_scores_again(cli, tmp_path, clean):
    scores = tmp_path / "scores.jsonl"
    base = ("score", clean[0] / "b.wav", "-m", "encodec-lm", "--device", "cpu", "--workers", "0", "-o", scores)

    def records():
        return [json.loads(x) for x in scores.read_text().splitlines()]

    assert cli(*base, "-b", "6").code == 0
    r = cli(*base, "-b", "6")
    assert r.code == 0 and len(records()) == 1  # same settings: skipped
    r = cli(*base, "-b", "12")
    assert r.code == 0
    recs = records()
    assert [(x["tokenizer"]["bandwidth"], len(x["nll_per_codebook"])) for x in recs] == [(6.0, 8), (12.0, 16)]
    assert cli(*base, "-b", "12").code == 0 and len(records()) == 2
