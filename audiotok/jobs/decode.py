"""Decode: codes files (``.npz`` / ``.npy`` / ``.ecdc``) -> audio at the codec's rate.

    from audiotok import decode_files
    summary = decode_files(["tokens/"], "audio/", fmt="flac")
"""

from __future__ import annotations

import io
from pathlib import Path

from ..engine.devices import check_device, check_threads
from ..engine.runner import RunOptions, collect_sources, run_job
from ..engine.sources import CODE_EXTENSIONS
from ..errors import UsageError

FORMATS = ("wav", "flac")


def _load_codes(path: str):
    from ..formats.audio import AudioInfo
    from ..formats.codes import read_codes
    from ..registry import get_codec

    c = read_codes(path)
    spec = get_codec(c.model)
    return (c.model, c.item), AudioInfo(spec.sample_rate, spec.channels, c.item.n_samples)


class DecodeJob:
    """What decode does with each codes file: read it, write audio at the codec's rate."""

    def __init__(self, out: Path, fmt: str, keep_ext: bool = False):
        from ..engine.sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt = fmt
        self.load = _load_codes
        self.numerics: dict = {}

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def probe(self, path: str):
        return _load_codes(path)[1]

    def finish(self, source, info, wav) -> dict:
        import soundfile as sf

        def write(f, data):  # encoded in memory first: a full disk is an OSError of f.write, not a libsndfile assertion
            buf = io.BytesIO()
            sf.write(buf, data.T.clip(-1.0, 1.0), info.sample_rate, format=self.fmt.upper(), subtype="PCM_16")
            f.write(buf.getbuffer())

        path = self.tree.write(source, write, wav)
        return {"output": str(path), "n_samples": int(wav.shape[1]), "out_sample_rate": info.sample_rate,
                "out_channels": int(wav.shape[0]), "numerics": self.numerics}


class CodecRouter:
    """Decode adapter over every codec: loads each on first use (a folder may mix models)."""

    on_progress = None  # handed to each decoder (progress within a file)

    def __init__(self, checkpoint, device, job: DecodeJob | None = None):
        self.checkpoint, self.device, self.decoders, self.job = checkpoint, device, {}, job

    def run(self, batch):
        from ..engine.provenance import runtime
        from ..registry import get_codec

        groups: dict[str, list] = {}
        for key, (model, item) in batch:
            groups.setdefault(model, []).append((key, item))
        out = []
        for model, items in groups.items():
            if model not in self.decoders:
                spec = get_codec(model)
                self.decoders[model] = spec.load(self.checkpoint, self.device).decoder(self.device)
                if self.job is not None:
                    self.job.numerics = runtime(self.device)
            self.decoders[model].on_progress = self.on_progress
            out.extend(self.decoders[model].run(items))
        return out

    def flush(self):
        return []

    def reset(self) -> None:
        pass


def decode_files(inputs, out: str | Path, *, fmt: str = "wav", checkpoint=None, exclude=None, dry_run: bool = False,
                 keep_ext: bool = False, ext=None, device: str = "auto", threads: int | None = None,
                 batch_seconds: float = 60.0, workers: int = 0, overwrite: bool = False, jsonl=False,
                 progress: bool = False, shard: str | None = None, log_every: float = 10.0):
    """Decode codes files back to 16-bit WAV/FLAC at the codec's rate, trimmed to the original
    length, mirrored under ``out``; returns the ``pipeline.Summary``."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid for decode; choose wav or flac")
    check_device(device)
    check_threads(threads)
    out = Path(out)
    opts = RunOptions(batch_seconds, workers, overwrite, jsonl, progress, shard, log_every).check()
    excluded: list = []
    sources, share = collect_sources(inputs, ext or CODE_EXTENSIONS, shard, out, fmt, exclude=exclude,
                                     keep_ext=keep_ext, excluded=excluded, check_out=not dry_run)
    if checkpoint is not None and not dry_run and not Path(checkpoint).is_file():
        from ..errors import WeightsError

        raise WeightsError(f"checkpoint file {checkpoint} does not exist; check the --checkpoint path")
    job = DecodeJob(out, fmt, keep_ext)
    if dry_run:
        from ..engine.runner import dry_run as plan

        return plan(sources, job, opts, excluded)

    def adapter():
        from ..engine.devices import apply_threads, resolve_device

        apply_threads(threads)
        return CodecRouter(checkpoint, resolve_device(device), job)

    return run_job(sources, share, job, adapter, out, opts)
