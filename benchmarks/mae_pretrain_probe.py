"""Demonstration: pretrain a tiny EnCodecMAE on CPU, then probe it on labelled tasks built offline.

    python benchmarks/mae_pretrain_probe.py --work /tmp/maebench [--steps 1500] [--batch-size 8] [--json PATH]

Everything is generated here from Debian packages (installed with apt-get when missing; nothing is
committed): fluidsynth + fluid-soundfont-gm (General-MIDI programs), espeak-ng and flite (voices),
hydrogen-drumkits (drum samples). Three tasks:

- instrument: the GM family (piano, chromatic percussion, organ, guitar, bass, strings, brass,
  reed) of single notes and short phrases, grouped by program (the test folds hold programs the
  probe never saw);
- voice: which of 8 synthetic voices (4 flite, 4 espeak-ng) reads a sentence, grouped by sentence
  (every test sentence is new);
- drums: kick / snare / hi-hat / tom / cymbal hits, grouped by drum kit.

Pretraining audio (disjoint clips: other phrases, other sentences, drum sequences) is encoded by a
random-weight EnCodec with fitted codebooks (``audiotok.testing.random_encodec``; official weights
are not downloadable here), then ``audiotok train mae --size tiny``. Each task is probed with
``audiotok probe --layer all --baseline logmel,random`` (3-fold grouped CV, linear and MLP probes).
Prints a table: best layer of the pretrained model, of the random-init model of the same size, and
the log-mel mean+std baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")
PACKAGES = {"fluidsynth": "fluidsynth", "fluid-soundfont-gm": SF2, "espeak-ng": "espeak-ng", "flite": "flite",
            "hydrogen-drumkits": DRUMKITS}
FAMILIES = {  # GM programs (0-based), three per family
    "piano": (0, 2, 4), "chromatic": (8, 11, 13), "organ": (16, 19, 20), "guitar": (24, 25, 29),
    "bass": (32, 33, 38), "strings": (40, 42, 48), "brass": (56, 57, 61), "reed": (64, 66, 71),
}
VOICES = [("flite", "kal"), ("flite", "awb"), ("flite", "rms"), ("flite", "slt"),
          ("espeak-ng", "en"), ("espeak-ng", "en+f2"), ("espeak-ng", "en-us+m4"), ("espeak-ng", "en-gb-scotland")]
WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above quiet hills and old "
         "rivers carry cold water past green fields where children play games until evening comes slowly "
         "through narrow streets of small towns near the sea every morning bakers sell warm bread to tired "
         "workers who hurry toward distant offices beneath heavy grey clouds").split()
DRUM_CLASSES = {"kick": ("kick", "bd", "bass drum", "bassdrum"), "snare": ("snare", "sd", "rim"),
                "hihat": ("hat", "hh"), "tom": ("tom",), "cymbal": ("crash", "ride", "cymbal", "china", "splash")}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def ensure_packages() -> None:
    missing = [pkg for pkg, probe in PACKAGES.items()
               if (isinstance(probe, Path) and not probe.exists()) or (isinstance(probe, str) and not shutil.which(probe))]
    if missing:
        print(f"installing {' '.join(missing)} ...", flush=True)
        sh(["apt-get", "update"])
        sh(["apt-get", "install", "-y", "--no-install-recommends", *missing])


# --- MIDI --------------------------------------------------------------------------------------
def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, program: int, notes: list[tuple[float, float, int, int]]) -> None:
    """A format-0 MIDI file: ``notes`` = (start s, duration s, pitch, velocity) at 120 bpm (480 ticks/beat)."""
    tick = 960  # ticks per second
    events = [(0, bytes([0xC0, program]))]
    for start, dur, pitch, vel in notes:
        events.append((int(start * tick), bytes([0x90, pitch, vel])))
        events.append((int((start + dur) * tick), bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1][0] == 0x90))
    body, now = b"", 0
    for t, ev in events:
        body += _vlq(t - now) + ev
        now = t
    body += _vlq(tick // 2) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + body)


def phrase(rng: random.Random, program: int, seconds: float, single: bool) -> list:
    low, high = (28, 52) if 32 <= program <= 39 else (48, 79)
    if single:
        return [(0.0, seconds * 0.8, rng.randint(low, high), rng.randint(70, 110))]
    notes, t = [], 0.0
    while t < seconds - 0.3:
        d = rng.choice((0.25, 0.25, 0.5, 0.75))
        pitch = rng.randint(low, high)
        notes.append((t, d * 0.9, pitch, rng.randint(60, 115)))
        if rng.random() < 0.2 and program not in range(32, 40):
            notes.append((t, d * 0.9, min(127, pitch + rng.choice((3, 4, 7))), rng.randint(60, 100)))
        t += d
    return notes


def render(program: int, notes: list, out: Path, tmp: Path) -> None:
    mid = tmp / (out.stem + ".mid")
    write_midi(mid, program, notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    sh(["fluidsynth", "-ni", "-g", "0.8", "-r", "24000", "-F", str(out), str(SF2), str(mid)])
    mid.unlink()


def speak(engine: str, voice: str, text: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if engine == "flite":
        sh(["flite", "-voice", voice, "-t", text, "-o", str(out)])
    else:
        sh(["espeak-ng", "-v", voice, "-w", str(out), text])


def sentence(rng: random.Random, n: int | None = None) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(6, 10)))


def drum_samples() -> dict[str, list[tuple[str, Path]]]:
    """class -> [(kit, sample file)] from the packaged Hydrogen kits (classes by file name)."""
    out: dict[str, list] = {c: [] for c in DRUM_CLASSES}
    for kit in sorted(p for p in DRUMKITS.iterdir() if p.is_dir()):
        for f in sorted(kit.iterdir()):
            if f.suffix.lower() not in (".wav", ".flac"):
                continue
            name = f.stem.lower().replace("_", " ").replace("-", " ")
            hits = [c for c, keys in DRUM_CLASSES.items() if any(k in name.split() or (len(k) > 3 and k in name)
                                                                   for k in keys)]
            if len(hits) == 1:
                out[hits[0]].append((kit.name, f))
    return out


# --- data --------------------------------------------------------------------------------------
def build_tasks(work: Path, seed: int) -> dict[str, Path]:
    """Labelled clips and a labels.csv (path,label,group) per task."""
    import numpy as np
    import soundfile as sf

    rng = random.Random(seed)
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tasks = {}
    # instrument family
    root = work / "tasks" / "instrument"
    rows = []
    for fam, programs in FAMILIES.items():
        for prog in programs:
            for k in range(6):
                out = root / fam / f"p{prog:03d}_{k}.wav"
                if not out.exists():
                    render(prog, phrase(rng, prog, 3.0, single=k < 2), out, tmp)
                rows.append((out, fam, f"program{prog}"))
    tasks["instrument"] = _write_labels(root, rows)
    # voice identity
    root = work / "tasks" / "voice"
    rows = []
    for s in range(16):
        text = sentence(rng)
        for engine, voice in VOICES:
            label = f"{engine}-{voice}"
            out = root / label / f"s{s:02d}.wav"
            if not out.exists():
                speak(engine, voice, text, out)
            rows.append((out, label, f"sentence{s}"))
    tasks["voice"] = _write_labels(root, rows)
    # drums
    root = work / "tasks" / "drums"
    rows = []
    for cls, items in drum_samples().items():
        per_kit: dict[str, list] = {}
        for kit, f in items:
            per_kit.setdefault(kit, []).append(f)
        for kit, files in per_kit.items():
            for f in files[:4]:
                out = root / cls / f"{kit}_{f.stem}.wav".replace(" ", "_")
                if not out.exists():
                    x, sr = sf.read(str(f), always_2d=True)
                    x = x.mean(axis=1)[: int(2.0 * sr)]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(str(out), x.astype(np.float32), sr)
                rows.append((out, cls, kit))
    tasks["drums"] = _write_labels(root, rows)
    return tasks


def _write_labels(root: Path, rows) -> Path:
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for p, label, group in rows:
            w.writerow([str(p), label, group])
    return path


def build_pretraining(work: Path, seed: int, midi_clips: int, tts_clips: int, drum_clips: int, shared: bool) -> Path:
    """Unlabelled audio, disjoint from the probe clips: phrases of random GM programs, other
    sentences, random drum sequences, plus the shared recordings when present."""
    import numpy as np
    import soundfile as sf

    rng = random.Random(seed + 1000)
    root = work / "pretrain"
    tmp = work / "tmp"
    for i in range(midi_clips):
        out = root / "midi" / f"m{i:04d}.wav"
        if not out.exists():
            prog = rng.randrange(0, 112)
            render(prog, phrase(rng, prog, 10.0, single=False), out, tmp)
    for i in range(tts_clips):
        out = root / "tts" / f"t{i:04d}.wav"
        if not out.exists():
            engine, voice = rng.choice(VOICES)
            speak(engine, voice, sentence(rng, rng.randint(12, 20)), out)
    samples = [f for items in drum_samples().values() for _, f in items]
    for i in range(drum_clips):
        out = root / "drums" / f"d{i:04d}.wav"
        if out.exists():
            continue
        y = np.zeros(24000 * 8, np.float32)
        step = rng.choice((0.125, 0.25, 0.1875))
        t = 0.0
        while t < 7.5:
            if rng.random() < 0.7:
                x, sr = sf.read(str(rng.choice(samples)), always_2d=True)
                x = x.mean(1)
                if sr != 24000:
                    import soxr

                    x = soxr.resample(x, sr, 24000)
                a = int(t * 24000)
                n = min(len(x), len(y) - a)
                y[a:a + n] += 0.6 * x[:n].astype(np.float32)
            t += step
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), np.clip(y, -1, 1), 24000)
    for sub, n in (("midi", midi_clips), ("tts", tts_clips), ("drums", drum_clips)):  # a smaller rerun
        for f in sorted((root / sub).glob("*.wav"))[n:]:
            f.unlink()
    link, src = root / "shared", REPO.parent / "shared" / "audio"
    if shared and src.is_dir() and not link.exists():
        link.symlink_to(src)
    elif not shared and link.is_symlink():
        link.unlink()
    return root


# --- runs --------------------------------------------------------------------------------------
def audiotok(*args, env=None) -> float:
    t0 = time.perf_counter()
    cmd = ["nice", "-n", "10", sys.executable, "-m", "audiotok", *map(str, args)]
    p = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-4000:]}")
    sys.stderr.write(p.stderr[-3000:])
    return time.perf_counter() - t0


def summarise(report: dict) -> dict:
    """Best layer per (features, probe) and the pretrained model's last layer."""
    best: dict = {}
    for r in report["results"]:
        key = (r["features"], r["probe"])
        if key not in best or r["accuracy"] > best[key]["accuracy"]:
            best[key] = r
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Folder for the generated audio, checkpoints and reports.")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--midi-clips", type=int, default=90, help="10 s phrases of random GM programs for pretraining.")
    ap.add_argument("--tts-clips", type=int, default=150, help="Sentences (4-7 s) for pretraining.")
    ap.add_argument("--drum-clips", type=int, default=50, help="8 s drum sequences for pretraining.")
    ap.add_argument("--no-shared", action="store_true", help="Leave ../shared/audio out of the pretraining set.")
    ap.add_argument("--json", type=Path, help="Write every number here.")
    args = ap.parse_args()
    work = args.work.resolve()
    ensure_packages()
    t0 = time.perf_counter()
    tasks = build_tasks(work, args.seed)
    pre = build_pretraining(work, args.seed, args.midi_clips, args.tts_clips, args.drum_clips, not args.no_shared)
    gen_s = time.perf_counter() - t0
    sys.path.insert(0, str(REPO))
    from audiotok.testing import random_encodec, save_encodec_checkpoint

    codec = work / "codec" / "encodec_24khz.th"
    if not codec.exists():
        save_encodec_checkpoint(random_encodec(seed=args.seed), work / "codec", "encodec_24khz.th")
    env = {**os.environ, "AUDIOTOK_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    ckpt = work / "mae-tiny.pt"
    train_s = 0.0
    if not ckpt.exists():
        train_s = audiotok("train", "mae", pre, "-o", ckpt, "--size", "tiny", "--steps", args.steps, "--batch-size",
                           args.batch_size, "--lr", args.lr, "--seed", args.seed, "--eval-every", max(1, args.steps // 5),
                           "--codec-checkpoint", codec, "--device", "cpu", "--workers", "1", "--quiet", env=env)
    import torch

    hist = torch.load(ckpt, weights_only=True)["audiotok"]["training"]["history"]
    results = {"steps": args.steps, "batch_size": args.batch_size, "generate_seconds": gen_s, "train_seconds": train_s,
               "history": hist, "tasks": {}}
    for name, labels in tasks.items():
        out = work / f"probe-{name}.json"
        audiotok("probe", labels.parent, "--labels", labels, "--model", ckpt, "--layer", "all", "--baseline",
                 "logmel,random", "--folds", "3", "-o", out, "--plot", work / f"probe-{name}.png", env=env)
        results["tasks"][name] = json.loads(out.read_text())
    done = hist[-1]["step"] if hist else 0
    how = f"{train_s / 60:.1f} min" if train_s else f"checkpoint reused from {ckpt} (stopped at step {done})"
    print(f"\npretraining: {done} of {args.steps} steps x {args.batch_size} crops of 4 s, {how}; "
          f"last validation: {json.dumps(hist[-1]) if hist else None}")
    print("\n| task | probe | pretrained (best layer) | random-init (best layer) | log-mel mean+std | chance |")
    print("|---|---|---|---|---|---|")
    for name, rep in results["tasks"].items():
        best = summarise(rep)
        for probe in ("linear", "mlp"):
            pre_r = best[(str(ckpt), probe)]
            rnd = best[("random-init", probe)]
            mel = best[("log-mel mean+std", probe)]
            print(f"| {name} ({rep['n_items']} clips, {len(rep['classes'])} classes) | {probe} | "
                  f"{pre_r['accuracy']:.3f} (L{pre_r['layer']}) | {rnd['accuracy']:.3f} (L{rnd['layer']}) | "
                  f"{mel['accuracy']:.3f} | {rep['chance_accuracy']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
