"""Decode: codes files (``.npz`` / ``.npy`` / ``.ecdc``, and the rows of ``encode --format parquet``
shards) -> audio at the codec's rate.

    from audiotok import decode_files
    summary = decode_files(["tokens/"], "audio/", fmt="flac")
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.devices import Runtime
from ..engine.runner import RunOptions, collect_sources, run_job
from ..engine.sources import CODE_EXTENSIONS
from ..errors import UsageError

FORMATS = ("wav", "flac")


def _load_codes(path: str, row: str | None = None, header_only: bool = False):
    """A codes file (or one row of an ``encode --format parquet`` shard) -> ((model, item, bandwidth), AudioInfo)."""
    from ..formats.audio import AudioInfo
    from ..formats.codes import read_codes
    from ..registry import get_codec

    if row is not None:
        from ..formats.datasets import read_codes_row

        c = read_codes_row(path, row, header_only=header_only)
    else:
        c = read_codes(path)
    spec = get_codec(c.model)
    return (c.model, c.item, c.bandwidth), AudioInfo(spec.sample_rate, spec.channels, c.item.n_samples)


@dataclass
class Decoded:
    """One decoded file and what it was made with (recorded in the audio file and the manifest)."""

    audio: np.ndarray  # float32 [channels, n_samples] at the codec's rate
    codec: str
    weights_sha256: str | None
    bandwidth: float | None


class DecodeJob:
    """What decode does with each codes file: read it, write audio at the codec's rate (with a JSON
    comment naming the codec, its weights' sha256, the codes' bandwidth, the source and the numerics)."""

    command = "decode"

    def __init__(self, out: Path, fmt: str, keep_ext: bool = False):
        from ..engine.sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.out = out
        self.fmt = fmt
        self.load = _load_codes
        self.numerics: dict = {}

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def read_header(self, path: str, row: str | None = None):
        return _load_codes(path, row, header_only=True)[1]

    def finish(self, source, info, dec: Decoded) -> dict:
        import json

        import soundfile as sf

        from .. import __version__
        from ..files import display_path

        made = {"codec": dec.codec, "weights_sha256": dec.weights_sha256, "bandwidth": dec.bandwidth}
        comment = json.dumps({"audiotok": __version__, **made, "source": display_path(source.path),
                              "numerics": self.numerics}, sort_keys=True)

        def write(f, wav):  # encoded in memory first: a full disk is an OSError of f.write, not a libsndfile assertion
            buf = io.BytesIO()
            with sf.SoundFile(buf, "w", info.sample_rate, wav.shape[0], format=self.fmt.upper(), subtype="PCM_16") as snd:
                snd.comment = comment  # WAV: the LIST/INFO ICMT chunk; FLAC: a Vorbis comment
                snd.write(wav.T.clip(-1.0, 1.0))
            f.write(buf.getbuffer())

        path = self.tree.write(source, write, dec.audio)
        return {"output": str(path), "n_samples": int(dec.audio.shape[1]), "out_sample_rate": info.sample_rate,
                "out_channels": int(dec.audio.shape[0]), **made, "numerics": self.numerics}


def read_decoded_comment(path: str) -> dict | None:
    """What a file ``decode`` wrote records about itself (codec, weights sha256, bandwidth, source,
    numerics), or None for audio without that comment."""
    import json

    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            data = json.loads(f.comment or "null")
    except (RuntimeError, ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


class CodecRouter:
    """Decode adapter over every codec: loads each on first use (a folder may mix models)."""

    on_progress = None  # handed to each decoder (progress within a file)

    def __init__(self, checkpoint, device, job: DecodeJob | None = None):
        self.checkpoint, self.device, self.decoders, self.job = checkpoint, device, {}, job
        self.hashes: dict[str, str | None] = {}  # codec -> sha256 of the weights it loaded
        self.pending: dict = {}  # key -> (codec, bandwidth) of items handed to a decoder

    def run(self, batch):
        from ..engine.provenance import numeric_context
        from ..registry import get_codec
        from ..weights import file_sha256

        groups: dict[str, list] = {}
        for key, (model, item, bandwidth) in batch:
            groups.setdefault(model, []).append((key, item))
            self.pending[key] = (model, bandwidth)
        out = []
        for model, items in groups.items():
            if model not in self.decoders:
                spec = get_codec(model)
                codec = spec.load(self.checkpoint, self.device)
                self.decoders[model] = codec.decoder(self.device)
                weights = getattr(codec, "checkpoint_path", None)
                self.hashes[model] = file_sha256(weights, 16) if weights and Path(weights).is_file() else None
                if self.job is not None:
                    self.job.numerics = {**numeric_context(self.device),
                                         **getattr(self.decoders[model], "numerics", dict)()}
            self.decoders[model].on_progress = self.on_progress
            out.extend(self.decoders[model].run(items))
        return [(key, self._decoded(key, res)) for key, res in out]

    def _decoded(self, key, res):
        model, bandwidth = self.pending.pop(key, (None, None))
        if isinstance(res, Exception):
            return res
        return Decoded(res, model, self.hashes.get(model), bandwidth)

    def flush(self):
        return []

    def reset(self) -> None:
        pass


# One keyword per `decode` option, so the API and the CLI stay one-to-one (docs/design.md).
def decode_files(inputs, out: str | Path, *, fmt: str = "wav", checkpoint=None, exclude=None, dry_run: bool = False,
                 keep_ext: bool = False, ext=None, device: str = "auto", threads: int | None = None,
                 batch_seconds: float = 60.0, workers: int = 0, overwrite: bool = False, jsonl=False,
                 progress: bool = False, shard: str | None = None, log_every: float = 10.0):
    """Decode codes files back to 16-bit WAV/FLAC at the codec's rate, trimmed to the original
    length, mirrored under ``out``; returns the ``pipeline.Summary``."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid for decode; choose wav or flac")
    runtime = Runtime.check(device, threads)
    out = Path(out)
    opts = RunOptions(batch_seconds, workers, overwrite, jsonl, progress, shard, log_every).check()
    excluded: list = []
    from ..formats.datasets import expand_rows

    sources, share = collect_sources(inputs, ext or (*CODE_EXTENSIONS, "parquet"), shard, out, fmt, exclude=exclude,
                                     keep_ext=keep_ext, excluded=excluded, check_out=not dry_run, expand=expand_rows)
    if checkpoint is not None and not dry_run and not Path(checkpoint).is_file():
        from ..errors import WeightsError

        raise WeightsError(f"checkpoint file {checkpoint} does not exist; check the --checkpoint path")
    job = DecodeJob(out, fmt, keep_ext)
    weights: dict = {}
    if not dry_run:  # the weights of a dry run are not resolved: not compared
        from ..weights import file_sha256

        weights = {"weights": f"sha256:{file_sha256(checkpoint, 16)}" if checkpoint is not None else "official"}
    job.folder_settings = {"format": fmt, "keep_ext": keep_ext, **weights}
    if dry_run:
        from ..engine.runner import dry_run as plan

        return plan(sources, job, opts, excluded)

    def adapter():
        dev, _ = runtime.start()
        return CodecRouter(checkpoint, dev, job)

    return run_job(sources, share, job, adapter, out, opts)
