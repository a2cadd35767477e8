"""The streaming engine every command shares.

    sources -> probe headers -> order by length -> load (worker processes) -> batches of
    ``batch_seconds`` -> adapter.run(batch) -> job.finish (outputs) -> manifest / stdout

The engine knows models only through this shape (an *adapter*)::

    class Adapter:
        def run(self, batch: list[tuple[Key, Payload]]) -> list[tuple[Key, Result | Exception]]
        def flush(self) -> list[tuple[Key, Result | Exception]]   # optional

``run`` may return results of items from earlier calls and hold some of this call's items back
(the EnCodec adapter streams long files across calls); ``flush`` returns everything still held.
A per-item ``Exception`` marks that item failed; the run goes on.

``adapter`` may also be a zero-argument callable that builds it: the engine calls it once the
first inputs are being decoded, so importing torch and loading weights overlap with decoding.

The *job* says what to do with inputs and results (command-specific, no model code)::

    job.is_done(source) -> bool                 # outputs exist: skip unless overwrite
    job.probe(path) -> AudioInfo               # header only, in this process
    job.load                                   # picklable: path -> (payload, AudioInfo), in workers
    job.finish(source, info, result) -> dict   # write outputs, return manifest fields
    job.describe_error(source, info) -> dict   # manifest fields for a failed input (optional)

Memory stays bounded: at most ``2 * workers + 2`` loaded inputs wait at any time, and a batch
holds about ``batch_seconds`` of audio (one input longer than that forms its own batch).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .audio import AudioInfo
from .errors import AudiotokError, InputError
from .sources import Source


@dataclass
class Outcome:
    source: Source
    status: str  # ok | skipped | error
    record: dict
    error: str | None = None


@dataclass
class Summary:
    ok: int = 0
    skipped: int = 0
    failed: list[Outcome] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _load_one(load: Callable, path: str):
    """Worker body: never raises (exceptions are returned so one file cannot break the pool)."""
    try:
        return load(path)
    except AudiotokError as exc:
        return exc
    except MemoryError:
        return InputError("is too large to decode in memory")
    except Exception as exc:  # a decoder bug on a malformed file must not stop the run
        return InputError(f"could not be decoded ({type(exc).__name__}: {exc})")


class Loader:
    """Decode inputs in worker processes (or one background thread when ``workers == 0``),
    keeping a bounded number in flight and yielding results in submission order."""

    def __init__(self, load: Callable, workers: int):
        self.load = load
        self.workers = workers
        self.window = max(2, 2 * workers + 2)
        if workers > 0:
            ctx = mp.get_context("spawn")
            self.pool: cf.Executor = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        else:
            self.pool = cf.ThreadPoolExecutor(max_workers=1)

    def imap(self, items: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
        """Results in order. The first ``window`` inputs are submitted at once, before the first
        result is asked for."""
        pending: deque = deque()
        it = iter(items)
        for key, path in it:
            pending.append((key, path, self.pool.submit(_load_one, self.load, path)))
            if len(pending) >= self.window:
                break
        return self._results(pending, it)

    def _results(self, pending: deque, it) -> Iterator[tuple[int, Any]]:
        while pending:
            key, path, fut = pending.popleft()
            try:
                res = fut.result()
            except cf.process.BrokenProcessPool:
                # A decoder crashed hard (e.g. a segfault in a codec library): restart the pool
                # and decode this file again in-process only to attribute the error.
                self._restart()
                res = InputError("crashed the audio decoder process")
                for k, p, _ in list(pending):
                    pending.popleft()
                    pending.append((k, p, self.pool.submit(_load_one, self.load, p)))
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], self.pool.submit(_load_one, self.load, nxt[1])))
            yield key, res

    def _restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        ctx = mp.get_context("spawn")
        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def run(
    sources: list[Source],
    job: Any,
    adapter: Any,
    *,
    batch_seconds: float = 60.0,
    workers: int = 1,
    overwrite: bool = False,
    record_sink: Callable[[Outcome], None] = lambda o: None,
    progress: Any = None,
) -> Summary:
    """Run ``sources`` through ``adapter`` and ``job``; ``record_sink`` receives every outcome."""
    summary = Summary()
    t0 = time.perf_counter()
    infos: dict[int, AudioInfo] = {}
    todo: list[int] = []

    def emit(i: int, outcome: Outcome) -> None:
        if outcome.status == "ok":
            summary.ok += 1
        elif outcome.status == "skipped":
            summary.skipped += 1
        else:
            summary.failed.append(outcome)
        record_sink(outcome)
        if progress is not None:
            info = infos.get(i)
            progress.advance(info.duration if info and outcome.status == "ok" else 0.0, outcome, key=i)

    def fail(i: int, message: str) -> None:
        src = sources[i]
        rec = {"input": src.path, **segment_fields(src), "status": "error", "error": message}
        info = infos.get(i)
        if info is not None:
            rec.update(_info_fields(info))
        if hasattr(job, "describe_error"):
            rec.update(job.describe_error(src, info))
        emit(i, Outcome(src, "error", rec, message))

    # 1. skip finished outputs; read headers (fast) for ordering and progress totals
    for i, src in enumerate(sources):
        if src.error:
            fail(i, src.error)
            continue
        if not overwrite and job.is_done(src):
            emit(i, Outcome(src, "skipped", {"input": src.path, **segment_fields(src), "status": "skipped",
                                          "output": str(job.target(src)) if hasattr(job, "target") else None}))
            continue
        try:
            infos[i] = probe_source(job, src)
        except AudiotokError as exc:
            fail(i, str(exc))
            continue
        todo.append(i)
    if progress is not None:
        progress.set_total(len(sources), sum(infos[i].duration for i in todo))

    # 2. longest first (memory problems show at once; batches of similar lengths)
    todo.sort(key=lambda i: (-infos[i].duration, i))

    def deliver(results) -> None:
        for key, res in results:
            src = sources[key]
            if isinstance(res, Exception):
                fail(key, _message(res))
                continue
            try:
                rec = job.finish(src, infos[key], res)
            except AudiotokError as exc:
                fail(key, str(exc))
                continue
            except OSError as exc:
                fail(key, f"output could not be written ({exc.strerror or exc})")
                continue
            rec = {"input": src.path, **segment_fields(src), "status": "ok", **_info_fields(infos[key]), **rec}
            summary.audio_seconds += infos[key].duration
            emit(key, Outcome(src, "ok", rec))

    loader = Loader(SegmentLoad(job.load), workers)
    try:
        loaded = loader.imap([(i, load_arg(sources[i])) for i in todo])
        if todo and callable(adapter) and not hasattr(adapter, "run"):
            adapter = adapter()  # build the model while the first inputs decode (never if all are done)
        attach_progress(adapter, progress, infos)
        batch: list[tuple[int, Any]] = []
        batch_sec = 0.0
        for key, res in loaded:
            if isinstance(res, Exception):
                fail(key, _message(res))
                continue
            payload, info = res
            infos[key] = info  # the decoded truth (headers can lie: truncated files)
            batch.append((key, payload))
            batch_sec += info.duration
            if batch_sec >= batch_seconds:
                deliver(_run_batch(adapter, batch))
                batch, batch_sec = [], 0.0
        if batch:
            deliver(_run_batch(adapter, batch))
        if hasattr(adapter, "flush"):
            deliver(adapter.flush())
    finally:
        loader.close()
    summary.wall_seconds = time.perf_counter() - t0
    return summary


@dataclass(frozen=True)
class SegmentRef:
    """What the loader is handed for a segment of a recording (picklable)."""

    path: str
    offset: float
    duration: float | None


def load_arg(src: Source):
    """The loader's argument for ``src``: its path, or a ``SegmentRef`` for a manifest segment."""
    return SegmentRef(src.path, src.offset, src.duration) if src.is_segment else src.path


class SegmentLoad:
    """Wraps a job's ``load(path)`` so segments are read as ``load(path, offset=, duration=)``
    (picklable when ``load`` is)."""

    def __init__(self, load: Callable):
        self.load = load

    def __call__(self, arg):
        if isinstance(arg, SegmentRef):
            return self.load(arg.path, offset=arg.offset, duration=arg.duration)
        return self.load(arg)


def probe_source(job: Any, src: Source) -> AudioInfo:
    """``job.probe`` of the source's file, clipped to its segment."""
    info = job.probe(src.path)
    if not src.is_segment:
        return info
    from .audio import clip_info

    return clip_info(info, src.offset, src.duration)


def segment_fields(src: Source) -> dict:
    """Manifest fields naming a segment (none for a whole file)."""
    return {"offset": src.offset, "segment_duration": src.duration} if src.is_segment else {}


def attach_progress(adapter: Any, progress: Any, infos: dict[int, AudioInfo]) -> None:
    """Let an adapter that reports work within an input (an ``on_progress`` attribute, called as
    ``on_progress(key, done, total)`` in any unit) move ``progress`` by that input's audio seconds."""
    if progress is None or not hasattr(adapter, "on_progress") or not hasattr(progress, "update_file"):
        return

    def report(key, done: float, total: float) -> None:
        info = infos.get(key)
        if info is not None and total > 0:
            progress.update_file(key, info.duration * min(1.0, done / total))

    adapter.on_progress = report


def _run_batch(adapter: Any, batch: list[tuple[int, Any]]):
    try:
        return adapter.run(batch)
    except AudiotokError as exc:
        return [(k, exc) for k, _ in batch]
    except RuntimeError as exc:  # e.g. out of memory on the device: fail these, keep going
        if hasattr(adapter, "reset"):
            adapter.reset()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [(k, InputError(f"model step failed ({msg})")) for k, _ in batch]


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AudiotokError) else f"{type(exc).__name__}: {exc}"


def _info_fields(info: AudioInfo) -> dict:
    return {"duration": round(info.duration, 6), "sample_rate": info.sample_rate, "channels": info.channels}


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def plan(sources: list[Source], job: Any, *, overwrite: bool = False) -> list[dict]:
    """What ``run`` would do with each source, without decoding audio or building a model: one
    record per source with ``status`` ``todo`` (with its header ``duration``), ``skipped`` (output
    exists) or ``error`` (would be refused: missing, unreadable header, duplicate output, segment
    past the end...), and ``output`` where known."""
    out = []
    for src in sources:
        rec: dict = {"input": src.path, **segment_fields(src)}
        target = str(job.target(src)) if hasattr(job, "target") and not src.error else None
        if src.error:
            rec.update(status="error", error=src.error)
        elif not overwrite and job.is_done(src):
            rec.update(status="skipped", output=target)
        else:
            try:
                info = probe_source(job, src)
            except AudiotokError as exc:
                rec.update(status="error", error=str(exc))
            else:
                rec.update(status="todo", output=target, **_info_fields(info))
        out.append(rec)
    return out
