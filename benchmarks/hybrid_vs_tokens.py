"""Whisper-GPT (tokens + causal mel) against the token-only GPT at small scale (paper Tables 1-2).

Trains both models with the same size, steps, data, split and seed on the music and speech files
of a folder (default ../shared/audio), scores the held-out files of each domain with both, and
prints params, NLL (nats/token), top-1 accuracy, PPL and bits/s next to the uniform baseline
(ln 1024). Then measures LM scoring throughput (tokens/s) of the batched window scorer against a
per-file, unbatched loop over the same windows.

Tokens come from the official EnCodec 24 kHz weights when they are in the torch hub cache or given
with --codec-checkpoint; otherwise (no network) from a random-weight EnCodec with filled codebooks
(``audiotok.testing.random_encodec``), which the output says.

    python benchmarks/hybrid_vs_tokens.py --size tiny --steps 400
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audiotok import pipeline  # noqa: E402
from audiotok.models.codec import CodecEncoder, load_codec  # noqa: E402
from audiotok.models.lm import GPTScorer, LMCheckpoint, count_params, tokenizer_info  # noqa: E402
from audiotok.models.lm_adapter import LMFeatures  # noqa: E402
from audiotok.scoring import WindowScorer, corpus_summary, file_scores, window_spans  # noqa: E402
from audiotok.sources import discover  # noqa: E402
from audiotok.train.data import CacheJob, cache_dir, read_cached  # noqa: E402
from audiotok.train.lm import TrainConfig, train  # noqa: E402
from audiotok.weights import ENCODEC_CHECKPOINTS, hub_checkpoint_dir  # noqa: E402


def load_tokenizer_codec(path: str | None, work: Path, fit_files: list[str], seed: int):
    """The official codec if available; else a random-weight one whose residual codebooks are
    fitted (k-means) on latents of the *training* files, so codes spread over the codebook."""
    official = hub_checkpoint_dir() / ENCODEC_CHECKPOINTS["encodec_24khz"]
    if path or official.is_file():
        return load_codec("encodec_24khz", path, "cpu"), path or "official EnCodec 24 kHz weights"
    from audiotok.audio import read
    from audiotok.testing import random_encodec, save_encodec_checkpoint

    m = random_encodec("encodec_24khz", seed=seed)
    lat = []
    with torch.inference_mode():
        for f in fit_files:
            x, _ = read(f, sample_rate=24000, channels=1)
            lat.append(m.encoder(torch.from_numpy(x[:, : 24000 * 10])[None])[0].T)  # first 10 s of each
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
    ck = save_encodec_checkpoint(m, work / "codec")
    desc = "RANDOM-weight EnCodec encoder, residual codebooks fitted by k-means on the training files (no official weights offline)"
    return load_codec("encodec_24khz", ck, "cpu"), desc


def featurise(files, codec, tokenizer, cache_root: Path):
    job = CacheJob(cache_dir(cache_root, tokenizer))
    adapter = LMFeatures(CodecEncoder(codec, tokenizer["bandwidth"], torch.device("cpu")), with_mel=True)
    t0 = time.perf_counter()
    summary = pipeline.run(files, job, adapter, workers=1)
    for o in summary.failed:
        print(f"  skipped {o.source.display}: {o.error}", file=sys.stderr)
    out = {s.rel: read_cached(job.target(s), s.rel) for s in files if job.is_done(s)}
    return out, time.perf_counter() - t0


def split(ids: list[str], fraction: float, seed: int) -> list[str]:
    """Held-out files per domain (first path component), at least one per domain."""
    held = []
    for dom in sorted({i.split("/")[0] for i in ids}):
        dom_ids = sorted(i for i in ids if i.split("/")[0] == dom)
        random.Random(seed).shuffle(dom_ids)
        held += dom_ids[: max(1, round(fraction * len(dom_ids)))]
    return sorted(held)


def score(ck: LMCheckpoint, examples) -> list[dict]:
    sc = GPTScorer(ck, torch.device("cpu"))
    fss = WindowScorer(sc, rows=8).score([(e.tokens[None], e.mel) for e in examples])
    return [{"status": "ok", "duration": e.duration, **file_scores(fs, e.duration, 75)} for e, fs in zip(examples, fss)]


def throughput(ck: LMCheckpoint, examples, repeats: int = 2) -> tuple[float, float]:
    """Tokens/s: batched fixed-shape windows vs one file and one window at a time."""
    sc = GPTScorer(ck, torch.device("cpu"))
    items = [(e.tokens[None], e.mel) for e in examples]
    n = sum(len(e.tokens) for e in examples)
    best_b = best_u = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        WindowScorer(sc, rows=16).score(items)
        best_b = min(best_b, time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for codes, mel in items:
                tok, m, tgt = sc.inputs(codes, mel)
                for w in window_spans(tgt.shape[1], sc.context):
                    logits = sc.model(tok[:, w.start:w.end], m[None, w.start:w.end] if m is not None else None)
                    torch.log_softmax(logits[0, w.score_from - w.start:], -1)
        best_u = min(best_u, time.perf_counter() - t0)
    return n / best_b, n / best_u


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "audio"))
    ap.add_argument("--domains", default="music,speech")
    ap.add_argument("--size", default="tiny", choices=["micro", "tiny", "small"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=float, default=0.25, help="fraction of each domain's files held out")
    ap.add_argument("--codec-checkpoint", default=None)
    ap.add_argument("--work", default=None, help="folder for the cache and checkpoints (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="hybrid_vs_tokens."))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    roots = [str(Path(args.data) / d) for d in args.domains.split(",")]
    files = discover(roots)
    # relative ids keep the domain folder as first component
    files = [type(f)(f.path, str(Path(f.path).relative_to(args.data)), f.error) for f in files]
    held = split([f.rel for f in files], args.held_out, args.seed)
    codec, codec_desc = load_tokenizer_codec(args.codec_checkpoint, work, [f.path for f in files if f.rel not in held],
                                             args.seed)
    tokenizer = tokenizer_info(codec, 6.0, [0])
    examples, t_feat = featurise(files, codec, tokenizer, work / "cache")
    held = [h for h in held if h in examples]
    train_ex = [examples[i] for i in sorted(examples) if i not in held]
    held_ex = [examples[i] for i in held]
    n_train = sum(len(e.tokens) for e in train_ex)
    print(f"tokenizer: {codec_desc}; {len(examples)} files, {t_feat:.0f} s to tokenise + featurise", file=sys.stderr)
    print(f"train: {len(train_ex)} files / {n_train} tokens; held out: {', '.join(held)}", file=sys.stderr)

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, val_fraction=0.0)
    results = {"command": " ".join(sys.argv), "tokenizer": codec_desc, "size": args.size, "steps": args.steps,
               "batch_size": args.batch_size, "context": args.context, "seed": args.seed, "held_out": held,
               "train_tokens": n_train, "rows": [], "timing": {"featurise_s": t_feat}}
    ckpts = {}
    for arch in ("whisper-gpt", "token-gpt"):
        t0 = time.perf_counter()
        ckpts[arch] = train(arch, args.size, train_ex, tokenizer, work / f"{arch}.pt", cfg, context=args.context,
                            log=lambda m: print(m, file=sys.stderr), progress=False)
        results["timing"][f"train_{arch}_s"] = time.perf_counter() - t0
    for dom in sorted({h.split("/")[0] for h in held}):
        dom_ex = [e for e in held_ex if e.id.split("/")[0] == dom]
        for arch, ck in ckpts.items():
            s = corpus_summary(score(ck, dom_ex))
            results["rows"].append({"data": dom, "model": arch, "params": count_params(ck.model), "nll": s["nll"],
                                    "accuracy": s["accuracy"], "perplexity": s["perplexity"],
                                    "bits_per_second": s["bits_per_second"], "tokens": s["tokens"]})
    b, u = throughput(ckpts["whisper-gpt"], list(examples.values()))
    results["throughput"] = {"batched_tokens_per_s": b, "unbatched_tokens_per_s": u, "speedup": b / u}
    results["timing"]["total_s"] = time.perf_counter() - t_start

    uniform = math.log(1024)
    print("\n| data | model | params | NLL (nats) | top-1 acc | PPL | bits/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for dom in sorted({r["data"] for r in results["rows"]}):
        rows = [r for r in results["rows"] if r["data"] == dom]
        for r in rows:
            print(f"| {dom} | {r['model']} ({args.size}) | {r['params'] / 1e6:.2f}M | {r['nll']:.3f} | "
                  f"{100 * r['accuracy']:.2f}% | {r['perplexity']:.2f} | {r['bits_per_second']:.0f} |")
        print(f"| {dom} | uniform | 0 | {uniform:.3f} | {100 / 1024:.2f}% | 1024.00 | {75 * 10:.0f} |")
    th = results["throughput"]
    print(f"\nscoring throughput (whisper-gpt {args.size}, LM stage, {sum(len(e.tokens) for e in examples.values())} "
          f"tokens): batched {th['batched_tokens_per_s']:.0f} tokens/s, per-file unbatched loop "
          f"{th['unbatched_tokens_per_s']:.0f} tokens/s ({th['speedup']:.2f}x)")
    print(f"total {results['timing']['total_s'] / 60:.1f} min; timings {json.dumps(results['timing'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
