"""Command-line interface: ``audiotok encode|decode|embed|score|train|probe|models``.

Each command module registers itself on the shared Typer ``app``; see ``base.py`` for the wiring.
"""

import importlib

from ..engine.interrupts import quiet_startup

with quiet_startup():
    from .base import app, entry, main, preload_plugins

    preload_plugins()  # codecs registered by $AUDIOTOK_PLUGINS appear in the commands' help and choices

    for _name in ("codec", "embed", "score", "train", "probe", "models"):
        try:
            importlib.import_module(f"{__name__}.{_name}")
        except ModuleNotFoundError as _exc:  # a command module not written yet
            if _exc.name != f"{__name__}.{_name}":
                raise

__all__ = ["app", "entry", "main"]
