"""EnCodecMAE embeddings for whole recordings: chunking, batching with padding masks, overlap
merging, layer choice and pooling. ``MaeAdapter`` has the pipeline's adapter shape; ``MaeEmbedder``
(from ``load_embedder``) is the Python API on top of it.

Chunks: a recording is cut into chunks of ``chunk_seconds`` (4 s, as trained) starting every
``chunk_seconds - overlap``; each chunk is embedded on its own (positions restart at 0). A last
chunk of any length is embedded (the reference drops one of 2048 samples or fewer); a chunk shorter
than one analysis window (637 samples for mel) is zero-padded to it.

Overlap: where two chunks overlap, the overlap is split at its middle; each chunk gives the frames
whose centres lie on its side (the later chunk always gives at least its last frame), so every
stretch of audio comes out once and timestamps increase.

Same result whatever the batch: chunks are grouped by frame count into eight fixed shapes
(``k/8`` of a full chunk's frames, right-padded, padded keys masked) and each model call has a fixed
number of rows for its shape, so a chunk's numbers depend only on the chunk itself, never on batch
size or neighbours. The last, partly filled call of each shape (at ``flush``) runs without filler
rows on the CPU, whose kernels compute every row independently (the tests check this bit for bit);
on CUDA it is padded with filler rows to the fixed shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .encodecmae import SAMPLE_RATE, EncodecMAE, resolve_layers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Embedding:
    """One recording's result: ``array`` is pooled (``[D]``, ``[2D]`` for meanstd, ``[L, ...]``
    for all layers) or frame-level (``[T, D]`` / ``[L, T, D]``); ``timestamps`` are the frame
    centres in seconds (the frames that were pooled)."""

    array: np.ndarray
    timestamps: np.ndarray
    n_samples: int


@dataclass
class _Item:
    key: Any
    n_samples: int
    chunks: int
    parts: dict = field(default_factory=dict)  # chunk index -> [L, t, D] float32
    stamps: dict = field(default_factory=dict)  # chunk index -> [t] seconds


@dataclass
class _Chunk:
    item: _Item
    index: int
    wave: np.ndarray  # float32 [n] (n >= the model's window)
    frames: int
    keep: tuple[int, int]  # frames [lo, hi) of this chunk that are output
    start: int  # in samples


from .options import check_options  # noqa: E402,F401  (torch-free; re-exported)


def plan_chunks(n_samples: int, chunk: int, overlap: int, cfg) -> list[tuple[int, int, int, int]]:
    """``(start, length, keep_lo, keep_hi)`` per chunk for a recording of ``n_samples``."""
    hop = chunk - overlap
    starts = [0]
    while starts[-1] + chunk < n_samples:
        starts.append(starts[-1] + hop)
    lengths = [min(chunk, n_samples - s) for s in starts]
    frames = [cfg.frames(n) for n in lengths]
    cuts = []  # boundary between chunk k and k+1, in samples
    for k in range(len(starts) - 1):
        middle = (starts[k + 1] + starts[k] + lengths[k]) / 2
        last_next = starts[k + 1] + cfg.frame_centre(frames[k + 1] - 1)
        cuts.append(min(middle, last_next))
    plan = []
    for k, (s, n, t) in enumerate(zip(starts, lengths, frames)):
        centres = s + cfg.frame_centre(np.arange(t))
        lo = 0 if k == 0 else int(np.searchsorted(centres, cuts[k - 1], side="left"))
        hi = t if k == len(starts) - 1 else int(np.searchsorted(centres, cuts[k], side="left"))
        plan.append((s, n, lo, hi))
    return plan


def pool_frames(frames: np.ndarray, pool: str) -> np.ndarray:
    """Pool ``[..., T, D]`` over time (mean / max / mean and std concatenated / none)."""
    if pool == "none":
        return frames
    if pool == "mean":
        return frames.mean(axis=-2, dtype=np.float64).astype(np.float32)
    if pool == "max":
        return frames.max(axis=-2)
    mean = frames.mean(axis=-2, dtype=np.float64)
    std = frames.std(axis=-2, dtype=np.float64)
    return np.concatenate([mean, std], axis=-1).astype(np.float32)


class MaeAdapter:
    """Pipeline adapter: mono 24 kHz audio ``[1, N]`` (or ``[N]``) -> ``Embedding``.

    Holds chunks back until a model call of their shape is full; ``flush`` runs the rest."""

    sample_rate = SAMPLE_RATE
    channels = 1
    on_progress = None  # set by the pipeline: on_progress(key, chunks_done, chunks_total) within an input

    def __init__(self, model: EncodecMAE, *, device: str | torch.device = "cpu", layer: int | str = -1,
                 pool: str = "mean", dtype: str = "float32", chunk_seconds: float = 4.0, overlap: float = 0.0,
                 rows: int | None = None):
        check_options(pool, dtype, chunk_seconds, overlap)
        self.device = torch.device(device)
        self.cfg = model.cfg
        self.layers = resolve_layers(layer, self.cfg.layers)
        self.all_layers = isinstance(layer, str) and layer.strip().lower() == "all"
        self.layer, self.pool, self.dtype = layer, pool, dtype
        self.model = model.to(self.device, DTYPES[dtype]).eval()
        if model.codec_encoder is not None:
            model.codec_encoder.float()
        self.chunk = max(1, int(round(chunk_seconds * SAMPLE_RATE)))
        self.overlap = int(round(overlap * SAMPLE_RATE))
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap
        full = self.cfg.frames(self.chunk)
        self.shapes = sorted({max(1, math.ceil(full * k / 8)) for k in range(1, 9)})
        base = rows or (32 if self.device.type == "cuda" else 4)
        self.rows = {t: max(1, base * full // t) for t in self.shapes}
        self.queues: dict[int, list[_Chunk]] = {t: [] for t in self.shapes}

    # --- engine interface -------------------------------------------------------------
    def run(self, batch):
        out = []
        for key, audio in batch:
            try:
                self._enqueue(key, audio)
            except InputError as exc:
                out.append((key, exc))
        for t in self.shapes:
            while len(self.queues[t]) >= self.rows[t]:
                out.extend(self._step(t))
        return out

    def flush(self):
        out = []
        for t in self.shapes:
            while self.queues[t]:
                out.extend(self._step(t, partial=True))
        return out

    def reset(self):
        for q in self.queues.values():
            q.clear()

    # --- internals --------------------------------------------------------------------
    @property
    def output_dim(self) -> int:
        return self.cfg.dim * (2 if self.pool == "meanstd" else 1)

    def _enqueue(self, key, audio) -> None:
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0]
        if x.ndim != 1:
            raise InputError(f"audio must be [samples] or [channels, samples], not shape {tuple(np.shape(audio))}")
        if x.shape[0] == 0:
            raise InputError("contains no audio samples")
        if not np.isfinite(x).all():
            raise InputError("contains NaN or infinite samples")
        plan = plan_chunks(x.shape[0], self.chunk, self.overlap, self.cfg)
        item = _Item(key, x.shape[0], len(plan))
        for k, (s, n, lo, hi) in enumerate(plan):
            wave = x[s:s + n]
            if n < self.cfg.window:
                wave = np.pad(wave, (0, self.cfg.window - n))
            t = self.cfg.frames(n)
            shape = next(b for b in self.shapes if b >= t)  # chunks are never longer than a full one
            self.queues[shape].append(_Chunk(item, k, wave, t, (lo, hi), s))

    @torch.inference_mode()
    def _step(self, shape: int, partial: bool = False):
        rows = self.rows[shape]
        group, self.queues[shape] = self.queues[shape][:rows], self.queues[shape][rows:]
        if partial and self.device.type == "cpu":
            rows = len(group)  # CPU kernels compute each row alone (tested bit for bit): no filler rows
        feats = torch.zeros(rows, shape, self.cfg.in_features, device=self.device)
        lengths = torch.full((rows,), shape, dtype=torch.long)
        for r, c in enumerate(group):
            wave = torch.from_numpy(np.ascontiguousarray(c.wave)).to(self.device)
            f = self.model.features(wave[None].float())[0]
            feats[r, : f.shape[0]] = f
            lengths[r] = f.shape[0]
        outs = self.model(feats, lengths, self.layers)
        stacked = torch.stack(outs, dim=1).float().cpu().numpy()  # [rows, L, shape, D]
        done = []
        for r, c in enumerate(group):
            lo, hi = c.keep
            c.item.parts[c.index] = stacked[r, :, lo:hi]
            centres = c.start + self.cfg.frame_centre(np.arange(lo, hi))
            c.item.stamps[c.index] = centres / SAMPLE_RATE
            if len(c.item.parts) == c.item.chunks:
                done.append((c.item.key, self._finish(c.item)))
            elif self.on_progress is not None:
                self.on_progress(c.item.key, len(c.item.parts), c.item.chunks)
        return done

    def _finish(self, item: _Item) -> Embedding:
        frames = np.concatenate([item.parts[k] for k in range(item.chunks)], axis=1)  # [L, T, D]
        stamps = np.concatenate([item.stamps[k] for k in range(item.chunks)])
        if not self.all_layers:
            frames = frames[0]
        return Embedding(np.ascontiguousarray(pool_frames(frames, self.pool)), stamps.astype(np.float64), item.n_samples)


class MaeEmbedder:
    """EnCodecMAE embeddings from Python: ``embed(audio, sample_rate)`` -> ``np.ndarray``.

    Metadata: ``model_name``, ``layer``, ``pooling``, ``frame_rate`` (frames per second), ``dim``
    (size of the last axis of what ``embed`` returns), ``n_layers``, ``sample_rate`` (24000)."""

    def __init__(self, model: EncodecMAE, model_name: str, **options):
        self.adapter = MaeAdapter(model, **options)
        self.model_name = model_name
        self.layer = options.get("layer", -1)
        self.pooling = self.adapter.pool
        self.frame_rate = model.cfg.frame_rate
        self.dim = self.adapter.output_dim
        self.n_layers = model.cfg.layers
        self.sample_rate = SAMPLE_RATE
        self.dtype = self.adapter.dtype
        self.config = model.cfg

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embed one recording (``[N]`` or ``[channels, N]``, any rate; resampled to 24 kHz mono)."""
        return self.embed_many([audio], sample_rate)[0].array

    def embed_many(self, audios, sample_rate: int) -> list[Embedding]:
        """Embed several recordings in shared batches; results in input order, with timestamps."""
        from ..engine.pipeline import run_in_memory

        return run_in_memory(self.adapter, [self._prepare(a, sample_rate) for a in audios])

    @staticmethod
    def _prepare(audio, sample_rate: int) -> np.ndarray:
        from ..formats.audio import prepare_array

        return prepare_array(audio, sample_rate, SAMPLE_RATE, 1)


def load_embedder(name_or_path: str = "mel256-ec-base_st", device: str = "cpu", layer: int | str = -1,
                  pool: str = "mean", dtype: str = "float32", chunk_seconds: float = 4.0,
                  overlap: float = 0.0) -> MaeEmbedder:
    """An ``MaeEmbedder`` for a local checkpoint (v2 ``.pt`` file or v1 folder) or a released name
    (resolved through the Hugging Face cache)."""
    from ..engine.devices import resolve_device
    from ..registry import ENCODECMAE

    check_options(pool, dtype, chunk_seconds, overlap)
    dev = resolve_device(device)
    model, _ = ENCODECMAE.load(name_or_path)
    name = str(name_or_path)
    return MaeEmbedder(model, name, device=dev, layer=layer, pool=pool, dtype=dtype,
                    chunk_seconds=chunk_seconds, overlap=overlap)
