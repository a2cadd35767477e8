"""The shapes the pieces of audiotok meet in (typing only; nothing here imports torch).

    sources -> job.load (workers) -> Adapter.run / flush -> job.finish -> sinks

- ``Adapter``: a model step the pipeline drives. ``run`` takes ``(key, payload)`` pairs and
  returns ``(key, result or Exception)`` pairs; it may hold items back across calls and return
  them later (streaming), and ``flush`` returns everything still held. ``reset`` drops held items
  after a failed step.
- ``Job``: what a command does with each input (skip finished, read headers, load in a worker,
  write the outputs). Knows files, not models.
- ``Codec`` / ``Embedder``: what a model implementation offers, so a new codec or embedder plugs
  into every command through ``audiotok.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

Key = Any
Results = list[tuple[Key, Any]]


@runtime_checkable
class Adapter(Protocol):
    def run(self, batch: Sequence[tuple[Key, Any]]) -> Results: ...

    def flush(self) -> Results: ...

    def reset(self) -> None: ...


class Job(Protocol):
    load: Callable[[str], tuple[Any, Any]]  # picklable: path -> (payload, AudioInfo), in workers

    def target(self, source) -> Any: ...

    def is_done(self, source) -> bool: ...

    def read_header(self, path: str) -> Any: ...

    def finish(self, source, info, result) -> dict: ...

    def describe_error(self, source, info) -> dict: ...


class Codec(Protocol):
    """A loaded codec (``CodecSpec.load``): adapters for the pipeline and metadata."""

    spec: Any  # registry.CodecSpec
    checkpoint_path: str | None

    def encoder(self, bandwidth: float, device: Any) -> Adapter:
        """Adapter: ``[channels, N]`` float32 audio at ``spec.sample_rate`` -> ``EncodedItem``."""
        ...

    def decoder(self, device: Any) -> Adapter:
        """Adapter: ``EncodedItem`` -> ``[channels, N]`` float32 audio (or an Exception per item)."""
        ...


class Embedder(Protocol):
    sample_rate: int
    frame_rate: float
    dim: int

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


@dataclass(frozen=True)
class AudioInfo:
    """What is known of an input's audio: from its header (``job.read_header``), then from decoding
    (``peak``). The engine orders, batches and reports progress by it."""

    sample_rate: int
    channels: int
    frames: int
    peak: float | None = None  # largest |sample| of the decoded file (None: not decoded yet)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def clip(self, offset: float = 0.0, duration: float | None = None) -> AudioInfo:
        """The header facts of the segment ``offset`` .. ``offset + duration`` seconds."""
        _, count = segment_span(self.frames, self.sample_rate, offset, duration)
        return AudioInfo(self.sample_rate, self.channels, count)


def segment_span(frames: int, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> tuple[int, int]:
    """``(first frame, frame count)`` of the segment ``offset`` .. ``offset + duration`` seconds of a
    recording of ``frames`` frames. An offset at or past the end, or a segment ending more than
    1 ms (the resolution of segment names) past the end, is an ``InputError``: the output's name
    gives the segment's span, which would not be the audio it holds."""
    from .errors import InputError

    start = int(round(offset * sample_rate))
    length = frames / sample_rate
    if start >= frames:
        raise InputError(f"offset {offset:g} s is past the end of the recording ({length:.3f} s)")
    if duration is None:
        return start, frames - start
    count = max(1, int(round(duration * sample_rate)))
    if start + count > frames + round(0.001 * sample_rate):
        raise InputError(f"asks for {offset:g} s to {offset + duration:g} s, past the end of the recording "
                         f"({length:.3f} s); give a duration that ends within it, or none (to the end)")
    return start, min(frames - start, count)
