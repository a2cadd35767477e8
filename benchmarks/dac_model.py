#!/usr/bin/env python
"""DAC model step: the official ``descript-audio-codec`` forward passes vs audiotok's own network
(``audiotok/codecs/dac.py``), same random weights in the released 44.1 kHz configuration, same
input, interleaved repetitions. Checks the codes and audio are identical, then times them.

    pip install descript-audio-codec==1.0.0   # in a scratch environment: it pulls in 100+ packages
    PYTHONPATH=. python benchmarks/dac_model.py [--seconds 5] [--reps 3] [--threads 2]

Official: ``model.encode(model.preprocess(x, 44100))`` and
``model.decode(model.quantizer.from_codes(codes)[0])``. audiotok: ``DAC.encode`` / ``DAC.decode``
(weight norm folded once, Snake in place, the straight-through residual kept). Model calls only:
no file I/O, no pipeline.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import dac

    from audiotok.codecs.dac import build_model, read_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = dac.DAC(encoder_dim=64, encoder_rates=[2, 4, 8, 8], decoder_dim=1536, decoder_rates=[8, 8, 4, 2],
                  n_codebooks=9, sample_rate=44100).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save(f"{tmp}/weights.pth", package=False)
        mine = build_model(*read_weights(f"{tmp}/weights.pth")).fold()
    x = torch.randn(1, 1, int(44100 * args.seconds)) * 0.1
    times: dict[str, list[float]] = {"official encode": [], "audiotok encode": [], "official decode": [],
                                     "audiotok decode": []}
    with torch.inference_mode():
        xp = ref.preprocess(x, 44100)
        codes = ref.encode(xp)[1]
        for _ in range(args.reps):
            t = time.perf_counter()
            c1 = ref.encode(ref.preprocess(x, 44100))[1]
            times["official encode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            c2 = mine.encode(ref.preprocess(x, 44100), 9)
            times["audiotok encode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            w1 = ref.decode(ref.quantizer.from_codes(codes)[0])
            times["official decode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            w2 = mine.decode(codes)
            times["audiotok decode"].append(time.perf_counter() - t)
    print(f"codes identical: {bool((c1 == c2).all())}; audio max |difference|: {float((w1 - w2).abs().max()):.2e}")
    for name, values in times.items():
        med = float(np.median(values))
        print(f"{name:16s} median {med:6.2f} s for {args.seconds:g} s of audio ({args.seconds / med:.2f}x real time)")


if __name__ == "__main__":
    main()
