"""How learnable is the positive control's target? c_t (the level-0 code) from z_t (the codec latent).

``latent-lag0`` in ``hybrid_vs_tokens.py`` feeds z_t through whisper-gpt's feature branch, and c_t is
the nearest level-0 codeword of z_t: the information is there by construction. This script asks how
much of it a learner can pick up in a given number of steps, outside the LM, on the same corpus,
tokenizer and feature cache:

- the exact rule (nearest codeword of z_t; should be ~100 %, or the latent is not what the codes
  quantise);
- a linear softmax classifier z_t -> c_t (128 -> 1024; the rule itself is linear in z_t), and one
  through a 64-wide bottleneck (the micro model's width), trained with the LM's optimiser, rate and
  tokens per step (AdamW, lr 1e-3, 16 x 256 tokens), on standardised z_t as the branch sees it.

Their test top-1 at the LM's step counts is what the 80 % bar of issue 21 can be held against.

    python benchmarks/latent_probe.py --corpus CORPUS --work WORK --steps 400,800,2400 --json probe.json

(``CORPUS`` / ``WORK`` as for ``hybrid_vs_tokens.py``: the same tokenizer and cache are reused.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hybrid_vs_tokens as H  # noqa: E402  (the benchmark's corpus, tokenizer and cache)


def arrays(split: list) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([e.latent for e in split]), np.concatenate([e.tokens for e in split]).astype(np.int64)


def nearest_codeword(codec, z: np.ndarray) -> np.ndarray:
    import torch

    emb = codec.quantizer.vq.layers[0]._codebook.embed.detach().float()  # [bins, D]
    zt = torch.from_numpy(z).float()
    dist = (zt * zt).sum(1, keepdim=True) - 2 * zt @ emb.T + (emb * emb).sum(1)[None]
    return dist.argmin(1).numpy()


def train_probe(ztr, ctr, zte, cte, width: int | None, steps: list[int], batch: int, lr: float, seed: int) -> dict:
    import torch

    torch.manual_seed(seed)
    d, bins = ztr.shape[1], int(max(ctr.max(), cte.max())) + 1
    net = (torch.nn.Linear(d, bins) if width is None else
           torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.Linear(width, bins)))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = torch.from_numpy(ztr).float(), torch.from_numpy(ctr)
    xte, yte = torch.from_numpy(zte).float(), torch.from_numpy(cte)
    out = {}
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, xtr.shape[0], (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in steps:
            with torch.no_grad():
                out[step] = {"test_top1": float((net(xte).argmax(1) == yte).float().mean()),
                             "train_loss": float(loss)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True, help="hybrid_vs_tokens.py's --work (tokenizer and feature cache)")
    ap.add_argument("--domain", default="speech")
    ap.add_argument("--steps", default="400,800,2400")
    ap.add_argument("--batch", type=int, default=16 * 256, help="tokens per step (the LM's 16 x 256)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    corpus_dir, work = Path(args.corpus), Path(args.work)
    codec, desc, tokenizer = H.corpus_tokenizer(corpus_dir, work, None, 3.0, 6.0)  # the benchmark's defaults
    corpus = H.load_corpus(corpus_dir, [args.domain], None)
    examples = H.featurise([f for s in H.SHARES for f in corpus[args.domain][s]], codec, tokenizer, work / "cache")
    split = {s: [examples[rel] for rel, _, _ in corpus[args.domain][s] if rel in examples] for s in H.SHARES}
    ztr, ctr = arrays(split["train"])
    zte, cte = arrays(split["test"])
    mu, sd = ztr.mean(0), ztr.std(0) + 1e-5
    steps = [int(s) for s in args.steps.split(",")]
    res = {"tokenizer": desc, "domain": args.domain, "train_tokens": int(len(ctr)), "test_tokens": int(len(cte)),
           "exact_rule_top1": float((nearest_codeword(codec, zte) == cte).mean()), "probes": {}}
    print(f"{args.domain}: {len(ctr)} training and {len(cte)} test frames; tokenizer: {desc}")
    print(f"exact rule (nearest level-0 codeword of z_t): test top-1 {100 * res['exact_rule_top1']:.2f} %")
    for name, width in (("linear 128 -> 1024", None), ("bottleneck 128 -> 64 -> 1024", 64)):
        got = train_probe((ztr - mu) / sd, ctr, (zte - mu) / sd, cte, width, steps, args.batch, args.lr, args.seed)
        res["probes"][name] = got
        print(f"{name}: " + ", ".join(f"step {s}: {100 * v['test_top1']:.1f} %" for s, v in got.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
