"""Independent model calls run side by side on the CPU, each with one torch thread.

On a few cores, a codec's convolutions gain little from a second torch thread in the same call,
while two calls of one thread each, side by side, use both cores fully (measured on 2 cores: DAC
44.1 kHz's encoder 63 GFLOP/s with one thread, 106 with two, 132 as two one-thread calls; Mimi's
4 x 1.6 s calls 9.9, 15.5 and 20 seconds of audio per second). Adapters whose calls do not depend on
each other (DAC's spans, Mimi's row streams) hand them to ``Lanes``: one thread per lane, as many
lanes as torch's thread count (``--threads``) up to ``MAX_LANES``, each lane computing with
``threads // lanes`` torch threads (``lane_plan``), so one for up to ``MAX_LANES`` threads.

So every call rounds exactly as a call with that many threads does, whichever lane takes it and
however loaded the machine is: with 1 to ``MAX_LANES`` threads the codes of these codecs on the CPU
are identical (their outputs record ``threads`` per call and ``lanes``). Which lane takes a call
only changes when it finishes. With one lane (``--threads 1``, or a GPU) calls run in the caller's
thread, as before. Memory grows with the lanes (each holds one call's activations): hence the cap.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any

MAX_LANES = 4


def lane_plan(device) -> tuple[int, int]:
    """``(lanes, torch threads per lane)`` for a model on ``device``: from torch's thread count
    (``--threads``) on the CPU, ``(1, that count)`` elsewhere."""
    import torch

    threads = torch.get_num_threads()
    if getattr(device, "type", str(device)) != "cpu":
        return 1, threads
    lanes = max(1, min(threads, MAX_LANES))
    return lanes, max(1, threads // lanes)


def _pin_threads(ready: threading.Barrier, threads: int) -> None:
    import torch

    torch.get_num_threads()  # torch sets up this thread's pool on first use: do it now, then
    torch.set_num_threads(threads)  # pin this thread's count (OpenMP and MKL keep it per thread)
    ready.wait()


class Lanes:
    """``n`` lanes; ``submit(fn, *args, cost=, lane=)`` runs ``fn`` in a lane (the least loaded
    one by outstanding ``cost`` unless ``lane`` is given; one lane runs its calls in order) and
    returns a ``Future``. With ``n == 1`` calls run at once in the caller's thread."""

    def __init__(self, n: int, threads_per_lane: int = 1):
        self.n = max(1, int(n))
        self.threads_per_lane = threads_per_lane
        self._load = [0.0] * self.n
        self._lock = threading.Lock()
        self._pools: list[cf.ThreadPoolExecutor] = []
        if self.n == 1:
            return
        import torch

        keep = torch.get_num_threads()
        ready = threading.Barrier(self.n + 1)
        for i in range(self.n):
            pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audiotok-lane{i}")
            pool.submit(_pin_threads, ready, threads_per_lane)
            self._pools.append(pool)
        ready.wait()
        # torch.set_num_threads also sets the default that threads started later take up: put the
        # caller's count back (the lanes keep their own)
        torch.set_num_threads(keep)

    def loads(self) -> list[float]:
        """The outstanding cost of each lane (what ``least_loaded`` compares)."""
        with self._lock:
            return list(self._load)

    def least_loaded(self) -> int:
        with self._lock:
            return min(range(self.n), key=lambda i: (self._load[i], i))

    def submit(self, fn: Callable, *args: Any, cost: float = 1.0, lane: int | None = None) -> cf.Future:
        if self.n == 1:
            fut: cf.Future = cf.Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future, as a lane would
                if not isinstance(exc, Exception):
                    raise
                fut.set_exception(exc)
            return fut
        i = self.least_loaded() if lane is None else lane
        with self._lock:
            self._load[i] += cost

        def done(_f, i=i):
            with self._lock:
                self._load[i] -= cost

        fut = self._pools[i].submit(fn, *args)
        fut.add_done_callback(done)
        return fut

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []

