"""Typed errors a user can cause. Each carries one sentence: what happened and what to do."""

from __future__ import annotations


class AudiotokError(Exception):
    """Base class: the message is shown to the user as it is, without a traceback."""


class UsageError(AudiotokError):
    """Bad options or arguments (exit status 2)."""


class WeightsError(AudiotokError):
    """A checkpoint is missing, unreadable or does not fit the model asked for (exit status 3:
    nothing could be computed, unlike 1, where some inputs failed and the others are done)."""


class InputError(AudiotokError):
    """One input file cannot be used (unreadable, not audio, empty, non-finite samples...).

    The run records it for that file and goes on with the others."""


class OutputError(AudiotokError):
    """An output cannot be written (read-only or full folder, a link leading elsewhere)."""
