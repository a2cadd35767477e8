#!/usr/bin/env python
"""Encode benchmark for Mimi and DAC 44.1 kHz: the loop a user writes with the official package vs
``audiotok encode``, on the same files, same weights, in one run, interleaved.

    python benchmarks/encode_codecs.py --codec mimi --naive-python /path/to/moshi-env/bin/python
    python benchmarks/encode_codecs.py --codec dac_44khz --naive-python /path/to/dac-env/bin/python
    ... [--repeats 2] [--json out.json] [--checkpoint FILE]

Methods (each run in its own child process, so its peak RSS is its own; a, b, matmul, a, b, ...):

  a  the naive loop with the OFFICIAL package, run under ``--naive-python`` (default: this
     interpreter): model loaded once; per file ``soundfile.read``, mean to mono,
     ``librosa.resample(res_type="soxr_hq")`` to the codec's rate, one whole-file encode under
     ``torch.inference_mode()``, ``np.save`` of the codes [n_q, frames].
       mimi:      moshi 0.2.13, ``loaders.get_mimi(path, device="cpu", num_codebooks=N_Q)``,
                  ``mimi.encode(x[None, None])``;
       dac_44khz: descript-audio-codec 1.0.0, ``dac.DAC.load(path)``,
                  ``model.encode(model.preprocess(x, 44100), n_quantizers=N_Q)`` (the codes of
                  ``encode``, not ``compress``, which is another, chunked code sequence).
     Timed from process spawn to exit (imports and model load included).
  b  ``python -m audiotok encode INPUTS -o OUT -m CODEC --checkpoint FILE --n-q N_Q --quiet
     --overwrite --device cpu`` (defaults otherwise), timed from spawn to exit. A second row runs
     the same command on one 0.5 s file: what a run costs apart from the audio (startup).

Also measured in the same run: a 4096^3 fp32 matmul (the machine's practical ceiling, as in
``encode.py``) and the official encoder's FLOPs per audio second (``FlopCounterMode`` over
``--flop-seconds`` of audio, counted once in the prepare child), so each method's speed reads as
a percentage of the ceiling.

Weights (nothing is downloaded): full-size RANDOM weights in the official layouts, written once per
run into the work folder (speed depends on the network's size, not on its values), unless
``--checkpoint FILE`` is given:
  dac_44khz: ``audiotok.testing.save_dac_checkpoint(path, "dac_44khz", encoder_dim=64,
             decoder_dim=1536)``, the released configuration, in the release's ``weights.pth`` layout;
  mimi:      moshi's released architecture (``loaders._mimi_config``) with random init, saved as a
             moshi-layout ``tokenizer-bench.safetensors`` (no ``config.json`` beside it, so audiotok
             takes the released configuration). Random-init codebooks are all zeros, so each
             level's 2048 entries are drawn from the quantizer's own inputs (residuals for the
             deeper levels) on the first input files plus noise, after each input projection drops
             the latents' mean direction (as ``tests/fixtures/mimi/make_fixture.py`` does, without
             its k-means): codes vary and near-ties are rarer than with raw random vectors.
Codes agreement b vs a is therefore a sanity check, not parity (``tests/`` checks parity). DAC
files longer than audiotok's whole-file limit (10 s) are encoded by audiotok in chunks with
context and may legitimately differ; agreement is also reported for the files within the limit.
A frame-count mismatch counts as different: librosa rounds its resampled length up, so a file
whose length is an exact multiple of the hop can give (a) one sample, hence one frame, more than
audiotok; such files are listed with their agreement on the frames both have.

Naive interpreters (scratch environments, never audiotok's own):

    # moshi (every release requires torch<2.10; 0.2.13 runs on 2.14.1 without its pins)
    python -m venv moshi-env && moshi-env/bin/pip install torch==2.14.1 soundfile librosa safetensors
    moshi-env/bin/pip install --no-deps moshi==0.2.13 sentencepiece sphn
    # DAC (pulls in 100+ packages: its own environment)
    python -m venv dac-env && dac-env/bin/pip install torch==2.14.1 descript-audio-codec==1.0.0 soundfile librosa

Run from the repository root with audiotok's environment active; the script itself and method b
run under this interpreter, ``benchmarks/encode.py`` supplies the generic helpers.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import encode as bench  # benchmarks/encode.py (stdlib-only at import: any interpreter can load it)

REPO = bench.REPO
CODECS = {  # rate, default codebooks, the official package of method a
    "mimi": {"rate": 24000, "n_q": 8, "package": "moshi 0.2.13"},
    "dac_44khz": {"rate": 44100, "n_q": 9, "package": "descript-audio-codec 1.0.0"},
}
TARGET = 1.5  # b/a


# ============================================================================================
# children (each prints one line "TAG {json}" on stdout, as in encode.py)
# ============================================================================================

def _read_mono(path: str, rate: int):
    """The naive loop's reading, shared by (a) and the Mimi codebook fill."""
    import librosa
    import soundfile as sf

    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=rate, res_type="soxr_hq")
    return wav


def child_weights_dac(spec: dict) -> dict:
    """Under audiotok's interpreter: the released-size random DAC in the release's layout."""
    from audiotok.testing import save_dac_checkpoint

    path = save_dac_checkpoint(spec["checkpoint"], "dac_44khz", seed=0, encoder_dim=64, decoder_dim=1536)
    return {"checkpoint": str(path)}


def _mimi_random(spec: dict, path: Path) -> dict:
    """moshi's released Mimi, random init, codebooks filled from its own latents; saved in moshi's layout."""
    import numpy as np
    import torch
    from moshi.models import loaders
    from safetensors.torch import save_file

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = loaders.get_mimi(None, device="cpu", num_codebooks=spec["n_q"])
    pieces, total = [], 0.0
    for f in spec["files"]:  # up to fill_seconds of the inputs (any file the reader takes)
        try:
            wav = _read_mono(f["path"], 24000)
        except Exception:
            continue
        pieces.append(wav[: int(24000 * 20)])
        total += len(pieces[-1]) / 24000
        if total >= spec["fill_seconds"]:
            break
    if not pieces:
        pieces = [np.random.default_rng(0).standard_normal(24000 * 10).astype(np.float32) * 0.1]
    with torch.no_grad():
        emb = torch.cat([model._encode_to_unquantized_latent(torch.from_numpy(np.ascontiguousarray(p))[None, None])[0]
                         for p in pieces], dim=1)  # [hidden, N]
        u = emb.mean(1)
        u = u / u.norm()
        for rvq in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
            w = rvq.input_proj.weight[:, :, 0]
            w = w - (w @ u)[:, None] * u[None]
            w = w / (w @ emb).std()
            rvq.input_proj.weight.copy_(w[:, :, None])
            z = (w @ emb).T.contiguous()  # [N, dim]: the inputs of this quantizer's first level
            for layer in rvq.vq.layers:
                cb = layer._codebook
                n = cb.embedding_sum.shape[0]
                pick = torch.randint(0, z.shape[0], (n,), generator=gen)
                cent = z[pick] + 0.5 * z.std(0) * torch.randn(n, z.shape[1], generator=gen)
                cb.embedding_sum.copy_(cent)
                cb.cluster_usage.fill_(1.0)
                cb._initialized.fill_(1.0)
                cb._embedding = None
                z = z - cent[torch.cdist(z, cent).argmin(1)]  # residual for the next level
    state = {}
    for k, v in model.state_dict().items():  # the released file's names for the attention projections
        k = k.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
        k = k.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
        state[k] = v.detach().contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return {"fill_seconds": total, "tensors": len(state)}


def child_prepare(spec: dict) -> dict:
    """Under the naive interpreter: write the random Mimi (unless given), load the weights as method
    (a) does, and count the official encoder's FLOPs per audio second."""
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    codec, path, n_q = spec["codec"], Path(spec["checkpoint"]), spec["n_q"]
    out: dict = {"checkpoint": str(path)}
    if codec == "mimi" and not path.exists():
        out["written"] = _mimi_random(spec, path)
    rate = CODECS[codec]["rate"]
    x = torch.randn(1, 1, int(rate * spec["flop_seconds"])) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if codec == "mimi":
            from moshi.models import loaders

            model = loaders.get_mimi(str(path), device="cpu", num_codebooks=n_q)

            def run():
                return model.encode(x)
        else:
            import dac

            model = dac.DAC.load(str(path)).eval()
            # DAC.load is not strict: check that every tensor of the file fits the network
            state = torch.load(str(path), map_location="cpu", weights_only=False)["state_dict"]
            model.load_state_dict(state, strict=True)

            def run():
                return model.encode(model.preprocess(x, rate), n_quantizers=n_q)[1]
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
            with FlopCounterMode(display=False) as fc:
                codes = run()
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}
    total = sum(by_op.values())
    out.update({"flop_by_op": by_op, "flop_seconds": spec["flop_seconds"],
                "total_flop": total / spec["flop_seconds"], "codes_shape": list(codes.shape),
                "distinct_level0_codes": int(codes[0, 0].unique().numel()),
                "parameters": sum(p.numel() for p in model.parameters()),
                "torch": torch.__version__})
    return out


def child_naive(spec: dict) -> dict:
    """(a) what a user writes with the official package (file I/O as encode.py's naive loop)."""
    import numpy as np
    import torch

    codec, path, n_q = spec["codec"], spec["checkpoint"], spec["n_q"]
    if codec == "mimi":
        from moshi.models import loaders

        model = loaders.get_mimi(path, device="cpu", num_codebooks=n_q)
        rate = model.sample_rate

        def encode(x):
            return model.encode(x[None, None])[0]
    else:
        import dac

        model = dac.DAC.load(path).eval()
        rate = model.sample_rate

        def encode(x):
            return model.encode(model.preprocess(x[None, None], rate), n_quantizers=n_q)[1][0]
    ready = time.time()
    t0 = time.perf_counter()
    errors = {}
    done_seconds = 0.0
    for f in spec["files"]:
        try:
            wav = _read_mono(f["path"], rate)
            with torch.inference_mode():
                codes = encode(torch.from_numpy(np.ascontiguousarray(wav)))
            out = Path(f["out_a"])
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, codes.numpy())
            done_seconds += f["seconds"]
        except Exception as exc:  # report, go on
            errors[f["rel"]] = f"{type(exc).__name__}: {exc}"[:300]
    return {"inner_s": time.perf_counter() - t0, "ready_epoch": ready, "errors": errors,
            "audio_seconds": done_seconds}


CHILDREN = {"weights_dac": child_weights_dac, "prepare": child_prepare, "a": child_naive,
            "matmul": bench.child_matmul}


def child_cmd(python: str, method: str, spec_path: Path) -> list[str]:
    return [python, str(Path(__file__).resolve()), "--_method", method, "--_spec", str(spec_path)]


def audiotok_cmd(inputs: Path, out: Path, args, checkpoint: Path) -> list[str]:
    return [sys.executable, "-m", "audiotok", "encode", str(inputs), "-o", str(out), "-m", args.codec,
            "--checkpoint", str(checkpoint), "--n-q", str(args.n_q), "--quiet", "--overwrite", "--device", "cpu"]


# ============================================================================================
# parent
# ============================================================================================

def prepare(args, work: Path, env: dict, files: list[dict]) -> tuple[Path, dict]:
    """The checkpoint both methods read, and the FLOP count."""
    if args.checkpoint:
        ck = args.checkpoint.resolve()
    elif args.codec == "dac_44khz":
        ck = work / "weights" / "weights.pth"
        sp = work / "spec_weights.json"
        sp.write_text(json.dumps({"checkpoint": str(ck)}))
        rec = bench.run_child(child_cmd(sys.executable, "weights_dac", sp), env, work / "logs", "weights")
        if rec["returncode"] != 0:
            sys.exit("benchmark: could not write the random DAC weights (see the error above)")
    else:
        ck = work / "weights" / "tokenizer-bench.safetensors"
    sp = work / "spec_prepare.json"
    sp.write_text(json.dumps({"codec": args.codec, "checkpoint": str(ck), "n_q": args.n_q, "files": files,
                              "fill_seconds": 30.0, "flop_seconds": args.flop_seconds}))
    rec = bench.run_child(child_cmd(args.naive_python, "prepare", sp), env, work / "logs", "prepare")
    if rec["returncode"] != 0 or not rec["result"]:
        sys.exit(f"benchmark: the prepare child under {args.naive_python} failed (see the error above; does it "
                 f"have {CODECS[args.codec]['package']}?)")
    return ck, rec["result"]


def whole_frames_limit(codec: str) -> int | None:
    """Frames audiotok encodes in one call (longer files are chunked); None when never chunked."""
    if not codec.startswith("dac"):
        return None
    from audiotok.codecs.dac import Chunking
    from audiotok.registry import get_codec

    return Chunking.for_spec(get_codec(codec)).whole


def compare(args, work: Path) -> dict:
    env = bench.base_env(args, work / "torch_home")
    env["HF_HUB_OFFLINE"] = "1"
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    shared = bench.DEFAULT_SHARED
    audio_dirs = [] if args.no_shared else (args.audio or ([shared] if shared.is_dir() else []))
    for i, d in enumerate(audio_dirs):
        (inputs / f"set{i}_{Path(d).name}").symlink_to(Path(d).resolve(), target_is_directory=True)
    lo, hi = args.synthetic_seconds
    if args.synthetic:
        bench.write_synthetic(inputs / "synthetic", args.synthetic, lo, hi, args.synthetic_rate, seed=1)
    out = work / "out"
    files = bench.list_inputs(inputs, out)
    if not files:
        sys.exit("benchmark: no input files")
    audio_s = sum(f["seconds"] for f in files)
    tiny = work / "tiny"
    bench.write_synthetic(tiny, 1, 0.5, 0.5, args.synthetic_rate, seed=2)

    before = bench.machine_note()
    print(f"machine: {before['cpus']} CPUs, {before['cpu']}; {before['uptime']}", flush=True)
    print(f"codec {args.codec}, {args.n_q} codebooks; naive: {CODECS[args.codec]['package']} under "
          f"{args.naive_python}", flush=True)
    print(f"inputs: {len(files)} files, {audio_s:.1f} s of audio ({len(audio_dirs)} folder(s) + "
          f"{args.synthetic} synthetic clips of {lo:g}-{hi:g} s at {args.synthetic_rate} Hz)", flush=True)
    ck, flops = prepare(args, work, env, files)
    print(f"weights: {ck}; official encoder {flops['total_flop'] / 1e9:.2f} GFLOP per audio second "
          f"({flops['parameters'] / 1e6:.1f} M parameters in the model)", flush=True)

    spec_a = work / "spec_a.json"
    spec_a.write_text(json.dumps({"codec": args.codec, "checkpoint": str(ck), "n_q": args.n_q, "files": files}))
    mm = work / "spec_matmul.json"
    mm.write_text(json.dumps({"n": args.matmul_n, "reps": 2}))
    rot: list[tuple[str, str, list[str]]] = [
        ("a", f"a  naive loop, {CODECS[args.codec]['package']}",
         child_cmd(args.naive_python, "a", spec_a)),
        ("b", "b  audiotok encode", audiotok_cmd(inputs, out / "b", args, ck)),
    ]
    if not args.no_startup:
        rot.append(("startup", "   audiotok encode, one 0.5 s file", audiotok_cmd(tiny, out / "tiny", args, ck)))
    rot.append(("matmul", f"   matmul {args.matmul_n}^3 fp32", child_cmd(sys.executable, "matmul", mm)))

    runs: dict[str, list[dict]] = {k: [] for k, *_ in rot}
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for key, label, cmd in rot:
            rec = bench.run_child(cmd, env, work / "logs", f"{key}_{rep}")
            runs[key].append(rec)
            extra = ""
            if rec["result"] and "inner_s" in rec["result"]:
                extra = f" (encode loop {rec['result']['inner_s']:.1f} s)"
            if rec["result"] and "gflops_best" in rec["result"]:
                extra = f" ({rec['result']['gflops_best']:.1f} GFLOP/s)"
            print(f"  repeat {rep + 1}/{args.repeats} {label.strip():45s} {rec['wall_s']:7.1f} s{extra}  "
                  f"maxrss {rec['maxrss_mb']:.0f} MB", flush=True)
    after = bench.machine_note()

    summary = {}
    for key, label, _ in rot:
        if key != "matmul":
            summary[key] = {"label": label, **bench.summarise(runs[key], 0.5 if key == "startup" else audio_s,
                                                               "wall_s")}
    mm_runs = [r["result"] for r in runs["matmul"] if r["result"]]
    gflops = [m["gflops_best"] for m in mm_runs]
    matmul = {"gflops_per_repeat": gflops, "gflops_median": statistics.median(gflops) if gflops else float("nan"),
              "gflops_best": max(gflops) if gflops else float("nan"),
              "threads": mm_runs[0]["threads"] if mm_runs else None}

    def xrt(r: dict):
        return audio_s / r["wall_s"] if r["returncode"] == 0 and r["wall_s"] > 0 else None

    stat = "xrt_median" if args.stat == "median" else "xrt_best"
    pairs = [b / a for a, b in zip(map(xrt, runs["a"]), map(xrt, runs["b"])) if a and b]
    ratios = {"b/a": {"value": summary["b"][stat] / summary["a"][stat], "paired": pairs,
                      "paired_median": statistics.median(pairs) if pairs else float("nan"), "target": TARGET}}

    # codes agreement: a's [n_q, frames] .npy vs b's .npz "codes"
    def naive(f):
        return bench._load(f["out_a"])

    def tree(f):
        return bench._load(str(out / "b" / Path(f["rel"]).with_suffix(".npz")), "codes")

    agree = {"b_vs_a": bench.codes_agreement(files, tree, naive)}
    limit = whole_frames_limit(args.codec)
    if limit is not None:
        short = [f for f in files if (c := naive(f)) is not None and c.shape[-1] <= limit]
        agree[f"b_vs_a, files <= {limit} frames (whole-file in audiotok)"] = bench.codes_agreement(short, tree, naive)
        agree[f"b_vs_a, files > {limit} frames (chunked in audiotok)"] = bench.codes_agreement(
            [f for f in files if f not in short], tree, naive)
    per_file = []
    for f in files:
        a, b = naive(f), tree(f)
        same = None
        if a is not None and b is not None and a.shape[0] == b.shape[0]:
            t = min(a.shape[-1], b.shape[-1])  # on the frames both have
            same = float((a[:, :t].astype("int64") == b[:, :t].astype("int64")).mean()) if t else None
        per_file.append({"rel": f["rel"], "seconds": f["seconds"], "rate": f["rate"], "channels": f["channels"],
                         "frames_a": None if a is None else int(a.shape[-1]),
                         "frames_b": None if b is None else int(b.shape[-1]), "identical_fraction_common": same})

    return {"kind": "compare_codec", "codec": args.codec, "n_q": args.n_q, "args": vars(args),
            "machine_before": before, "machine_after": after, "checkpoint": str(ck),
            "random_weights": not args.checkpoint, "files": per_file, "audio_seconds": audio_s, "flops": flops,
            "matmul": matmul, "summary": summary, "ratios": ratios, "agreement": agree,
            "whole_frames_limit": limit, "stat": args.stat, "runs": runs,
            "elapsed_s": time.perf_counter() - t_start}


def print_compare(r: dict) -> None:
    s, mm, fmt = r["summary"], r["matmul"], bench.fmt
    xs = "xrt_median" if r["stat"] == "median" else "xrt_best"
    ceiling = mm["gflops_median"] if r["stat"] == "median" else mm["gflops_best"]
    gflop = r["flops"]["total_flop"] / 1e9
    print()
    print(f"{r['codec']}, {r['n_q']} codebooks, {'random' if r['random_weights'] else 'given'} weights; "
          f"{len(r['files'])} files, {r['audio_seconds']:.1f} s of audio; {r['args']['repeats']} interleaved "
          f"repeats; ratios use the {r['stat']}")
    head = (f"| {'method':45s} | {'x RT med':>8s} | {'x RT best':>9s} | {'wall s med':>10s} | {'startup s':>9s} "
            f"| {'CPU s med':>9s} | {'peak RSS MB':>11s} | {'tree RSS MB':>11s} | {'% of matmul':>11s} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for key, v in s.items():
        tiny = key == "startup"
        pct = "-" if tiny or math.isnan(ceiling) else fmt(100 * v[xs] * gflop / ceiling, 1)
        st = v["wall_median_s"] if tiny else v["startup_median_s"]
        print(f"| {v['label']:45s} | {'-' if tiny else fmt(v['xrt_median']):>8s} "
              f"| {'-' if tiny else fmt(v['xrt_best']):>9s} | {fmt(v['wall_median_s']):>10s} | {fmt(st):>9s} "
              f"| {fmt(v['cpu_median_s']):>9s} | {fmt(v['maxrss_mb'], 0):>11s} | {fmt(v['tree_rss_mb'], 0):>11s} "
              f"| {pct:>11s} |")
    print(f"| {'   matmul ' + str(r['args']['matmul_n']) + '^3 fp32 (GFLOP/s med/best)':45s} | "
          f"{fmt(mm['gflops_median']):>8s} | {fmt(mm['gflops_best']):>9s} | {'':>10s} | {'':>9s} | {'':>9s} "
          f"| {'':>11s} | {'':>11s} | {'100.0':>11s} |")
    print()
    v = r["ratios"]["b/a"]
    print(f"b/a = {v['value']:.2f} ({r['stat']} / {r['stat']}); paired per repeat: "
          + ", ".join(f"{x:.2f}" for x in v["paired"])
          + f"; target >= {TARGET:g}: {'MET' if v['value'] >= TARGET else 'NOT MET'}")
    print("  (a's startup column: spawn to model loaded; b's wall includes its own startup"
          + (", see the 0.5 s row)" if "startup" in s else ")"))
    for name, a in r["agreement"].items():
        if not a["files_compared"] and not a["missing"]:
            continue
        print(f"codes identical {name}: {100 * a['identical_fraction']:.2f} % of codes "
              f"(level 0: {100 * a['identical_fraction_level0']:.2f} %), "
              f"{a['files_identical']}/{a['files_compared']} files exactly"
              + (f", {len(a['missing'])} missing" if a["missing"] else ""))
    uneven = [f for f in r["files"] if f["frames_a"] is not None and f["frames_b"] is not None
              and f["frames_a"] != f["frames_b"]]
    if uneven:  # librosa rounds its output length up, so an exact multiple of the hop can gain a frame
        print(f"  {len(uneven)} file(s) with another frame count in a than in b (counted as different above); on "
              "the frames both have: " + ", ".join(
                  f"{f['rel']} {f['frames_a']}/{f['frames_b']} frames "
                  f"{100 * (f['identical_fraction_common'] or 0):.1f} % same" for f in uneven[:5]))
    fl = r["flops"]
    print(f"official encoder: {gflop:.2f} GFLOP per audio second (FlopCounterMode over {fl['flop_seconds']:g} s; "
          f"convolutions {sum(v for k, v in fl['flop_by_op'].items() if 'conv' in k) / fl['flop_seconds'] / 1e9:.2f})")
    if not math.isnan(ceiling):
        for key, v in s.items():
            if key != "startup":
                g = v[xs] * gflop
                print(f"  {v['label'].strip():45s} {g:7.1f} GFLOP/s = {100 * g / ceiling:5.1f} % of the matmul "
                      f"ceiling ({ceiling:.1f} GFLOP/s, {r['stat']})")
    for key, v in s.items():
        if v["errors"]:
            print(f"  {key}: {len(v['errors'])} file(s) failed: " + "; ".join(
                f"{k}: {e}" for k, e in list(v["errors"].items())[:5]))
        if v["failed_runs"]:
            print(f"  {key}: {v['failed_runs']} run(s) exited non-zero (their logs: --keep DIR)")
    print(f"load before: {r['machine_before']['uptime']}")
    print(f"load after:  {r['machine_after']['uptime']}")
    print(f"benchmark wall time {r['elapsed_s']:.0f} s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", choices=sorted(CODECS), required=False, help="the codec to measure")
    p.add_argument("--naive-python", default=sys.executable,
                   help="interpreter with the official package for method a (default: this one)")
    p.add_argument("--n-q", type=int, help="codebooks, passed to both methods (default: 8 for mimi, 9 for dac_44khz)")
    p.add_argument("--checkpoint", type=Path,
                   help="weights both methods read: DAC weights.pth or moshi tokenizer-*.safetensors "
                        "(default: random weights of the released size)")
    bench.add_common_args(p)
    p.add_argument("--flop-seconds", type=float, default=5.0, help="audio seconds the FLOP count runs on (default 5)")
    args = p.parse_args(argv)
    if not args._method:
        if not args.codec:
            p.error("--codec is required (mimi or dac_44khz)")
        if args.n_q is None:
            args.n_q = CODECS[args.codec]["n_q"]
        if args.checkpoint and not args.checkpoint.is_file():
            p.error(f"--checkpoint {args.checkpoint} is not a file")
        if not Path(args.naive_python).exists() and not shutil.which(args.naive_python):
            p.error(f"--naive-python {args.naive_python} not found")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._method:
        bench._emit(CHILDREN[args._method](json.loads(Path(args._spec).read_text())))
        return 0

    def measure(work: Path) -> dict:
        res = compare(args, work)
        print_compare(res)
        return res

    return bench.in_work_folder(args, "audiotok-bench-codec-", measure)


if __name__ == "__main__":
    sys.exit(main())
