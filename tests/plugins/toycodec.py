"""A codec of another shape than EnCodec, registered from outside the package (``AUDIOTOK_PLUGINS=
tests.plugins.toycodec``), through the public interface only: ``registry.CodecSpec`` + an object of
the ``protocols.Codec`` shape. 16 kHz mono, 12.5 frames per second (1280-sample frames), up to 4
codebooks of 2048 codes (11 bits: 137.5 bps each), default 2 codebooks.

The network is tiny and deterministic (weights drawn from a fixed seed, or read from a
``--checkpoint`` file holding its state dict): each frame is projected to a 16-dim latent and
quantised by a 4-level residual vector quantiser (codebooks fitted to nothing: random unit-scale
vectors, so codes vary); decoding sums the codewords and projects back. Frames are independent,
so codes never depend on batching."""

from __future__ import annotations

import numpy as np
import torch

from audiotok.formats.codes import EncodedItem
from audiotok.registry import CODECS, CodecSpec, register_codec

NAME = "toy16k"
SAMPLE_RATE, FRAME_RATE, CODEBOOK_SIZE, LEVELS, DIM = 16000, 12.5, 2048, 4, 16
HOP = 1280


class ToyNet(torch.nn.Module):
    def __init__(self, seed: int = 19):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(HOP, DIM, generator=g) * HOP ** -0.5 * 8)
        self.codebooks = torch.nn.Parameter(torch.randn(LEVELS, CODEBOOK_SIZE, DIM, generator=g) * 0.5)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, n_q: int) -> np.ndarray:
        """``[1, N]`` -> int16 codes ``[n_q, ceil(N / 1280)]``."""
        x = torch.from_numpy(np.ascontiguousarray(audio[0], dtype=np.float32))
        frames = -(-x.shape[0] // HOP)
        x = torch.nn.functional.pad(x, (0, frames * HOP - x.shape[0])).reshape(frames, HOP)
        residual = x.double() @ self.proj.double()
        codes = []
        for level in range(n_q):
            book = self.codebooks[level].double()
            idx = torch.cdist(residual, book).argmin(dim=1)
            codes.append(idx)
            residual = residual - book[idx]
        return torch.stack(codes).to(torch.int16).numpy() if codes else np.zeros((0, frames), np.int16)

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, n_samples: int) -> np.ndarray:
        c = torch.from_numpy(codes.astype(np.int64))
        z = sum(self.codebooks[level].double()[c[level]] for level in range(c.shape[0]))
        wave = z @ torch.linalg.pinv(self.proj.double())
        return wave.reshape(1, -1)[:, :n_samples].float().numpy()


class ToyEncoder:
    """Adapter: ``[1, N]`` at 16 kHz -> ``EncodedItem`` (one file at a time)."""

    on_progress = None

    def __init__(self, net: ToyNet, n_q: int):
        self.net, self.n_q = net, n_q

    def numerics(self) -> dict:
        return {"toy16k": "float64 rvq"}

    def run(self, batch):
        return [(key, EncodedItem(self.net.encode(audio, self.n_q), None, int(audio.shape[-1]))) for key, audio in batch]

    def flush(self):
        return []

    def reset(self):
        pass


class ToyDecoder(ToyEncoder):
    def __init__(self, net: ToyNet):
        self.net = net

    def run(self, batch):
        return [(key, self.net.decode(item.codes, item.n_samples)) for key, item in batch]


class ToyCodec:
    """``protocols.Codec``: ``spec``, ``checkpoint_path``, ``encoder(bandwidth, device)``, ``decoder(device)``."""

    def __init__(self, spec: CodecSpec, checkpoint=None, device="cpu"):
        self.spec = spec
        self.net = ToyNet()
        self.checkpoint_path = None if checkpoint is None else str(checkpoint)
        if checkpoint is not None:
            self.net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)

    def encoder(self, bandwidth: float, device=None) -> ToyEncoder:
        return ToyEncoder(self.net, self.spec.n_codebooks(bandwidth))

    def decoder(self, device=None) -> ToyDecoder:
        return ToyDecoder(self.net)


def load(spec: CodecSpec, checkpoint=None, device="cpu") -> ToyCodec:
    return ToyCodec(spec, checkpoint, device)


PER_CODEBOOK = FRAME_RATE * 11 / 1000  # kbps of one codebook: 0.1375
SPEC = CodecSpec(name=NAME, sample_rate=SAMPLE_RATE, channels=1, frame_rate=FRAME_RATE,
                 bandwidths=tuple(n * PER_CODEBOOK for n in (1, 2, 4)), codebook_size=CODEBOOK_SIZE, n_q=LEVELS,
                 implementation=f"{__name__}:load", default_bandwidth=2 * PER_CODEBOOK,
                 description="16 kHz toy RVQ, 12.5 Hz, 4 x 2048 (tests)")
if NAME not in CODECS:
    register_codec(SPEC)
