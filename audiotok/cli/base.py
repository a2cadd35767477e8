"""The Typer application and the wiring every command shares (inputs, outputs, progress, exit codes).

Commands live in sibling modules (``codec.py``: encode/decode, ``embed.py``, ``score.py``,
``train.py``) and register themselves on ``app``. No model or file-format logic here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..errors import AudiotokError, UsageError
from ..sources import AUDIO_EXTENSIONS, discover, display_path, normalise_extensions, shard

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
LOG_EVERY = typer.Option(10.0, "--log-every", min=0.0, metavar="SECONDS",
                         help="When stderr is not a terminal: a progress line every SECONDS (0: none).")


@dataclass
class RunOptions:
    out: Path
    batch_seconds: float = 60.0
    workers: int = 1
    overwrite: bool = False
    jsonl: bool = False
    quiet: bool = False
    shard: str | None = None
    log_every: float = 10.0


def collect_sources(inputs: list[str], ext: str, shard_opt: str | None, out: Path | None = None,
                    suffix: str | None = None):
    """Discover, sort, check the outputs ``OUT/<rel>.<suffix>`` (when given; see
    ``sinks.claim_targets``) and take this process's share. Returns (sources, share)."""
    from ..distributed import current_share
    from ..sinks import OutputTree, claim_targets

    exts = normalise_extensions([ext])
    if not exts:
        raise UsageError("--ext lists no extension")
    share = current_share(shard_opt)
    sources = discover(inputs, exts)
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
    if out is not None and suffix is not None:
        sources = claim_targets(sources, OutputTree(out, suffix))
    return shard(sources, share.rank, share.world), share


def run_job(sources, share, job, adapter, opts: RunOptions, unit: str = "audio") -> int:
    """Run the pipeline with manifest, JSON lines, progress and the final report; return the exit code."""
    from .. import pipeline
    from ..progress import Progress
    from ..sinks import JsonLines, Manifest, manifest_part_name, merge_manifest_parts

    opts.out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(opts.out / manifest_part_name(share.rank, share.world))
    stdout = JsonLines() if opts.jsonl else None

    def record(outcome: Any) -> None:
        manifest.append(outcome.record)
        if stdout is not None:
            stdout.emit(outcome.record)

    progress = Progress(enabled=not opts.quiet, unit=unit, log_every=opts.log_every, label=_label(job))
    try:
        with progress:
            summary = pipeline.run(
                sources, job, adapter,
                batch_seconds=opts.batch_seconds, workers=opts.workers, overwrite=opts.overwrite,
                record_sink=record, progress=progress,
            )
    except KeyboardInterrupt:
        eprint("interrupted: finished outputs are on disk and listed in the manifest; rerun the same command to continue")
        return 130
    finally:  # also when building the model fails (no GPU, damaged weights): the lines so far stay
        manifest.close()
    merge_manifest_parts(opts.out, share.rank, share.world)
    report(summary, opts.quiet)
    return summary.exit_code


def _label(job: Any) -> str:
    """The word progress lines start with: the job's ``label``, else its class name (EncodeJob: encode)."""
    name = type(job).__name__
    return getattr(job, "label", None) or (name[:-3] if name.endswith("Job") else name).lower()


def report(summary, quiet: bool) -> None:
    if not quiet:
        speed = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
        eprint(f"{summary.ok} done, {summary.skipped} skipped, {len(summary.failed)} failed; "
               f"{summary.audio_seconds / 3600:.3f} h of audio in {summary.wall_seconds:.1f} s ({speed:.1f}x real time)")
    if summary.failed:
        eprint(f"{len(summary.failed)} input(s) failed:")
        for o in summary.failed:
            eprint(f"  {display_path(o.source.path)}: {o.error}")


def eprint(*args: Any) -> None:
    text = " ".join(str(a) for a in args)
    sys.stderr.write(text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
    sys.stderr.flush()


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 2 (usage) or 1."""
    try:
        app(args=argv, standalone_mode=True)
    except AudiotokError as exc:
        eprint(f"audiotok: error: {exc}")
        sys.exit(2 if isinstance(exc, UsageError) else 1)
