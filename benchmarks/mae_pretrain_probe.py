"""Demonstration: pretrain a tiny EnCodecMAE on CPU (stage 1, then stage 2 self-training), then
probe its checkpoints on labelled tasks built offline.

    python benchmarks/mae_pretrain_probe.py --work /tmp/maebench [--steps 10000] [--json PATH]

Everything is generated here from Debian packages (installed with apt-get when missing; nothing is
committed): fluidsynth + fluid-soundfont-gm (General-MIDI programs), espeak-ng and flite (voices),
hydrogen-drumkits (drum samples). Every step is skipped when its outputs exist, and training
resumes from its checkpoint, so an interrupted run continues with the same command.

1. Pretraining audio (``WORK/pretrain``): 10 s phrases of GM programs that no probe task uses,
   sentences read by voices that no probe task uses (rate and pitch varied), 8 s drum sequences,
   and ``../shared/audio`` when present. All speech is resampled to one band (``ONE_BAND``: via 8
   kHz), as in the probe tasks.
2. Targets: official EnCodec weights cannot be downloaded here, so a random-weight EnCodec whose
   latent centring and 8 codebooks are fitted by k-means to random segments of the pretraining
   audio itself (``audiotok.testing.fit_encodec``, >= 60 frames per codeword), so that its codes
   use the codebooks on such audio. ``train mae`` prints their usage (codes used, entropy).
3. Stage 1: a short learning-rate sweep first (``--lr-sweep``, ``--sweep-steps`` each from the same
   seed; the lowest validation loss picks the rate), then ``audiotok train mae --size tiny`` for
   ``--steps`` steps at that rate, checkpoints kept at
   ``--keep-steps`` (``WORK/stage1.stepN.pt``); every validation prints the pretext baselines.
4. Stage 2: ``audiotok train mae --self-train WORK/stage1.pt`` (k-means on the teacher's last
   layer; the student starts from the teacher's weights).
5. Probe tasks (``WORK/tasks``, >= 1000 items each, every voice resampled to one band):
   ``digits`` (ten spoken digits, 30 voices, rate and pitch varied; folds leave voices out),
   ``anagrams`` (twelve words in six pairs made of the same sounds in another order, tap/pat,
   top/pot...: the mean spectrum hardly tells a pair apart; same voices and protocol),
   ``instrument`` (the GM family of notes and phrases of 32 programs; folds leave programs out).
6. Every kept checkpoint and the stage-2 student probed with ``audiotok probe --baseline
   logmel,random --random-seeds 3`` (5 grouped folds, linear probe, layer chosen on inner folds,
   McNemar's test against each baseline). Prints the checkpoint-curve table.
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
SR = 24000
ONE_BAND = 8000  # every voice goes through this rate (4 kHz of band), so no task is told by sample rate
FAMILIES = {  # GM programs (0-based) of the instrument task, four per family
    "piano": (0, 1, 2, 4), "chromatic": (8, 9, 11, 13), "organ": (16, 17, 19, 20), "guitar": (24, 25, 26, 29),
    "bass": (32, 33, 34, 38), "strings": (40, 41, 42, 48), "brass": (56, 57, 60, 61), "reed": (64, 65, 66, 71),
}
PROBE_PROGRAMS = {p for ps in FAMILIES.values() for p in ps}
FLITE = ("kal", "kal16", "awb", "rms", "slt")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2",
            "klatt3", "klatt4", "edward", "john", "max", "paul", "steph", "linda", "grandma", "grandpa", "david")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ANAGRAMS = ("tap", "pat", "top", "pot", "tip", "pit", "net", "ten", "nap", "pan", "tub", "but")  # six pairs of the same sounds
WORDS = [w for w in (
    "the quick brown fox jumps over a lazy dog while bright stars shine above quiet hills and old rivers carry "
    "cold water past green fields where children play games until evening comes slowly through narrow streets of "
    "small towns near the sea every morning bakers sell warm bread to tired workers who hurry toward distant "
    "offices beneath heavy grey clouds a gentle wind moves across wide plains as farmers gather ripe grain before "
    "winter storms arrive with thunder rain and snow people talk about music books travel food friends family "
    "and the long summer holidays they remember").split() if w not in DIGITS + ANAGRAMS]
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


def voices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(probe voices, pretraining voices): the 5 flite voices and 25 espeak-ng accent+variant
    voices for the probes; 40 other espeak-ng accent+variant voices (and the flite ones, which are
    all there are) for pretraining."""
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    random.Random(7).shuffle(combos)
    probe = [("flite", v) for v in FLITE] + [("espeak-ng", f"{a}+{v}") for a, v in combos[:25]]
    pre = [("flite", v) for v in FLITE] + [("espeak-ng", f"{a}+{v}") for a, v in combos[25:65]]
    return probe, pre


# --- audio -------------------------------------------------------------------------------------
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
        return [(0.0, seconds * 0.8, rng.randint(low, high), rng.randint(60, 115))]
    notes, t = [], 0.0
    while t < seconds - 0.3:
        d = rng.choice((0.25, 0.25, 0.5, 0.75))
        pitch = rng.randint(low, high)
        notes.append((t, d * 0.9, pitch, rng.randint(60, 115)))
        if rng.random() < 0.2 and program not in range(32, 40):
            notes.append((t, d * 0.9, min(127, pitch + rng.choice((3, 4, 7))), rng.randint(60, 100)))
        t += d
    return notes


def render_clips(program: int, clips: list[list], seconds: float, outs: list[Path], tmp: Path) -> None:
    """Render ``clips`` (note lists starting at 0) of ``program`` in one fluidsynth call (the
    soundfont loads once), each in its own slot of ``seconds`` + 1.5 s, and cut them apart."""
    import numpy as np
    import soundfile as sf

    slot = seconds + 1.5
    notes = [(i * slot + s, d, p, v) for i, clip in enumerate(clips) for s, d, p, v in clip]
    mid, wav = tmp / f"p{program}.mid", tmp / f"p{program}.wav"
    write_midi(mid, program, notes)
    sh(["fluidsynth", "-ni", "-g", "0.8", "-r", str(SR), "-F", str(wav), str(SF2), str(mid)])
    x, sr = sf.read(str(wav), always_2d=True)
    assert sr == SR, sr
    x = x.mean(1).astype(np.float32)
    for i, out in enumerate(outs):
        a = int(i * slot * SR)
        y = x[a:a + int(seconds * SR)]
        y = np.pad(y, (0, int(seconds * SR) - len(y)))
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), y, SR)
    mid.unlink()
    wav.unlink()


def one_band(x, sr: int):
    """Audio at ``sr`` -> through ONE_BAND -> 24 kHz (every voice then has the same 4 kHz band)."""
    import soxr

    return soxr.resample(soxr.resample(x, sr, ONE_BAND), ONE_BAND, SR)


def speak(engine: str, voice: str, text: str, out: Path, rng: random.Random, tmp: Path) -> None:
    """Say ``text`` with a random rate and pitch, band-limited, at a random level."""
    import numpy as np
    import soundfile as sf

    raw = tmp / f"{out.stem}.raw.wav"
    if engine == "flite":
        sh(["flite", "-voice", voice, "--setf", f"duration_stretch={rng.uniform(0.8, 1.3):.3f}",
            "--setf", f"int_f0_target_mean={rng.uniform(80, 190):.0f}", "-t", text, "-o", str(raw)])
    else:
        sh(["espeak-ng", "-v", voice, "-s", str(rng.randint(120, 230)), "-p", str(rng.randint(20, 80)),
            "-w", str(raw), text])
    x, sr = sf.read(str(raw), always_2d=True)
    raw.unlink()
    y = one_band(x.mean(1), sr)
    y = y / max(1e-6, float(np.abs(y).max())) * rng.uniform(0.25, 0.9)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), y.astype(np.float32), SR)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def drum_samples() -> list[Path]:
    """Drum sample files of the packaged Hydrogen kits (those named as one drum class)."""
    out = []
    for kit in sorted(p for p in DRUMKITS.iterdir() if p.is_dir()):
        for f in sorted(kit.iterdir()):
            if f.suffix.lower() not in (".wav", ".flac"):
                continue
            name = f.stem.lower().replace("_", " ").replace("-", " ")
            hits = [c for c, keys in DRUM_CLASSES.items()
                    if any(k in name.split() or (len(k) > 3 and k in name) for k in keys)]
            if len(hits) == 1:
                out.append(f)
    return out


# --- probe tasks -------------------------------------------------------------------------------
def build_tasks(work: Path, seed: int, variants: int, clips_per_program: int) -> dict[str, Path]:
    """Labelled clips and a labels.csv (path,label,group) per task."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    probe_voices, _ = voices()
    tasks = {}
    for task, words, n_var in (("digits", DIGITS, variants), ("anagrams", ANAGRAMS, max(1, 3 * variants // 4))):
        root = work / "tasks" / task
        rng = random.Random(f"{seed}-{task}")
        rows = []
        for vi, (engine, voice) in enumerate(probe_voices):
            for word in words:
                for k in range(n_var):
                    out = root / word / f"v{vi:02d}_{k}.wav"
                    r = random.Random(rng.random())
                    if not out.exists():
                        speak(engine, voice, word, out, r, tmp)
                    rows.append((out, word, f"{engine}:{voice}"))
        tasks[task] = _write_labels(root, rows)
    root = work / "tasks" / "instrument"
    rng = random.Random(f"{seed}-instrument")
    rows = []
    for fam, programs in FAMILIES.items():
        for prog in programs:
            outs = [root / fam / f"p{prog:03d}_{k:02d}.wav" for k in range(clips_per_program)]
            clips = [phrase(rng, prog, 2.0, single=k % 2 == 0) for k in range(clips_per_program)]
            if not all(o.exists() for o in outs):
                render_clips(prog, clips, 2.0, outs, tmp)
            rows += [(o, fam, f"program{prog}") for o in outs]
    tasks["instrument"] = _write_labels(root, rows)
    return tasks


def _write_labels(root: Path, rows) -> Path:
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for p, label, group in rows:
            w.writerow([str(p), label, group])
    return path


# --- pretraining audio -------------------------------------------------------------------------
def build_pretraining(work: Path, seed: int, midi_clips: int, tts_clips: int, drum_clips: int, shared: bool) -> Path:
    """Unlabelled audio, disjoint from the probe clips: phrases of GM programs the instrument task
    does not use, sentences (no digit or command word) by voices the speech tasks do not use, drum
    sequences, plus the shared recordings when present."""
    import numpy as np
    import soundfile as sf

    rng = random.Random(seed + 1000)
    root = work / "pretrain"
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    programs = [p for p in range(112) if p not in PROBE_PROGRAMS]
    by_prog: dict[int, list] = {}
    for i in range(midi_clips):
        prog = rng.choice(programs)
        by_prog.setdefault(prog, []).append((root / "midi" / f"m{i:04d}.wav", phrase(rng, prog, 10.0, single=False)))
    for prog, items in sorted(by_prog.items()):
        if not all(o.exists() for o, _ in items):
            render_clips(prog, [c for _, c in items], 10.0, [o for o, _ in items], tmp)
    _, pre_voices = voices()
    for i in range(tts_clips):
        out = root / "tts" / f"t{i:04d}.wav"
        engine, voice = rng.choice(pre_voices)
        text, r = sentence(rng, rng.randint(10, 18)), random.Random(rng.random())
        if not out.exists():
            speak(engine, voice, text, out, r, tmp)
    samples = drum_samples()
    for i in range(drum_clips):
        out = root / "drums" / f"d{i:04d}.wav"
        r = random.Random(rng.random())
        if out.exists():
            continue
        y = np.zeros(SR * 8, np.float32)
        step = r.choice((0.125, 0.25, 0.1875))
        kit = r.sample(samples, 6)
        t = 0.0
        while t < 7.5:
            if r.random() < 0.7:
                x, sr = sf.read(str(r.choice(kit)), always_2d=True)
                x = x.mean(1)
                if sr != SR:
                    import soxr

                    x = soxr.resample(x, sr, SR)
                a = int(t * SR)
                n = min(len(x), len(y) - a)
                y[a:a + n] += 0.6 * x[:n].astype(np.float32)
            t += step
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), np.clip(y, -1, 1), SR)
    for sub, n in (("midi", midi_clips), ("tts", tts_clips), ("drums", drum_clips)):  # a smaller rerun
        for f in sorted((root / sub).glob("*.wav"))[n:]:
            f.unlink()
    link, src = root / "shared", REPO.parent / "shared" / "audio"
    if shared and src.is_dir() and not link.exists():
        link.symlink_to(src)
    elif not shared and link.is_symlink():
        link.unlink()
    return root


def fit_codec(work: Path, pre: Path, seed: int, frames_per_code: int) -> Path:
    """A random-weight EnCodec whose codebooks are fitted to random 4 s segments of the pretraining audio."""
    path = work / "codec" / "encodec_24khz.th"
    if path.exists():
        return path
    sys.path.insert(0, str(REPO))
    from audiotok.formats.audio import read
    from audiotok.testing import fit_encodec, save_encodec_checkpoint

    files = sorted(p for p in pre.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
    rng = random.Random(seed + 2000)
    need = frames_per_code * 1024 * 320
    pieces, total = [], 0
    while total < need:
        f = rng.choice(files)
        x, _ = read(str(f), sample_rate=SR, channels=1)
        n = x.shape[1]
        a = rng.randrange(0, max(1, n - 4 * SR))
        seg = x[:, a:a + 4 * SR]
        pieces.append(seg)
        total += seg.shape[1]
    t0 = time.perf_counter()
    model = fit_encodec(pieces, seed=seed, frames_per_code=frames_per_code)
    save_encodec_checkpoint(model, path.parent, path.name)
    print(f"codec: codebooks fitted to {total / SR:.0f} s of pretraining audio in {time.perf_counter() - t0:.0f} s "
          f"({total // 320 / 1024:.0f} frames per codeword)", flush=True)
    return path


# --- runs --------------------------------------------------------------------------------------
def audiotok_cmd(*args) -> list[str]:
    """The command line of ``python -m audiotok ARGS`` at nice 15."""
    return ["nice", "-n", "15", sys.executable, "-m", "audiotok", *map(str, args)]


def audiotok(*args, env=None, log: Path | None = None) -> float:
    """Run ``python -m audiotok ARGS`` (nice 15); its stderr goes to ``log`` (appended) or is echoed."""
    t0 = time.perf_counter()
    cmd = audiotok_cmd(*args)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            p = subprocess.run(cmd, cwd=REPO, env=env, text=True, stdout=f, stderr=subprocess.STDOUT)
        if p.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed (exit {p.returncode}); see {log}")
    else:
        p = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
        if p.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-4000:]}")
        sys.stderr.write(p.stderr[-3000:])
    return time.perf_counter() - t0


def tokenise(work: Path, pre: Path, codec: Path, processes: int, env, log: Path) -> Path:
    """``audiotok encode`` (6 kbps, the fitted codec) of the pretraining audio into ``WORK/codes``,
    in ``processes`` parallel shards; ``train mae`` then reads these codes (and their source audio).
    Inputs already encoded are skipped, so a rerun only finishes what is missing."""
    out = work / "codes"
    t0 = time.perf_counter()
    cmds = [audiotok_cmd("encode", pre, "-o", out, "-b", 6, "--checkpoint", codec, "--shard", f"{k}/{processes}",
                         "--workers", 1, "--threads", 1, "--quiet")
            for k in range(processes)]
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmds[0])} (shards 0..{processes - 1} in parallel)\n")
        f.flush()
        procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, text=True) for c in cmds]
        codes = [p.wait() for p in procs]
    if any(c not in (0, 1) for c in codes):
        raise SystemExit(f"encode failed (exit codes {codes}); see {log}")
    print(f"codes: {len(list(out.rglob('*.npz')))} files in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True, map_location="cpu")["audiotok"]["training"]["step"])


def train_args(inputs: Path, out: Path, steps: int, common: list, extra: list) -> list | None:
    """The arguments of ``train mae`` to ``steps`` into ``out`` (resuming it when it is there);
    None when ``out`` has already reached ``steps``."""
    if out.exists() and checkpoint_step(out) >= steps:
        return None
    resume = ["--resume"] if out.exists() else []
    return ["train", "mae", inputs, "-o", out, "--steps", steps, *common, *extra, *resume]


def train(inputs: Path, out: Path, steps: int, common: list, env, log: Path, extra: list) -> None:
    """``train mae`` to ``steps``, resuming ``out`` when it is there and not finished."""
    args = train_args(inputs, out, steps, common, extra)
    if args is None:
        print(f"{out.name}: reused (step {checkpoint_step(out)})", flush=True)
        return
    audiotok(*args, env=env, log=log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Folder for the generated audio, checkpoints and reports.")
    ap.add_argument("--steps", type=int, default=10000, help="Stage-1 steps.")
    ap.add_argument("--keep-steps", default="0,2000,5000,10000", help="Stage-1 checkpoints kept and probed.")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--stage2-steps", type=int, default=3000, help="Stage-2 (self-training) steps; 0: none.")
    ap.add_argument("--clusters", type=int, default=1024, help="k-means clusters of stage 2 (the reference's 1024).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="A fixed rate instead of the --lr-sweep.")
    ap.add_argument("--lr-sweep", default="3e-4,1e-3,3e-3", help="Learning rates tried for --sweep-steps each before "
                    "stage 1 when --lr is not given; the lowest validation loss picks stage 1's and stage 2's rate.")
    ap.add_argument("--sweep-steps", type=int, default=600, help="Steps of each sweep run (its own schedule).")
    ap.add_argument("--sweep-processes", type=int, default=1, help="Sweep runs trained at once (one thread each).")
    ap.add_argument("--optimizer", default="audiotok")
    ap.add_argument("--init", default="torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--midi-clips", type=int, default=600, help="10 s phrases of GM programs for pretraining.")
    ap.add_argument("--tts-clips", type=int, default=1500, help="Sentences (10-18 words) for pretraining.")
    ap.add_argument("--drum-clips", type=int, default=200, help="8 s drum sequences for pretraining.")
    ap.add_argument("--frames-per-code", type=int, default=60, help="Codec fitting: frames per codeword.")
    ap.add_argument("--variants", type=int, default=4, help="Digits: renderings per (voice, word); anagrams: 3/4 of it.")
    ap.add_argument("--clips-per-program", type=int, default=32, help="Instrument task: clips per GM program.")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="Torch threads of training and probing (1: no thread "
                    "barriers on a loaded machine).")
    ap.add_argument("--encode-processes", type=int, default=4, help="Parallel `encode` shards that tokenise the pretraining audio.")
    ap.add_argument("--no-shared", action="store_true", help="Leave ../shared/audio out of the pretraining set.")
    ap.add_argument("--stop-after", choices=("audio", "stage1", "stage2"), help="Stop after this part.")
    ap.add_argument("--tasks-only", action="store_true", help="Only build the probe tasks' audio (e.g. beside a run).")
    ap.add_argument("--json", type=Path, help="Write every number here.")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "train.log"
    ensure_packages()
    if args.tasks_only:
        build_tasks(work, args.seed, args.variants, args.clips_per_program)
        return
    t0 = time.perf_counter()
    pre = build_pretraining(work, args.seed, args.midi_clips, args.tts_clips, args.drum_clips, not args.no_shared)
    print(f"pretraining audio: ready after {time.perf_counter() - t0:.0f} s", flush=True)
    codec = fit_codec(work, pre, args.seed, args.frames_per_code)
    if args.stop_after == "audio":
        return
    blas = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, "AUDIOTOK_OFFLINE": "1", "PYTHONPATH": str(REPO), **blas}
    codes = tokenise(work, pre, codec, args.encode_processes, env, log)
    common = ["--size", "tiny", "--batch-size", args.batch_size, "--seed", args.seed,
              "--codec-checkpoint", codec, "--ext", "npz", "--device", "cpu", "--workers", "1", "--threads", args.threads,
              "--optimizer", args.optimizer, "--init", args.init, "--quiet"]
    sweep = None
    if args.lr is None and args.lr_sweep:
        lrs = [float(x) for x in args.lr_sweep.split(",") if x.strip()]
        args.lr, sweep = sweep_lr(work, codes, lrs, args.sweep_steps, common, env, args.sweep_processes)
    common += ["--eval-every", args.eval_every]
    if args.lr is not None:
        common += ["--lr", args.lr]
    stage1 = work / "stage1.pt"
    t1 = time.perf_counter()
    train(codes, stage1, args.steps, common, env, log, ["--keep-steps", args.keep_steps])
    train_s = time.perf_counter() - t1
    if args.stop_after == "stage1":
        return
    stage2 = work / "stage2.pt"
    if args.stage2_steps:
        train(codes, stage2, args.stage2_steps, common, env, log,
              ["--self-train", stage1, "--clusters", args.clusters])
    if args.stop_after == "stage2":
        return
    t0 = time.perf_counter()
    tasks = build_tasks(work, args.seed, args.variants, args.clips_per_program)
    print(f"probe tasks: ready after {time.perf_counter() - t0:.0f} s", flush=True)
    probe_all(work, tasks, stage1, stage2 if args.stage2_steps else None, args, env, train_s, sweep)


def sweep_lr(work: Path, codes: Path, lrs: list[float], steps: int, common: list, env, processes: int) -> tuple[float, list]:
    """The short learning-rate sweep: stage 1 from the same seed (same init, same batches) for
    ``steps`` steps at each rate (``WORK/sweep/lrX.pt``, ``processes`` at a time, each on its own
    schedule of ``steps``), one validation at the end; the rate of the lowest validation loss wins.
    Finished runs are reused, so a rerun of the script repeats nothing."""
    folder = work / "sweep"
    folder.mkdir(exist_ok=True)
    outs = {lr: folder / f"lr{lr:g}.pt" for lr in lrs}
    todo = {lr: a for lr in lrs
            if (a := train_args(codes, outs[lr], steps, common, ["--lr", f"{lr:g}", "--eval-every", steps])) is not None}
    t0 = time.perf_counter()
    batch = max(1, processes)
    for i in range(0, len(todo), batch):
        procs = []
        for lr in list(todo)[i:i + batch]:
            cmd = audiotok_cmd(*todo[lr])
            f = open(outs[lr].with_suffix(".log"), "a")
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            procs.append((lr, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, text=True), f))
        for lr, proc, f in procs:
            code = proc.wait()
            f.close()
            if code not in (0, 1):
                raise SystemExit(f"lr sweep: train mae at lr {lr:g} failed (exit {code}); see {outs[lr].with_suffix('.log')}")
    import torch

    rows = []
    for lr, out in outs.items():
        last = torch.load(out, weights_only=True)["audiotok"]["training"]["history"][-1]
        rows.append({"lr": lr, "steps": steps, "val_loss": last["val_loss"], "masked_ce0": last["val_masked_ce"][0],
                     "unigram_ce0": last["baseline_unigram_ce"][0], "masked_acc0": last["val_masked_accuracy"][0]})
    best = min(rows, key=lambda r: r["val_loss"])["lr"]
    print(f"\nlr sweep ({steps} steps each, seed as stage 1; {time.perf_counter() - t0:.0f} s):", flush=True)
    print("| lr | val loss | codebook-0 masked CE (unigram) | codebook-0 masked acc |\n|---|---|---|---|")
    for r in rows:
        mark = " (chosen)" if r["lr"] == best else ""
        print(f"| {r['lr']:g}{mark} | {r['val_loss']:.4f} | {r['masked_ce0']:.3f} ({r['unigram_ce0']:.3f}) | "
              f"{r['masked_acc0']:.3f} |", flush=True)
    return best, rows


def probe_all(work: Path, tasks: dict[str, Path], stage1: Path, stage2: Path | None, args, env, train_s: float,
              sweep: list | None = None) -> None:
    import torch

    from_steps = [int(s) for s in args.keep_steps.split(",") if s.strip()]
    models = [(f"step {s}", stage1.with_name(f"{stage1.stem}.step{s}{stage1.suffix}")) for s in from_steps]
    if stage2 is not None:
        models.append(("stage 2", stage2))
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_s, "lr_sweep": sweep,
               "history": torch.load(stage1, weights_only=True)["audiotok"]["training"]["history"],
               "stage2_history": (torch.load(stage2, weights_only=True)["audiotok"]["training"]["history"]
                                  if stage2 is not None else None), "probes": {}}
    for name, labels in tasks.items():
        for label, ckpt in models:
            out = work / "probes" / f"{name}-{ckpt.stem}.json"
            out.parent.mkdir(exist_ok=True)
            if not out.exists():
                audiotok("probe", labels.parent, "--labels", labels, "--model", ckpt, "--layer", "all",
                         "--probe", "linear", "--baseline", "logmel,random", "--random-seeds", "3",
                         "--folds", args.folds, "--seed", args.seed, "--threads", args.threads, "-o", out, env=env,
                         log=work / "probe.log")
            results["probes"].setdefault(name, {})[label] = json.loads(out.read_text())
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def summary(rep: dict) -> dict:
    """The numbers of one probe report the table shows (linear probe, layers chosen on inner folds)."""
    sel = {r["features"]: r for r in rep["selected"] if r["probe"] == "linear"}
    model = rep["selected"][0]
    randoms = [r for name, r in sel.items() if name.startswith("random-init")]
    best = max(randoms, key=lambda r: r["accuracy"])
    comp = {c["baseline"]: c for c in rep["comparisons"] if c["probe"] == "linear"}
    vs_best = next(c for name, c in comp.items() if name.startswith("best random-init"))
    return {"model": model, "randoms": randoms, "best_random": best, "logmel": sel["log-mel mean+std"],
            "vs_best_random": vs_best, "vs_logmel": comp["log-mel mean+std"]}


def print_table(results: dict) -> None:
    """The checkpoint curve: per task and checkpoint, the pretrained accuracy [95 % interval]
    (layer chosen on inner folds), the random-init seeds, log-mel, and the difference to the best
    random-init seed [95 % interval] with McNemar's p."""
    print("\n| task | checkpoint | pretrained [95 % CI] (layers) | random-init seeds | log-mel | "
          "pretrained - best random [95 % CI] | McNemar p |")
    print("|---|---|---|---|---|---|---|")
    for task, per in results["probes"].items():
        for label, rep in per.items():
            s = summary(rep)
            m, c = s["model"], s["vs_best_random"]
            seeds = " / ".join(f"{r['accuracy']:.3f}" for r in s["randoms"])
            print(f"| {task} ({rep['n_items']} items, {rep['n_groups']} groups) | {label} | {m['accuracy']:.3f} "
                  f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}] ({','.join(sorted(set(m['layers'])))}) | {seeds} | "
                  f"{s['logmel']['accuracy']:.3f} | {c['difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | "
                  f"{c['p_value']:.2g} |")


if __name__ == "__main__":
    main()
