"""``audiotok encode`` (audio -> EnCodec codes) and ``audiotok decode`` (codes -> audio)."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from ..errors import UsageError
from ..sources import CODE_EXTENSIONS
from . import base as cli
from .base import app


class EncodeJob:
    """What encode does with each input: decode audio at the model rate, write codes."""

    def __init__(self, out: Path, fmt: str, model: str, bandwidth: float, keep_ext: bool = False):
        from .. import audio
        from ..models.encodec_spec import CHANNELS, SAMPLE_RATES
        from ..sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt, self.model, self.bandwidth = fmt, model, bandwidth
        self.probe = audio.probe
        self.load = functools.partial(audio.read, sample_rate=SAMPLE_RATES[model], channels=CHANNELS[model])

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def finish(self, source, info, item) -> dict:
        from ..codes import write_codes

        path = self.tree.write(
            source, lambda f, it: write_codes(f, self.fmt, it, self.model, self.bandwidth, source.path), item
        )
        return {"output": str(path), "frames": int(item.codes.shape[1]), "n_q": int(item.codes.shape[0]),
                "model": self.model, "bandwidth": self.bandwidth}


@app.command()
def encode(
    inputs: list[str] = cli.INPUTS_OR_MANIFEST,
    out: Path = cli.OUT,
    model: str = typer.Option("encodec_24khz", "--model", "-m", help="encodec_24khz or encodec_48khz."),
    bandwidth: float = typer.Option(6.0, "--bandwidth", "-b",
                                    help="kbps: 1.5, 3, 6, 12, 24 (24 kHz) or 3, 6, 12, 24 (48 kHz)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="EnCodec weights file (default: official, torch hub cache)."),
    fmt: str = typer.Option("npz", "--format", "-f",
                            help="npz (codes + metadata), npy (bare codes, 24 kHz), ecdc or parquet (dataset shards)."),
    manifest: Path = cli.MANIFEST,
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    shard_mb: float = cli.SHARD_MB,
    ext: str = cli.EXT,
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    overwrite: bool = cli.OVERWRITE,
    jsonl: bool = cli.JSONL,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
    log_every: float = cli.LOG_EVERY,
) -> None:
    """Encode audio files into EnCodec codes, mirroring the input tree under OUT."""
    from ..codes import check_format
    from ..models.encodec_spec import check_bandwidth, check_device
    from ..weights import resolve_encodec

    bandwidth = check_bandwidth(model, bandwidth)
    parquet = fmt == "parquet"
    if not parquet:
        check_format(fmt, model)
    check_device(device)
    sources, share = cli.collect_sources(inputs, ext, shard, out, None if parquet else fmt, manifest=manifest,
                                         exclude=exclude, keep_ext=keep_ext, excluded=(excluded := []))
    job = EncodeJob(out, "npz" if parquet else fmt, model, bandwidth, keep_ext)
    if parquet:
        from ..datasets import parquet_job

        job = parquet_job(job, out, "codes", {"model": model, "bandwidth": bandwidth}, share, overwrite, shard_mb)
    opts = cli.RunOptions(out, batch_seconds, workers, overwrite, jsonl, quiet, shard, log_every=log_every)
    if dry_run:
        raise typer.Exit(cli.dry_run(sources, job, opts, excluded))
    weights = resolve_encodec(model, checkpoint)  # missing weights fail before any work

    def adapter():  # built by the pipeline once decoding has started (torch loads meanwhile)
        from ..models.codec import CodecEncoder, load_codec, resolve_device

        dev = resolve_device(device)
        return CodecEncoder(load_codec(model, weights, dev), bandwidth, dev)

    raise typer.Exit(cli.run_job(sources, share, job, adapter, opts))


class DecodeJob:
    """What decode does with each codes file: read it, write audio at the model's rate."""

    def __init__(self, out: Path, fmt: str, keep_ext: bool = False):
        from ..sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt = fmt
        self.load = _load_codes

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        return self.tree.done(source)

    def probe(self, path: str):
        from ..audio import AudioInfo
        from ..codes import read_codes
        from ..models.encodec_spec import SAMPLE_RATES

        c = read_codes(path)
        return AudioInfo(SAMPLE_RATES[c.model], 0, c.item.n_samples)

    def finish(self, source, info, wav) -> dict:
        import soundfile as sf

        def write(f, data):
            sf.write(f, data.T.clip(-1.0, 1.0), info.sample_rate, format=self.fmt.upper(), subtype="PCM_16")

        path = self.tree.write(source, write, wav)
        return {"output": str(path), "n_samples": int(wav.shape[1]), "out_sample_rate": info.sample_rate,
                "out_channels": int(wav.shape[0])}


def _load_codes(path: str):
    from ..audio import AudioInfo
    from ..codes import read_codes
    from ..models.encodec_spec import SAMPLE_RATES

    c = read_codes(path)
    return (c.model, c.item), AudioInfo(SAMPLE_RATES[c.model], 0, c.item.n_samples)


class _ModelRouter:
    """Decode adapter over both models: loads each codec on first use."""

    on_progress = None  # handed to each decoder (progress within a file)

    def __init__(self, checkpoint, device):
        self.checkpoint, self.device, self.decoders = checkpoint, device, {}

    def run(self, batch):
        from ..models.codec import CodecDecoder, load_codec

        groups: dict[str, list] = {}
        for key, (model, item) in batch:
            groups.setdefault(model, []).append((key, item))
        out = []
        for model, items in groups.items():
            if model not in self.decoders:
                self.decoders[model] = CodecDecoder(load_codec(model, self.checkpoint, self.device), self.device)
            self.decoders[model].on_progress = self.on_progress
            out.extend(self.decoders[model].run(items))
        return out


@app.command()
def decode(
    inputs: list[str] = cli.INPUTS,
    out: Path = cli.OUT,
    fmt: str = typer.Option("wav", "--format", "-f", help="wav or flac (16-bit PCM at the model's rate)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="EnCodec weights file (default: official, torch hub cache)."),
    ext: str = typer.Option(",".join(CODE_EXTENSIONS), "--ext", help="Extensions to take from directories."),
    exclude: list[str] = cli.EXCLUDE,
    dry_run: bool = cli.DRY_RUN,
    keep_ext: bool = cli.KEEP_EXT,
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = typer.Option(0, "--workers", min=0, help="Reader processes (0: one background thread)."),
    overwrite: bool = cli.OVERWRITE,
    jsonl: bool = cli.JSONL,
    quiet: bool = cli.QUIET,
    shard: str = cli.SHARD,
    log_every: float = cli.LOG_EVERY,
) -> None:
    """Decode .npz / .npy / .ecdc codes back to audio, trimmed to the original length."""
    from ..models.codec import resolve_device

    if fmt not in ("wav", "flac"):
        raise UsageError(f"--format {fmt!r} is not valid for decode; choose wav or flac")
    sources, share = cli.collect_sources(inputs, ext, shard, out, fmt, exclude=exclude, keep_ext=keep_ext,
                                         excluded=(excluded := []))
    job = DecodeJob(out, fmt, keep_ext)
    opts = cli.RunOptions(out, batch_seconds, workers, overwrite, jsonl, quiet, shard, log_every=log_every)
    if dry_run:
        raise typer.Exit(cli.dry_run(sources, job, opts, excluded))
    dev = resolve_device(device)
    raise typer.Exit(cli.run_job(sources, share, job, _ModelRouter(checkpoint, dev), opts))
