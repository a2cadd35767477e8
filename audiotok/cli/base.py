"""The Typer application and the wiring every command shares (inputs, outputs, progress, exit codes).

Commands live in sibling modules (``codec.py``: encode/decode, ``embed.py``, ``score.py``,
``train.py``) and register themselves on ``app``. No model or file-format logic here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

import typer

from ..engine.runner import eprint, report  # noqa: F401  (re-exported for the command modules)
from ..engine.sources import AUDIO_EXTENSIONS
from ..errors import AudiotokError, UsageError, WeightsError

app = typer.Typer(
    name="audiotok",
    help="EnCodec tokens, EnCodecMAE embeddings and audio-LM scores for large audio collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_callback(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"audiotok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """audiotok: paths, directories, globs or - (paths on stdin) in; arrays, manifests or JSON lines out."""


# --- shared option declarations (one place, so every command spells them the same) ---------
INPUTS = typer.Argument(..., help="Files, directories (recursive), glob patterns, or - to read paths from stdin.",
                        show_default=False)
OUT = typer.Option(..., "--out", "-o", help="Output directory (mirrors the input tree).")
EXT = typer.Option(",".join(AUDIO_EXTENSIONS), "--ext", help="Extensions to take from directories (comma-separated).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
BATCH_SECONDS = typer.Option(60.0, "--batch-seconds", min=0.1, help="Audio seconds handed to the model per batch.")
WORKERS = typer.Option(1, "--workers", min=0, help="Decode/resample processes (0: one background thread).")
OVERWRITE = typer.Option(False, "--overwrite", help="Redo inputs whose output already exists.")
JSONL = typer.Option(False, "--jsonl", help="Print one JSON object per input on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar (errors are still listed).")
SHARD = typer.Option(None, "--shard", help="Take share K of N of the sorted inputs (job arrays), e.g. 0/4.")
INPUTS_OR_MANIFEST = typer.Argument(None, help="Files, directories (recursive), glob patterns, or - to read paths "
                                    "from stdin (or none, with --manifest).", show_default=False)
MANIFEST = typer.Option(None, "--manifest", metavar="FILE.jsonl|csv",
                        help="Inputs listed in a JSONL or CSV file: path, optional offset and duration (s).")
EXCLUDE = typer.Option(None, "--exclude", metavar="GLOB", help="Leave out inputs matching GLOB (repeatable).")
DRY_RUN = typer.Option(False, "--dry-run", help="List what would be done, skipped and refused; write nothing.")
KEEP_EXT = typer.Option(False, "--keep-ext", help="Keep the input extension in output names (a.wav -> a.wav.npz).")
SHARD_MB = typer.Option(64.0, "--shard-mb", min=0.001, help="--format parquet: MB of arrays per shard.")
LOG_EVERY = typer.Option(10.0, "--log-every", min=0.0, metavar="SECONDS",
                         help="When stderr is not a terminal: a progress line every SECONDS (0: none).")


THREADS = typer.Option(None, "--threads", min=1,
                       help="Torch threads (default: torch's, which honours OMP_NUM_THREADS). Recorded in outputs: "
                            "numbers can differ between 1 and 2+ threads. EnCodec 24 kHz, Mimi and DAC on the CPU run "
                            "that many calls side by side, one thread each (up to 4), so their codes are the same "
                            "for 1 to 4.")


def finish(summary, quiet: bool) -> None:
    """The closing report on stderr, then exit with the run's status (0 ok, 1 some inputs failed)."""
    report(summary, quiet)
    raise typer.Exit(getattr(summary, "status", summary.exit_code))


RERUN = "interrupted: finished outputs are on disk and listed in the manifest; rerun the same command to continue"


@contextlib.contextmanager
def interruptible(message=RERUN):
    """Ctrl-C, SIGTERM or SIGHUP inside: ``message`` (a string, or a callable giving it at that
    moment) on stderr and exit status 130 (Ctrl-C) or 128 + the signal, never a traceback."""
    from ..engine.interrupts import interrupt_exit_code, termination_as_interrupt

    try:
        with termination_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        eprint(message() if callable(message) else message)
        raise typer.Exit(interrupt_exit_code(exc)) from None


def run(fn, *args, interrupted=RERUN, **kwargs):
    """Call a library function; Ctrl-C (or SIGTERM) becomes the line ``interrupted`` (a string or
    a callable giving it; default: finished outputs are on disk and in the manifest, rerun) and
    exit status 130 (128 + the signal number for SIGTERM and SIGHUP)."""
    with interruptible(interrupted):
        return fn(*args, **kwargs)


def entry() -> None:
    """The ``audiotok`` console script and ``python -m audiotok``: ``main()``, then, once torch is
    loaded, a fast exit. Interpreter teardown with torch loaded takes about a second and does
    nothing for us: by then every output has been written, renamed and closed, and the manifest
    closed. Skipped when a torch.distributed group is still up (normal exit)."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            eprint(str(exc.code))
            code = 1
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    if torch is None or (dist is not None and dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # e.g. stdout closed by the reader of a pipe: exit the normal way
        sys.exit(code)
    os._exit(code)


def preload_plugins() -> None:
    """Import ``$AUDIOTOK_PLUGINS`` before the commands are declared, so that the codecs they register
    are in the help texts; a module that cannot be imported is reported by ``main`` (one sentence)."""
    from ..registry import load_plugins

    with contextlib.suppress(AudiotokError):
        load_plugins()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 2 (usage),
    3 (weights missing or unusable) or 1 (output folder unusable)."""
    try:
        from ..registry import load_plugins

        load_plugins()
        app(args=argv, standalone_mode=True)
    except AudiotokError as exc:
        eprint(f"audiotok: error: {exc}")
        sys.exit(2 if isinstance(exc, UsageError) else 3 if isinstance(exc, WeightsError) else 1)
    except OSError as exc:  # a file the command writes or reads at its end (disk full, read-only, gone)
        if exc.errno is None:
            raise
        eprint(f"audiotok: error: {os_error_sentence(exc)}")
        sys.exit(1)


def os_error_sentence(exc: OSError) -> str:
    """An ``OSError`` that escaped a command as one sentence: what failed on which file, and what to do."""
    name = exc.filename2 if exc.errno == errno.EISDIR and exc.filename2 else exc.filename
    where = f" {os.fsdecode(name)}" if name is not None else ""
    reason = exc.strerror or os.strerror(exc.errno)
    storage = exc.errno in (errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
    hint = "free space or choose another path" if storage else "check the path and its permissions"
    return f"could not use{where} ({reason}); {hint}, then rerun"
