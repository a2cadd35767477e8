"""Progress on stderr: files done and audio done *within* files, speed as a multiple of real time,
ETA, in units that fit the corpus (s, min or h).

In a terminal: a rich bar over audio seconds. Otherwise (a log file, a pipe, a batch job): one
plain line every ``log_every`` seconds, printed by a background thread so lines keep coming while
the model works through one long file. Errors are printed as they happen, one line each.
"""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from ..files import display_path

DEFAULT_LOG_EVERY = 10.0  # seconds between log lines when stderr is not a terminal


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``, ``0 files`` (``many``: an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def pick_unit(total_seconds: float) -> tuple[str, float]:
    """``(name, seconds per unit)`` for amounts of audio up to ``total_seconds``: seconds below
    2 minutes, minutes below 2 hours, hours above."""
    if total_seconds < 120:
        return "s", 1.0
    if total_seconds < 7200:
        return "min", 60.0
    return "h", 3600.0


def format_clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_amount(value: float, unit_seconds: float) -> str:
    v = value / unit_seconds
    return f"{v:.0f}" if unit_seconds == 1.0 and v >= 10 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


class Progress:
    """Counts files and audio seconds; the pipeline calls ``set_total`` once, ``update_file`` while
    a file is being worked on (seconds of it done so far) and ``advance`` when a file is finished.

    ``terminal`` (default: whether stderr is one) picks the bar or the log lines; ``log_every``
    <= 0 turns the periodic lines off (errors and the final report still print)."""

    def __init__(self, enabled: bool = True, unit: str = "audio", log_every: float = DEFAULT_LOG_EVERY,
                 stream=None, terminal: bool | None = None, label: str = "progress", clock=time.perf_counter):
        self.enabled = enabled
        self.label = label
        self.console = Console(file=stream if stream is not None else sys.stderr, highlight=False, soft_wrap=True)
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.log_every = float(log_every)
        self.clock = clock
        self.files_done = 0
        self.files_total = 0
        self.audio_done = 0.0  # seconds of finished files
        self.audio_total = 0.0
        self.t0 = clock()
        self._within: dict = {}  # key -> seconds done of a file not finished yet
        self._lock = threading.Lock()
        self._bar: RichProgress | None = None
        self._task = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        if self.terminal:
            self._bar = RichProgress(TextColumn(self.label), BarColumn(), _StatusColumn(self),
                                     console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None)
        elif self.log_every > 0:
            self._thread = threading.Thread(target=self._log_loop, name="audiotok-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._refresh_bar()
            self._bar.__exit__(*exc)

    # --- what the pipeline reports -------------------------------------------------------
    def set_total(self, files: int, audio_seconds: float) -> None:
        with self._lock:
            self.files_total = files
            self.audio_total = audio_seconds
            self.t0 = self.clock()
        self._refresh_bar()

    def update_file(self, key, seconds_done: float) -> None:
        """``seconds_done`` of the file ``key`` (not finished yet) are through the model."""
        with self._lock:
            self._within[key] = seconds_done
        self._refresh_bar()

    def advance(self, audio_seconds: float, outcome, key=None) -> None:
        """One file finished (``audio_seconds`` counted when it succeeded)."""
        with self._lock:
            self._within.pop(key, None)
            self.files_done += 1
            self.audio_done += audio_seconds
        if outcome.status == "error" and self.enabled:
            self.console.print(Text(f"error: {display_path(outcome.source.path)}: {outcome.error}"))
        self._refresh_bar()

    # --- what is shown -------------------------------------------------------------------
    def seconds_done(self) -> float:
        with self._lock:
            return self.audio_done + sum(self._within.values())

    def status(self) -> str:
        """``3/12 files, 4.20/30.0 min of audio (14%), 25.1x real time, elapsed 0:10, ETA 1:02``."""
        done = self.seconds_done()
        total = max(self.audio_total, done)
        wall = max(1e-9, self.clock() - self.t0)
        name, per = pick_unit(total)
        parts = [f"{self.files_done}/{plural(self.files_total, 'file')}",
                 f"{format_amount(done, per)}/{format_amount(total, per)} {name} of audio"
                 + (f" ({100.0 * done / total:.0f}%)" if total > 0 else "")]
        speed = done / wall
        if done > 0:
            parts.append(f"{speed:.1f}x real time")
        parts.append(f"elapsed {format_clock(wall)}")
        if done > 0 and total > done:
            parts.append(f"ETA {format_clock((total - done) / speed)}")
        return ", ".join(parts)

    def _refresh_bar(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=max(self.audio_total, 1e-9), completed=self.seconds_done())

    def _log_loop(self) -> None:
        while not self._stop.wait(self.log_every):
            self.console.print(Text(f"{self.label}: {self.status()}"))
            self.console.file.flush()


class _StatusColumn(ProgressColumn):
    def __init__(self, owner: Progress):
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:
        return Text(self.owner.status())
