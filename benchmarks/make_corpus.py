"""Build the offline speech + music corpus for ``hybrid_vs_tokens.py`` from Debian packages.

Everything comes from Debian packages, installed here with apt-get (pass ``--no-install`` when
they are already there):

- speech: the King James Bible (``bible-kjv``, public domain) read by several text-to-speech
  voices, flite's (kal16, awb, rms, slt; kal too with ``--speech-rate 0``) and espeak-ng's English
  variants. A passage is a run of verses; each passage is read by one or two voices. Splits are
  **by book**: no text (so no voice+text pair) of the test or validation split occurs in training.
  **One band for every voice**: the voices are synthesised at 8 (flite kal), 16 (the other flite
  voices) or 22.05 kHz (espeak-ng), so each one's spectrum stops at its own upper edge and a model
  reading the spectrum could tell the voice from it. Every voice is therefore resampled to one
  rate, ``--speech-rate`` (default 14 kHz: the same anti-aliasing filter cuts every voice at 7 kHz),
  and voices synthesised below that rate (flite kal, 8 kHz) are left out; ``--speech-rate 0``
  keeps each voice's own rate (the corpus before this option).
- music: MIDI files rendered with fluidsynth and the FluidR3 General MIDI soundfont
  (``fluid-soundfont-gm``): Planet Blupi's game music (``planetblupi-music-midi``), MMA's example
  songs (``mma``, grouped by folder: one folder is one tune in several arrangements), abcmidi's
  example tunes (``abcmidi``, converted with abc2midi), and one song per MMA groove library file
  (each groove file's first groove over a seeded chord progression). Splits are by piece (group).

Output (never commit it): ``OUT/{speech,music}/{train,val,test}/NAME.wav`` (16-bit mono at the
speech rate (the voice's own with ``--speech-rate 0``) or 24 kHz) and ``OUT/manifest.json`` (every file with its split, voice, text or
piece, duration, and the package versions). The same arguments give the same corpus.

    python benchmarks/make_corpus.py /tmp/corpus --minutes 50
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

PACKAGES = ["flite", "espeak-ng", "fluidsynth", "fluid-soundfont-gm", "bible-kjv", "planetblupi-music-midi", "mma",
            "abcmidi"]
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+f4", "en-029"]
# Books whose text goes to the held-out splits (the rest trains).
TEST_BOOKS = ["Ruth", "Jonah", "Mark", "James", "Esther", "Philippians"]
VAL_BOOKS = ["Joel", "Titus", "Jude"]
TRAIN_BOOKS = ["Genesis", "Exodus", "Joshua", "Judges", "1Sam", "Proverbs", "Isaiah", "Matthew", "Luke", "John",
               "Acts", "Romans", "Hebrews", "Daniel", "Job"]
MUSIC_RATE = 24000
CHORDS = ["C", "Am", "F", "G", "Dm", "Em", "G7", "C7", "A7", "D7", "E7", "Bb", "Eb", "Fm", "Cm"]


def install() -> None:
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def versions() -> dict:
    out = {}
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True)
        out[p] = r.stdout.strip() or None
    return out


def check_tools() -> None:
    missing = [t for t in ("flite", "espeak-ng", "fluidsynth", "bible", "abc2midi", "mma") if shutil.which(t) is None]
    if missing or not Path(SOUNDFONT).is_file():
        sys.exit(f"missing {', '.join(missing) or SOUNDFONT}; run without --no-install (as root) to apt-get install "
                 f"{' '.join(PACKAGES)}")


def write_mono(path: Path, audio: np.ndarray, rate: int) -> float:
    """Write 16-bit mono; returns the duration in seconds."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
    return len(audio) / rate


# --- speech -------------------------------------------------------------------------------------
def verses(book: str) -> list[str]:
    """The verses of a book, in order (``bible -f`` prints one ``Ref text`` line per verse)."""
    r = subprocess.run(["bible", "-f", "-l100000", f"{book}1:1-999:999"], capture_output=True, text=True, check=True)
    return [ln.split(" ", 1)[1].strip() for ln in r.stdout.splitlines() if " " in ln.strip()]


def passages(book: str, words: int) -> list[tuple[str, str]]:
    """(id, text) runs of whole verses of about ``words`` words."""
    out, cur, n = [], [], 0
    for v in verses(book):
        cur.append(v)
        n += len(v.split())
        if n >= words:
            out.append((f"{book}-{len(out):03d}", " ".join(cur)))
            cur, n = [], 0
    return out


def synthesise(voice: str, text: str) -> tuple[np.ndarray, int]:
    """The voice's audio for ``text`` at the rate it synthesises."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        txt = Path(tmp) / "text.txt"
        txt.write_text(text)
        if voice.startswith("flite-"):
            cmd = ["flite", "-voice", voice[6:], "-f", str(txt), "-o", str(raw)]
        else:
            cmd = ["espeak-ng", "-v", voice[7:], "-f", str(txt), "-w", str(raw)]
        subprocess.run(cmd, check=True, capture_output=True)
        audio, rate = sf.read(raw, dtype="float32")
    return (audio.mean(axis=1) if audio.ndim == 2 else audio), rate


def to_rate(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``audio`` resampled from ``rate`` to ``target`` (soxr: its low-pass sits at the same place
    below ``target / 2`` whatever the input rate, so every voice ends at one upper edge)."""
    import soxr

    return soxr.resample(audio.astype(np.float32), rate, target, quality="VHQ").astype(np.float32)


def speak(voice: str, text: str, path: Path, speech_rate: int) -> float:
    audio, rate = synthesise(voice, text)
    if speech_rate:
        audio, rate = to_rate(audio, rate, speech_rate), speech_rate
    return write_mono(path, audio, rate)


def speech_voices(speech_rate: int, log) -> list[str]:
    """Every voice; with a speech rate, only those synthesising at that rate or above (a voice
    below it lacks the top of the band the others keep)."""
    voices = [f"flite-{v}" for v in FLITE_VOICES] + [f"espeak-{v}" for v in ESPEAK_VOICES]
    if not speech_rate:
        return voices
    rates = {v: synthesise(v, "One band.")[1] for v in voices}
    dropped = [v for v in voices if rates[v] < speech_rate]
    if dropped:
        log(f"speech: left out {', '.join(dropped)} (synthesised below {speech_rate} Hz)")
    return [v for v in voices if rates[v] >= speech_rate]


def build_speech(out: Path, minutes: float, rng: random.Random, words: int, log, speech_rate: int = 0) -> list[dict]:
    voices = speech_voices(speech_rate, log)
    share = {"train": 0.7, "val": 0.1, "test": 0.2}
    books = {"train": TRAIN_BOOKS, "val": VAL_BOOKS, "test": TEST_BOOKS}
    items = []
    for split, names in books.items():
        budget = minutes * 60 * share[split]
        texts = [p for b in names for p in passages(b, words)]
        rng.shuffle(texts)
        total, k = 0.0, 0
        for tid, text in texts:
            if total >= budget:
                break
            for voice in rng.sample(voices, 2 if rng.random() < 0.25 else 1):
                path = out / "speech" / split / f"{voice}__{tid}.wav"
                dur = speak(voice, text, path, speech_rate)
                items.append({"path": str(path.relative_to(out)), "domain": "speech", "split": split,
                              "voice": voice, "text": tid, "duration": round(dur, 3)})
                total += dur
                k += 1
        log(f"speech {split}: {k} files, {total / 60:.1f} min")
    return items


# --- music --------------------------------------------------------------------------------------
def midi_sources(work: Path, rng: random.Random) -> list[tuple[str, str, Path]]:
    """(group, piece id, midi file): groups are the unit the splits never share."""
    out = [(f"blupi-{p.stem}", f"blupi-{p.stem}", p) for p in sorted(Path("/usr/share/planetblupi/music").glob("*.mid"))]
    for p in sorted(Path("/usr/share/doc/mma/examples").rglob("*.mid")):
        group = p.parent.relative_to("/usr/share/doc/mma/examples").as_posix().split("/")[0]
        out.append((f"mma-{group}", f"mma-{group}-{p.stem}", p))
    for abc in sorted(Path("/usr/share/doc/abcmidi/examples").glob("*.abc")):
        mid = work / f"abc-{abc.stem}.mid"
        r = subprocess.run(["abc2midi", str(abc), "-o", str(mid)], capture_output=True, text=True)
        if r.returncode == 0 and mid.is_file():
            out.append((f"abc-{abc.stem}", f"abc-{abc.stem}", mid))
    for lib in sorted(Path("/usr/share/mma/lib/stdlib").glob("*.mma")):
        grooves = re.findall(r"^\s*DefGroove\s+(\S+)", lib.read_text(errors="replace"), flags=re.M | re.I)
        if not grooves:
            continue
        song = work / f"groove-{lib.stem}.mma"
        bars = [" ".join(rng.choice(CHORDS) for _ in range(2)) for _ in range(32)]
        song.write_text(f"Tempo {rng.randint(80, 150)}\nGroove {grooves[0]}\n"
                        + "".join(f"{i + 1} {b}\n" for i, b in enumerate(bars)))
        mid = song.with_suffix(".mid")
        r = subprocess.run(["mma", str(song), "-f", str(mid)], capture_output=True, text=True)
        if r.returncode == 0 and mid.is_file():
            out.append((f"groove-{lib.stem}", f"groove-{lib.stem}", mid))
    return out


def render(mid: Path, path: Path, max_seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(MUSIC_RATE), "-F", str(raw), SOUNDFONT, str(mid)],
                       check=True, capture_output=True)
        audio, rate = sf.read(raw, dtype="float32")
    audio = audio[: int(max_seconds * rate)]
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    loud = np.nonzero(np.abs(mono) > 1e-3)[0]
    if len(loud) == 0 or (loud[-1] - loud[0]) < 5 * rate:
        return 0.0  # silent or under 5 s of sound
    mono = mono[loud[0]: loud[-1] + 1]
    peak = float(np.abs(mono).max())
    return write_mono(path, mono * (0.7 / peak), rate)


def build_music(out: Path, minutes: float, rng: random.Random, max_seconds: float, log) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        srcs = midi_sources(Path(tmp), rng)
        groups = sorted({g for g, _, _ in srcs})
        rng.shuffle(groups)
        # every source family (blupi, mma, abc, groove) appears in every split
        split_of = {}
        for fam in ("blupi", "mma", "abc", "groove"):
            fam_groups = [g for g in groups if g.startswith(fam + "-")]
            n_test = max(1, round(0.2 * len(fam_groups)))
            n_val = max(1, round(0.1 * len(fam_groups))) if len(fam_groups) > 2 else 0
            for i, g in enumerate(fam_groups):
                split_of[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        items, totals = [], {"train": 0.0, "val": 0.0, "test": 0.0}
        budget = {"train": 0.7 * minutes * 60, "val": 0.1 * minutes * 60, "test": 0.2 * minutes * 60}
        order = srcs[:]
        rng.shuffle(order)
        for group, piece, mid in order:
            split = split_of[group]
            if totals[split] >= budget[split]:
                continue
            path = out / "music" / split / f"{piece}.wav"
            try:
                dur = render(mid, path, max_seconds)
            except subprocess.CalledProcessError:
                continue
            if dur:
                items.append({"path": str(path.relative_to(out)), "domain": "music", "split": split, "piece": piece,
                              "group": group, "source": str(mid) if not str(mid).startswith(tmp) else mid.name,
                              "duration": round(dur, 3)})
                totals[split] += dur
    for s, t in totals.items():
        log(f"music {s}: {sum(1 for i in items if i['split'] == s)} files, {t / 60:.1f} min")
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to write the corpus to (outside the repository, or git-ignored)")
    ap.add_argument("--minutes", type=float, default=50.0, help="minutes of audio per domain (all splits)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--passage-words", type=int, default=80, help="words per speech passage (~30 s)")
    ap.add_argument("--max-piece-seconds", type=float, default=60.0, help="music pieces are cut to this length")
    ap.add_argument("--speech-rate", type=int, default=14000,
                    help="every voice resampled to this rate, so all share one band (0: each voice's own rate)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install the packages")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; choose a new folder (the corpus is rebuilt from scratch)")
    if not args.no_install:
        install()
    check_tools()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    items = build_speech(out, args.minutes, random.Random(args.seed), args.passage_words, log, args.speech_rate)
    items += build_music(out, args.minutes, random.Random(args.seed + 1), args.max_piece_seconds, log)
    manifest = {"seed": args.seed, "minutes": args.minutes, "passage_words": args.passage_words,
                "speech_rate": args.speech_rate,
                "max_piece_seconds": args.max_piece_seconds, "packages": versions(), "files": items}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for dom in ("speech", "music"):
        mins = sum(i["duration"] for i in items if i["domain"] == dom) / 60
        log(f"{dom}: {mins:.1f} min in total")


if __name__ == "__main__":
    main()
