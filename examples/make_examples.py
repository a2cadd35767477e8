"""Regenerate the example clips shipped in examples/ (synthetic: no third-party audio).

    python examples/make_examples.py
"""

from pathlib import Path

import soundfile as sf

from audiotok.testing import synthetic_audio

HERE = Path(__file__).resolve().parent

CLIPS = [
    ("tones/chirp_24k_mono.wav", 3.0, 24000, 1, "PCM_16"),
    ("tones/chord_44k_stereo.flac", 2.5, 44100, 2, "PCM_16"),
    ("noise_bursts_16k.wav", 2.0, 16000, 1, "PCM_16"),
]

if __name__ == "__main__":
    for i, (name, seconds, sr, ch, subtype) in enumerate(CLIPS):
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), synthetic_audio(seconds, sr, seed=100 + i, channels=ch).T, sr, subtype=subtype)
        print(path.relative_to(HERE))
