"""Progress on stderr (rich): files done, audio hours, speed as a multiple of real time.
Errors are printed as they happen, one line each."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from .sources import display_path


class _SpeedColumn(ProgressColumn):
    def __init__(self, owner: Progress):
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:
        o = self.owner
        wall = max(1e-9, time.perf_counter() - o.t0)
        return Text(f"{o.audio_done / 3600:.3f}/{o.audio_total / 3600:.3f} h  {o.audio_done / wall:.1f}x RT")


class Progress:
    def __init__(self, enabled: bool = True, unit: str = "audio"):
        self.enabled = enabled
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.audio_done = 0.0
        self.audio_total = 0.0
        self.t0 = time.perf_counter()
        self._bar: RichProgress | None = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _SpeedColumn(self),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("files", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def set_total(self, files: int, audio_seconds: float) -> None:
        self.audio_total = audio_seconds
        self.t0 = time.perf_counter()
        if self._bar is not None:
            self._bar.update(self._task, total=files)

    def advance(self, audio_seconds: float, outcome) -> None:
        self.audio_done += audio_seconds
        if outcome.status == "error" and self.enabled:
            self.console.print(Text(f"error: {display_path(outcome.source.path)}: {outcome.error}"))
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
