#!/usr/bin/env python
"""Encode benchmark: the EnCodec loop a user writes today vs ``audiotok encode`` vs audiotok's
model adapter alone, on the same files, in one run, interleaved.

    python benchmarks/encode.py                      # the comparison table (a few minutes)
    python benchmarks/encode.py --json results.json  # also write every number as JSON
    python benchmarks/encode.py --long               # one 30-minute file: peak RSS and wall time

Methods (each run in its own child process so its peak RSS is its own):

  a  naive loop: ``encodec`` model loaded once (``EncodecModel.encodec_model_24khz(pretrained=True)``
     from the same torch hub cache), per file ``soundfile.read``, mean to mono,
     ``librosa.resample(res_type="soxr_hq")`` to 24 kHz, ``model.encode`` under inference mode,
     ``np.save``. Timed from process spawn to exit (imports and model load included).
  b  ``python -m audiotok encode INPUTS -o OUT --quiet --overwrite`` as a subprocess, timed from
     spawn to exit (startup included). Headline: the default ``--workers``; other worker counts
     are extra rows.
  c  audiotok's ``CodecEncoder.run`` + ``flush`` on audio already decoded and resampled to 24 kHz
     (no I/O): the model-only speed of the adapter. Timed around run/flush only.

Nothing is downloaded: the weights are a random-weight EnCodec with filled codebooks
(``audiotok.testing.random_encodec``) saved under the official file name in a temporary
``TORCH_HOME``, or ``--checkpoint PATH`` (real weights) linked there. Speed does not depend on the
weights' values; codes agreement does a little (random weights put more latents near ties).

Also measured in the same run: the encoder's FLOPs per audio second (``FlopCounterMode``, compared
with the 3.14 GFLOP reference) and a 4096^3 fp32 matmul, the machine's practical ceiling, so
each method's speed can be read as a fraction of it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "audio"
MODEL = "encodec_24khz"
SR = 24000
FRAME_RATE = 75
REFERENCE_GFLOP = 3.14  # encoder convolutions + LSTM + 8-level RVQ search, per audio second at 6 kbps
TAG = "@@BENCH@@ "
MB = 1024 * 1024


# ============================================================================================
# children: each prints one line "TAG {json}" on stdout
# ============================================================================================

def _emit(result: dict) -> None:
    sys.stdout.write(TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def child_prepare(spec: dict) -> dict:
    """Write the random checkpoint (unless real weights were linked) and count FLOPs."""
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from audiotok.codecs.encodec import load_codec
    from audiotok.testing import random_encodec, save_encodec_checkpoint
    from audiotok.weights import ENCODEC_CHECKPOINTS

    ckdir = Path(spec["torch_home"]) / "hub" / "checkpoints"
    if not (ckdir / ENCODEC_CHECKPOINTS[MODEL]).exists():
        save_encodec_checkpoint(random_encodec(MODEL, seed=0), ckdir)
    model = load_codec(MODEL, None, "cpu")
    model.set_target_bandwidth(spec["bandwidth"])
    x = torch.zeros(1, 1, SR)  # one second; the count does not depend on the values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # oneDNN runs the LSTM as one opaque op the counter does not know; without it the LSTM
        # decomposes into matmuls that are counted.
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
            with FlopCounterMode(display=False) as fc:
                emb = model.encoder(x)
            enc = {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}
            with FlopCounterMode(display=False) as fc:
                model.quantizer.encode(emb, FRAME_RATE, spec["bandwidth"])
            quant = int(fc.get_total_flops())
    conv = sum(v for k, v in enc.items() if "convolution" in k)
    return {"encoder_flop_by_op": enc, "conv_flop": conv, "lstm_flop": sum(enc.values()) - conv,
            "quantizer_flop": quant, "total_flop": sum(enc.values()) + quant,
            "checkpoint": str(model.checkpoint_path)}


def child_naive(spec: dict) -> dict:
    """(a) what a user writes today with the ``encodec`` package."""
    import librosa
    import numpy as np
    import soundfile as sf
    import torch
    from encodec import EncodecModel

    model = EncodecModel.encodec_model_24khz(pretrained=True)
    model.set_target_bandwidth(spec["bandwidth"])
    ready = time.time()
    t0 = time.perf_counter()
    errors = {}
    done_seconds = 0.0
    for f in spec["files"]:
        try:
            wav, sr = sf.read(f["path"], dtype="float32", always_2d=True)
            wav = wav.mean(axis=1)
            if sr != model.sample_rate:
                wav = librosa.resample(wav, orig_sr=sr, target_sr=model.sample_rate, res_type="soxr_hq")
            with torch.inference_mode():
                frames = model.encode(torch.from_numpy(wav)[None, None])
            codes = torch.cat([c for c, _ in frames], dim=-1)[0]
            out = Path(f["out_a"])
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, codes.numpy())
            done_seconds += f["seconds"]
        except Exception as exc:  # report, go on
            errors[f["rel"]] = f"{type(exc).__name__}: {exc}"[:300]
    return {"inner_s": time.perf_counter() - t0, "ready_epoch": ready, "errors": errors,
            "audio_seconds": done_seconds}


def child_adapter(spec: dict) -> dict:
    """(c) ``CodecEncoder.run`` + ``flush`` on pre-loaded 24 kHz audio, batched as the pipeline does."""
    import numpy as np
    import torch

    from audiotok.codecs.encodec import CodecEncoder, StreamShape, load_codec
    from audiotok.formats.audio import read

    model = load_codec(MODEL, None, "cpu")
    shared = StreamShape(spec["slots"], spec["window"]) if spec.get("slots") else None
    enc = CodecEncoder(model, spec["bandwidth"], torch.device("cpu"), shared=shared)
    ready = time.time()
    files = spec["files"]
    audio = {i: read(f["path"], SR, 1)[0] for i, f in enumerate(files)}  # not timed
    order = sorted(audio, key=lambda i: (-audio[i].shape[-1], i))  # longest first, as the pipeline
    batches, batch, sec = [], [], 0.0
    for i in order:
        batch.append((i, audio[i]))
        sec += audio[i].shape[-1] / SR
        if sec >= spec["batch_seconds"]:
            batches.append(batch)
            batch, sec = [], 0.0
    if batch:
        batches.append(batch)
    results = {}
    t0 = time.perf_counter()
    for b in batches:
        results.update(enc.run(b))
    results.update(enc.flush())
    inner = time.perf_counter() - t0
    if spec.get("out_key"):
        for i, f in enumerate(files):
            if i in results:
                out = Path(f[spec["out_key"]])
                out.parent.mkdir(parents=True, exist_ok=True)
                np.save(out, results[i].codes)
    return {"inner_s": inner, "ready_epoch": ready, "slots": enc.shared_shape.rows, "window": enc.shared_shape.window,
            "errors": {files[i]["rel"]: "no result" for i in audio if i not in results},
            "audio_seconds": sum(files[i]["seconds"] for i in results)}


def child_matmul(spec: dict) -> dict:
    import torch

    n = spec["n"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = a @ b  # warm-up
    times = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        c = a @ b
        times.append(time.perf_counter() - t0)
    del c
    return {"times_s": times, "gflop": 2 * n ** 3 / 1e9, "gflops_best": 2 * n ** 3 / 1e9 / min(times),
            "threads": torch.get_num_threads()}


CHILDREN = {"prepare": child_prepare, "a": child_naive, "c": child_adapter, "matmul": child_matmul}


# ============================================================================================
# parent: process control, peak RSS
# ============================================================================================

class TreeRSS(threading.Thread):
    """Samples the summed RSS of a process and all its descendants (workers) from /proc."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.per_pid: dict[int, int] = {}  # peak RSS of each process of the tree
        self._halt = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> int:
        kids: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    s = f.read()
            except OSError:
                continue
            fields = s[s.rfind(b")") + 2:].split()
            pid = int(d)
            kids.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * self._page
        total, todo = 0, [self.pid]
        while todo:
            p = todo.pop()
            total += rss.get(p, 0)
            self.per_pid[p] = max(self.per_pid.get(p, 0), rss.get(p, 0))
            todo.extend(kids.get(p, []))
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.sample())
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_child(cmd: list[str], env: dict, logdir: Path, name: str) -> dict:
    """Run ``cmd``; return wall time, ru_maxrss (largest process of the child's tree, as wait4
    reports it), the sampled tree-sum RSS and the child's TAG result if it printed one."""
    logdir.mkdir(parents=True, exist_ok=True)
    out_p, err_p = logdir / f"{name}.out", logdir / f"{name}.err"
    with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
        spawn = time.time()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, cwd=str(REPO))
        sampler = TreeRSS(p.pid)
        sampler.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)
    result = None
    for line in out_p.read_text(errors="replace").splitlines():
        if line.startswith(TAG):
            result = json.loads(line[len(TAG):])
    rec = {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024,
           "tree_rss_mb": sampler.peak / MB,
           "process_peaks_mb": sorted((v / MB for v in sampler.per_pid.values()), reverse=True),
           "returncode": p.returncode, "result": result, "spawn_epoch": spawn}
    if p.returncode != 0:
        tail = err_p.read_text(errors="replace").strip().splitlines()[-15:]
        rec["stderr_tail"] = tail
        print(f"  !! {name} exited {p.returncode}:\n    " + "\n    ".join(tail), file=sys.stderr)
    return rec


def child_cmd(method: str, spec_path: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--_method", method, "--_spec", str(spec_path)]


def audiotok_cmd(inputs: Path, out: Path, args, workers: int) -> list[str]:
    return [sys.executable, "-m", "audiotok", "encode", str(inputs), "-o", str(out), "--quiet", "--overwrite",
            "--model", MODEL, "--bandwidth", f"{args.bandwidth:g}", "--workers", str(workers),
            "--batch-seconds", f"{args.batch_seconds:g}", "--device", "cpu"]


def machine_note() -> dict:
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"uptime": up, "loadavg": Path("/proc/loadavg").read_text().split()[:3], "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version()}


# ============================================================================================
# inputs
# ============================================================================================

def write_synthetic(folder: Path, n: int, lo: float, hi: float, rate: int, seed: int) -> None:
    import numpy as np
    import soundfile as sf

    from audiotok.testing import synthetic_audio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        sec = float(rng.uniform(lo, hi))
        ch = 1 + i % 2  # half mono, half stereo: the downmix is part of the work
        x = synthetic_audio(sec, rate, seed=seed * 1000 + i, channels=ch)
        sf.write(folder / f"clip_{i:02d}.wav", x.T, rate, subtype="PCM_16")


def write_long(path: Path, minutes: float, rate: int, channels: int) -> float:
    """A long WAV written block by block (never the whole signal in memory)."""
    import soundfile as sf

    from audiotok.testing import synthetic_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    total = minutes * 60.0
    done, i = 0.0, 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        while done < total - 1e-9:
            sec = min(60.0, total - done)
            f.write(synthetic_audio(sec, rate, seed=100 + i, channels=channels).T)
            done += sec
            i += 1
    return total


def list_inputs(inputs: Path, outdir: Path) -> list[dict]:
    import soundfile as sf

    from audiotok.engine.sources import AUDIO_EXTENSIONS, discover

    files = []
    for s in discover([str(inputs)], AUDIO_EXTENSIONS):
        if s.error:
            continue
        info = sf.info(s.path)
        rel = Path(s.rel)
        files.append({"path": s.path, "rel": s.rel, "seconds": info.frames / info.samplerate,
                      "rate": info.samplerate, "channels": info.channels,
                      "out_a": str(outdir / "a" / rel.with_suffix(".npy")),
                      "out_c": str(outdir / "c" / rel.with_suffix(".npy"))})
    return files


# ============================================================================================
# results
# ============================================================================================

def codes_agreement(files: list[dict], get_a, get_b) -> dict:
    """Fraction of identical codes over all files (a frame count mismatch counts as different)."""
    import numpy as np

    same = total = same0 = total0 = exact = compared = 0
    missing = []
    for f in files:
        a, b = get_a(f), get_b(f)
        if a is None or b is None:
            missing.append(f["rel"])
            continue
        a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
        k, t = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
        kk, tt = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        eq = a[:kk, :tt] == b[:kk, :tt]
        same += int(eq.sum())
        total += k * t
        same0 += int(eq[0].sum())
        total0 += t
        exact += int(a.shape == b.shape and bool(eq.all()))
        compared += 1
    return {"identical_fraction": same / total if total else float("nan"),
            "identical_fraction_level0": same0 / total0 if total0 else float("nan"),
            "files_identical": exact, "files_compared": compared, "missing": missing}


def _load(path: str, key: str | None = None):
    import numpy as np

    if not os.path.exists(path):
        return None
    if key:
        with np.load(path) as z:
            return z[key]
    return np.load(path)


def summarise(runs: list[dict], audio_seconds: float, basis: str) -> dict:
    """x real time per repeat from ``basis`` (``wall_s`` or the child's ``inner_s``)."""
    walls = []
    for r in runs:
        if r["returncode"] != 0 or (basis == "inner_s" and not r["result"]):
            continue
        walls.append(r["result"][basis] if basis == "inner_s" else r["wall_s"])
    xrt = [audio_seconds / w for w in walls if w > 0]
    startups = [r["result"]["ready_epoch"] - r["spawn_epoch"] for r in runs
                if r["result"] and "ready_epoch" in r["result"]]
    inner = [r["result"]["inner_s"] for r in runs if r["result"] and "inner_s" in r["result"]]
    return {
        "walls_s": walls, "xrt": xrt,
        "xrt_median": statistics.median(xrt) if xrt else float("nan"),
        "xrt_best": max(xrt) if xrt else float("nan"),
        "wall_median_s": statistics.median(walls) if walls else float("nan"),
        "cpu_median_s": statistics.median([r["cpu_s"] for r in runs]) if runs else float("nan"),
        "startup_median_s": statistics.median(startups) if startups else None,
        "inner_median_s": statistics.median(inner) if inner else None,
        "maxrss_mb": max((r["maxrss_mb"] for r in runs), default=float("nan")),
        "tree_rss_mb": max((r["tree_rss_mb"] for r in runs), default=float("nan")),
        "failed_runs": sum(r["returncode"] != 0 for r in runs),
        "errors": (runs[-1]["result"] or {}).get("errors", {}) if runs else {},
    }


def fmt(v, nd=1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}"


# ============================================================================================
# main flows
# ============================================================================================

def base_env(args, torch_home: Path) -> dict:
    env = dict(os.environ)
    env["TORCH_HOME"] = str(torch_home)
    env["AUDIOTOK_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    if args.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(args.threads)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def prepare_weights(args, work: Path, env: dict) -> dict:
    from audiotok.weights import ENCODEC_CHECKPOINTS

    ckdir = work / "torch_home" / "hub" / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        (ckdir / ENCODEC_CHECKPOINTS[MODEL]).symlink_to(Path(args.checkpoint).resolve())
    spec = {"torch_home": str(work / "torch_home"), "bandwidth": args.bandwidth}
    sp = work / "spec_prepare.json"
    sp.write_text(json.dumps(spec))
    rec = run_child(child_cmd("prepare", sp), env, work / "logs", "prepare")
    if rec["returncode"] != 0 or not rec["result"]:
        sys.exit("benchmark: could not prepare the weights (see the error above)")
    return rec["result"]


def compare(args, work: Path) -> dict:
    env = base_env(args, work / "torch_home")
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    audio_dirs = [] if args.no_shared else (args.audio or ([DEFAULT_SHARED] if DEFAULT_SHARED.is_dir() else []))
    for i, d in enumerate(audio_dirs):
        (inputs / f"set{i}_{Path(d).name}").symlink_to(Path(d).resolve(), target_is_directory=True)
    lo, hi = args.synthetic_seconds
    if args.synthetic:
        write_synthetic(inputs / "synthetic", args.synthetic, lo, hi, args.synthetic_rate, seed=1)
    out = work / "out"
    files = list_inputs(inputs, out)
    if not files:
        sys.exit("benchmark: no input files")
    audio_s = sum(f["seconds"] for f in files)
    tiny = work / "tiny"  # one 0.5 s file: what a run costs apart from the audio (startup)
    write_synthetic(tiny, 1, 0.5, 0.5, args.synthetic_rate, seed=2)

    before = machine_note()
    print(f"machine: {before['cpus']} CPUs, {before['cpu']}; {before['uptime']}", flush=True)
    print(f"inputs: {len(files)} files, {audio_s:.1f} s of audio ({len(audio_dirs)} folder(s) + "
          f"{args.synthetic} synthetic clips of {lo:g}-{hi:g} s at {args.synthetic_rate} Hz)", flush=True)
    flops = prepare_weights(args, work, env)

    def spec_file(name: str, **extra) -> Path:
        p = work / f"spec_{name}.json"
        p.write_text(json.dumps({"files": files, "bandwidth": args.bandwidth,
                                 "batch_seconds": args.batch_seconds, **extra}))
        return p

    # the rotation: (key, label, command, x-real-time basis)
    methods = set(args.methods.split(","))
    rot: list[tuple[str, str, list[str], str]] = []
    if "a" in methods:
        rot.append(("a", "a  naive encodec loop", child_cmd("a", spec_file("a")), "wall_s"))
    if "b" in methods:
        rot.append((f"b_w{args.workers}", f"b  audiotok encode --workers {args.workers}",
                    audiotok_cmd(inputs, out / f"b_w{args.workers}", args, args.workers), "wall_s"))
    if "c" in methods:
        rot.append(("c", "c  adapter run+flush (default)", child_cmd("c", spec_file("c", out_key="out_c")),
                    "inner_s"))
    if "b" in methods:
        for w in args.workers_variants:
            if w != args.workers:
                rot.append((f"b_w{w}", f"b  audiotok encode --workers {w}",
                            audiotok_cmd(inputs, out / f"b_w{w}", args, w), "wall_s"))
    for sw in args.sweep:
        s, w = (int(v) for v in sw.lower().split("x"))
        key = f"c_{s}x{w}"
        for f in files:
            f["out_" + key] = str(out / key / Path(f["rel"]).with_suffix(".npy"))
        rot.append((key, f"c  adapter shared rows={s} window={w}",
                    child_cmd("c", spec_file(key, slots=s, window=w, out_key="out_" + key)), "inner_s"))
    if "b" in methods and not args.no_startup:
        rot.append(("startup", "   audiotok encode, one 0.5 s file", audiotok_cmd(tiny, out / "tiny", args,
                                                                                  args.workers), "wall_s"))
    mm = work / "spec_matmul.json"
    mm.write_text(json.dumps({"n": args.matmul_n, "reps": 2}))
    rot.append(("matmul", f"   matmul {args.matmul_n}^3 fp32", child_cmd("matmul", mm), "wall_s"))

    runs: dict[str, list[dict]] = {k: [] for k, *_ in rot}
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for key, label, cmd, _ in rot:
            rec = run_child(cmd, env, work / "logs", f"{key}_{rep}")
            runs[key].append(rec)
            extra = ""
            if rec["result"] and "inner_s" in rec["result"]:
                extra = f" (timed part {rec['result']['inner_s']:.1f} s)"
            if rec["result"] and "gflops_best" in rec["result"]:
                extra = f" ({rec['result']['gflops_best']:.1f} GFLOP/s)"
            print(f"  repeat {rep + 1}/{args.repeats} {label.strip():40s} {rec['wall_s']:7.1f} s{extra}  "
                  f"maxrss {rec['maxrss_mb']:.0f} MB", flush=True)
    after = machine_note()

    summary = {}
    for key, label, _, basis in rot:
        if key == "matmul":
            continue
        secs = 0.5 if key == "startup" else audio_s
        summary[key] = {"label": label, "basis": basis, **summarise(runs[key], secs, basis)}
    mm_runs = [r["result"] for r in runs["matmul"] if r["result"]]
    gflops = [m["gflops_best"] for m in mm_runs]
    matmul = {"gflops_per_repeat": gflops, "gflops_median": statistics.median(gflops) if gflops else float("nan"),
              "gflops_best": max(gflops) if gflops else float("nan"), "threads": mm_runs[0]["threads"] if mm_runs else None}

    # codes agreement
    bkey = f"b_w{args.workers}"
    agree = {}
    naive = lambda f: _load(f["out_a"])  # noqa: E731
    tree = lambda k: (lambda f: _load(str(out / k / Path(f["rel"]).with_suffix(".npz")), "codes"))  # noqa: E731
    if "a" in methods and bkey in summary:
        agree["b_vs_a"] = codes_agreement(files, tree(bkey), naive)
    if "a" in methods and "c" in summary:
        agree["c_vs_a"] = codes_agreement(files, lambda f: _load(f["out_c"]), naive)
    if "c" in summary and bkey in summary:
        agree["b_vs_c"] = codes_agreement(files, tree(bkey), lambda f: _load(f["out_c"]))
    for sw in args.sweep:
        key = "c_" + sw.lower()
        if "a" in methods:
            agree[f"{key}_vs_a"] = codes_agreement(files, lambda f, k=key: _load(f["out_" + k]), naive)
    for w in args.workers_variants:
        if w != args.workers and f"b_w{w}" in summary and bkey in summary:
            agree[f"b_w{w}_vs_{bkey}"] = codes_agreement(files, tree(f"b_w{w}"), tree(bkey))

    # ratios: from the chosen statistic of each method, and paired within each repeat (the
    # methods of one repeat ran back to back, so they saw about the same machine load)
    stat = "xrt_median" if args.stat == "median" else "xrt_best"
    basis = {key: b for key, _, _, b in rot}

    def per_rep(key: str) -> list:
        out = []
        for r in runs[key]:
            ok = r["returncode"] == 0 and (basis[key] == "wall_s" or r["result"])
            out.append(audio_s / (r["result"]["inner_s"] if basis[key] == "inner_s" else r["wall_s"]) if ok else None)
        return out

    def ratio(name: str, num: str, den: str) -> None:
        pairs = [x / y for x, y in zip(per_rep(num), per_rep(den)) if x and y]
        ratios[name] = {"value": summary[num][stat] / summary[den][stat], "paired": pairs,
                        "paired_median": statistics.median(pairs) if pairs else float("nan")}

    ratios: dict[str, dict] = {}
    if bkey in summary and "a" in summary:
        ratio("b/a", bkey, "a")
    if bkey in summary and "c" in summary:
        ratio("b/c", bkey, "c")
    if bkey in summary and "startup" in summary and "c" in summary:
        # audiotok once started: its wall minus the wall of the same command on one 0.5 s file
        steady = [audio_s / (b["wall_s"] - t["wall_s"]) if b["wall_s"] > t["wall_s"] else None
                  for b, t in zip(runs[bkey], runs["startup"])]
        ok = [x for x in steady if x]
        summary[bkey]["xrt_excl_startup"] = steady
        pairs = [x / y for x, y in zip(steady, per_rep("c")) if x and y]
        if ok:
            val = statistics.median(ok) if args.stat == "median" else max(ok)
            ratios["b(excl. startup)/c"] = {"value": val / summary["c"][stat], "paired": pairs,
                                            "paired_median": statistics.median(pairs) if pairs else float("nan")}

    return {"kind": "compare", "args": vars(args), "machine_before": before, "machine_after": after,
            "files": [{k: f[k] for k in ("rel", "seconds", "rate", "channels")} for f in files],
            "audio_seconds": audio_s, "flops": flops, "matmul": matmul, "summary": summary,
            "ratios": ratios, "agreement": agree, "stat": args.stat, "runs": runs,
            "elapsed_s": time.perf_counter() - t_start}


def long_run(args, work: Path) -> dict:
    import numpy as np

    env = base_env(args, work / "torch_home")
    inputs = work / "long_inputs"
    print(f"writing a {args.long_minutes:g}-minute {args.long_channels}-channel WAV at {args.long_rate} Hz ...",
          flush=True)
    seconds = write_long(inputs / "long.wav", args.long_minutes, args.long_rate, args.long_channels)
    before = machine_note()
    print(f"machine: {before['cpus']} CPUs, {before['cpu']}; {before['uptime']}", flush=True)
    flops = prepare_weights(args, work, env)
    out = work / "out_long"
    rec = run_child(audiotok_cmd(inputs, out, args, args.workers), env, work / "logs", "long")
    after = machine_note()
    frames = None
    target = out / "long.npz"
    if target.exists():
        with np.load(target) as z:
            frames = int(z["codes"].shape[1])
    n24 = math.ceil(round(seconds * args.long_rate) * SR / args.long_rate)
    return {"kind": "long", "args": vars(args), "machine_before": before, "machine_after": after,
            "audio_seconds": seconds, "wall_s": rec["wall_s"], "xrt": seconds / rec["wall_s"],
            "maxrss_mb": rec["maxrss_mb"], "tree_rss_mb": rec["tree_rss_mb"], "returncode": rec["returncode"],
            "process_peaks_mb": rec["process_peaks_mb"],
            "frames": frames, "frames_expected": -(-n24 // 320), "flops": flops,
            "file_mb": (inputs / "long.wav").stat().st_size / MB}


# ============================================================================================
# printing
# ============================================================================================

def print_compare(r: dict) -> None:
    s, fl, mm = r["summary"], r["flops"], r["matmul"]
    xs = "xrt_median" if r["stat"] == "median" else "xrt_best"
    ceiling = mm["gflops_median"] if r["stat"] == "median" else mm["gflops_best"]
    print()
    print(f"{len(r['files'])} files, {r['audio_seconds']:.1f} s of audio; {r['args']['repeats']} interleaved "
          f"repeats; bandwidth {r['args']['bandwidth']:g} kbps; ratios use the {r['stat']}")
    head = (f"| {'method':40s} | {'x RT med':>8s} | {'x RT best':>9s} | {'wall s med':>10s} | {'startup s':>9s} "
            f"| {'CPU s med':>9s} | {'peak RSS MB':>11s} | {'tree RSS MB':>11s} | {'% of matmul':>11s} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for key, v in s.items():
        pct = "-"
        if key != "startup" and not math.isnan(ceiling):
            pct = fmt(100 * v[xs] * REFERENCE_GFLOP / ceiling, 1)
        xm = fmt(v["xrt_median"]) if key != "startup" else "-"
        xb = fmt(v["xrt_best"]) if key != "startup" else "-"
        st = v["startup_median_s"] if v["startup_median_s"] is not None else (
            v["wall_median_s"] if key == "startup" else None)
        print(f"| {v['label']:40s} | {xm:>8s} | {xb:>9s} | {fmt(v['wall_median_s']):>10s} | {fmt(st):>9s} "
              f"| {fmt(v['cpu_median_s']):>9s} | {fmt(v['maxrss_mb'], 0):>11s} | {fmt(v['tree_rss_mb'], 0):>11s} | {pct:>11s} |")
    print(f"| {'   matmul ' + str(r['args']['matmul_n']) + '^3 fp32 (GFLOP/s med/best)':40s} | "
          f"{fmt(mm['gflops_median']):>8s} | {fmt(mm['gflops_best']):>9s} | {'':>10s} | {'':>9s} | {'':>9s} | {'':>11s} "
          f"| {'':>11s} | {'100.0':>11s} |")
    print()
    bkey = f"b_w{r['args']['workers']}"
    for name, v in r["ratios"].items():
        target = {"b/a": 2.0, "b/c": 0.9}.get(name)
        val = v["value"]
        verdict = f"  target >= {target:g}: {'MET' if val >= target else 'NOT MET'}" if target else ""
        print(f"{name:>20s} = {val:.2f} ({r['stat']} / {r['stat']}); paired per repeat: "
              + ", ".join(f"{x:.2f}" for x in v["paired"]) + f";{verdict}")
    if bkey in s and "xrt_excl_startup" in s[bkey]:
        print(f"{'':>20s}   audiotok excluding startup (its wall minus the one-tiny-file run), x real time "
              "per repeat: " + ", ".join(fmt(x) for x in s[bkey]["xrt_excl_startup"]))
    for name, a in r["agreement"].items():
        print(f"codes identical {name:>14s}: {100 * a['identical_fraction']:.2f} % of codes "
              f"(level 0: {100 * a['identical_fraction_level0']:.2f} %), "
              f"{a['files_identical']}/{a['files_compared']} files exactly"
              + (f", {len(a['missing'])} missing" if a["missing"] else ""))
    print(f"FLOPs per audio second: convolutions {fl['conv_flop'] / 1e9:.3f} + LSTM {fl['lstm_flop'] / 1e9:.3f} "
          f"+ RVQ {fl['quantizer_flop'] / 1e9:.3f} = {fl['total_flop'] / 1e9:.3f} GFLOP counted "
          f"(reference {REFERENCE_GFLOP})")
    for key, v in s.items():
        if key == "startup" or math.isnan(ceiling):
            continue
        g = v[xs] * fl["total_flop"] / 1e9
        print(f"  {v['label'].strip():40s} {g:6.1f} GFLOP/s = {100 * g / ceiling:5.1f} % of the "
              f"matmul ceiling ({ceiling:.1f} GFLOP/s, {r['stat']})")
    for key, v in s.items():
        if v["errors"]:
            print(f"  {key}: {len(v['errors'])} file(s) failed: " + "; ".join(
                f"{k}: {e}" for k, e in list(v["errors"].items())[:5]))
    print(f"load before: {r['machine_before']['uptime']}")
    print(f"load after:  {r['machine_after']['uptime']}")
    print(f"benchmark wall time {r['elapsed_s']:.0f} s")


def print_long(r: dict) -> None:
    print()
    print(f"long file: {r['audio_seconds'] / 60:.1f} min, {r['args']['long_channels']} ch, "
          f"{r['args']['long_rate']} Hz WAV ({r['file_mb']:.0f} MB); audiotok encode --workers {r['args']['workers']}")
    ok = r["maxrss_mb"] < 2048
    print(f"  wall {r['wall_s']:.1f} s = {r['xrt']:.1f}x real time; exit {r['returncode']}")
    print(f"  peak RSS (largest process, ru_maxrss) {r['maxrss_mb']:.0f} MB  (< 2048 MB: {'MET' if ok else 'NOT MET'})")
    print(f"  peak RSS summed over the process tree (sampled) {r['tree_rss_mb']:.0f} MB; per process "
          "(sampled, main and decode worker): " + ", ".join(f"{v:.0f} MB" for v in r["process_peaks_mb"]))
    print(f"  frames {r['frames']} (expected {r['frames_expected']})")
    print(f"load before: {r['machine_before']['uptime']}")
    print(f"load after:  {r['machine_after']['uptime']}")


# ============================================================================================

def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every encode benchmark has: inputs, repeats, statistic, environment of the
    children, the matmul ceiling, outputs, and the hidden child-process options."""
    p.add_argument("--audio", action="append", type=Path,
                   help=f"audio folder to include (repeatable; default {DEFAULT_SHARED} when present)")
    p.add_argument("--no-shared", action="store_true", help="do not include the default shared audio folder")
    p.add_argument("--synthetic", type=int, default=8, help="generated clips to add (default 8)")
    p.add_argument("--synthetic-seconds", type=float, nargs=2, default=(5.0, 15.0), metavar=("MIN", "MAX"),
                   help="clip length range in seconds (default 5 15)")
    p.add_argument("--synthetic-rate", type=int, default=44100, help="clip sample rate (default 44100)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every method (default 2)")
    p.add_argument("--stat", choices=("median", "best"), default="best",
                   help="statistic for the ratios and ceiling (default best: on a shared machine noise only slows)")
    p.add_argument("--no-startup", action="store_true", help="skip the one-tiny-file audiotok run")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS / MKL_NUM_THREADS for every child")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="extra environment for every child, e.g. LD_PRELOAD=/usr/lib/.../libtcmalloc.so.4")
    p.add_argument("--matmul-n", type=int, default=4096)
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (inputs, outputs, logs)")
    p.add_argument("--_method", help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--methods", default="a,b,c", help="subset of a,b,c to run (default all)")
    p.add_argument("--workers", type=int, default=1, help="audiotok --workers for the headline (default 1)")
    p.add_argument("--workers-variants", type=lambda s: [int(v) for v in s.split(",") if v != ""], default=[],
                   help="extra audiotok rows with these --workers, e.g. 0,2")
    p.add_argument("--sweep", type=lambda s: [v for v in s.split(",") if v], default=[],
                   help="extra (c) rows with CodecEncoder slots x window, e.g. 4x24000,8x12000,2x48000")
    p.add_argument("--bandwidth", type=float, default=6.0)
    p.add_argument("--batch-seconds", type=float, default=60.0, help="audiotok --batch-seconds (b and c)")
    p.add_argument("--checkpoint", type=Path, help="real encodec_24khz weights (default: random weights)")
    p.add_argument("--long", action="store_true",
                   help="instead of the comparison: encode one long generated file, report peak RSS and wall")
    p.add_argument("--long-minutes", type=float, default=30.0)
    p.add_argument("--long-rate", type=int, default=44100)
    p.add_argument("--long-channels", type=int, default=2)
    return p.parse_args(argv)


def in_work_folder(args, prefix: str, measure) -> int:
    """Run ``measure(work) -> result`` (which prints its table) in ``--keep`` (a new or empty
    folder, kept) or a temporary folder (removed); write the result to ``--json`` when given."""
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            sys.exit(f"benchmark: --keep {args.keep} must be a new or empty folder")
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        res = measure(work)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(res, indent=1, default=str))
            print(f"wrote {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._method:
        _emit(CHILDREN[args._method](json.loads(Path(args._spec).read_text())))
        return 0

    def measure(work: Path) -> dict:
        res = long_run(args, work) if args.long else compare(args, work)
        (print_long if args.long else print_compare)(res)
        return res

    return in_work_folder(args, "audiotok-bench-", measure)


if __name__ == "__main__":
    sys.exit(main())
