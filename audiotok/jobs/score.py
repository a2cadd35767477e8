"""Score: how predictable each audio file is under an audio LM (one record per file and model).

    from audiotok import score_files
    summaries = score_files(["data/"], checkpoints=["wgpt.pt"], output="scores.jsonl")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..engine.devices import Runtime
from ..engine.runner import RunOptions, collect_sources, eprint, run_job
from ..errors import InputError, UsageError


def pair_models(models: list[str], checkpoints: list[Path], arch_of=None) -> list[tuple[str, Path | None]]:
    """``--model`` / ``--checkpoint`` pairs, in order. Without ``--model`` each checkpoint names its arch
    (``arch_of(checkpoint)``, default: read from the file); ``encodec-lm`` may come last without a
    checkpoint (official weights from the torch hub cache)."""
    from ..lm.names import MODELS

    for m in models:
        if m not in MODELS:
            raise UsageError(f"--model {m!r} is not valid; choose one of {', '.join(MODELS)}")
    if not models:
        if not checkpoints:
            raise UsageError("give --model (whisper-gpt, token-gpt or encodec-lm) and/or --checkpoint")
        if arch_of is None:
            from ..lm.checkpoints import load_checkpoint

            def arch_of(c):
                return load_checkpoint(c).config.arch

        models = [arch_of(c) for c in checkpoints]
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


class ScoreLoad:
    """Picklable loader of a score input (in the workers): audio decoded at the tokenizer's rate,
    mono; or an ``encode`` output (``lm_inputs.read_encoded``), read instead of tokenising again."""

    def __init__(self, tokenizer: dict, codebooks: int, need_audio: bool):
        self.tokenizer, self.codebooks, self.need_audio = tokenizer, codebooks, need_audio

    def __call__(self, path: str, offset: float = 0.0, duration: float | None = None):
        from ..formats import audio
        from ..lm.inputs import is_codes_file, read_encoded

        sr = int(self.tokenizer["sample_rate"])
        if not is_codes_file(path):
            return audio.read(path, sample_rate=sr, channels=1, offset=offset, duration=duration)
        if offset or duration is not None:
            raise InputError("is a codes file, which cannot be cut into a segment; give the audio instead")
        item = read_encoded(path, self.tokenizer, self.codebooks, self.need_audio)
        return item, audio.AudioInfo(sr, 1, item.n_samples)


def _read_header(path: str):
    """Header of a score input: an audio file's, or an ``encode`` output's (its length at the codec's rate)."""
    from ..formats import audio
    from ..lm.inputs import is_codes_file

    if not is_codes_file(path):
        return audio.read_header(path)
    from ..formats.codes import read_codes
    from ..registry import get_codec

    c = read_codes(path)
    return audio.AudioInfo(get_codec(c.model).sample_rate, 1, c.item.n_samples)


class ScoreJob:
    """What score does with each input (audio, or the codes ``encode`` wrote): per-frame arrays and plots."""

    def __init__(self, scorers, frames_dir: Path | None, plot_dir: Path | None, done: dict[str, set],
                 need_mel: bool = True):
        from ..engine.sinks import OutputTree

        self.scorers = scorers
        self.tags = _tags(scorers)
        self.read_header = _read_header
        tok = max((s.tokenizer for s in scorers), key=lambda t: len(t["codebooks"]))
        self.sample_rate, self.frame_rate = int(tok["sample_rate"]), float(tok["frame_rate"])
        codebooks = max(max(s.codebooks) + 1 for s in scorers)
        self.load = ScoreLoad(tok, codebooks, need_mel or plot_dir is not None)
        self.frames = [OutputTree(frames_dir, f".{t}.npz") for t in self.tags] if frames_dir else []
        self.plot = OutputTree(plot_dir, ".png") if plot_dir else None
        self.done = done  # input -> settings keys (settings_key) with an ok record in the -o file

    def is_done(self, source) -> bool:
        have = self.done.get(source.path, set())
        if not all(settings_key(s) in have for s in self.scorers) or not self.done:
            return False
        return all(t.done(source) for t in self.frames) and (self.plot is None or self.plot.done(source))

    def finish(self, source, info, result) -> dict:
        from ..lm.scoring import file_scores

        item = result.item
        duration = item.n_samples / self.sample_rate
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

            from ..lm.plots import plot_scores, plot_title

            mel = item.mel  # computed for every input when plots are asked for (LMFeatures.with_mel)
            curves = [(f"{s.name} ({s.identity.get('size')})", fs.surprisal) for s, fs in zip(self.scorers, result.scores)]
            title = plot_title(source.display, [(s.name, r["bits_per_frame"]) for s, r in zip(self.scorers, records)])
            path = self.plot.write(source, lambda f, _: plot_scores(f, np.asarray(mel), curves, self.frame_rate, title), None)
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


def _key(lm: dict, tokenizer: dict, context, stride) -> str:
    """What makes two records of one input differ in meaning: the LM weights, the tokenizer (codec
    weights, bandwidth, codebooks), the window. A rerun skips an input only when a record with the
    same key is in the -o file; other settings are scored again (each record carries its settings).
    As JSON text, so any value a damaged file holds gives a key, never an error."""
    return json.dumps([lm.get("sha256"), tokenizer.get("codec_sha256"), tokenizer.get("bandwidth"),
                       tokenizer.get("codebooks"), context, stride], default=str)


def settings_key(scorer) -> str:
    return _key(scorer.identity, scorer.tokenizer, scorer.context, scorer.stride)


def _record_key(rec: dict) -> str:
    tok = rec.get("tokenizer")
    return _key(rec["lm"], tok if isinstance(tok, dict) else {}, rec.get("context"), rec.get("stride"))


def _read_done(path: Path | None) -> tuple[dict[str, set], dict[tuple[str, str], dict]]:
    done: dict[str, set] = {}
    previous: dict[tuple[str, str], dict] = {}
    if path is None or not path.is_file():
        return done, previous
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run, or a damaged file: not a finished record
            if not isinstance(rec, dict) or not isinstance(rec.get("lm"), dict) or not isinstance(rec.get("input"), str):
                continue
            if rec.get("status") == "ok":
                key = _record_key(rec)
                done.setdefault(rec["input"], set()).add(key)
                previous[(rec["input"], key)] = rec
    return done, previous


def _recorded_arch(previous: dict[tuple[str, str], dict]):
    """``arch_of`` for ``pair_models`` that answers from the records of an earlier run (the file's
    sha256 names its LM), else reads the checkpoint."""
    by_sha = {sha: rec.get("model") for rec in previous.values() if isinstance(sha := rec["lm"].get("sha256"), str)}

    def arch_of(checkpoint):
        from ..lm.names import ARCHS
        from ..weights import file_sha256

        model = by_sha.get(file_sha256(checkpoint, 16)) if Path(checkpoint).is_file() else None
        if model in ARCHS:
            return model
        from ..lm.checkpoints import load_checkpoint

        return load_checkpoint(checkpoint).config.arch

    return arch_of


def _recorded_scorers(pairs, previous: dict[tuple[str, str], dict], bandwidth: float | None, codec_checkpoint):
    """Stand-ins for the scorers, taken from the records of an earlier run into the same ``-o``, when
    every LM (by its file's sha256) was run there with the tokenizer asked now (the codec weights'
    sha256 and the bandwidth); else None (the models are loaded, which also reports any mismatch)."""
    from types import SimpleNamespace

    from ..lm.names import LM_NAMES
    from ..weights import ENCODEC_CHECKPOINTS, file_sha256, hub_checkpoint_dir

    if not previous:
        return None
    by_sha = {sha: rec for rec in previous.values() if isinstance(sha := rec["lm"].get("sha256"), str)}

    def weights(name: str, given) -> Path:
        return Path(given) if given is not None else hub_checkpoint_dir() / ENCODEC_CHECKPOINTS.get(name, "?")

    recs = []
    for model, checkpoint in pairs:
        path = Path(checkpoint) if checkpoint is not None else weights(LM_NAMES.get("encodec_24khz", "?"), None)
        if not path.is_file():
            return None
        rec = by_sha.get(file_sha256(path, 16))
        if rec is None or rec.get("model") != model or not isinstance(rec.get("tokenizer"), dict):
            return None
        recs.append(rec)
    # the bandwidth score_files would use: the option, else the (first) trained LM's, else 6
    gpt_bw = [r["tokenizer"].get("bandwidth") for r in recs if r["model"] != "encodec-lm"]
    asked_bw = bandwidth if bandwidth is not None else (gpt_bw[0] if gpt_bw else 6.0)
    scorers = []
    for rec in recs:
        tok = rec["tokenizer"]
        if rec["model"] == "encodec-lm" and tok.get("codec") not in LM_NAMES:
            return None
        codec_path = weights(tok.get("codec", "?"), codec_checkpoint)
        if asked_bw != tok.get("bandwidth") or not codec_path.is_file() or \
                file_sha256(codec_path, 16) != tok.get("codec_sha256"):
            return None
        scorers.append(SimpleNamespace(name=rec["model"], identity=rec["lm"], tokenizer=tok, context=rec.get("context"),
                                       stride=rec.get("stride"), codebooks=rec.get("codebooks"), uses_mel=False))
    return scorers


def _lm_codec_file(pairs, tokenizers: list[dict]) -> Path | None:
    """The codec weights a trained LM was trained with, found in the torch hub cache by the file name
    and sha256 its checkpoint records (None: the official file, resolved as usual). A file the LM
    names that is not there is a ``WeightsError`` saying which file (and how to give it)."""
    from ..registry import get_codec
    from ..weights import file_sha256, hub_checkpoint_dir

    for (_, checkpoint), tok in zip([p for p in pairs if p[0] != "encodec-lm"], tokenizers):
        name, sha = tok.get("codec_checkpoint"), tok.get("codec_sha256")
        official = get_codec(tok["codec"]).checkpoint
        if not isinstance(name, str) or not isinstance(sha, str) or name == official or Path(name).name != name:
            continue
        path = hub_checkpoint_dir() / name
        if path.is_file() and file_sha256(path, len(sha)) == sha:
            return path
        from ..errors import WeightsError

        raise WeightsError(f"{checkpoint} was trained on tokens of the codec weights {name} (sha256 {sha}), which are "
                           f"not in the torch hub cache ({hub_checkpoint_dir()}); put the file there or pass "
                           "--codec-checkpoint PATH")
    return None


def _scorer_settings(tag: str, scorer) -> dict:
    """What one model's frames and curves depend on, as ``TAG.KEY`` entries of a folder's settings file."""
    tok = scorer.tokenizer
    made = {"model": scorer.name, "lm_sha256": scorer.identity.get("sha256"), "codec": tok.get("codec"),
            "codec_sha256": tok.get("codec_sha256"), "bandwidth": tok.get("bandwidth"),
            "codebooks": list(scorer.codebooks or []), "context": scorer.context, "stride": scorer.stride}
    return {f"{tag}.{k}": v for k, v in made.items()}


def _check_folders(job: ScoreJob, frames: Path | None, plot: Path | None, overwrite: bool) -> None:
    """``--frames`` and ``--plot`` folders hold one setting per model name (``settings.json``): a rerun
    with other LM or codec weights, bandwidth or window is refused unless ``overwrite``. Frames
    files are per model name, so a folder takes further models; a plot shows the run's models together."""
    from ..engine.sharing import check_folder_settings

    settings: dict = {}
    for tag, scorer in zip(job.tags, job.scorers):
        settings.update(_scorer_settings(tag, scorer))
    for folder, command, merge in ((frames, "score --frames", True), (plot, "score --plot", False)):
        if folder is not None:
            note = check_folder_settings(folder, command, settings, overwrite=overwrite, merge=merge).note
            if note:
                eprint(note)


@dataclass
class ScoreResult:
    summary: object  # pipeline.Summary
    corpus: list[dict]  # one token-weighted summary per model


# One keyword per `score` option (API == CLI, tested), so 20 parameters; long because it checks every
# option and the finished-rerun shortcut before any model loads (docs/design.md, "Long signatures").
def score_files(inputs, *, models=(), checkpoints=(), codec_checkpoint=None, bandwidth: float | None = None,
                output: str | Path | None = None, summary_path: str | Path | None = None, frames=None, plot=None,
                rows: int = 8, ext=None, exclude=None, device: str = "auto", threads: int | None = None,
                batch_seconds: float = 60.0, workers: int = 1, overwrite: bool = False, progress: bool = False,
                shard: str | None = None, stream=None) -> ScoreResult:
    """Score every input under one or two LMs. Records go to ``output`` (appended; reruns skip
    inputs already in it) or ``stream`` (default stdout); returns the run summary and the corpus
    summaries (also written to ``summary_path`` as JSON when given)."""
    import sys

    models, checkpoints = list(models), [Path(c) for c in checkpoints]
    output = Path(output) if output is not None else None
    summary_path = Path(summary_path) if summary_path is not None else None
    frames = Path(frames) if frames is not None else None
    plot = Path(plot) if plot is not None else None
    runtime = Runtime.check(device, threads)
    for p in (output, summary_path):
        if p is not None and p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3", ".npz"):
            raise UsageError(f"{p} looks like an input, not a JSON file; choose another path")
        if p is not None and p.is_dir():
            raise UsageError(f"{p} is a directory; -o and --summary take a file path (e.g. scores.jsonl)")
    opts = RunOptions(batch_seconds, workers, overwrite, False, progress, shard).check()
    if not checkpoints or models:  # option errors before the inputs are read (--model names, a missing pair)
        pair_models(models, checkpoints, arch_of=lambda c: None)
    from ..files import prepare_output_dir, prepare_output_file

    for path, what in ((output, "-o"), (summary_path, "--summary")):
        if path is not None:
            prepare_output_file(path, what)
    from ..engine.sources import AUDIO_EXTENSIONS

    exts = ext if ext is not None else (*AUDIO_EXTENSIONS, "npz", "ecdc")  # audio, and the codes encode writes
    sources, share = collect_sources(inputs, exts, shard, exclude=exclude)
    from ..engine.runner import as_inputs, check_outputs_apart
    from ..engine.sources import normalise_extensions

    read_exts = normalise_extensions([exts] if isinstance(exts, str) else [",".join(exts)])
    for option, folder, suffix in (("--frames", frames, ".npz"), ("--plot", plot, ".png")):
        if folder is not None:
            check_outputs_apart(as_inputs(inputs), folder, suffix, read_exts, option)
            prepare_output_dir(folder, option)
    if share.world > 1 and output is not None:  # each share appends to its own part of the records
        output = output.with_name(f"{output.stem}.shard-{share.rank}-of-{share.world}{output.suffix}")
    done, previous = _read_done(output) if not overwrite else ({}, {})
    pairs = pair_models(models, checkpoints, _recorded_arch(previous))

    from ..engine.sinks import JsonLines
    from ..lm.scoring import corpus_summary

    # a rerun with every input already scored (same LMs, tokenizer, frames and plots): answered from
    # the records, without torch or the models
    scorers = _recorded_scorers(pairs, previous, bandwidth, codec_checkpoint)
    job = ScoreJob(scorers, frames, plot, done, need_mel=False) if scorers else None
    if job is not None and all(s.error or job.is_done(s) for s in sources):
        def adapter():
            raise AssertionError("score: the model was asked for although every input is done")
    else:
        from ..lm.adapter import CodesOnly, LMFeatures, ScoreAdapter
        from ..lm.checkpoints import load_scorer, read_tokenizer
        from ..lm.inputs import is_codes_file
        from ..lm.tokenizer import mel_hop, tokenizer_spec
        from ..registry import DEFAULT_CODEC, get_codec
        from .encode import codec_weights

        dev, _ = runtime.start()
        gpt_tok = [read_tokenizer(c) for m, c in pairs if m != "encodec-lm"]
        # the codec the (first) trained LM was trained on, from the registry (AUDIOTOK_PLUGINS for
        # one of your own); encodec-lm alone: the default codec
        codec_name = gpt_tok[0]["codec"] if gpt_tok else DEFAULT_CODEC
        try:
            codec_name = tokenizer_spec(codec_name).codec
        except UsageError:
            lm = next(c for m, c in pairs if m != "encodec-lm")
            raise UsageError(f"{lm} was trained on tokens of the codec {codec_name!r}, which is not registered here; "
                             "name the module that registers it in AUDIOTOK_PLUGINS") from None
        spec = get_codec(codec_name)
        bw = bandwidth if bandwidth is not None else (gpt_tok[0]["bandwidth"] if gpt_tok else spec.bandwidth_default)
        # the codec tokenises audio inputs; codes files scored by trained LMs need none (their codes
        # are checked against the codec weights' sha256 the LM recorded)
        need_codec = any(m == "encodec-lm" for m, _ in pairs) or \
            any(not s.error and not is_codes_file(s.path) for s in sources)
        codec = None
        if need_codec:
            given = codec_checkpoint if codec_checkpoint is not None else _lm_codec_file(pairs, gpt_tok)
            weights, _ = codec_weights(spec.name, given, option="--codec-checkpoint")  # missing weights: exit 3
            codec = spec.load(weights, dev)
        scorers = [load_scorer(m, c, codec, bw, dev) for m, c in pairs]
        need_mel = any(s.uses_mel for s in scorers)
        with_mel = need_mel or plot is not None
        mel = mel_hop((gpt_tok or [scorers[0].tokenizer])[0]) if with_mel else None
        if codec is not None:
            features = LMFeatures(codec.encoder(bw, dev), with_mel, mel=mel)
        else:
            features = CodesOnly(with_mel, mel) if mel else CodesOnly(with_mel)
        adapter = ScoreAdapter(features, scorers, rows=rows)
        job = ScoreJob(scorers, frames, plot, done, need_mel)

    _check_folders(job, frames, plot, overwrite)
    from ..files import open_append

    out_stream = open_append(output) if output is not None else None
    sink = JsonLines(out_stream if out_stream is not None else (stream or sys.stdout))
    all_records: list[dict] = []
    manifest = None
    if frames is not None:
        from ..engine.sinks import Manifest

        manifest = Manifest(frames / "manifest.jsonl")

    def emit(line: dict) -> None:
        sink.emit(line)
        if manifest is not None:
            manifest.append(line)

    def record(outcome) -> None:
        base = {k: v for k, v in outcome.record.items() if k != "scores"}
        if outcome.status == "skipped":
            for s in scorers:
                prev = previous.get((outcome.source.path, settings_key(s)))
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

    try:
        summary = run_job(sources, share, job, adapter, None, opts, record=record)
    finally:
        if out_stream is not None:
            out_stream.close()
        if manifest is not None:
            manifest.close()
    from ..engine.runner import settle

    settle(summary, sink if sink.lost else manifest)
    corpus = []
    for s in scorers:
        recs = [r for r in all_records if _record_key(r) == settings_key(s) and r["model"] == s.name]
        corpus.append({"model": s.name, "lm": s.identity, "tokenizer": s.tokenizer, "context": s.context,
                       "stride": s.stride, **corpus_summary(recs)})
    if summary_path is not None:
        from ..files import atomic_write

        body = json.dumps(corpus if len(corpus) > 1 else corpus[0], indent=2).encode()
        atomic_write(summary_path, lambda f: f.write(body))
    return ScoreResult(summary, corpus)


def print_corpus(corpus: list[dict]) -> None:
    for s in corpus:
        eprint(f"{s['model']} ({s['lm'].get('size')}): {s['files']} files, {s['tokens']} tokens: "
               f"nll {s['nll']:.4f} nats/token, ppl {s['perplexity']:.2f}, acc {s['accuracy']:.3f}, "
               f"{s['bits_per_second']:.1f} bits/s")
    eprint(json.dumps(corpus if len(corpus) > 1 else corpus[0]))
