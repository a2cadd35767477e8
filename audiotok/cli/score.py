"""``audiotok score``: how predictable each audio file is under an audio LM (one JSON line per file and model)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from ..errors import UsageError
from . import base as cli
from .base import app


def pair_models(models: list[str], checkpoints: list[Path]) -> list[tuple[str, Path | None]]:
    """``--model`` / ``--checkpoint`` pairs, in order. Without ``--model`` each checkpoint names its arch;
    ``encodec-lm`` may come last without a checkpoint (official weights from the torch hub cache)."""
    from ..models.lm import MODELS, load_checkpoint

    for m in models:
        if m not in MODELS:
            raise UsageError(f"--model {m!r} is not valid; choose one of {', '.join(MODELS)}")
    if not models:
        if not checkpoints:
            raise UsageError("give --model (whisper-gpt, token-gpt or encodec-lm) and/or --checkpoint")
        models = [load_checkpoint(c).config.arch for c in checkpoints]
    for m in models[len(checkpoints):]:
        if m != "encodec-lm":
            raise UsageError(f"--model {m} needs --checkpoint (a file written by `audiotok train lm`)")
    if len(checkpoints) == len(models):
        pairs = list(zip(models, checkpoints))
    elif len(checkpoints) == len(models) - 1 and models[-1] == "encodec-lm":
        pairs = [*zip(models[:-1], checkpoints), ("encodec-lm", None)]
    else:
        raise UsageError(f"{len(models)} --model but {len(checkpoints)} --checkpoint: give one --checkpoint per "
                         "--model, in the same order (encodec-lm may omit it when it comes last)")
    if len(pairs) > 2:
        raise UsageError("score at most two models at once (their curves and difference are plotted)")
    return pairs


def _tags(scorers) -> list[str]:
    tags: list[str] = []
    for s in scorers:
        tag = s.name
        while tag in tags:
            tag += "-2"
        tags.append(tag)
    return tags


class ScoreJob:
    """What score does with each input: decode at 24 kHz mono, write per-frame arrays and plots."""

    def __init__(self, scorers, frames_dir: Path | None, plot_dir: Path | None, done: dict[str, set]):
        from .. import audio
        from ..sinks import OutputTree

        self.scorers = scorers
        self.tags = _tags(scorers)
        self.probe = audio.probe
        self.load = functools.partial(audio.read, sample_rate=24000, channels=1)
        self.frames = [OutputTree(frames_dir, f".{t}.npz") for t in self.tags] if frames_dir else []
        self.plot = OutputTree(plot_dir, ".png") if plot_dir else None
        self.done = done  # input -> LM sha256s with an ok record in the -o file

    def is_done(self, source) -> bool:
        have = self.done.get(source.path, set())
        if not all(s.identity["sha256"] in have for s in self.scorers) or not self.done:
            return False
        return all(t.done(source) for t in self.frames) and (self.plot is None or self.plot.done(source))

    def finish(self, source, info, result) -> dict:
        from ..scoring import file_scores

        item = result.item
        duration = item.n_samples / 24000
        records = []
        for sc, tag, fs in zip(self.scorers, self.tags, result.scores):
            rec = {"model": sc.name, "lm": sc.identity, "tokenizer": sc.tokenizer, "context": sc.context,
                   "stride": sc.stride, "codebooks": sc.codebooks,
                   **file_scores(fs, duration, sc.tokenizer["frame_rate"])}
            if self.frames:
                tree = self.frames[self.tags.index(tag)]
                rec["frames_output"] = str(tree.write(source, _write_frames, (fs, rec)))
            records.append(rec)
        if self.plot is not None:
            import numpy as np

            from ..features import causal_log_mel
            from ..score_plot import plot_scores, plot_title

            mel = item.mel
            if mel is None:
                audio, _ = self.load(source.path)
                mel = causal_log_mel(audio[0]).numpy()
            curves = [(f"{s.name} ({s.identity.get('size')})", fs.surprisal) for s, fs in zip(self.scorers, result.scores)]
            title = plot_title(source.display, [(s.name, r["bits_per_frame"]) for s, r in zip(self.scorers, records)])
            path = self.plot.write(source, lambda f, _: plot_scores(f, np.asarray(mel), curves, 75.0, title), None)
            for r in records:
                r["plot_output"] = str(path)
        return {"scores": records}


def _write_frames(f, payload) -> None:
    import numpy as np

    fs, rec = payload
    np.savez(f, time=np.arange(fs.frames, dtype=np.float64) / rec["tokenizer"]["frame_rate"],
             token=fs.token, surprisal=fs.surprisal, entropy=fs.entropy, rank=fs.rank,
             codebooks=np.asarray(rec["codebooks"]), model=np.array(rec["model"]),
             record=np.array(json.dumps({k: v for k, v in rec.items() if k != "frames_output"})))


def _read_done(path: Path | None) -> tuple[dict[str, set], dict[tuple[str, str], dict]]:
    done: dict[str, set] = {}
    previous: dict[tuple[str, str], dict] = {}
    if path is None or not path.is_file():
        return done, previous
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            if rec.get("status") == "ok" and "lm" in rec:
                done.setdefault(rec["input"], set()).add(rec["lm"].get("sha256"))
                previous[(rec["input"], rec["lm"].get("sha256"))] = rec
    return done, previous


@app.command()
def score(
    inputs: list[str] = cli.INPUTS,
    model: list[str] = typer.Option([], "--model", "-m",
                                    help="whisper-gpt, token-gpt or encodec-lm (repeat with a second --checkpoint to compare)."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="LM checkpoint (train lm output, or the EnCodec LM file)."),
    codec_checkpoint: Path = typer.Option(None, "--codec-checkpoint", help="EnCodec weights that tokenise (default: official)."),
    bandwidth: float = typer.Option(None, "--bandwidth", "-b", help="Tokenizer kbps (default: the checkpoint's; 6 for encodec-lm)."),
    output: Path = typer.Option(None, "--output", "-o", help="Append records to this JSONL file instead of stdout (reruns skip inputs in it)."),
    summary_path: Path = typer.Option(None, "--summary", help="Also write the corpus summary (JSON) here."),
    frames: Path = typer.Option(None, "--frames", help="Per-frame arrays (time, token, surprisal, entropy, rank) under DIR."),
    plot: Path = typer.Option(None, "--plot", help="A PNG per file (spectrogram + surprisal curves) under DIR."),
    rows: int = typer.Option(8, "--rows", min=1, help="Windows per model call (speed only; scores do not change)."),
    ext: str = cli.EXT,
    device: str = cli.DEVICE,
    batch_seconds: float = cli.BATCH_SECONDS,
    workers: int = cli.WORKERS,
    overwrite: bool = cli.OVERWRITE,
    quiet: bool = cli.QUIET,
) -> None:
    """Score audio files under an audio LM: NLL, perplexity, bits per second (+ per-frame surprisal)."""
    from .. import pipeline
    from ..models.codec import CodecEncoder, load_codec, resolve_device
    from ..models.lm import load_scorer, read_tokenizer
    from ..models.lm_adapter import LMFeatures, ScoreAdapter
    from ..progress import Progress
    from ..scoring import corpus_summary
    from ..sinks import JsonLines

    pairs = pair_models(model, checkpoint)
    for p in (output, summary_path):
        if p is not None and p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3", ".npz"):
            raise UsageError(f"{p} looks like an input, not a JSON file; choose another path")
        if p is not None and p.is_dir():
            raise UsageError(f"{p} is a directory; -o and --summary take a file path (e.g. scores.jsonl)")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    sources, _share = cli.collect_sources(inputs, ext, None)
    dev = resolve_device(device)
    gpt_tok = [read_tokenizer(c) for m, c in pairs if m != "encodec-lm"]
    codec_name = gpt_tok[0]["codec"] if gpt_tok else "encodec_24khz"
    bw = bandwidth if bandwidth is not None else (gpt_tok[0]["bandwidth"] if gpt_tok else 6.0)
    codec = load_codec(codec_name, codec_checkpoint, dev)
    scorers = [load_scorer(m, c, codec, bw, dev) for m, c in pairs]
    features = LMFeatures(CodecEncoder(codec, bw, dev), with_mel=any(s.uses_mel for s in scorers) or plot is not None)
    adapter = ScoreAdapter(features, scorers, rows=rows)
    done, previous = _read_done(output) if not overwrite else ({}, {})
    job = ScoreJob(scorers, frames, plot, done)

    out_stream = open(output, "a", encoding="utf-8") if output is not None else None
    sink = JsonLines(out_stream) if out_stream is not None else JsonLines()
    all_records: list[dict] = []
    manifest = None
    if frames is not None:
        from ..sinks import Manifest

        manifest = Manifest(frames / "manifest.jsonl")

    def emit(line: dict) -> None:
        sink.emit(line)
        if manifest is not None:
            manifest.append(line)

    def record(outcome) -> None:
        base = {k: v for k, v in outcome.record.items() if k != "scores"}
        if outcome.status == "skipped":
            for s in scorers:
                prev = previous.get((outcome.source.path, s.identity["sha256"]))
                if prev is not None:
                    all_records.append(prev)
            return
        if outcome.status != "ok":
            emit(base)
            return
        for rec in outcome.record["scores"]:
            line = {**base, **rec}
            all_records.append(line)
            emit(line)

    progress = Progress(enabled=not quiet, label="score")
    try:
        with progress:
            summary = pipeline.run(sources, job, adapter, batch_seconds=batch_seconds, workers=workers,
                                   overwrite=overwrite, record_sink=record, progress=progress)
    except KeyboardInterrupt:
        cli.eprint("interrupted: finished records are in the output; rerun the same command to continue")
        raise typer.Exit(130) from None
    finally:
        if out_stream is not None:
            out_stream.close()
        if manifest is not None:
            manifest.close()
    summaries = []
    for s in scorers:
        recs = [r for r in all_records if r["lm"]["sha256"] == s.identity["sha256"] and r["model"] == s.name]
        summaries.append({"model": s.name, "lm": s.identity, "tokenizer": s.tokenizer, "context": s.context,
                          "stride": s.stride, **corpus_summary(recs)})
    for s in summaries:
        cli.eprint(f"{s['model']} ({s['lm'].get('size')}): {s['files']} files, {s['tokens']} tokens: "
                   f"nll {s['nll']:.4f} nats/token, ppl {s['perplexity']:.2f}, acc {s['accuracy']:.3f}, "
                   f"{s['bits_per_second']:.1f} bits/s")
    cli.eprint(json.dumps(summaries if len(summaries) > 1 else summaries[0]))
    if summary_path is not None:
        from ..sinks import atomic_write

        body = json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2).encode()
        atomic_write(summary_path, lambda f: f.write(body))
    cli.report(summary, quiet)
    raise typer.Exit(summary.exit_code)
