"""Whisper-GPT (tokens + causal mel) against the token-only GPT, with controls (paper Tables 1-2).

On a corpus built by ``benchmarks/make_corpus.py`` (speech and music, train/val/test splits that
share no voice+text or piece), per domain and seed, every arm is trained by the same code path
(``audiotok.train.lm.train``) on the same tokens, stopped early on the validation split, and
scored on the test split exactly as ``audiotok score`` scores:

- ``token-gpt``: coarse tokens only; ``whisper-gpt``: the token model plus the spectrogram branch;
- ``whisper-gpt-shuffled``: whisper-gpt with every file's mel taken from another file (control:
  must lose the advantage); ``whisper-gpt-leaky``: sees the current frame's mel (positive control:
  must win by far, which shows the test would catch a leak);
- ``info-control``: token-only, input = the sum of every codebook's embedding of the past frames;
- ``token-gpt-matched``: token-only with the hybrid's parameter count (wider, ``controls.matched_shape``);
- positive controls that must win: ``latent-lag0`` reads the codec's own latent z_t (the encoder
  output c_t is the nearest codeword of) through the same branch and alignment code as the mel;
  ``latent-lag1`` reads z_(t-1) (about what ``info-control`` sees); ``kmeans-mel-lag0`` / ``-lag1``
  are whisper-gpt on tokens made by k-means of the mel slices themselves (other targets: their
  rows are not compared with the others);
- ``unigram`` / ``bigram`` count models (smoothing chosen on validation): a model only counts if
  it beats the bigram on the test files.

Before the arms, the fusion choices of whisper-gpt (``--fusions``) are compared on the validation
split (seed 0, the ``--fusion-domains``) and the best one is used (never the test split). The output
is the paper-style table (NLL nats/token, top-1, PPL, bits/s, params; NLL averaged over seeds per
file), paired differences with bootstrap 95 % intervals over test files and training seeds
together, and a JSON file. Every finished training is appended to ``WORK/runs.jsonl``; a rerun with
the same settings skips the trainings found there (and only tabulates when all are done).
``--agreement A.json B.json`` compares the gaps of two schedules.

Tokens come from the official EnCodec 24 kHz weights when they are in the torch hub cache or given
with --codec-checkpoint; otherwise (no network) from a random-weight EnCodec whose residual
codebooks are fitted by k-means on latents of the training files, which the output says.

    python benchmarks/make_corpus.py /tmp/corpus
    python benchmarks/hybrid_vs_tokens.py --corpus /tmp/corpus --json results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audiotok.codecs.encodec import CodecEncoder, load_codec  # noqa: E402
from audiotok.engine import pipeline  # noqa: E402
from audiotok.engine.sources import Source  # noqa: E402
from audiotok.lm.adapter import LMFeatures  # noqa: E402
from audiotok.lm.checkpoints import count_params, tokenizer_info  # noqa: E402
from audiotok.lm.gpt import DEFAULT_FUSION, FUSIONS  # noqa: E402
from audiotok.lm.tokenizer import tokenizer_spec  # noqa: E402
from audiotok.registry import get_codec  # noqa: E402
from audiotok.train.data import cache_dir, lm_cache, read_cached  # noqa: E402
from audiotok.train.lm import TrainConfig, score_examples, train  # noqa: E402
from audiotok.weights import ENCODEC_CHECKPOINTS, hub_checkpoint_dir  # noqa: E402
from benchmarks.lmexp.controls import ARMS, arm_options, kmeans_mel_tokens, shuffle_mel  # noqa: E402
from benchmarks.lmexp.count_lm import fit_count_lm  # noqa: E402
from benchmarks.lmexp.paired import paired_difference_seeds  # noqa: E402

SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_ARMS = "token-gpt,token-gpt-matched,whisper-gpt,whisper-gpt-shuffled,latent-lag0,latent-lag1,info-control"
OTHER_TARGETS = ("kmeans-mel-lag0", "kmeans-mel-lag1")  # arms scored on other tokens: never paired with the rest


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_corpus(root: Path, domains: list[str], minutes: float | None) -> dict:
    """``{domain: {split: [(rel path, abs path, seconds)]}}`` from the corpus manifest; with
    ``minutes``, the first files of each split (manifest order) up to that share of the minutes."""
    man = json.loads((root / "manifest.json").read_text())
    out = {}
    for dom in domains:
        out[dom] = {}
        for split, share in SHARES.items():
            files = [f for f in man["files"] if f["domain"] == dom and f["split"] == split]
            if minutes is not None:
                keep, total = [], 0.0
                for f in files:
                    if total >= minutes * 60 * share and len(keep) >= 2:
                        break
                    keep.append(f)
                    total += f["duration"]
                files = keep
            out[dom][split] = [(f["path"], str(root / f["path"]), f["duration"]) for f in files]
    return out


def corpus_domains(root: Path) -> list[str]:
    """Every domain of a corpus manifest, in the order they first appear."""
    return list(dict.fromkeys(f["domain"] for f in json.loads((root / "manifest.json").read_text())["files"]))


def clip_files(corpus: dict, seconds: float, out: Path) -> dict:
    """The same corpus with every file cut to its first ``seconds`` (copies under ``out``)."""
    import soundfile as sf

    clipped = {}
    for dom, splits in corpus.items():
        clipped[dom] = {}
        for split, files in splits.items():
            rows = []
            for rel, path, dur in files:
                dst = out / rel
                if not dst.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    info = sf.info(path)
                    audio, rate = sf.read(path, frames=int(seconds * info.samplerate), dtype="float32")
                    sf.write(dst, audio, rate, subtype="PCM_16")
                rows.append((rel, str(dst), min(dur, seconds)))
            clipped[dom][split] = rows
    return clipped


def load_tokenizer_codec(path: str | None, work: Path, fit_files: list[str], seed: int, seconds: float):
    """The official codec if available; else a random-weight one whose residual codebooks are
    fitted (k-means) on latents of the first ``seconds`` of the *training* files."""
    spec = tokenizer_spec()
    official = hub_checkpoint_dir() / ENCODEC_CHECKPOINTS[spec.codec]
    if path or official.is_file():
        return load_codec(spec.codec, path, "cpu"), path or "official EnCodec 24 kHz weights"
    from audiotok.formats.audio import read
    from audiotok.testing import random_encodec, save_encodec_checkpoint

    saved = work / "codec"
    stamp = {"seed": seed, "seconds": seconds, "files": fit_files}
    desc = (f"RANDOM-weight EnCodec encoder, residual codebooks fitted by k-means on the first {seconds:g} s of "
            f"{len(fit_files)} training files (no official weights offline)")
    done = saved / "fit.json"
    if done.is_file() and json.loads(done.read_text()) == stamp:  # a rerun reuses the fitted codec (and its cache)
        return load_codec(spec.codec, saved / ENCODEC_CHECKPOINTS[spec.codec], "cpu"), desc
    m = random_encodec(spec.codec, seed=seed)
    lat = []
    with torch.inference_mode():
        for f in fit_files:
            x, _ = read(f, sample_rate=spec.sample_rate, channels=1)
            lat.append(m.encoder(torch.from_numpy(x[:, : int(spec.sample_rate * seconds)])[None])[0].T)
    residual = torch.cat(lat)
    gen = torch.Generator().manual_seed(seed)
    for layer in m.quantizer.vq.layers:
        cb = layer._codebook
        centroids = residual[torch.randint(0, residual.shape[0], (cb.codebook_size,), generator=gen)].clone()
        for _ in range(8):  # k-means
            assign = torch.cdist(residual, centroids).argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, assign, residual)
            counts = torch.bincount(assign, minlength=cb.codebook_size)[:, None]
            centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        cb.embed.data.copy_(centroids)
        cb.embed_avg.data.copy_(centroids)
        with torch.inference_mode():
            residual = residual - cb.decode(cb.encode(residual))
    ck = save_encodec_checkpoint(m, saved)
    done.write_text(json.dumps(stamp))
    return load_codec(spec.codec, ck, "cpu"), desc


def corpus_tokenizer(corpus_dir: Path, work: Path, checkpoint: str | None, fit_seconds: float, bandwidth: float,
                     minutes: float | None = None):
    """``(codec, its description, tokenizer info)`` of a corpus. The codec is fitted on the training
    files of every domain of the corpus, whichever domains a run takes: one tokenizer (and one
    feature cache) for the corpus, so that a process per domain (same ``work``) and
    ``latent_probe.py`` share them."""
    fit_corpus = load_corpus(corpus_dir, corpus_domains(corpus_dir), minutes)
    train_paths = [p for d in fit_corpus for _, p, _ in fit_corpus[d]["train"]]
    fit = train_paths[:: max(1, len(train_paths) // 80)]
    codec, desc = load_tokenizer_codec(checkpoint, work, fit, 0, fit_seconds)
    n_q = get_codec(codec.name).n_codebooks(bandwidth)
    return codec, desc, tokenizer_info(codec, bandwidth, list(range(n_q)))


def featurise(files: list[tuple[str, str, float]], codec, tokenizer, cache_root: Path) -> dict:
    job = lm_cache(cache_dir(cache_root, tokenizer), tokenizer["codec"])
    adapter = LMFeatures(CodecEncoder(codec, tokenizer["bandwidth"], torch.device("cpu")), with_mel=True,
                         with_latent=True)
    sources = [Source(path, rel, None) for rel, path, _ in files]
    summary = pipeline.run(sources, job, adapter, workers=1)
    for o in summary.failed:
        log(f"  skipped {o.source.display}: {o.error}")
    out = {s.rel: read_cached(job.target(s), s.rel, tokenizer) for s in sources if job.is_done(s)}
    stale = [k for k, e in out.items() if e.latent is None]
    if stale:
        raise SystemExit(f"{len(stale)} cached files in {job.tree.root} lack the codec latent (an older cache); "
                         "delete that folder so that it is rebuilt")
    return out


def run_key(domain: str, arm: str, fusion: str, seed: int, args) -> dict:
    """What identifies a training: a rerun skips one whose key is in ``runs.jsonl``."""
    arch = ARMS[arm][0]
    # the matched baseline's width follows the fusion it is matched to (controls.matched_shape)
    shaped_by_fusion = arch == "whisper-gpt" or ARMS[arm][2].get("shape") == "matched"
    return {"domain": domain, "arm": arm, "fusion": fusion if shaped_by_fusion else None, "seed": seed,
            "size": args.size, "max_steps": args.max_steps, "eval_every": args.eval_every, "patience": args.patience,
            "batch_size": args.batch_size, "context": args.context, "lr": args.lr,
            "kmeans_clusters": args.kmeans_clusters if ARMS[arm][3] == "kmeans-mel" else None}


def arm_data(arm: str, seed: int, data: dict, args) -> dict:
    """The splits an arm trains and is scored on (its data transform applied)."""
    tr, va, te = data["train"], data["val"], data["test"]
    transform = ARMS[arm][3]
    if transform == "shuffle-mel":
        # mel from another file of the same split (from the training files when a split has one file)
        tr, va, te = (shuffle_mel(x, seed + i, None if len(x) > 1 else tr) for i, x in enumerate((tr, va, te)))
    elif transform == "kmeans-mel":
        tokenize = kmeans_mel_tokens(tr, args.kmeans_clusters, seed=0)
        tr, va, te = tokenize(tr), tokenize(va), tokenize(te)
    return {"train": tr, "val": va, "test": te}


def run_arm(arm, size, fusion, n_q, seed, data, tokenizer, args, work: Path, domain: str) -> dict:
    latent_dim = data["train"][0].latent.shape[1] if data["train"][0].latent is not None else None
    arch, arm_size, opts, _ = arm_options(arm, size, n_q, fusion, latent_dim)
    d = arm_data(arm, seed, data, args)
    cfg = TrainConfig(steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=seed, val_fraction=0.0,
                      patience=args.patience, eval_every=args.eval_every)
    # one work folder can serve a process per domain and every schedule
    out = work / f"{domain}-{arm}-{fusion}-s{seed}-{args.max_steps}.pt"
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    ck = train(arch, arm_size, d["train"], tokenizer, out, cfg, context=args.context, log=lambda m: None,
               progress=False, model_options=opts, val_examples=d["val"])
    seconds = time.perf_counter() - t0
    es = ck.training.get("early_stopping", {})
    hist = ck.training["history"]
    recs = score_examples(ck.model, ck.config, tokenizer, d["test"], torch.device("cpu"))
    return {**run_key(domain, arm, fusion, seed, args), "arch": arch, "size": arm_size,
            "shape": {k: getattr(ck.config, k) for k in ("dim", "layers", "heads", "ff")},
            "mel_lag": ck.config.mel_lag, "features": ck.config.features,
            "params": count_params(ck.model), "train_seconds": seconds,
            "best_step": es.get("best_step", hist[-1]["step"]), "stopped_at": es.get("stopped_at", hist[-1]["step"]),
            "val_nll": es.get("best_val_nll", hist[-1].get("val_nll")), "history": hist,
            "files": [{"id": r["id"], "tokens": r["tokens"], "total_nats": r["total_nats"],
                       "accuracy": r["accuracy"], "duration": r["duration"]} for r in recs]}


def finished_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_run(done: list[dict], key: dict) -> dict | None:
    return next((r for r in done if all(r.get(k) == v for k, v in key.items())), None)


def count_rows(order: int, data) -> dict:
    lm = fit_count_lm(order, [e.tokens for e in data["train"]], [e.tokens for e in data["val"]])
    files = []
    for e in data["test"]:
        s = lm.surprisal(e.tokens)
        files.append({"id": e.id, "tokens": len(s), "total_nats": float(s.sum()), "accuracy": lm.accuracy(e.tokens),
                      "duration": e.duration})
    name = "unigram" if order == 1 else "bigram"
    return {"arm": name, "arch": name, "seed": None, "params": int(lm.uni.size + (lm.bi.size if lm.bi is not None else 0)),
            "smoothing": lm.k if order == 2 else lm.add, "files": files}


def summarise(runs: list[dict]) -> dict:
    """Seed-averaged per-file nats, token-weighted NLL, accuracy, bits/s."""
    ids = [f["id"] for f in runs[0]["files"]]
    tokens = np.array([f["tokens"] for f in runs[0]["files"]], np.float64)
    nats = np.mean([[f["total_nats"] for f in r["files"]] for r in runs], axis=0)
    acc = np.mean([[f["accuracy"] for f in r["files"]] for r in runs], axis=0)
    seconds = sum(f["duration"] for f in runs[0]["files"])
    nll = float(nats.sum() / tokens.sum())
    per_seed = [sum(f["total_nats"] for f in r["files"]) / sum(f["tokens"] for f in r["files"]) for r in runs]
    return {"ids": ids, "tokens": tokens, "nats": nats, "nats_per_seed": np.array([[f["total_nats"] for f in r["files"]]
                                                                                  for r in runs], np.float64),
            "nll": nll, "perplexity": math.exp(nll),
            "accuracy": float((acc * tokens).sum() / tokens.sum()), "bits_per_second": float(nats.sum() / math.log(2) / seconds),
            "nll_per_seed": per_seed}


def val_accuracy_at(run: dict, step: int) -> float | None:
    """Validation top-1 at the last validation at or before ``step`` (None without one)."""
    vals = [h for h in run.get("history", []) if h["step"] <= step and "val_accuracy" in h]
    return vals[-1]["val_accuracy"] if vals else None


def comparisons(summ: dict) -> list[tuple[str, str]]:
    """The (a, b) pairs of a domain's table: every model against token-gpt and the bigram, and the
    pairs that carry a control's meaning."""
    models = [a for a in summ if a not in ("unigram", "bigram") and a not in OTHER_TARGETS]
    pairs = [(a, "token-gpt") for a in models if a != "token-gpt"]
    pairs += [(a, "bigram") for a in models]
    pairs += [p for p in (("whisper-gpt", "token-gpt-matched"), ("whisper-gpt", "whisper-gpt-shuffled"),
                          ("latent-lag1", "info-control")) if p[0] in summ and p[1] in summ]
    return [(a, b) for a, b in pairs if b in summ]


def agreement(path_a: str, path_b: str) -> None:
    """Print the gaps of two results files (two schedules): a gap is reported only where its sign
    holds in both and its relative size agrees within 1 point."""
    ra, rb = (json.loads(Path(p).read_text()) for p in (path_a, path_b))
    pb = {(c["data"], c["a"], c["b"]): c for c in rb["paired"]}
    print(f"| data | a | b | {ra['max_steps']} steps | {rb['max_steps']} steps | same sign | within 1 point | reported |")
    print("|---|---|---|---:|---:|---|---|---|")
    for c in ra["paired"]:
        d = pb.get((c["data"], c["a"], c["b"]))
        if d is None:
            continue
        both_sig = (c["high"] < 0 or c["low"] > 0) and (d["high"] < 0 or d["low"] > 0)
        same = both_sig and np.sign(c["diff"]) == np.sign(d["diff"])
        close = abs(100 * (c["rel"] - d["rel"])) <= 1.0
        print(f"| {c['data']} | {c['a']} | {c['b']} | {100 * c['rel']:+.2f}% [{100 * c['rel_low']:+.2f}, "
              f"{100 * c['rel_high']:+.2f}] | {100 * d['rel']:+.2f}% [{100 * d['rel_low']:+.2f}, {100 * d['rel_high']:+.2f}] | "
              f"{'yes' if same else 'no'} | {'yes' if close else 'no'} | {'yes' if same and close else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="a folder written by benchmarks/make_corpus.py")
    ap.add_argument("--domains", default="speech,music")
    ap.add_argument("--minutes", type=float, default=None, help="minutes per domain to use (default: all)")
    ap.add_argument("--clip-seconds", type=float, default=None,
                    help="use only the first S seconds of every file (a smaller run with as many files)")
    ap.add_argument("--size", default="micro", choices=["micro", "tiny", "small", "large"])
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma list of {', '.join(ARMS)}")
    ap.add_argument("--fusions", default=DEFAULT_FUSION,
                    help=f"whisper-gpt fusions compared on validation (seed 0), the best is used; e.g. {','.join(FUSIONS)}")
    ap.add_argument("--fusion-domains", default=None, help="domains the fusions are compared on (default: --domains)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-steps", type=int, default=800,
                    help="schedule length (cosine over it); early stopping can end a run sooner")
    ap.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    ap.add_argument("--patience", type=int, default=4, help="validations without improvement before stopping")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bandwidth", type=float, default=6.0, help="tokenizer kbps (info-control reads all its codebooks)")
    ap.add_argument("--codec-checkpoint", default=None)
    ap.add_argument("--fit-seconds", type=float, default=3.0, help="seconds per training file for the codebook fit")
    ap.add_argument("--kmeans-clusters", type=int, default=256, help="tokens of the kmeans-mel arms")
    ap.add_argument("--accuracy-step", type=int, default=400,
                    help="the step at which the positive controls' validation top-1 is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (featurising and every training)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--work", default=None, help="folder for the cache and checkpoints (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--from-runs", default=None, metavar="RUNS.jsonl",
                    help="train nothing: tabulate the finished runs of this schedule found in RUNS.jsonl")
    ap.add_argument("--prepare-only", action="store_true", help="fit the tokenizer and featurise the corpus, then stop")
    ap.add_argument("--agreement", nargs=2, metavar=("A.json", "B.json"), default=None,
                    help="train nothing: compare the gaps of two results files (two schedules)")
    args = ap.parse_args()
    if args.agreement:
        agreement(*args.agreement)
        return
    if not args.corpus:
        ap.error("--corpus is required")

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="hybrid_vs_tokens."))
    work.mkdir(parents=True, exist_ok=True)
    domains = args.domains.split(",")
    corpus = load_corpus(Path(args.corpus), domains, args.minutes)
    codec, codec_desc, tokenizer = corpus_tokenizer(Path(args.corpus), work, args.codec_checkpoint,
                                                    args.fit_seconds, args.bandwidth, args.minutes)
    n_q = tokenizer["n_q"]
    t0 = time.perf_counter()
    cache = work / "cache"
    if args.clip_seconds:
        corpus = clip_files(corpus, args.clip_seconds, work / f"clips-{args.clip_seconds:g}s")
        cache = work / f"cache-{args.clip_seconds:g}s"
    all_files = [f for d in domains for s in SHARES for f in corpus[d][s]]
    examples = featurise(all_files, codec, tokenizer, cache)
    t_feat = time.perf_counter() - t0
    data = {d: {s: [examples[rel] for rel, _, _ in corpus[d][s] if rel in examples] for s in SHARES} for d in domains}
    log(f"tokenizer: {codec_desc}; {len(examples)} files tokenised + featurised in {t_feat:.0f} s")
    for d in domains:
        log("  " + d + ": " + ", ".join(f"{s} {len(data[d][s])} files / {sum(len(e.tokens) for e in data[d][s])} tokens"
                                        for s in SHARES))
    if args.prepare_only:
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    results = {"command": " ".join(sys.argv), "tokenizer": codec_desc, "tokenizer_info": tokenizer, "size": args.size,
               "seeds": seeds, "max_steps": args.max_steps, "eval_every": args.eval_every, "patience": args.patience,
               "batch_size": args.batch_size, "context": args.context, "lr": args.lr, "minutes": args.minutes,
               "threads": args.threads,
               "clip_seconds": args.clip_seconds,
               "splits": {d: {s: {"files": len(data[d][s]), "tokens": int(sum(len(e.tokens) for e in data[d][s]))}
                              for s in SHARES} for d in domains},
               "featurise_s": t_feat}
    runs_file = Path(args.from_runs) if args.from_runs else work / "runs.jsonl"
    done = finished_runs(runs_file)

    def get_run(domain: str, arm: str, fusion: str, seed: int) -> dict | None:
        """A finished training (from runs.jsonl) or, unless only tabulating, a new one (appended)."""
        key = run_key(domain, arm, fusion, seed, args)
        if not args.from_runs:
            done[:] = finished_runs(runs_file)  # with what another process sharing WORK has finished meanwhile
        r = find_run(done, key)
        if r is not None or args.from_runs:
            return r
        r = run_arm(arm, args.size, fusion, n_q, seed, data[domain], tokenizer, args, work, domain)
        with open(runs_file, "a") as f:  # every finished run, so that a stopped process resumes after it
            f.write(json.dumps(r) + "\n")
        done.append(r)
        nll = sum(f["total_nats"] for f in r["files"]) / sum(f["tokens"] for f in r["files"])
        log(f"{domain} {arm} seed {seed} ({args.max_steps} steps): test nll {nll:.4f}, val {r['val_nll']:.4f}, "
            f"best step {r['best_step']} of {r['stopped_at']} ({r['train_seconds']:.0f} s)")
        return r

    # 1. fusion choice on validation (seed 0; a fusion's run is the whisper-gpt arm's run of that fusion)
    fusions = args.fusions.split(",")
    sweep = {}
    if len(fusions) > 1 and any(ARMS[a][0] == "whisper-gpt" for a in arms):
        for fu in fusions:
            vals = {}
            for d in (args.fusion_domains.split(",") if args.fusion_domains else domains):
                r = get_run(d, "whisper-gpt", fu, seeds[0])
                if r is None:
                    continue
                vals[d] = r["val_nll"]
                log(f"fusion {fu} ({d}): val nll {r['val_nll']:.4f} (best step {r['best_step']}, {r['train_seconds']:.0f} s)")
            sweep[fu] = vals
        scored = {f: v for f, v in sweep.items() if v and len(v) == max(len(x) for x in sweep.values())}
        fusion = min(scored, key=lambda f: sum(scored[f].values())) if scored else fusions[0]
    else:
        fusion = fusions[0]
    results["fusion_sweep"] = sweep
    results["fusion"] = fusion
    log(f"fusion used: {fusion}")

    # 2. arms x seeds x domains (seed outermost: a stopped run has every arm of its first seeds), count baselines
    runs: dict[str, dict[str, list[dict]]] = {d: {} for d in domains}
    for d in domains:
        runs[d]["unigram"] = [count_rows(1, data[d])]
        runs[d]["bigram"] = [count_rows(2, data[d])]
    for seed in seeds:
        for d in domains:
            for arm in arms:
                r = get_run(d, arm, fusion, seed)
                if r is not None:
                    runs[d].setdefault(arm, []).append(r)
    results["seeds"] = sorted({r["seed"] for d in domains for a in arms for r in runs[d].get(a, [])})

    # 3. table and intervals (files and seeds resampled together)
    table, compare = [], []
    for d in domains:
        summ = {a: summarise(rs) for a, rs in runs[d].items()}
        for a, s in summ.items():
            table.append({"data": d, "model": a, "params": runs[d][a][0]["params"], "nll": s["nll"],
                          "accuracy": s["accuracy"], "perplexity": s["perplexity"],
                          "bits_per_second": s["bits_per_second"], "nll_per_seed": s["nll_per_seed"],
                          "seeds": [r.get("seed") for r in runs[d][a]],
                          "best_steps": [r.get("best_step") for r in runs[d][a]],
                          "val_accuracy_at": [val_accuracy_at(r, args.accuracy_step) for r in runs[d][a]],
                          "train_seconds": [r.get("train_seconds") for r in runs[d][a]],
                          "other_targets": a in OTHER_TARGETS, "beats_bigram": None})
        for a, b in comparisons(summ):
            pd = paired_difference_seeds(summ[a]["nats_per_seed"], summ[b]["nats_per_seed"], summ[a]["tokens"],
                                         args.bootstrap, seed=0)
            compare.append({"data": d, "a": a, "b": b, **pd})
            if b == "bigram":
                for row in table:
                    if row["data"] == d and row["model"] == a:
                        row["beats_bigram"] = pd["high"] < 0
    results["table"] = table
    results["paired"] = compare
    results["runs"] = {d: {a: [{k: v for k, v in r.items() if k != "files"} for r in rs] for a, rs in runs[d].items()}
                       for d in domains}
    results["per_file"] = {d: {a: summarise(rs)["nats"].tolist() for a, rs in runs[d].items()} for d in domains}
    results["total_s"] = time.perf_counter() - t_start

    print(f"\ntokenizer: {codec_desc}")
    print(f"size {args.size}, {args.max_steps} steps, seeds {results['seeds']}, fusion {fusion}, early stopping on "
          f"validation (every {args.eval_every} steps, patience {args.patience}), batch {args.batch_size}, "
          f"context {args.context}, lr {args.lr:g}\n")
    if sweep:
        print("fusion sweep (validation NLL, seed " + str(seeds[0]) + "): "
              + ", ".join(f"{f} " + " / ".join(f"{d} {v:.4f}" for d, v in vals.items()) for f, vals in sweep.items()) + "\n")
    print(f"| data | model | params | seeds | NLL (nats) | NLL per seed | top-1 acc | val top-1 @ {args.accuracy_step} | "
          "PPL | bits/s | beats bigram |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for r in table:
        bb = "" if r["beats_bigram"] is None else ("yes" if r["beats_bigram"] else "no")
        at = [v for v in r["val_accuracy_at"] if v is not None]
        name = r["model"] + (" (own tokens)" if r["other_targets"] else "")
        seeds_s = "-" if r["seeds"] == [None] else str(len(r["seeds"]))
        per_seed = " / ".join(f"{v:.3f}" for v in r["nll_per_seed"]) if seeds_s != "-" else ""
        at_s = f"{100 * np.mean(at):.1f}%" if at else ""
        print(f"| {r['data']} | {name} | {r['params'] / 1e6:.3f}M | {seeds_s} | {r['nll']:.3f} | {per_seed} | "
              f"{100 * r['accuracy']:.2f}% | {at_s} | {r['perplexity']:.2f} | {r['bits_per_second']:.0f} | {bb} |")
    print("\npaired differences NLL(a) - NLL(b), nats/token, bootstrap 95 % over test files and seeds together:\n")
    print("| data | a | b | diff | 95 % interval | relative | files | seeds a/b |")
    print("|---|---|---|---:|---|---:|---:|---:|")
    for c in compare:
        print(f"| {c['data']} | {c['a']} | {c['b']} | {c['diff']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] | "
              f"{100 * c['rel']:+.2f}% [{100 * c['rel_low']:+.2f}, {100 * c['rel_high']:+.2f}] | {c['files']} | "
              f"{c['seeds_a']}/{c['seeds_b']} |")
    print(f"\ntotal {results['total_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
