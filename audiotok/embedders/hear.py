"""The HEAR 2021 API over EnCodecMAE (https://hearbenchmark.com/hear-api.html).

    from audiotok import hear
    model = hear.load_model()                      # mel256-ec-base_st from the Hugging Face cache
    emb, ts = hear.get_timestamp_embeddings(audio, model)   # audio: [n, samples] at 24 kHz
    scene = hear.get_scene_embeddings(audio, model)         # [n, D], mean over frames

Timestamps are frame centres in **milliseconds** (the reference wrapper returns seconds).
Embeddings come from the last layer (the combined ResiDual output), computed in 4 s chunks.
"""

from __future__ import annotations

import numpy as np
import torch

from .chunking import MaeEmbedder, load_embedder
from .encodecmae import SAMPLE_RATE

DEFAULT_MODEL = "mel256-ec-base_st"


class HearModel(torch.nn.Module):
    """What ``load_model`` returns: a ``torch.nn.Module`` with the attributes HEAR asks for."""

    sample_rate = SAMPLE_RATE

    def __init__(self, embedder: MaeEmbedder):
        super().__init__()
        self.embedder = embedder
        self.mae = embedder.adapter.model  # registered, so .to() / .eval() reach the network
        self.scene_embedding_size = embedder.config.dim
        self.timestamp_embedding_size = embedder.config.dim

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return get_scene_embeddings(audio, self)


def load_model(model_file_path: str = "", device: str = "cpu", layer: int | str = -1) -> HearModel:
    """Load a local checkpoint (``.pt`` or v1 folder) or a released name; ``""`` = mel256-ec-base_st."""
    name = model_file_path or DEFAULT_MODEL
    return HearModel(load_embedder(name, device=device, layer=layer, pool="none"))


def _check(audio, model: HearModel) -> np.ndarray:
    x = audio.detach().float().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    if x.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples] at {model.sample_rate} Hz, not shape {x.shape}")
    return x


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``audio [n, samples]`` at 24 kHz -> (embeddings ``[n, T, D]``, timestamps ``[n, T]`` in ms)."""
    x = _check(audio, model)
    results = model.embedder.embed_many(list(x), SAMPLE_RATE)
    emb = torch.from_numpy(np.stack([r.array for r in results]))
    ts = torch.from_numpy(np.stack([r.timestamps * 1000.0 for r in results]).astype(np.float32))
    return emb, ts


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``audio [n, samples]`` at 24 kHz -> ``[n, D]``: the mean of the frame embeddings."""
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(dim=1)
