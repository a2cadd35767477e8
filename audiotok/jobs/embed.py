"""Embed: audio -> EnCodecMAE embeddings per file (pooled or frame-level).

    from audiotok import embed_files
    summary = embed_files(["data/"], "emb/", model="mel256-ec-base_st", pool="mean", stack="feats.npy")
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..engine.devices import Runtime
from ..engine.runner import RunOptions, collect_sources, refuse_mixed_settings, run_job, settings_mismatch
from ..errors import UsageError
from ..formats import audio

FORMATS = ("npz", "npy", "parquet")
SETTINGS_KEYS = ("model", "weights_sha256", "layer", "pooling", "chunk_seconds", "overlap", "dtype")


class EmbedJob:
    """What embed does with each input: decode to 24 kHz mono, write the embedding."""

    compare_settings = True  # a dry run knows only some settings: it does not compare them

    def __init__(self, out: Path, fmt: str, meta: dict, keep_ext: bool = False):
        from ..embedders.encodecmae import SAMPLE_RATE
        from ..engine.sinks import OutputTree

        self.tree = OutputTree(out, "." + fmt, keep_ext=keep_ext)
        self.fmt, self.meta = fmt, meta
        self.numerics: dict = {}
        self.read_header = audio.read_header
        self.load = functools.partial(audio.read, sample_rate=SAMPLE_RATE, channels=1)

    def target(self, source):
        return self.tree.target(source)

    def is_done(self, source) -> bool:
        if not self.tree.done(source):
            return False
        if not self.compare_settings:
            return True
        target = self.tree.target(source)
        differs = settings_mismatch(_stored_meta(target), self.meta, SETTINGS_KEYS)
        if differs is None and self.fmt == "npy":
            differs = self._shape_mismatch(target)
        if differs is not None:
            raise refuse_mixed_settings(target, differs)
        return True

    def _shape_mismatch(self, target: Path) -> str | None:
        try:
            ndim = np.load(target, mmap_mode="r", allow_pickle=False).ndim
        except (OSError, ValueError):
            return None
        want = (1 if self.meta["pooling"] != "none" else 2) + (1 if self.meta["layer"] == "all" else 0)
        if ndim != want:
            return f"a {ndim}-D embedding (asked now: {want}-D, --pool {self.meta['pooling']} --layer {self.meta['layer']})"
        return None

    def finish(self, source, info, emb) -> dict:
        path = self.tree.write(source, self._write, emb)
        return {"output": str(path), "shape": list(emb.array.shape), "frames": int(emb.timestamps.shape[0]),
                **{k: self.meta[k] for k in ("model", "layer", "pooling")}, "numerics": self.numerics}

    def _write(self, f, emb) -> None:
        if self.fmt == "npy":
            np.save(f, emb.array)
            return
        import json

        np.savez(f, embedding=emb.array, timestamps=emb.timestamps,
                 **{k: np.asarray("" if v is None else v) for k, v in self.meta.items()},
                 numerics=np.array(json.dumps(self.numerics, sort_keys=True)))


def _stored_meta(path: Path) -> dict | None:
    """The settings an ``embed`` .npz was written with (None for .npy or unreadable files)."""
    if path.suffix.lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for k in SETTINGS_KEYS:
                if k in z.files:
                    v = z[k].item()
                    out[k] = None if v == "" else v
            return out
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _folder_settings(fmt: str, keep_ext: bool, meta: dict) -> dict:
    """What ``OUT/settings.json`` records for embed (the run's settings that change the arrays)."""
    return {"format": fmt, "keep_ext": keep_ext, **{k: meta[k] for k in SETTINGS_KEYS if k in meta}}


def write_stack(stack: Path, sources, job: EmbedJob) -> int:
    """``--stack``: see ``audiotok.formats.stack`` (the ``[N, D]`` matrix + ``FILE.paths.jsonl``)."""
    from ..formats.stack import write_stack as write

    return write(stack, [(s.path, job.target(s)) for s in sources if not s.error])


# One keyword per `embed` option, so the API and the CLI stay one-to-one (docs/design.md).
def embed_files(inputs, out: str | Path, *, model: str = "mel256-ec-base_st", layer: int | str = -1,
                pool: str = "mean", chunk_seconds: float = 4.0, overlap: float = 0.0, dtype: str = "float32",
                fmt: str = "npz", stack: str | Path | None = None, manifest: str | Path | None = None,
                exclude=None, dry_run: bool = False, keep_ext: bool = False, shard_mb: float = 64.0, ext=None,
                device: str = "auto", threads: int | None = None, batch_seconds: float = 60.0, workers: int = 1,
                overwrite: bool = False, jsonl=False, progress: bool = False, shard: str | None = None,
                log_every: float = 10.0):
    """Embed every input with EnCodecMAE under ``out`` (per-file ``.npz``/``.npy``, or Parquet
    shards with ``fmt="parquet"``); returns the ``pipeline.Summary`` (with ``stacked``: the number
    of rows written to ``stack``, when asked)."""
    from ..embedders.options import check_layer_spelling, check_options

    check_options(pool, dtype, chunk_seconds, overlap)
    check_layer_spelling(layer)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not valid for embed; choose npz, npy or parquet")
    if stack is not None and pool == "none":
        raise UsageError("--stack needs pooled embeddings; use --pool mean, max or meanstd")
    if stack is not None and fmt == "parquet":
        raise UsageError("--stack reads per-file outputs; use --format npz or npy with it (Parquet rows already form one table)")
    runtime = Runtime.check(device, threads)
    out = Path(out)
    parquet = fmt == "parquet"
    opts = RunOptions(batch_seconds, workers, overwrite, jsonl, progress, shard, log_every).check()
    excluded: list = []
    sources, share = collect_sources(inputs, ext, shard, out, None if parquet else fmt, manifest=manifest,
                                     exclude=exclude, keep_ext=keep_ext, excluded=excluded, check_out=not dry_run)
    if stack is not None and share.world > 1:
        raise UsageError("--stack needs every input in one process; drop --shard/torchrun or stack the outputs afterwards")
    if stack is not None and not dry_run:  # written after the run: checked before it
        from ..files import prepare_output_file
        from ..formats.stack import stack_paths

        for path in stack_paths(stack):
            prepare_output_file(path, "--stack")
    if dry_run:  # before loading the model; Parquet settings are not all known yet, so not compared
        from ..engine.runner import dry_run as plan
        from ..formats.datasets import parquet_job

        job = EmbedJob(out, "npz" if parquet else fmt, {"pooling": pool, "layer": str(layer)}, keep_ext)
        job.compare_settings = False
        if parquet:
            job = parquet_job(job, out, "embedding", {}, share, overwrite, shard_mb, check_settings=False)
        job.command, job.out = "embed", out
        job.folder_settings = _folder_settings(fmt, keep_ext, {
            "model": str(model), "layer": "all" if str(layer).strip().lower() == "all" else str(int(layer)),
            "pooling": pool, "chunk_seconds": float(chunk_seconds), "overlap": float(overlap), "dtype": dtype})
        return plan(sources, job, opts, excluded)
    from ..embedders.chunking import MaeAdapter
    from ..embedders.encodecmae import resolve_layers
    from ..engine.provenance import numeric_context
    from ..registry import ENCODECMAE
    from ..weights import file_sha256

    dev, _ = runtime.start()
    net, path = ENCODECMAE.load(model)
    resolve_layers(str(layer), net.cfg.layers)  # a bad layer fails before any work
    layer_value: int | str = "all" if str(layer).strip().lower() == "all" else int(layer)
    adapter = MaeAdapter(net, device=dev, layer=layer_value, pool=pool, dtype=dtype,
                         chunk_seconds=chunk_seconds, overlap=overlap)
    sha = file_sha256(path, 16) if Path(path).is_file() else file_sha256(Path(path) / "model.pt", 16)
    meta = {"model": str(model), "weights_sha256": sha, "layer": str(layer_value), "pooling": pool,
            "frame_rate": net.cfg.frame_rate, "sample_rate": adapter.sample_rate, "chunk_seconds": float(chunk_seconds),
            "overlap": float(overlap), "dtype": dtype}
    embed_job = EmbedJob(out, "npz" if parquet else fmt, meta, keep_ext)
    embed_job.numerics = {**numeric_context(dev), "rows": adapter.rows[max(adapter.shapes)]}
    job = embed_job
    if parquet:
        from ..formats.datasets import parquet_job

        settings = {("model_sample_rate" if k == "sample_rate" else k): v for k, v in meta.items()}
        job = parquet_job(embed_job, out, "embedding", settings, share, overwrite, shard_mb)
    job.command = "embed"
    job.folder_settings = _folder_settings(fmt, keep_ext, meta)
    summary = run_job(sources, share, job, adapter, out, opts)
    summary.stacked = write_stack(Path(stack), sources, embed_job) if stack is not None else None
    return summary
