"""The streaming engine every command shares.

    sources -> read headers -> order by length -> load (worker processes) -> batches of
    ``batch_seconds`` -> adapter.run(batch) -> job.finish (outputs) -> manifest / stdout

The engine knows models only through this shape (an *adapter*, ``protocols.Adapter``)::

    class Adapter:
        def run(self, batch: list[tuple[Key, Payload]]) -> list[tuple[Key, Result | Exception]]
        def flush(self) -> list[tuple[Key, Result | Exception]]
        def reset(self) -> None                       # drop held items after a failed step

``run`` may return results of items from earlier calls and hold some of this call's items back
(the EnCodec adapter streams long files across calls); ``flush`` returns everything still held.
A per-item ``Exception`` marks that item failed; the run goes on.

``adapter`` may also be a zero-argument callable that builds it: the engine calls it once the
first inputs are being decoded, so importing torch and loading weights overlap with decoding.

The *job* (``protocols.Job``) says what to do with inputs and results (command-specific, no model code)::

    job.is_done(source) -> bool                 # outputs exist: skip unless overwrite
    job.read_header(path) -> AudioInfo               # header only, in this process
    job.load                                   # picklable: path -> (payload, AudioInfo), in workers
    job.finish(source, info, result) -> dict   # write outputs, return manifest fields
    job.describe_error(source, info) -> dict   # manifest fields for a failed input (optional)
    job.claim_key(source) -> str               # the output's name for claims (optional; default:
                                               # its target relative to the output folder)
    job.done_after_claim(source) -> bool       # made meanwhile by another run (optional)

With ``claims`` (``sharing.Claims``; the runner passes one per output folder), each input's output
is claimed just before the input is decoded: one held by another live run is left to it (a
``skipped`` record saying so) and one finished meanwhile is skipped, so runs sharing an output
folder share the work instead of doing it twice. Claims are released once the output is written
(or failed); a job with ``releases_claims`` releases them itself (Parquet: when the shard is on disk).

Memory stays bounded: at most ``2 * workers + 2`` loaded inputs wait at any time, and a batch
holds about ``batch_seconds`` of audio (one input longer than that forms its own batch).
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import multiprocessing as mp
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import AudiotokError, InputError, WeightsError
from ..protocols import Adapter, AudioInfo, Job
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
    output_trouble: str | None = None  # the first "disk full / read-only" error of an output write
    elsewhere: int = 0  # skipped because another run into the same output folder was making them
    warnings: list[tuple[Source, str]] = field(default_factory=list)  # inputs that are ok but suspicious

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


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def final_status(summary: Summary, manifest: Any, say: Callable[[str], None]) -> int:
    """The run's exit status, after one closing sentence when outputs or the manifest could not
    be written (disk full, read-only): what happened, that finished work is kept, what to do."""
    lost = getattr(manifest, "lost", 0)
    if summary.output_trouble or lost:
        what = summary.output_trouble or manifest.failure
        extra = f"; {lost} record line(s) could not be written" if lost else ""
        say(f"audiotok: error: the output folder could not take more data ({what}){extra}; outputs "
            "that were finished are complete; free space or choose another -o, then rerun the same command")
        return 1
    return summary.exit_code


def _worker_init(parent: int, codecs: tuple = ()) -> None:
    """Decode workers die with the main process, even when it is killed with SIGKILL: Linux's
    parent-death signal, and on every system a thread that exits when the parent is gone. Ctrl-C
    and SIGTERM are the main process's to handle (it shuts the workers down). ``codecs``: the
    parent's registered codecs (facts only), so codes of a codec registered by the user's script
    read in a worker as they do in the parent."""
    import os
    import signal
    import threading

    from ..registry import CODECS, register_codec

    for spec in codecs:
        if spec.name not in CODECS:
            register_codec(spec)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # drops a Ctrl-C that arrived while this worker started
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # born blocked (see _QuietStartProcess)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="audiotok-parent-watch", daemon=True).start()


def _worker_codecs() -> tuple:
    """The registered codecs as facts a worker can unpickle (an implementation given as a function,
    maybe defined in the user's script, is dropped: workers read codes files, they load no model)."""
    import dataclasses

    from ..registry import CODECS

    specs = {id(s): s for s in CODECS.values()}.values()
    return tuple(s if isinstance(s.implementation, str) else dataclasses.replace(s, implementation="") for s in specs)


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with its stderr on the null device.

    The tracker outlives a parent killed with SIGKILL just long enough to remove the semaphores
    the worker pool's queues used, and says so ("There appear to be 1 leaked semaphore objects to
    clean up at shutdown"): a warning about its own cleanup, printed into the user's terminal or
    log after the kill. The cleanup still runs; only that message goes. (No-op once the tracker
    runs, and on systems without it.)"""
    import os

    try:
        from multiprocessing import resource_tracker
    except ImportError:  # pragma: no cover - Windows
        return
    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_fd", None) is not None:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietStartProcess(mp.context.SpawnProcess):
    """A decode worker that never runs the user's main module, born with SIGINT blocked.

    Spawned children normally import the parent's ``__main__`` again (its path, or its module
    name): a script calling ``audiotok.encode_files`` at top level, without an
    ``if __name__ == "__main__"`` guard, would run again in every worker, and ``python -`` (main
    ``<stdin>``) cannot be imported at all. The workers need nothing from it (they run audiotok's
    readers), so ``__main__`` is a bare module while a worker starts, and the API works in plain
    scripts, ``python -``, ``python -c`` and notebooks.

    Ctrl-C in a terminal signals the whole process group; a worker still starting (importing,
    before ``_worker_init`` runs) would print its own KeyboardInterrupt traceback. So the main
    thread blocks SIGINT while it starts a worker: the worker inherits the blocked signal across
    exec, keeps a Ctrl-C pending until ``_worker_init`` ignores it, and never prints; the main
    process keeps a Ctrl-C of that moment pending too and raises it as soon as the worker is
    started (ignoring SIGINT there instead, as this once did, lost a Ctrl-C that came at that
    moment: the run went on). The main process handles Ctrl-C and stops the workers. Where
    signal masks do not exist, SIGINT is ignored while the worker starts. (Only the main thread
    may change a handler; elsewhere SIGINT is left as it is.)"""

    def start(self) -> None:
        import signal
        import threading
        import types

        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")  # what the child is told to import: nothing
        try:
            if threading.current_thread() is not threading.main_thread():
                return super().start()
            if hasattr(signal, "pthread_sigmask"):
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    return super().start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return super().start()
            finally:
                signal.signal(signal.SIGINT, previous)
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class _QuietSpawnContext(mp.context.SpawnContext):
    Process = _QuietStartProcess


class Loader:
    """Decode inputs in worker processes (or one background thread when ``workers == 0``),
    keeping a bounded number in flight and yielding results in submission order."""

    def __init__(self, load: Callable, workers: int):
        self.load = load
        self.workers = workers
        self.window = max(2, 2 * workers + 2)
        self.pool: cf.Executor = self._new_pool()

    def _new_pool(self) -> cf.Executor:
        if self.workers <= 0:
            return cf.ThreadPoolExecutor(max_workers=1)
        import os

        _quiet_resource_tracker()

        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=_QuietSpawnContext(),
                                      initializer=_worker_init, initargs=(os.getpid(), _worker_codecs()))

    def imap(self, items) -> Iterator[tuple[int, Any]]:
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
        self.pool = self._new_pool()

    def terminate(self) -> None:
        """Stop the workers now (interrupted run): a decode in progress is not waited for.

        A worker killed while it was sending a result leaves half a message in the result pipe,
        and the pool's manager thread would wait for the rest forever (so would ``close`` and the
        interpreter's exit, which join that thread): once the killed workers are gone, the
        parent's own end for writing to that pipe is closed too, so the read ends (the pool counts
        as broken) instead of waiting for bytes no process can send."""
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        for proc in procs:
            try:
                proc.kill()
            except (OSError, AttributeError):
                pass
        for proc in procs:
            try:
                proc.join(5)
            except (OSError, AttributeError, AssertionError):
                pass
        writer = getattr(getattr(self.pool, "_result_queue", None), "_writer", None)
        if writer is not None and not any(p.is_alive() for p in procs):
            writer.close()

    def close(self) -> None:
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        except cf.process.BrokenProcessPool:
            pass


# Long on purpose: the one place where reading, ordering, batching, the model and the sinks meet; its
# closures share the run's queues and counters (docs/design.md, "Long signatures and long functions").
def run(
    sources: list[Source],
    job: Job,
    adapter: Adapter | Callable[[], Adapter],
    *,
    batch_seconds: float = 60.0,
    workers: int = 1,
    overwrite: bool = False,
    record_sink: Callable[[Outcome], None] = lambda o: None,
    progress: Any = None,
    claims: Any = None,
) -> Summary:
    """Run ``sources`` through ``adapter`` and ``job``; ``record_sink`` receives every outcome."""
    summary = Summary()
    t0 = time.perf_counter()
    infos: dict[int, AudioInfo] = {}
    todo: list[int] = []
    claimed: dict[int, str] = {}  # input -> the claim this run holds on its output
    job_releases = bool(getattr(job, "releases_claims", False))

    def emit(i: int, outcome: Outcome) -> None:
        ident = claimed.pop(i, None)
        if ident is not None and (outcome.status != "ok" or not job_releases):
            claims.release(ident)
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
        describe = getattr(job, "describe_error", None)  # optional part of protocols.Job
        if describe is not None:
            rec.update(describe(src, info))
        emit(i, Outcome(src, "error", rec, message))

    # 1. skip finished outputs; read headers (fast; once per file, however many segments) for
    # ordering and progress totals
    headers: dict = {}
    for i, src in enumerate(sources):
        if src.error:
            fail(i, src.error)
            continue
        if not overwrite and job.is_done(src):
            emit(i, Outcome(src, "skipped", {"input": src.path, **segment_fields(src), "status": "skipped",
                                          "output": str(job.target(src)) if hasattr(job, "target") else None}))
            continue
        try:
            infos[i] = header_of_source(job, src, headers)
        except AudiotokError as exc:
            fail(i, str(exc))
            continue
        except MemoryError:
            fail(i, "is too large to read in memory")
            continue
        except Exception as exc:  # a reader bug on a malformed file is this input's error, not the run's end
            fail(i, f"could not be read ({_message(exc)})")
            continue
        todo.append(i)
    if progress is not None:
        progress.set_total(len(sources), sum(infos[i].duration for i in todo))

    # 2. longest first (memory problems show at once; batches of similar lengths); rows of one
    # dataset file together, so each file is read once
    todo.sort(key=lambda i: (sources[i].path if sources[i].row is not None else "", -infos[i].duration, i))

    handed: set[int] = set()  # given to the adapter, no outcome yet

    def claim_key(src: Source) -> str:
        key = getattr(job, "claim_key", None)
        if key is not None:
            return key(src)
        import os

        return os.path.relpath(job.target(src), claims.root)

    def done_meanwhile(src: Source) -> bool:
        check = getattr(job, "done_after_claim", None)
        if check is not None:
            return check(src)
        return not overwrite and job.is_done(src)

    fed = 0

    def feed() -> Iterator[tuple[int, Any]]:
        """The inputs to decode, each claimed first (one another run holds or finished is skipped)."""
        nonlocal fed
        for i in todo:
            src = sources[i]
            if claims is not None:
                ident = claim_key(src)
                holder = claims.take(ident)
                if holder is None:
                    claimed[i] = ident
                why = f"being made by {holder} into the same output folder" if holder is not None else \
                    "made by another run into the same output folder meanwhile" if done_meanwhile(src) else None
                if why is not None:
                    if progress is not None and hasattr(progress, "discount"):
                        progress.discount(infos[i].duration)
                    summary.elsewhere += 1
                    known = hasattr(job, "target") and (holder is None or not job_releases)  # a row's shard is not
                    emit(i, Outcome(src, "skipped", {"input": src.path, **segment_fields(src), "status": "skipped",
                                                     "output": str(job.target(src)) if known else None, "note": why}))
                    continue
            fed += 1
            yield i, load_arg(src)

    def deliver(results) -> None:
        for key, res in results:
            if key not in handed:
                continue
            handed.discard(key)
            src = sources[key]
            if isinstance(res, Exception):
                fail(key, _message(res))
                continue
            try:
                bad = nonfinite(res)
                if bad:
                    raise InputError(f"gave {bad} values from the model; the weights are damaged or the input "
                                     "is extreme (nothing was written)")
                rec = job.finish(src, infos[key], res)
            except AudiotokError as exc:
                fail(key, str(exc))
                continue
            except OSError as exc:
                if exc.errno in _STORAGE_ERRNOS and summary.output_trouble is None:
                    summary.output_trouble = exc.strerror or str(exc)
                fail(key, f"output could not be written ({exc.strerror or exc})")
                continue
            except Exception as exc:  # e.g. a writer library's assertion on a full disk
                fail(key, f"output could not be written ({_message(exc)})")
                continue
            rec = {"input": src.path, **segment_fields(src), "status": "ok", **_info_fields(infos[key]), **rec}
            warning = _level_warning(infos[key])
            if warning:
                rec["warning"] = warning
                summary.warnings.append((src, warning))
            summary.audio_seconds += infos[key].duration
            emit(key, Outcome(src, "ok", rec))

    loader = Loader(SegmentLoad(job.load), workers)
    try:
        loaded = loader.imap(feed())  # submits the first inputs (as many as the loader keeps in flight)
        working = fed > 0  # else every input was done or is another run's
        if working and not isinstance(adapter, Adapter):
            adapter = adapter()  # a factory: build the model while the first inputs decode (never if all are done)
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
                handed.update(k for k, _ in batch)
                deliver(_run_batch(adapter, batch, handed))
                batch, batch_sec = [], 0.0
        if batch:
            handed.update(k for k, _ in batch)
            deliver(_run_batch(adapter, batch, handed))
        if working:
            deliver(_guarded(adapter.flush, handed))
        for key in sorted(handed):  # every input gets a record, even one an adapter lost
            fail(key, "got no result from the model (a model step failed while it was held); rerun to retry")
        handed.clear()
    except BaseException:
        loader.terminate()
        raise
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


@dataclass(frozen=True)
class RowRef:
    """What the loader is handed for one row of a dataset file (picklable)."""

    path: str
    row: str


def load_arg(src: Source):
    """The loader's argument for ``src``: its path, a ``SegmentRef`` for a manifest segment or a
    ``RowRef`` for a row of a dataset file."""
    if src.row is not None:
        return RowRef(src.path, src.row)
    return SegmentRef(src.path, src.offset, src.duration) if src.is_segment else src.path


class SegmentLoad:
    """Wraps a job's ``load(path)`` so segments are read as ``load(path, offset=, duration=)`` and
    dataset rows as ``load(path, row=)`` (picklable when ``load`` is)."""

    def __init__(self, load: Callable):
        self.load = load

    def __call__(self, arg):
        if isinstance(arg, SegmentRef):
            return self.load(arg.path, offset=arg.offset, duration=arg.duration)
        if isinstance(arg, RowRef):
            return self.load(arg.path, row=arg.row)
        return self.load(arg)


def header_of_source(job: Any, src: Source, cache: dict | None = None) -> AudioInfo:
    """``job.read_header`` of the source's file (or dataset row), clipped to its segment. ``cache``: the
    headers read so far by path (the segments of one recording read its header once)."""
    if src.row is not None:
        return job.read_header(src.path, row=src.row)
    if cache is None:
        info = job.read_header(src.path)
    else:
        if src.path not in cache:
            try:
                cache[src.path] = job.read_header(src.path)
            except Exception as exc:  # the same error for every segment of the file
                cache[src.path] = exc
        info = cache[src.path]
        if isinstance(info, Exception):
            raise info
    if not src.is_segment:
        return info
    return info.clip(src.offset, src.duration)


def segment_fields(src: Source) -> dict:
    """Manifest fields naming a segment or a dataset row (none for a whole file)."""
    if src.row is not None:
        return {"row": src.row}
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


def _run_batch(adapter: Adapter, batch: list[tuple[int, Any]], handed: set[int]):
    """``adapter.run(batch)``; when it raises, the batch's inputs are retried one by one (after
    ``adapter.reset()``), so one input that breaks the model fails alone. Inputs the reset
    dropped (held from earlier calls) fail with the step's message."""
    try:
        return adapter.run(batch)
    except WeightsError:
        raise  # weights loaded on first use (decode) that cannot be used: nothing can be computed (exit 3)
    except AudiotokError as exc:
        return [(k, exc) for k, _ in batch]
    except Exception as exc:  # out of memory on the device, a library assertion on odd input...
        error = step_error(exc)
    adapter.reset()
    ours = {k for k, _ in batch}
    out: list = [(k, error) for k in sorted(handed - ours)]
    if len(batch) == 1:
        return [*out, (batch[0][0], error)]
    for item in batch:
        out.extend(_run_batch(adapter, [item], {item[0]}))
    return out


def _guarded(call: Callable, handed: set[int]):
    try:
        return call()
    except WeightsError:
        raise
    except AudiotokError as exc:
        return [(k, exc) for k in sorted(handed)]
    except Exception as exc:
        error = step_error(exc)
        call.__self__.reset()
        return [(k, error) for k in sorted(handed)]


def step_error(exc: BaseException) -> InputError:
    if isinstance(exc, MemoryError):
        return InputError("is too large to process in memory")
    msg = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"model step failed ({type(exc).__name__}: {msg})")


def nonfinite(result: Any, depth: int = 3) -> str | None:
    """``"NaN"`` / ``"infinite"`` when a float array in ``result`` is not finite, looking through
    dataclass fields, lists and tuples up to ``depth`` levels; else None."""
    import dataclasses

    import numpy as np

    if isinstance(result, np.ndarray):
        if result.dtype.kind == "f" and result.size and not np.isfinite(result).all():
            return "NaN" if np.isnan(result).any() else "infinite"
        return None
    if depth == 0:
        return None
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        parts = [getattr(result, f.name) for f in dataclasses.fields(result)]
    elif isinstance(result, (list, tuple)):
        parts = list(result)
    else:
        return None
    for part in parts:
        bad = nonfinite(part, depth - 1)
        if bad:
            return bad
    return None


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AudiotokError) else f"{type(exc).__name__}: {exc}"


def _level_warning(info: AudioInfo) -> str | None:
    peak = getattr(info, "peak", None)
    if peak is not None and peak > 1.0:
        return (f"peaks at {peak:.3g}, above full scale (1.0); it was used as it is, so scale it down "
                "if that is not intended")
    return None


def _info_fields(info: AudioInfo) -> dict:
    return {"duration": round(info.duration, 6), "sample_rate": info.sample_rate, "channels": info.channels}


def plan(sources: list[Source], job: Any, *, overwrite: bool = False) -> list[dict]:
    """What ``run`` would do with each source, without decoding audio or building a model: one
    record per source with ``status`` ``todo`` (with its header ``duration``), ``skipped`` (output
    exists) or ``error`` (would be refused: missing, unreadable header, duplicate output, segment
    past the end...), and ``output`` where known."""
    out = []
    headers: dict = {}
    for src in sources:
        rec: dict = {"input": src.path, **segment_fields(src)}
        target = str(job.target(src)) if hasattr(job, "target") and not src.error else None
        if src.error:
            rec.update(status="error", error=src.error)
        elif not overwrite and job.is_done(src):
            rec.update(status="skipped", output=target)
        else:
            try:
                info = header_of_source(job, src, headers)
            except AudiotokError as exc:
                rec.update(status="error", error=str(exc))
            else:
                rec.update(status="todo", output=target, **_info_fields(info))
        out.append(rec)
    return out


def run_in_memory(adapter: Adapter, payloads: list) -> list:
    """Every payload through ``adapter`` (run, then flush), results in input order; the first
    per-item error is raised (the Python API's ``encode_many`` / ``embed_many``)."""
    results = dict(adapter.run(list(enumerate(payloads))))
    results.update(adapter.flush())
    for i in range(len(payloads)):
        if isinstance(results[i], Exception):
            raise results[i]
    return [results[i] for i in range(len(payloads))]
