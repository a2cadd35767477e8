"""Many files through a causal encoder in calls of one fixed shape (``rows`` x ``window`` samples).

Each row carries one file from its first window (its state reset) to its last, then the next
queued file starts in it; idle rows hold zeros and restart every call. Which shape a file gets
depends on its own length only (``RowScheduler``: files of ``lone_samples`` or more run alone in
the lone shape, one at a time, the others share rows), so its codes never depend on what else is
encoded, how the engine batches, or the machine's load. Every causal codec (EnCodec 24 kHz, Mimi)
streams through this module; a codec supplies ``init_state(rows)`` and ``encode_window(x, state,
fresh, ends) -> int16 codes [rows, codebooks, window / hop]``.

On the CPU the streams run in lanes (``LanedRows``, ``engine.lanes``): one ``RowScheduler`` per
lane, side by side, one torch thread each; a file stays in the lane it was given from its first
window to its last, so every call rounds as a one-thread call whichever lane takes it.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..engine.lanes import Lanes
from ..engine.pipeline import step_error
from ..errors import AudiotokError
from ..formats.codes import EncodedItem


@dataclass(frozen=True)
class StreamShape:
    """The fixed shape of one model call: ``rows`` x ``window`` samples."""

    rows: int
    window: int

    def describe(self) -> str:
        return f"{self.rows}x{self.window}"


@dataclass
class Slot:
    """One file in a row: its mono audio, how far it has been encoded, its codes so far."""

    key: object
    audio: np.ndarray  # [N] float32
    pos: int = 0
    fresh: bool = True
    codes: list = field(default_factory=list)


EncodeWindow = Callable[[torch.Tensor, Any, torch.Tensor, list], np.ndarray]


class RowStreams:
    """Files streamed through calls of one fixed shape (``step`` = one call)."""

    def __init__(self, owner, shape: StreamShape, hop: int, init_state: Callable[[int], Any],
                 encode_window: EncodeWindow):
        if shape.window % hop:
            raise ValueError(f"window must be a multiple of {hop} samples")
        self.owner, self.shape, self.hop = owner, shape, hop  # owner: the adapter (device, on_progress)
        self.init_state, self.encode_window = init_state, encode_window
        self.reset()

    def reset(self) -> None:
        self.queue: list[Slot] = []
        self.active: list[Slot | None] = [None] * self.shape.rows
        self.state = self.init_state(self.shape.rows)

    def busy(self) -> bool:
        return bool(self.queue) or any(s is not None for s in self.active)

    def keys(self) -> list:
        """The files queued or in a row (not yet returned)."""
        return [s.key for s in self.queue] + [s.key for s in self.active if s is not None]

    @torch.inference_mode()
    def step(self) -> list[tuple[Any, EncodedItem]]:
        """One call: fill idle rows from the queue, encode a window of every row; returns the files
        that ended in it."""
        W, R, dev = self.shape.window, self.shape.rows, self.owner.device
        for r in range(R):
            if self.active[r] is None and self.queue:
                self.active[r] = self.queue.pop(0)
        x = np.zeros((R, 1, W), dtype=np.float32)
        fresh = np.ones(R, dtype=bool)  # idle rows restart every call: their zeros never carry over
        ends = [W] * R  # real samples per row (a file's last window holds fewer)
        for r, slot in enumerate(self.active):
            if slot is not None:
                chunk = slot.audio[slot.pos:slot.pos + W]
                x[r, 0, :chunk.shape[0]] = chunk
                fresh[r] = slot.fresh
                ends[r] = chunk.shape[0]
        xt = torch.from_numpy(x)
        xt = xt.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else xt.to(dev)
        codes = self.encode_window(xt, self.state, torch.from_numpy(fresh).to(dev), ends)  # [R, K, W / hop]
        done = []
        for r, slot in enumerate(self.active):
            if slot is None:
                continue
            slot.codes.append(codes[r])
            slot.fresh = False
            slot.pos += W
            n = slot.audio.shape[0]
            if slot.pos >= n:
                frames = -(-n // self.hop)
                item = EncodedItem(np.ascontiguousarray(np.concatenate(slot.codes, axis=1)[:, :frames]), None, n)
                done.append((slot.key, item))
                self.active[r] = None
            elif self.owner.on_progress is not None:
                self.owner.on_progress(slot.key, slot.pos, n)
        return done


class RowScheduler:
    """The shared shape for files under ``lone_samples``, the lone shape (if any) for longer ones."""

    def __init__(self, owner, shared: StreamShape, lone: StreamShape | None, lone_samples: int, hop: int,
                 init_state: Callable[[int], Any], encode_window: EncodeWindow):
        self.shared = RowStreams(owner, shared, hop, init_state, encode_window)
        self.lone = RowStreams(owner, lone, hop, init_state, encode_window) if lone is not None else None
        self.lone_samples = lone_samples

    def add(self, key, audio: np.ndarray) -> list:
        """Queue a file (``[N]`` mono); a long file is encoded to its end at once and returned."""
        slot = Slot(key, np.ascontiguousarray(audio, dtype=np.float32))
        if self.lone is not None and slot.audio.shape[0] >= self.lone_samples:
            self.lone.queue.append(slot)
            out = []
            while self.lone.busy():  # one long file at a time, to its end
                out.extend(self.lone.step())
            return out
        self.shared.queue.append(slot)
        return []

    def drain(self) -> list:
        """Calls until every queued file has a row (files still in rows wait for more work)."""
        out = []
        while self.shared.queue:
            out.extend(self.shared.step())
        return out

    def flush(self) -> list:
        out = []
        while self.shared.busy():
            out.extend(self.shared.step())
        return out

    def keys(self) -> list:
        """The files added and not yet returned."""
        return self.shared.keys() + (self.lone.keys() if self.lone is not None else [])

    def reset(self) -> None:
        self.shared.reset()
        if self.lone is not None:
            self.lone.reset()


class _LaneOwner:
    """What a lane's row streams see of the adapter: the device, and a progress call that queues
    the report for the caller's thread (``LanedRows`` passes it on)."""

    def __init__(self, device: torch.device, events: list):
        self.device, self.events = device, events

    def on_progress(self, key, done: int, total: int) -> None:
        self.events.append((key, done, total))


class LanedRows:
    """One ``RowScheduler`` per lane of ``lanes``; ``owner`` is the adapter (``device``,
    ``on_progress``). ``run(files)`` hands each ``(key, mono audio)`` to the least loaded lane and
    returns what the lanes have finished (one task per lane left running, so they stay busy while
    the engine reads the next batch); ``flush`` waits for the rest. With one lane everything runs
    in the caller's thread (progress reaches the bar during a long file). A failing call fails the
    files its lane held, alone: the other lanes go on."""

    def __init__(self, owner, lanes: Lanes, shared: StreamShape, lone: StreamShape | None, lone_samples: int,
                 hop: int, init_state: Callable[[int], Any], encode_window: EncodeWindow):
        self.owner, self.lanes = owner, lanes
        self._events: list = []
        stream_owner = owner if lanes.n == 1 else _LaneOwner(owner.device, self._events)
        self.schedulers = [RowScheduler(stream_owner, shared, lone, lone_samples, hop, init_state, encode_window)
                           for _ in range(lanes.n)]
        self.tasks: list[cf.Future] = []

    def run(self, files: list) -> list:
        if self.lanes.n == 1:
            rows, out = self.schedulers[0], []
            for key, audio in files:
                out.extend(rows.add(key, audio))
            out.extend(rows.drain())
            return out
        loads = self.lanes.loads()
        parts: list[list] = [[] for _ in range(self.lanes.n)]
        for key, audio in files:  # which lane a file takes changes when its codes come, not what they are
            j = min(range(self.lanes.n), key=lambda i: (loads[i], i))
            loads[j] += audio.shape[-1]
            parts[j].append((key, audio))
        for j, part in enumerate(parts):
            if part:
                self.tasks.append(self.lanes.submit(self._lane_work, j, part, lane=j,
                                                    cost=sum(a.shape[-1] for _, a in part)))
        return self._finished(keep=self.lanes.n)

    def flush(self) -> list:
        if self.lanes.n == 1:
            return self.schedulers[0].flush()
        for j in range(self.lanes.n):
            self.tasks.append(self.lanes.submit(self._lane_work, j, [], True, lane=j, cost=0.0))
        return self._finished(keep=0)

    def reset(self) -> None:
        for t in self.tasks:
            t.cancel()
        cf.wait(self.tasks)  # a running task still steps its lane's streams: let it end first
        self.tasks = []
        for rows in self.schedulers:
            rows.reset()

    def _lane_work(self, lane: int, files: list, flush: bool = False) -> list:
        """In lane ``lane``: add ``files`` to its streams and step them (to the end with ``flush``)."""
        rows, out = self.schedulers[lane], []
        try:
            for key, audio in files:
                out.extend(rows.add(key, audio))
            out.extend(rows.flush() if flush else rows.drain())
            return out
        except Exception as exc:
            error = exc if isinstance(exc, AudiotokError) else step_error(exc)
            done = {k for k, _ in out}
            lost = [k for k in dict.fromkeys(rows.keys() + [k for k, _ in files]) if k not in done]
            rows.reset()
            return out + [(k, error) for k in lost]

    def _finished(self, keep: int) -> list:
        """Wait until at most ``keep`` lane tasks are unfinished; what the finished ones returned."""
        while True:
            while self._events:
                key, done, total = self._events.pop(0)
                if self.owner.on_progress is not None:
                    self.owner.on_progress(key, done, total)
            pending = [t for t in self.tasks if not t.done()]
            if len(pending) <= keep:
                break
            cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)  # wakes to pass progress on
        out = [r for t in self.tasks if t.done() for r in t.result()]
        self.tasks = [t for t in self.tasks if not t.done()]
        return out
