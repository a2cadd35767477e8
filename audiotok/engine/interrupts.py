"""Signals: SIGTERM (and SIGHUP) stop a run the way Ctrl-C does, and an interrupt while the
command line tool is still importing ends quietly. No torch here."""

from __future__ import annotations

import contextlib
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler or ``kill``): handled like Ctrl-C, exit status 143."""


@contextlib.contextmanager
def termination_as_interrupt():
    """While active, SIGTERM (and SIGHUP) raise :class:`Terminated` in the main thread, so a run
    stops the way Ctrl-C stops it: temp files removed, workers ended, the manifest closed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), handler) for n in names}
    try:
        yield
    finally:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)


def interrupt_exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 128 + the signal number for a termination signal."""
    return 128 + int(exc.args[0]) if isinstance(exc, Terminated) and exc.args else 130


@contextlib.contextmanager
def quiet_startup():
    """Ctrl-C while the ``audiotok`` tool imports its modules: exit status 130 and one line, not
    a traceback from the middle of an import."""
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write("audiotok: interrupted while starting; nothing was done\n")
        raise SystemExit(130) from None
