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
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or progress lines (errors are still listed).")
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


def collect_sources(inputs: list[str] | None, ext: str, shard_opt: str | None, out: Path | None = None,
                    suffix: str | None = None, *, manifest: Path | None = None, exclude: list[str] | None = None,
                    keep_ext: bool = False, excluded: list | None = None):
    """Discover (paths and/or ``--manifest`` entries), drop ``--exclude`` matches (appended to
    ``excluded`` when given), sort, check the outputs ``OUT/<rel>.<suffix>`` (when given; see
    ``sinks.claim_targets``) and take this process's share. Returns (sources, share)."""
    from ..distributed import current_share
    from ..sinks import OutputTree, claim_targets
    from ..sources import exclude as drop_excluded
    from ..sources import read_manifest_inputs

    exts = normalise_extensions([ext])
    if not exts:
        raise UsageError("--ext lists no extension")
    share = current_share(shard_opt)
    if not inputs and manifest is None:
        raise UsageError("give input paths (or - for paths on stdin) or --manifest FILE")
    sources = discover(inputs, exts) if inputs else []
    if manifest is not None:
        sources = sorted(sources + read_manifest_inputs(manifest), key=lambda s: os.fsencode(s.rel))
    sources, dropped = drop_excluded(sources, exclude or [])
    if excluded is not None:
        excluded.extend(dropped)
    if not sources:
        raise UsageError("no input files found; check the paths, --ext and --exclude")
    if out is not None and suffix is not None:
        sources = claim_targets(sources, OutputTree(out, suffix, keep_ext=keep_ext))
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
        if hasattr(job, "close"):
            job.close()  # e.g. the last Parquet shard (also after Ctrl-C: finished rows are kept)
    merge_manifest_parts(opts.out, share.rank, share.world)
    report(summary, opts.quiet)
    return summary.exit_code


def dry_run(sources, job, opts: RunOptions, excluded=()) -> int:
    """``--dry-run``: one line (or, with ``--jsonl``, one JSON object) per input on stdout saying
    what a run would do, a summary on stderr; nothing is written. Exit 1 when inputs would be refused."""
    from .. import pipeline
    from ..sinks import JsonLines

    records = pipeline.plan(sources, job, overwrite=opts.overwrite)
    records += [{"input": s.path, **pipeline.segment_fields(s), "status": "excluded"} for s in excluded]
    stdout = JsonLines() if opts.jsonl else None
    words = {"todo": "todo", "skipped": "skip", "error": "refuse", "excluded": "exclude"}
    for rec in records:
        if stdout is not None:
            stdout.emit({**rec, "input": display_path(rec["input"])})
            continue
        name = display_path(rec["input"])
        if "offset" in rec:
            end = "end" if rec["segment_duration"] is None else f"{rec['offset'] + rec['segment_duration']:g} s"
            name += f" [{rec['offset']:g} s - {end}]"
        line = f"{words[rec['status']]:8s}{name}"
        if rec["status"] == "todo":
            line += f" -> {display_path(rec['output'])} ({rec['duration']:.3f} s)" if rec.get("output") else \
                f" ({rec['duration']:.3f} s)"
        elif rec["status"] == "skipped":
            line += f" ({display_path(rec['output'])} exists)" if rec.get("output") else ""
        elif rec["status"] == "error":
            line += f": {rec['error']}"
        sys.stdout.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
    sys.stdout.flush()
    count = {k: sum(r["status"] == k for r in records) for k in words}
    seconds = sum(r.get("duration", 0.0) for r in records if r["status"] == "todo")
    from ..progress import format_amount, pick_unit

    unit, per = pick_unit(seconds)
    eprint(f"dry run: {count['todo']} to do ({format_amount(seconds, per)} {unit} of audio), {count['skipped']} skipped, "
           f"{count['error']} refused, {count['excluded']} excluded; nothing was written")
    return 1 if count["error"] else 0


def _label(job: Any) -> str:
    """The word progress lines start with: the job's ``label``, else its class name (EncodeJob: encode)."""
    name = type(job).__name__
    return getattr(job, "label", None) or (name[:-3] if name.endswith("Job") else name).lower()


def report(summary, quiet: bool) -> None:
    from ..progress import plural

    if not quiet:
        speed = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
        from ..progress import format_amount, pick_unit

        unit, per = pick_unit(summary.audio_seconds)
        eprint(f"{summary.ok} done, {summary.skipped} skipped, {len(summary.failed)} failed; "
               f"{format_amount(summary.audio_seconds, per)} {unit} of audio in {summary.wall_seconds:.1f} s "
               f"({speed:.1f}x real time)")
    if summary.failed:
        eprint(f"{plural(len(summary.failed), 'input')} failed:")
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
