"""Benchmark: EnCodecMAE embeddings, the reference algorithm vs ``audiotok embed``.

    python benchmarks/embed.py [INPUT...] [--size base] [--workers 1] [--json PATH]

Same random-weight network (base size by default: 10 layers, D 768, 12 heads, FF 4096, mel256
front-end), same files (default: ../shared/audio beside the repository), one run:

  (a) reference: what a user runs today with the official code's algorithm: one file at a time,
      ``librosa.load(sr=24000)``, 4 s chunks one after another (batch of 1), torchaudio Kaldi
      fbank, the network, chunks of <= 2048 samples dropped, mean over frames;
  (b) ``audiotok embed INPUT... -o OUT --pool mean`` end to end (decode workers, batching).

Both run as fresh processes (interpreter start, imports and model load included). Prints
throughput (audio seconds per wall second), b/a, the model's FLOPs per audio second, the achieved
fraction of a 4096^3 fp32 matmul timed in the same run, and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"small": (768, 5, 12), "base": (768, 10, 12), "large": (1024, 20, 12)}
CHUNK = 96000


def model_flops(dim: int, layers: int, heads: int, ff: int, frames: int, bins: int = 256) -> float:
    """Multiply-adds x 2 of one chunk of ``frames`` frames through front-end matmul, projection and encoder."""
    inner = heads * (dim // heads)
    per_layer = 2 * frames * dim * 3 * inner + 2 * 2 * frames * frames * inner + 2 * frames * inner * dim
    per_layer += 2 * 2 * frames * dim * ff
    return 2 * frames * 513 * bins + 2 * frames * bins * dim + layers * per_layer


def matmul_peak(repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of a 4096^3 matmul on this machine, now."""
    import torch

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 4096**3 / best / 1e9


def _peak_rss_mb() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


# --- (a) the reference algorithm, in its own process ---------------------------------------------
def reference_main(ckpt: str, list_file: str, result_file: str) -> None:
    import librosa
    import numpy as np
    import torch
    import torchaudio.compliance.kaldi as kaldi

    from audiotok.embedders.encodecmae import load_mae

    model = load_mae(ckpt)
    mean, std = model.cfg.mel_norm
    files = Path(list_file).read_text().splitlines()
    seconds, out = 0.0, {}
    for path in files:
        wav, _ = librosa.load(path, sr=24000, mono=True)
        seconds += wav.shape[0] / 24000
        frames = []
        for start in range(0, wav.shape[0], CHUNK):
            chunk = torch.from_numpy(wav[start:start + CHUNK])
            if chunk.shape[0] <= 2048:
                continue
            fb = kaldi.fbank(chunk[None], dither=0.0, frame_length=26.56, frame_shift=13.28, htk_compat=True,
                             num_mel_bins=256, sample_frequency=24000, use_energy=False, window_type="hanning")
            feats = ((fb - mean) / std)[None]
            frames.append(model(feats, torch.tensor([feats.shape[1]]), [model.cfg.layers - 1])[0][0])
        if frames:
            out[path] = torch.cat(frames).mean(0).numpy()
    np.savez(result_file + ".npz", **{str(i): v for i, v in enumerate(out.values())})
    Path(result_file).write_text(json.dumps({"audio_seconds": seconds, "files": len(out), "peak_rss_mb": _peak_rss_mb()}))


# --- (b) audiotok embed, in its own process ---------------------------------------------------------
def audiotok_main(result_file: str, argv: list[str]) -> None:
    from audiotok.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    Path(result_file).write_text(json.dumps({"exit": code, "peak_rss_mb": _peak_rss_mb()}))


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="audio files or folders (default: ../shared/audio)")
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--workers", type=int, default=1, help="audiotok decode workers")
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="run (a) and (b) alternately this many times and keep each one's best wall time")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from audiotok.engine.sources import AUDIO_EXTENSIONS, discover
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint

    inputs = args.inputs or [str(REPO.parent / "shared" / "audio")]
    files = [s.path for s in discover(inputs, AUDIO_EXTENSIONS) if not s.error]
    dim, layers, heads = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state = random_encodecmae_state("mel", dim=dim, layers=layers, heads=heads, ff_dim=4096, seed=0)
        ckpt = save_encodecmae_checkpoint(tmp / f"random-{args.size}.pt", state, encodecmae_gin(dim, layers, heads))
        del state
        (tmp / "files.txt").write_text("\n".join(files))
        peaks = [matmul_peak()]
        me = str(Path(__file__).resolve())
        argv = ["embed", *files, "-o", str(tmp / "out"), "-m", str(ckpt), "--pool", "mean", "-q", "--overwrite",
                "--workers", str(args.workers), "--batch-seconds", str(args.batch_seconds)]
        walls_a, walls_b = [], []
        for _ in range(max(1, args.repeats)):
            walls_a.append(_timed([sys.executable, me, "--_reference", str(ckpt), str(tmp / "files.txt"),
                                   str(tmp / "a.json")]))
            walls_b.append(_timed([sys.executable, me, "--_audiotok", str(tmp / "b.json"), *argv]))
            peaks.append(matmul_peak())
        ra = json.loads((tmp / "a.json").read_text())
        rb = json.loads((tmp / "b.json").read_text())
        wall_a, wall_b = min(walls_a), min(walls_b)
        peak, peak_after = max(peaks), peaks[-1]
    audio = ra["audio_seconds"]
    per_second = model_flops(dim, layers, heads, 4096, 300) / 4.0
    rows = []
    for name, wall, rss in (("(a) reference loop", wall_a, ra["peak_rss_mb"]),
                            ("(b) audiotok embed", wall_b, rb["peak_rss_mb"])):
        speed = audio / wall
        rows.append({"method": name, "wall_s": wall, "audio_s_per_s": speed,
                     "gflops": speed * per_second / 1e9, "fraction_of_matmul": speed * per_second / 1e9 / peak,
                     "peak_rss_mb": rss})
    result = {
        "size": args.size, "files": len(files), "audio_seconds": audio, "threads": _threads(),
        "loadavg_1min": os.getloadavg()[0], "model_gflop_per_audio_second": per_second / 1e9,
        "matmul_4096_gflops": peak, "matmul_4096_gflops_after": peak_after, "ratio_b_over_a": wall_a / wall_b,
        "rows": rows, "audiotok_exit": rb["exit"], "walls_a": walls_a, "walls_b": walls_b, "matmul_runs": peaks,
    }
    print(f"EnCodecMAE {args.size} (random weights), {len(files)} files, {audio:.1f} s of audio, "
          f"{result['threads']} torch threads, load average {result['loadavg_1min']:.1f}")
    print(f"model: {per_second / 1e9:.2f} GFLOP per audio second; 4096^3 fp32 matmul: {peak:.1f} GFLOP/s "
          f"(best of {len(peaks)} timings: {', '.join(f'{p:.0f}' for p in peaks)})")
    print(f"wall times (a): {', '.join(f'{w:.1f}' for w in walls_a)}; (b): {', '.join(f'{w:.1f}' for w in walls_b)}; "
          "best of each used")
    print("| method | wall s | audio s / wall s | GFLOP/s | fraction of matmul | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['wall_s']:.1f} | {r['audio_s_per_s']:.2f} | {r['gflops']:.1f} | "
              f"{r['fraction_of_matmul']:.2f} | {r['peak_rss_mb']:.0f} |")
    print(f"b/a = {result['ratio_b_over_a']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_reference":
        reference_main(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--_audiotok":
        audiotok_main(sys.argv[2], sys.argv[3:])
    else:
        main()
