#!/usr/bin/env python
"""Decode benchmark: the loop a user writes with the ``encodec`` package vs ``audiotok decode`` vs
audiotok's decoder adapter alone, on the same codes files, in one run, interleaved.

    python benchmarks/decode.py                      # the comparison table (a few minutes)
    python benchmarks/decode.py --json decode.json   # also write every number as JSON

Methods (each run in its own child process):

  a  naive loop: ``EncodecModel.encodec_model_24khz(pretrained=True)`` loaded once (from the same
     torch hub cache), per file ``np.load`` of the ``.npz``, ``model.decode([(codes, None)])`` under
     inference mode, cut to ``n_samples``, ``soundfile.write`` as 16-bit WAV. Timed from process
     spawn to exit (imports and model load included).
  b  ``python -m audiotok decode CODES -o OUT --quiet --overwrite`` as a subprocess, timed from
     spawn to exit (startup included).
  c  audiotok's ``CodecDecoder.run`` on codes already in memory (no I/O), timed around run only.

The codes are made once, untimed, by ``audiotok encode`` from ``../shared/audio`` (when present)
plus generated clips. Nothing is downloaded: the weights are a random-weight EnCodec with filled
codebooks (``audiotok.testing.random_encodec``) under the official file name in a temporary
``TORCH_HOME``, or ``--checkpoint PATH`` (real weights) linked there; speed does not depend on the
weights' values. The audio of a and b is compared sample by sample (16-bit units).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "audio"
MODEL = "encodec_24khz"
TAG = "@@BENCH@@ "


# --- children: each prints one line "TAG {json}" on stdout ------------------------------------
def child_naive(spec: dict) -> dict:
    """(a) what a user writes today with the ``encodec`` package."""
    import numpy as np
    import soundfile as sf
    import torch
    from encodec import EncodecModel

    model = EncodecModel.encodec_model_24khz(pretrained=True)
    t0 = time.perf_counter()
    seconds = 0.0
    for f in spec["files"]:
        with np.load(f["codes"]) as z:
            codes, n = z["codes"].astype(np.int64), int(z["n_samples"])
        with torch.inference_mode():
            wav = model.decode([(torch.from_numpy(codes)[None], None)])[0, :, :n]
        out = Path(f["out_a"])
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, wav.numpy().T.clip(-1, 1), model.sample_rate, subtype="PCM_16")
        seconds += n / model.sample_rate
    return {"inner_s": time.perf_counter() - t0, "audio_seconds": seconds}


def child_adapter(spec: dict) -> dict:
    """(c) ``CodecDecoder.run`` on codes in memory, one file per call as ``decode`` hands them."""
    import torch

    from audiotok.codecs.encodec import CodecDecoder, load_codec
    from audiotok.formats.codes import read_codes

    dec = CodecDecoder(load_codec(MODEL, None, "cpu"), torch.device("cpu"))
    items = [(i, read_codes(f["codes"]).item) for i, f in enumerate(spec["files"])]
    t0 = time.perf_counter()
    for item in items:
        dec.run([item])
    return {"inner_s": time.perf_counter() - t0, "audio_seconds": sum(it.n_samples for _, it in items) / 24000}


CHILDREN = {"a": child_naive, "c": child_adapter}


# --- parent -----------------------------------------------------------------------------------
def run(cmd: list[str], env: dict, log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, cwd=str(REPO))
    wall = time.perf_counter() - t0
    result = None
    for line in p.stdout.decode(errors="replace").splitlines():
        if line.startswith(TAG):
            result = json.loads(line[len(TAG):])
    if p.returncode != 0:
        print(f"  !! {' '.join(cmd[:4])} ... exited {p.returncode}; see {log}", file=sys.stderr)
    return {"wall_s": wall, "returncode": p.returncode, "result": result}


def make_inputs(work: Path, args, env: dict) -> tuple[Path, list[dict]]:
    """Audio (shared recordings and generated clips) encoded once to ``.npz`` codes (untimed)."""
    import numpy as np
    import soundfile as sf

    from audiotok.testing import synthetic_audio

    audio = work / "audio"
    audio.mkdir()
    if args.audio is not None and args.audio.is_dir():
        os.symlink(args.audio.resolve(), audio / "shared", target_is_directory=True)
    rng = np.random.default_rng(0)
    for i in range(args.clips):
        sec = float(rng.uniform(5, 15))
        sf.write(audio / f"clip_{i:02d}.wav", synthetic_audio(sec, 44100, seed=i, channels=1 + i % 2).T, 44100,
                 subtype="PCM_16")
    codes = work / "codes"
    p = subprocess.run([sys.executable, "-m", "audiotok", "encode", str(audio), "-o", str(codes), "--quiet",
                        "-b", f"{args.bandwidth:g}", "--device", "cpu"], env=env, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        sys.exit(f"encoding the inputs failed:\n{p.stderr}")
    files = []
    for c in sorted(codes.rglob("*.npz")):
        with np.load(c) as z:
            n = int(z["n_samples"])
        rel = c.relative_to(codes).with_suffix(".wav")
        files.append({"codes": str(c), "rel": str(rel), "seconds": n / 24000, "out_a": str(work / "out_a" / rel),
                      "out_b": str(work / "out_b" / rel)})
    return codes, files


def compare(files: list[dict]) -> dict:
    """How far b's audio is from a's, in 16-bit units (both are 16-bit WAV)."""
    import numpy as np
    import soundfile as sf

    worst, equal_len, n = 0, 0, 0
    for f in files:
        if not (Path(f["out_a"]).is_file() and Path(f["out_b"]).is_file()):
            continue
        a, _ = sf.read(f["out_a"], dtype="int16", always_2d=True)
        b, _ = sf.read(f["out_b"], dtype="int16", always_2d=True)
        n += 1
        if a.shape == b.shape:
            equal_len += 1
            worst = max(worst, int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max(initial=0)))
    return {"files_compared": n, "same_length": equal_len, "max_abs_diff_int16": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", type=Path, default=DEFAULT_SHARED, help="folder of recordings to encode first")
    ap.add_argument("--no-shared", action="store_true", help="only the generated clips")
    ap.add_argument("--clips", type=int, default=8, help="generated 5-15 s clips at 44.1 kHz (half stereo)")
    ap.add_argument("--bandwidth", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default="a,b,c")
    ap.add_argument("--checkpoint", type=Path, help="real EnCodec 24 kHz weights (default: random weights)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--_method", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._method:
        spec = json.loads(Path(args._spec).read_text())
        print(TAG + json.dumps(CHILDREN[args._method](spec)), flush=True)
        return
    if args.no_shared:
        args.audio = None

    from audiotok.testing import random_encodec, save_encodec_checkpoint
    from audiotok.weights import ENCODEC_CHECKPOINTS

    work = Path(tempfile.mkdtemp(prefix="audiotok-decode-bench-"))
    home = work / "torch_home"
    ckdir = home / "hub" / "checkpoints"
    ckdir.mkdir(parents=True)
    if args.checkpoint is not None:
        os.symlink(args.checkpoint.resolve(), ckdir / ENCODEC_CHECKPOINTS[MODEL])
    else:
        save_encodec_checkpoint(random_encodec(MODEL), ckdir)
    env = dict(os.environ, TORCH_HOME=str(home), AUDIOTOK_OFFLINE="1", PYTHONPATH=str(REPO))
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    codes, files = make_inputs(work, args, env)
    total = sum(f["seconds"] for f in files)
    print(f"{len(files)} codes files, {total:.1f} s of audio at {args.bandwidth:g} kbps; load {load_before}")
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps({"files": files}))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        for m in methods:
            if m == "b":
                cmd = [sys.executable, "-m", "audiotok", "decode", str(codes), "-o", str(work / "out_b"), "--quiet",
                       "--overwrite", "--device", "cpu"]
            else:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--_method", m, "--_spec", str(spec_path)]
            rec = run(cmd, env, work / f"{m}-{rep}.err")
            rec["x_realtime"] = total / rec["wall_s"]
            if rec["result"] and "inner_s" in rec["result"]:
                rec["x_realtime_inner"] = rec["result"]["audio_seconds"] / rec["result"]["inner_s"]
            runs[m].append(rec)
            print(f"  repeat {rep + 1} {m}: {rec['wall_s']:.1f} s wall, {rec['x_realtime']:.1f}x real time"
                  + (f" ({rec['x_realtime_inner']:.1f}x once started)" if "x_realtime_inner" in rec else ""))
    load_after = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    names = {"a": "a naive encodec loop (spawn to exit)", "b": "b `audiotok decode` (spawn to exit)",
             "c": "c CodecDecoder.run (model only)"}
    print("\n| method | x RT median | x RT best |\n|---|---:|---:|")
    summary = {}
    for m in methods:
        key = "x_realtime_inner" if m == "c" else "x_realtime"
        xs = [r[key] for r in runs[m] if r["returncode"] == 0 and key in r]
        if xs:
            summary[m] = {"median": statistics.median(xs), "best": max(xs)}
            print(f"| {names[m]} | {summary[m]['median']:.1f} | {summary[m]['best']:.1f} |")
    if "a" in summary and "b" in summary:
        ratio = summary["b"]["best"] / summary["a"]["best"]
        per = [rb["x_realtime"] / ra["x_realtime"] for ra, rb in zip(runs["a"], runs["b"])]
        print(f"\nb / a (best): {ratio:.2f}; per repeat: {', '.join(f'{r:.2f}' for r in per)}")
        summary["b_over_a"] = ratio
        summary["b_over_a_per_repeat"] = per
    agreement = compare(files) if "a" in methods and "b" in methods else None
    if agreement:
        print(f"audio a vs b: {agreement['same_length']}/{agreement['files_compared']} files of equal length, "
              f"largest difference {agreement['max_abs_diff_int16']} (16-bit units)")
    print(f"load before {load_before}, after {load_after}")
    if args.json is not None:
        args.json.write_text(json.dumps({"files": len(files), "audio_seconds": total, "bandwidth": args.bandwidth,
                                         "runs": runs, "summary": summary, "agreement": agreement,
                                         "load_before": load_before, "load_after": load_after}, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
