"""Running a job over inputs: discover and claim outputs, take this process's share, drive the
pipeline, write the manifest (and JSON lines), return a ``Summary``. Every command and every
``*_files`` function of the Python API goes through ``run_job``; the CLI only parses options for it
and turns the summary into an exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError
from .sources import (
    AUDIO_EXTENSIONS,
    check_inputs_exist,
    discover,
    display_path,
    normalise_extensions,
    shard,
)


@dataclass
class RunOptions:
    """How to run (never what is computed: outputs do not depend on any of these)."""

    batch_seconds: float = 60.0
    workers: int = 1
    overwrite: bool = False
    jsonl: bool | IO[str] = False  # True: stdout; or a text stream
    progress: bool = False
    shard: str | None = None
    log_every: float = 10.0  # stderr not a terminal: a progress line every so many seconds (0: none)

    def check(self) -> RunOptions:
        if self.batch_seconds <= 0:
            raise UsageError(f"batch_seconds must be positive, not {self.batch_seconds}")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 or more, not {self.workers}")
        return self


def as_inputs(inputs: str | Path | Sequence[str | Path]) -> list[str]:
    if isinstance(inputs, (str, Path)):
        return [str(inputs)]
    return [str(i) for i in inputs]


def collect_sources(inputs, ext: str | Sequence[str] | None, shard_opt: str | None, out: Path | None = None,
                    suffix: str | None = None, *, manifest: str | Path | None = None,
                    exclude: Sequence[str] | None = None, keep_ext: bool = False, excluded: list | None = None,
                    check_out: bool = True):
    """Discover (paths and/or ``manifest`` entries: path + optional offset/duration segments),
    drop ``exclude`` glob matches (appended to ``excluded`` when given), sort, check the outputs
    ``OUT/<rel>.<suffix>`` (when given; see ``sinks.claim_targets``) and take this process's
    share. Returns (sources, share)."""
    import os

    from ..files import prepare_output_dir
    from .distributed import current_share
    from .sinks import OutputTree, claim_targets
    from .sources import exclude as drop_excluded
    from .sources import read_manifest_inputs

    if ext is None:
        ext = AUDIO_EXTENSIONS
    exts = normalise_extensions([ext] if isinstance(ext, str) else [",".join(ext)])
    if not exts:
        raise UsageError("--ext lists no extension")
    share = current_share(shard_opt)
    paths = as_inputs(inputs) if inputs is not None else []
    if not paths and manifest is None:
        raise UsageError("give input paths (or - for paths on stdin) or --manifest FILE")
    check_inputs_exist(paths)
    sources = discover(paths, exts) if paths else []
    if manifest is not None:
        sources = sorted(sources + read_manifest_inputs(manifest), key=lambda s: os.fsencode(s.rel))
    sources, dropped = drop_excluded(sources, list(exclude or []))
    if excluded is not None:
        excluded.extend(dropped)
    if not sources:
        raise UsageError("no input files found; check the paths, --ext and --exclude")
    if out is not None:
        check_outputs_apart(paths, out, suffix, exts)
    if out is not None and check_out:
        prepare_output_dir(out)  # an existing file or a read-only folder fails before any work
    if out is not None and suffix is not None:
        sources = claim_targets(sources, OutputTree(out, suffix, keep_ext=keep_ext))
    return shard(sources, share.rank, share.world), share


def check_outputs_apart(inputs: Sequence[str], out: Path, suffix: str | None, exts: Sequence[str],
                        option: str = "-o") -> None:
    """Outputs written inside an input folder: refused when the next run would take them for inputs
    (their extension is one the command reads), otherwise allowed with a note on stderr."""
    import os

    target = os.path.realpath(out)
    for p in inputs:
        if p == "-" or not os.path.isdir(p):
            continue
        root = os.path.realpath(p)
        if os.path.commonpath([root, target]) != root:
            continue
        ext = (suffix or "").lstrip(".").rsplit(".", 1)[-1].lower()
        if ext and ext in exts:
            raise UsageError(f"{option} {out} is inside the input folder {p}, so the .{ext} files written there would be "
                             "read as inputs by the next run; choose a folder outside the inputs")
        eprint(f"note: {option} {out} is inside the input folder {p}; the outputs are written beside the inputs")
        return


def run_job(sources, share, job, adapter, out: Path | None, opts: RunOptions, unit: str = "audio",
            record: Callable[[Any], None] | None = None):
    """Run the pipeline: manifest under ``out`` (when given), JSON lines, progress; returns the
    ``pipeline.Summary``, whose ``status`` is the exit status (0, or 1 when inputs failed or the
    output folder could not take more data; ``messages`` then say so). ``record`` replaces the
    default per-outcome sink (manifest + JSON lines). A KeyboardInterrupt (or SIGTERM, as
    ``interrupts.Terminated``) propagates once the manifest is closed (finished outputs stay listed)."""
    from ..files import prepare_run_output
    from . import pipeline
    from .interrupts import termination_as_interrupt
    from .progress import Progress
    from .sinks import JsonLines, Manifest, manifest_part_name, merge_manifest_parts

    manifest = None
    if out is not None:
        prepare_run_output(out)
        manifest = Manifest(out / manifest_part_name(share.rank, share.world))
    stream = None
    if opts.jsonl:
        stream = JsonLines(None if opts.jsonl is True else opts.jsonl)

    def default_record(outcome: Any) -> None:
        if manifest is not None:
            manifest.append(outcome.record)
        if stream is not None:
            stream.emit(outcome.record)

    progress = Progress(enabled=opts.progress, unit=unit, log_every=opts.log_every, label=_label(job))
    try:
        with progress, termination_as_interrupt():
            summary = pipeline.run(
                sources, job, adapter,
                batch_seconds=opts.batch_seconds, workers=opts.workers, overwrite=opts.overwrite,
                record_sink=record or default_record, progress=progress,
            )
    finally:  # also when building the model fails (no GPU, damaged weights): the lines so far stay
        if manifest is not None:
            manifest.close()
        close = getattr(job, "close", None)
        if close is not None:
            close()  # e.g. the last Parquet shard (also after Ctrl-C: finished rows are kept)
    if manifest is not None and manifest.failure is None:
        merge_manifest_parts(out, share.rank, share.world)
    settle(summary, manifest)
    return summary


def settle(summary, record_file) -> None:
    """``summary.status`` and ``summary.messages``: exit 1 with one sentence when outputs or the
    record file (manifest, score output) could not be written."""
    from . import pipeline

    summary.messages = []
    summary.status = pipeline.final_status(summary, record_file, summary.messages.append)


def dry_run(sources, job, opts: RunOptions, excluded=()):
    """``dry_run=True``: one line (or, with ``jsonl``, one JSON object) per input on stdout saying
    what a run would do, a summary on stderr; nothing is written. Returns a ``pipeline.Summary``
    with ``dry_run`` set (``status`` 1 when inputs would be refused)."""
    import sys

    from . import pipeline
    from .sinks import JsonLines

    records = pipeline.plan(sources, job, overwrite=opts.overwrite)
    records += [{"input": s.path, **pipeline.segment_fields(s), "status": "excluded"} for s in excluded]
    stdout = (JsonLines(None if opts.jsonl is True else opts.jsonl)) if opts.jsonl else None
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
    from .progress import format_amount, pick_unit

    unit, per = pick_unit(seconds)
    eprint(f"dry run: {count['todo']} to do ({format_amount(seconds, per)} {unit} of audio), {count['skipped']} skipped, "
           f"{count['error']} refused, {count['excluded']} excluded; nothing was written")
    summary = pipeline.Summary()
    summary.dry_run = records
    summary.status = 1 if count["error"] else 0
    summary.messages = []
    return summary


def _label(job: Any) -> str:
    """The word progress lines start with: the job's ``label``, else its class name (EncodeJob: encode)."""
    name = type(job).__name__
    return getattr(job, "label", None) or (name[:-3] if name.endswith("Job") else name).lower()


def report(summary, quiet: bool) -> None:
    """The closing lines on stderr: counts, speed, and every failed input with its reason."""
    from .progress import format_amount, pick_unit, plural

    if getattr(summary, "dry_run", None) is not None:
        return  # the dry run printed its own summary
    if not quiet:
        speed = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
        unit, per = pick_unit(summary.audio_seconds)
        eprint(f"{summary.ok} done, {summary.skipped} skipped, {len(summary.failed)} failed; "
               f"{format_amount(summary.audio_seconds, per)} {unit} of audio in {summary.wall_seconds:.1f} s "
               f"({speed:.1f}x real time)")
    for src, warning in getattr(summary, "warnings", []):
        eprint(f"warning: {display_path(src.path)} {warning}")
    if summary.failed:
        eprint(f"{plural(len(summary.failed), 'input')} failed:")
        for o in summary.failed:
            eprint(f"  {display_path(o.source.path)}: {o.error}")
    for message in getattr(summary, "messages", []):
        eprint(message)


def eprint(*args: Any) -> None:
    text = " ".join(str(a) for a in args)
    sys.stderr.write(text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
    sys.stderr.flush()


def settings_mismatch(stored: dict | None, wanted: dict, keys: Sequence[str]) -> str | None:
    """A description of the first setting in ``keys`` that differs (None when all agree or
    nothing was stored)."""
    if not stored:
        return None
    for k in keys:
        if k in stored and wanted.get(k) is not None and stored[k] != wanted[k]:
            return f"{k} {stored[k]!r} (asked now: {wanted[k]!r})"
    return None


def refuse_mixed_settings(target: Path, what: str) -> UsageError:
    return UsageError(f"{display_path(str(target))} was made with {what}; rerun with --overwrite to replace "
                      "such outputs, or write to another -o (one output tree holds one setting)")
