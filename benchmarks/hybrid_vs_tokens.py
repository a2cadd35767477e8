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
- ``unigram`` / ``bigram`` count models (smoothing chosen on validation): a model only counts if
  it beats the bigram on the test files.

Before the arms, the fusion choices of whisper-gpt (``--fusions``) are compared on the validation
split (seed 0) and the best one is used (never the test split). The output is the paper-style table
(NLL nats/token, top-1, PPL, bits/s, params; NLL averaged over seeds per file), per-file paired
differences with bootstrap 95 % intervals, and a JSON file.

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
from audiotok.lm.gpt import FUSIONS  # noqa: E402
from audiotok.lm.tokenizer import tokenizer_spec  # noqa: E402
from audiotok.registry import get_codec  # noqa: E402
from audiotok.train.controls import ARMS, arm_options, shuffle_mel  # noqa: E402
from audiotok.train.count_lm import fit_count_lm  # noqa: E402
from audiotok.train.data import CacheJob, cache_dir, read_cached  # noqa: E402
from audiotok.train.lm import TrainConfig, score_examples, train  # noqa: E402
from audiotok.train.paired import paired_difference  # noqa: E402
from audiotok.weights import ENCODEC_CHECKPOINTS, hub_checkpoint_dir  # noqa: E402

SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_ARMS = "token-gpt,whisper-gpt,whisper-gpt-shuffled,whisper-gpt-leaky,info-control"


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


def featurise(files: list[tuple[str, str, float]], codec, tokenizer, cache_root: Path) -> dict:
    job = CacheJob(cache_dir(cache_root, tokenizer), tokenizer["codec"])
    adapter = LMFeatures(CodecEncoder(codec, tokenizer["bandwidth"], torch.device("cpu")), with_mel=True)
    sources = [Source(path, rel, None) for rel, path, _ in files]
    summary = pipeline.run(sources, job, adapter, workers=1)
    for o in summary.failed:
        log(f"  skipped {o.source.display}: {o.error}")
    return {s.rel: read_cached(job.target(s), s.rel, tokenizer) for s in sources if job.is_done(s)}


def run_arm(arm, size, fusion, n_q, seed, data, tokenizer, args, work: Path, domain: str) -> dict:
    arch, arm_size, opts, shuffle = arm_options(arm, size, n_q, fusion)
    tr, va, te = data["train"], data["val"], data["test"]
    if shuffle:
        # mel from another file of the same split (from the training files when a split has one file)
        tr, va, te = (shuffle_mel(x, seed + i, None if len(x) > 1 else tr) for i, x in enumerate((tr, va, te)))
    cfg = TrainConfig(steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=seed, val_fraction=0.0,
                      patience=args.patience, eval_every=args.eval_every)
    out = work / f"{domain}-{arm}-{fusion}-s{seed}.pt"  # one work folder can serve a process per domain
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    ck = train(arch, arm_size, tr, tokenizer, out, cfg, context=args.context, log=lambda m: None, progress=False,
               model_options=opts, val_examples=va)
    seconds = time.perf_counter() - t0
    es = ck.training.get("early_stopping", {})
    hist = ck.training["history"]
    recs = score_examples(ck.model, ck.config, tokenizer, te, torch.device("cpu"))
    return {"arm": arm, "arch": arch, "size": arm_size, "fusion": ck.config.fusion, "mel_lag": ck.config.mel_lag,
            "seed": seed, "params": count_params(ck.model), "train_seconds": seconds,
            "best_step": es.get("best_step", hist[-1]["step"]), "stopped_at": es.get("stopped_at", hist[-1]["step"]),
            "val_nll": es.get("best_val_nll", hist[-1].get("val_nll")), "history": hist,
            "files": [{"id": r["id"], "tokens": r["tokens"], "total_nats": r["total_nats"],
                       "accuracy": r["accuracy"], "duration": r["duration"]} for r in recs]}


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
    return {"ids": ids, "tokens": tokens, "nats": nats, "nll": nll, "perplexity": math.exp(nll),
            "accuracy": float((acc * tokens).sum() / tokens.sum()), "bits_per_second": float(nats.sum() / math.log(2) / seconds),
            "nll_per_seed": per_seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a folder written by benchmarks/make_corpus.py")
    ap.add_argument("--domains", default="speech,music")
    ap.add_argument("--minutes", type=float, default=None, help="minutes per domain to use (default: all)")
    ap.add_argument("--clip-seconds", type=float, default=None,
                    help="use only the first S seconds of every file (a smaller run with as many files)")
    ap.add_argument("--size", default="micro", choices=["micro", "tiny", "small", "large"])
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma list of {', '.join(ARMS)}")
    ap.add_argument("--fusions", default="proj",
                    help=f"whisper-gpt fusions compared on validation (seed 0), the best is used; e.g. {','.join(FUSIONS)}")
    ap.add_argument("--seeds", default="0,1")
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
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--work", default=None, help="folder for the cache and checkpoints (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--from-runs", default=None, metavar="RUNS.jsonl",
                    help="train nothing: tabulate the finished runs of a stopped run (WORK/runs.jsonl)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="hybrid_vs_tokens."))
    work.mkdir(parents=True, exist_ok=True)
    domains = args.domains.split(",")
    corpus = load_corpus(Path(args.corpus), domains, args.minutes)
    # The codec is fitted on the training files of every domain of the corpus, whichever --domains
    # this run takes: one tokenizer (and one feature cache) for the corpus, so that a process per
    # domain (--domains speech / --domains music, same --work) shares them.
    fit_corpus = load_corpus(Path(args.corpus), corpus_domains(Path(args.corpus)), args.minutes)
    train_paths = [p for d in fit_corpus for _, p, _ in fit_corpus[d]["train"]]
    fit = train_paths[:: max(1, len(train_paths) // 80)]
    codec, codec_desc = load_tokenizer_codec(args.codec_checkpoint, work, fit, 0, args.fit_seconds)
    n_q = get_codec(codec.name).n_codebooks(args.bandwidth)
    tokenizer = tokenizer_info(codec, args.bandwidth, list(range(n_q)))
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
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    results = {"command": " ".join(sys.argv), "tokenizer": codec_desc, "tokenizer_info": tokenizer, "size": args.size,
               "seeds": seeds, "max_steps": args.max_steps, "eval_every": args.eval_every, "patience": args.patience,
               "batch_size": args.batch_size, "context": args.context, "lr": args.lr, "minutes": args.minutes,
               "clip_seconds": args.clip_seconds,
               "splits": {d: {s: {"files": len(data[d][s]), "tokens": int(sum(len(e.tokens) for e in data[d][s]))}
                              for s in SHARES} for d in domains},
               "featurise_s": t_feat}

    # 1. fusion choice on validation (seed 0)
    fusions = args.fusions.split(",")
    sweep = {}
    if args.from_runs:
        fusions = fusions[:1]
    if len(fusions) > 1 and any(ARMS[a][0] == "whisper-gpt" for a in arms):
        for fu in fusions:
            vals = {}
            for d in domains:
                r = run_arm("whisper-gpt", args.size, fu, n_q, seeds[0], data[d], tokenizer, args, work, d)
                vals[d] = r["val_nll"]
                log(f"fusion {fu} ({d}): val nll {r['val_nll']:.4f} (best step {r['best_step']}, {r['train_seconds']:.0f} s)")
            sweep[fu] = vals
        fusion = min(sweep, key=lambda f: sum(sweep[f].values()))
    else:
        fusion = fusions[0]
    results["fusion_sweep"] = sweep
    results["fusion"] = fusion
    log(f"fusion used: {fusion}")

    # 2. arms x seeds x domains, count baselines
    runs: dict[str, dict[str, list[dict]]] = {d: {} for d in domains}
    for d in domains:
        runs[d]["unigram"] = [count_rows(1, data[d])]
        runs[d]["bigram"] = [count_rows(2, data[d])]
    if args.from_runs:
        for line in Path(args.from_runs).read_text().splitlines():
            r = json.loads(line)
            runs[r.pop("domain")].setdefault(r["arm"], []).append(r)
        seeds = sorted({r["seed"] for d in domains for a in arms for r in runs[d].get(a, [])})
        results["seeds"] = seeds
        log(f"tabulating {args.from_runs}: seeds {seeds}")
    for seed in ([] if args.from_runs else seeds):  # seed outermost: a stopped run has every arm of its first seeds
        for d in domains:
            for arm in arms:
                r = run_arm(arm, args.size, fusion, n_q, seed, data[d], tokenizer, args, work, d)
                runs[d].setdefault(arm, []).append(r)
                with open(work / "runs.jsonl", "a") as f:  # every finished run, in case the process is stopped
                    f.write(json.dumps({"domain": d, **r}) + "\n")
                nll = sum(f["total_nats"] for f in r["files"]) / sum(f["tokens"] for f in r["files"])
                log(f"{d} {arm} seed {seed}: test nll {nll:.4f}, val {r['val_nll']:.4f}, best step {r['best_step']} "
                    f"of {r['stopped_at']} ({r['train_seconds']:.0f} s)")

    # 3. table and intervals
    table, compare = [], []
    for d in domains:
        summ = {a: summarise(rs) for a, rs in runs[d].items()}
        for a, s in summ.items():
            table.append({"data": d, "model": a, "params": runs[d][a][0]["params"], "nll": s["nll"],
                          "accuracy": s["accuracy"], "perplexity": s["perplexity"],
                          "bits_per_second": s["bits_per_second"], "nll_per_seed": s["nll_per_seed"],
                          "best_steps": [r.get("best_step") for r in runs[d][a]],
                          "beats_bigram": None})
        pairs = [(a, "token-gpt") for a in summ if a not in ("token-gpt", "unigram", "bigram")]
        pairs += [(a, "bigram") for a in summ if a not in ("unigram", "bigram")]
        if "whisper-gpt" in summ and "whisper-gpt-shuffled" in summ:
            pairs.append(("whisper-gpt", "whisper-gpt-shuffled"))
        for a, b in pairs:
            if b not in summ:
                continue
            pd = paired_difference(summ[a]["nats"], summ[b]["nats"], summ[a]["tokens"], args.bootstrap, seed=0)
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
    print(f"size {args.size}, seeds {seeds}, fusion {fusion}, early stopping on validation "
          f"(every {args.eval_every} steps, patience {args.patience}), batch {args.batch_size}, context {args.context}\n")
    print("| data | model | params | NLL (nats) | top-1 acc | PPL | bits/s | beats bigram |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in table:
        bb = "" if r["beats_bigram"] is None else ("yes" if r["beats_bigram"] else "no")
        print(f"| {r['data']} | {r['model']} | {r['params'] / 1e6:.3f}M | {r['nll']:.3f} | {100 * r['accuracy']:.2f}% | "
              f"{r['perplexity']:.2f} | {r['bits_per_second']:.0f} | {bb} |")
    print("\nper-file paired differences, NLL(a) - NLL(b), nats/token, bootstrap 95 % over files:\n")
    print("| data | a | b | diff | 95 % interval | relative | files |")
    print("|---|---|---|---:|---|---:|---:|")
    for c in compare:
        print(f"| {c['data']} | {c['a']} | {c['b']} | {c['diff']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] | "
              f"{100 * c['rel']:+.2f}% [{100 * c['rel_low']:+.2f}, {100 * c['rel_high']:+.2f}] | {c['files']} |")
    print(f"\ntotal {results['total_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
