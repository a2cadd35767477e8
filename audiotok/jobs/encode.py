"""Encode: audio -> codec codes, for files (``encode_files``) and arrays (``Encoder``).

    from audiotok import encode_files, Encoder

    summary = encode_files(["data/"], "tokens/", model="encodec_24khz", bandwidth=6.0)
    item = Encoder("encodec_24khz", bandwidth=6.0).encode(audio, sample_rate=44100)
    item.codes  # int16 [n_q, frames]
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..engine.devices import Runtime
from ..engine.runner import RunOptions, collect_sources, refuse_mixed_settings, run_job, settings_mismatch
from ..formats import audio
from ..formats.codes import check_format
from ..registry import DEFAULT_CODEC, get_codec

# what makes two runs' codes different in meaning (compared on reruns; numerics are only recorded)
SETTINGS_KEYS = ("model", "bandwidth", "weights_sha256")


def codec_weights(model: str, checkpoint=None, option: str = "--checkpoint"):
    """The weights file of ``model`` (``checkpoint``, else what its spec names: see
    ``weights.resolve_codec_weights``; None for a codec without a weights file) and the first 16 hex
    digits of its sha256; no torch. ``option``: the command's option for that file (in messages)."""
    from ..weights import file_sha256, resolve_codec_weights

    path = resolve_codec_weights(get_codec(model), checkpoint, option)
    return (None, None) if path is None else (path, file_sha256(path, 16))


class EncodeJob:
    """What encode does with each input: decode audio at the codec's rate, write codes."""

    def __init__(self, out: Path, fmt: str, model: str, bandwidth: float, weights_sha256: str | None,
                 keep_ext: bool = False):
        from ..engine.sinks import OutputTree

        spec = get_codec(model)
        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt, self.model, self.bandwidth = fmt, spec.name, bandwidth
        self.settings = {"model": spec.name, "bandwidth": bandwidth, "weights_sha256": weights_sha256}
        self.numerics: dict = {}  # set once the model is built (provenance.numeric_context + adapter shapes)
        self.read_header = audio.read_header
        self.load = functools.partial(audio.read, sample_rate=spec.sample_rate, channels=spec.channels)

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        if not self.tree.done(source):
            return False
        from ..formats.codes import read_settings

        target = self.tree.target(source)
        differs = settings_mismatch(read_settings(str(target)), self.settings, SETTINGS_KEYS)
        if differs is None and self.fmt != "npz":
            differs = self._header_mismatch(str(target))
        if differs is not None:
            raise refuse_mixed_settings(target, differs)
        return True

    def _header_mismatch(self, path: str) -> str | None:
        """.npy / .ecdc hold no settings: compare what they do hold (model, codebook count)."""
        from ..errors import InputError
        from ..formats.codes import read_codes

        try:
            c = read_codes(path)
        except InputError:
            return None  # unreadable: left as it is (rerun with --overwrite to redo it)
        n_q = get_codec(self.model).n_codebooks(self.bandwidth)
        if c.model != self.model:
            return f"model {c.model!r} (asked now: {self.model!r})"
        if c.item.codes.shape[0] != n_q:
            return f"{c.item.codes.shape[0]} codebooks (asked now: {n_q}, bandwidth {self.bandwidth:g})"
        return None

    def finish(self, source, info, item) -> dict:
        from ..formats.codes import write_codes

        settings = {**self.settings, "numerics": self.numerics}
        path = self.tree.write(
            source, lambda f, it: write_codes(f, self.fmt, it, self.model, self.bandwidth, source.path, settings), item
        )
        return {"output": str(path), "frames": int(item.codes.shape[1]), "n_q": int(item.codes.shape[0]),
                "model": self.model, "bandwidth": self.bandwidth, "weights_sha256": self.settings["weights_sha256"],
                "numerics": self.numerics}


# One keyword per `encode` option, so the API and the CLI stay one-to-one (docs/design.md).
def encode_files(inputs, out: str | Path, *, model: str = DEFAULT_CODEC, bandwidth: float | None = None,
                 n_q: int | None = None, checkpoint: str | Path | None = None, fmt: str = "npz", manifest: str | Path | None = None,
                 exclude=None, dry_run: bool = False, keep_ext: bool = False, shard_mb: float = 64.0,
                 ext=None, device: str = "auto", threads: int | None = None, batch_seconds: float = 60.0,
                 workers: int = 1, overwrite: bool = False, jsonl=False, progress: bool = False,
                 shard: str | None = None, log_every: float = 10.0):
    """Encode every input (files, directories, globs, ``-`` for paths on stdin, and/or the entries
    of ``manifest``) into codes under ``out`` (mirroring the input tree, or Parquet shards with
    ``fmt="parquet"``; ``OUT/manifest.jsonl``); returns the ``pipeline.Summary``. ``bandwidth``
    (kbps) or ``n_q`` (a codebook count) chooses the codebooks; neither: the codec's default.

    Options are checked and the weights resolved before torch is imported; the model loads while
    the first inputs decode, and not at all when every output exists."""
    out = Path(out)
    spec = get_codec(model)
    bandwidth = spec.choose_bandwidth(bandwidth, n_q)
    parquet = fmt == "parquet"
    if not parquet:
        check_format(fmt, spec.name)
    runtime = Runtime.check(device, threads)
    opts = RunOptions(batch_seconds, workers, overwrite, jsonl, progress, shard, log_every).check()
    excluded: list = []
    sources, share = collect_sources(inputs, ext, shard, out, None if parquet else fmt, manifest=manifest,
                                     exclude=exclude, keep_ext=keep_ext, excluded=excluded, check_out=not dry_run)
    weights, sha = (None, None) if dry_run else codec_weights(spec.name, checkpoint)  # missing weights fail first
    job = EncodeJob(out, "npz" if parquet else fmt, spec.name, bandwidth, sha, keep_ext)
    if parquet:
        from ..formats.datasets import parquet_job

        job = parquet_job(job, out, "codes", {"model": spec.name, "bandwidth": bandwidth}, share, overwrite, shard_mb)
    # what OUT/settings.json records (the weights are not resolved in a dry run: not compared then)
    job.command, job.out = "encode", out
    job.folder_settings = {"format": fmt, "keep_ext": keep_ext, "model": spec.name, "bandwidth": bandwidth,
                           **({} if dry_run else {"weights_sha256": sha})}
    if dry_run:
        from ..engine.runner import dry_run as plan

        return plan(sources, job, opts, excluded)
    encode_job = getattr(job, "job", job)  # the per-file job inside a Parquet job

    def adapter():  # built by the pipeline once decoding has started (torch loads meanwhile)
        from ..engine.provenance import numeric_context

        dev, _ = runtime.start()
        enc = spec.load(weights, dev).encoder(bandwidth, dev)
        encode_job.numerics = {**numeric_context(dev), **getattr(enc, "numerics", dict)()}
        return enc

    return run_job(sources, share, job, adapter, out, opts)


class Encoder:
    """Codes for arrays in memory, through the same adapter ``encode_files`` uses (identical
    codes for identical audio): ``encode(audio, sample_rate) -> EncodedItem``. ``bandwidth`` or
    ``n_q`` (codebooks) as in ``encode_files``."""

    def __init__(self, model: str = DEFAULT_CODEC, bandwidth: float | None = None, checkpoint=None,
                 device: str = "auto", threads: int | None = None, n_q: int | None = None):
        from ..engine.provenance import numeric_context

        self.spec = get_codec(model)
        self.bandwidth = self.spec.choose_bandwidth(bandwidth, n_q)
        runtime = Runtime.check(device, threads)
        weights, self.weights_sha256 = codec_weights(self.spec.name, checkpoint)
        self.device, _ = runtime.start()
        self.codec = self.spec.load(weights, self.device)
        self.adapter = self.codec.encoder(self.bandwidth, self.device)
        self.numerics = {**numeric_context(self.device), **getattr(self.adapter, "numerics", dict)()}
        self.sample_rate, self.channels, self.frame_rate = self.spec.sample_rate, self.spec.channels, self.spec.frame_rate

    def encode(self, audio_array, sample_rate: int):
        """One recording (``[N]`` or ``[channels, N]`` float, any rate) -> ``EncodedItem``."""
        return self.encode_many([audio_array], sample_rate)[0]

    def encode_many(self, audios, sample_rate: int) -> list:
        from ..engine.pipeline import run_in_memory

        return run_in_memory(self.adapter, [audio.prepare_array(a, sample_rate, self.sample_rate, self.channels)
                                            for a in audios])
