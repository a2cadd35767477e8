"""A toy codec registered through the public interface (``audiotok.registry``): 8 kHz mono, one
codebook of 256 mu-law levels, 100 frames per second (each frame the mean of its 80 samples).
Importing this module registers it (as ``AUDIOTOK_PLUGINS=tests.toy_codec`` does for the CLI)."""

from __future__ import annotations

import numpy as np

from audiotok.formats.codes import EncodedItem
from audiotok.registry import CODECS, CodecSpec, register_codec

MU = 255.0


def _mulaw(x: np.ndarray) -> np.ndarray:
    y = np.sign(x) * np.log1p(MU * np.abs(np.clip(x, -1, 1))) / np.log1p(MU)
    return np.clip(np.round((y + 1) / 2 * 255), 0, 255).astype(np.int16)


def _unmulaw(c: np.ndarray) -> np.ndarray:
    y = c.astype(np.float64) / 255 * 2 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


class ToyEncoder:
    def __init__(self, spec):
        self.spec = spec

    def numerics(self) -> dict:
        return {"toy": "mu-law frame means"}

    def run(self, batch):
        out = []
        hop = self.spec.hop
        for key, audio in batch:
            x = np.asarray(audio, dtype=np.float64)[0]
            frames = -(-x.shape[0] // hop)
            padded = np.zeros(frames * hop)
            padded[:x.shape[0]] = x
            out.append((key, EncodedItem(_mulaw(padded.reshape(frames, hop).mean(1))[None], None, x.shape[0])))
        return out

    def flush(self):
        return []

    def reset(self):
        pass


class ToyDecoder(ToyEncoder):
    def run(self, batch):
        return [(key, np.repeat(_unmulaw(item.codes[0]), self.spec.hop)[None, :item.n_samples])
                for key, item in batch]


class ToyCodec:
    def __init__(self, spec, checkpoint=None, device="cpu"):
        self.spec, self.checkpoint_path = spec, None

    def encoder(self, bandwidth, device=None):
        return ToyEncoder(self.spec)

    def decoder(self, device=None):
        return ToyDecoder(self.spec)


SPEC = CodecSpec(name="toy8k", sample_rate=8000, channels=1, frame_rate=100, bandwidths=(0.8,), codebook_size=256,
                 n_q=1, implementation=ToyCodec, description="mu-law frame means (tests)")
if "toy8k" not in CODECS:
    register_codec(SPEC)
