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
from ..sources import AUDIO_EXTENSIONS, discover, display_path, normalise_extensions, shard


@dataclass
class RunOptions:
    """How to run (never what is computed: outputs do not depend on any of these)."""

    batch_seconds: float = 60.0
    workers: int = 1
    overwrite: bool = False
    jsonl: bool | IO[str] = False  # True: stdout; or a text stream
    progress: bool = False
    shard: str | None = None

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
                    suffix: str | None = None):
    """Discover, sort, check the outputs ``OUT/<rel>.<suffix>`` (when given; see
    ``sinks.claim_targets``) and take this process's share. Returns (sources, share)."""
    from ..distributed import current_share
    from ..sinks import OutputTree, claim_targets, prepare_output_dir

    if ext is None:
        ext = AUDIO_EXTENSIONS
    exts = normalise_extensions([ext] if isinstance(ext, str) else [",".join(ext)])
    if not exts:
        raise UsageError("--ext lists no extension")
    share = current_share(shard_opt)
    sources = discover(as_inputs(inputs), exts)
    if not sources:
        raise UsageError("no input files found; check the paths and --ext")
    if out is not None:
        prepare_output_dir(out)  # an existing file or a read-only folder fails before any work
    if out is not None and suffix is not None:
        sources = claim_targets(sources, OutputTree(out, suffix))
    return shard(sources, share.rank, share.world), share


def run_job(sources, share, job, adapter, out: Path | None, opts: RunOptions, unit: str = "audio",
            record: Callable[[Any], None] | None = None):
    """Run the pipeline: manifest under ``out`` (when given), JSON lines, progress; returns the
    ``pipeline.Summary``, whose ``status`` is the exit status (0, or 1 when inputs failed or the
    output folder could not take more data; ``messages`` then say so). ``record`` replaces the
    default per-outcome sink (manifest + JSON lines). A KeyboardInterrupt (or SIGTERM, as
    ``interrupts.Terminated``) propagates once the manifest is closed (finished outputs stay listed)."""
    from .. import pipeline
    from ..interrupts import termination_as_interrupt
    from ..progress import Progress
    from ..sinks import JsonLines, Manifest, manifest_part_name, merge_manifest_parts, prepare_run_output

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

    progress = Progress(enabled=opts.progress, unit=unit)
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
    if manifest is not None and manifest.failure is None:
        merge_manifest_parts(out, share.rank, share.world)
    settle(summary, manifest)
    return summary


def settle(summary, record_file) -> None:
    """``summary.status`` and ``summary.messages``: exit 1 with one sentence when outputs or the
    record file (manifest, score output) could not be written."""
    from .. import pipeline

    summary.messages = []
    summary.status = pipeline.final_status(summary, record_file, summary.messages.append)


def report(summary, quiet: bool) -> None:
    """The closing lines on stderr: counts, speed, and every failed input with its reason."""
    if not quiet:
        speed = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
        eprint(f"{summary.ok} done, {summary.skipped} skipped, {len(summary.failed)} failed; "
               f"{summary.audio_seconds / 3600:.3f} h of audio in {summary.wall_seconds:.1f} s ({speed:.1f}x real time)")
    for src, warning in getattr(summary, "warnings", []):
        eprint(f"warning: {display_path(src.path)} {warning}")
    if summary.failed:
        eprint(f"{len(summary.failed)} input(s) failed:")
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
        if k in stored and k in wanted and stored[k] != wanted[k]:
            return f"{k} {stored[k]!r} (asked now: {wanted[k]!r})"
    return None


def refuse_mixed_settings(target: Path, what: str) -> UsageError:
    return UsageError(f"{display_path(str(target))} was made with {what}; rerun with --overwrite to replace "
                      "such outputs, or write to another -o (one output tree holds one setting)")
