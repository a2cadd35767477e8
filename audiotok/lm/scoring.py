"""NLL, perplexity and surprisal from an LM's logits, with sliding windows for long files.

Scores follow docs/references.md, Whisper-GPT: for each scored token, surprisal ``s = -ln p(token | past)``
in nats; a file's ``nll`` is the mean surprisal, and corpus summaries are token-weighted.
Windows have a fixed length (the model's context) and are run in groups of a fixed number of
rows, so a file's scores never depend on which files share its batch. torch is imported by the
functions that run a model, so that summaries (``file_scores``, ``corpus_summary``) need none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Window:
    start: int  # first input position in the window
    end: int  # one past the last
    score_from: int  # positions [score_from, end) are scored by this window


def window_spans(n: int, context: int, stride: int | None = None) -> list[Window]:
    """Windows of ``context`` positions every ``stride`` (default context // 2) covering ``n`` positions.

    Every position is scored by exactly one window; a scored position has at least
    ``context - stride`` positions of history in its window, except in the first window."""
    stride = stride or context // 2
    if n <= context:
        return [Window(0, n, 0)] if n > 0 else []
    starts = list(range(0, n - context, stride))
    if starts[-1] + context < n:
        starts.append(n - context)
    out, scored = [], 0
    for s in starts:
        e = s + context
        out.append(Window(s, e, scored))
        scored = e
    return out


@dataclass
class FrameScores:
    """Per-frame results of one file, arrays ``[T, K]`` for the K scored codebooks."""

    token: np.ndarray  # int16
    surprisal: np.ndarray  # float32, nats
    entropy: np.ndarray  # float32, nats
    rank: np.ndarray  # int32, 1 = the model's top choice

    @property
    def frames(self) -> int:
        return int(self.token.shape[0])


def token_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Surprisal (nats), predictive entropy (nats) and 1-based rank of ``targets`` under ``logits [..., V]``."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    tgt = logp.gather(-1, targets[..., None].long())
    surprisal = -tgt[..., 0]
    entropy = -(logp.exp() * logp).sum(-1)
    rank = 1 + (logp > tgt).sum(-1)
    return surprisal, entropy, rank


class WindowScorer:
    """Runs a scorer (``models.lm.GPTScorer`` / ``EncodecLMScorer``) over many files at once."""

    def __init__(self, scorer, rows: int = 8):
        self.scorer = scorer
        self.rows = rows

    def score(self, items: list[tuple[np.ndarray, np.ndarray | None]]) -> list[FrameScores]:
        """``items``: (codes ``[n_q, T]``, raw log-mel ``[T, 80]`` (or the features the model
        reads) or None) -> per-file scores."""
        prepared = [self.scorer.inputs(codes, mel) for codes, mel in items]
        K = len(self.scorer.codebooks)
        results = []
        for _tok, _mel, tgt in prepared:
            T = tgt.shape[1]
            results.append((np.zeros((T, K), np.float32), np.zeros((T, K), np.float32), np.zeros((T, K), np.int32)))
        if hasattr(self.scorer, "stream"):
            self._streams(prepared, results)
        else:
            self._windows(prepared, results)
        return [FrameScores(tgt.T.numpy().astype(np.int16), *res) for (_, _, tgt), res in zip(prepared, results)]

    def _windows(self, prepared, results) -> None:
        """Fixed-length windows (stride context/2), ``rows`` windows per model call."""
        import torch

        sc, L = self.scorer, self.scorer.context
        jobs = [(i, w) for i, (_, _, tgt) in enumerate(prepared) for w in window_spans(tgt.shape[1], L, sc.stride)]
        n_in = prepared[0][0].shape[0] if prepared else 1  # input rows (codebooks the model reads)
        for g in range(0, len(jobs), self.rows):
            group = jobs[g:g + self.rows]
            tokens = torch.zeros(self.rows, n_in, L, dtype=torch.long)
            width = next((m.shape[-1] for _, m, _ in prepared if m is not None), 0)  # mel bins (or latent width)
            mel = torch.zeros(self.rows, L, width) if sc.uses_mel else None
            offsets = torch.zeros(self.rows, dtype=torch.long)
            for r, (i, w) in enumerate(group):
                tok, m, _ = prepared[i]
                tokens[r, :, : w.end - w.start] = tok[:, w.start:w.end]
                if mel is not None:
                    mel[r, : w.end - w.start] = m[w.start:w.end]
                offsets[r] = w.start
            logits = sc.logits(tokens, mel, offsets).float().cpu()  # [R, L, K, V]
            for r, (i, w) in enumerate(group):
                a, b = w.score_from - w.start, w.end - w.start
                _fill(results[i], w.score_from, logits[r, a:b], prepared[i][2][:, w.score_from:w.end].T)

    def _streams(self, prepared, results) -> None:
        """Whole-file streams in chunks carrying the model state, ``rows`` files side by side."""
        import torch

        sc, C = self.scorer, self.scorer.chunk
        K = len(sc.codebooks)
        order = sorted(range(len(prepared)), key=lambda i: -prepared[i][2].shape[1])
        for g in range(0, len(order), self.rows):
            group = order[g:g + self.rows]
            longest = prepared[group[0]][2].shape[1]
            states = None
            for off in range(0, longest, C):
                tokens = torch.zeros(self.rows, K, C, dtype=torch.long)
                for r, i in enumerate(group):
                    piece = prepared[i][0][:, off:off + C]
                    tokens[r, :, : piece.shape[1]] = piece
                logits, states = sc.stream(tokens, states, off)
                logits = logits.float().cpu()
                for r, i in enumerate(group):
                    tgt = prepared[i][2][:, off:off + C].T
                    if tgt.shape[0]:
                        _fill(results[i], off, logits[r, : tgt.shape[0]], tgt)


def _fill(res, start: int, logits: torch.Tensor, targets: torch.Tensor) -> None:
    s, h, rk = token_stats(logits, targets)
    n = targets.shape[0]
    res[0][start:start + n] = s.numpy()
    res[1][start:start + n] = h.numpy()
    res[2][start:start + n] = rk.numpy()


def file_scores(fs: FrameScores, duration: float, frame_rate: float) -> dict:
    """The per-file score fields of a record (docs/references.md, Whisper-GPT, score definitions)."""
    n = int(fs.surprisal.size)
    total = float(fs.surprisal.astype(np.float64).sum())
    nll = total / n if n else float("nan")
    per_cb = fs.surprisal.astype(np.float64).mean(0) if n else np.zeros(fs.surprisal.shape[1])
    return {
        "frames": fs.frames,
        "tokens": n,
        "nll": nll,
        "bits_per_token": nll / LN2,
        "perplexity": math.exp(nll) if n else float("nan"),
        "total_nats": total,
        "total_bits": total / LN2,
        "bits_per_second": total / LN2 / duration if duration > 0 else float("nan"),
        "bits_per_frame": total / LN2 / fs.frames if fs.frames else float("nan"),
        "accuracy": float((fs.rank == 1).mean()) if n else float("nan"),
        "entropy": float(fs.entropy.astype(np.float64).mean()) if n else float("nan"),
        "nll_per_codebook": [float(v) for v in per_cb],
    }


def corpus_summary(records: list[dict]) -> dict:
    """Token-weighted summary of ok records: exp(total nats / total tokens), never a mean of PPLs."""
    ok = [r for r in records if r.get("status", "ok") in ("ok", "skipped") and r.get("tokens")]
    tokens = sum(int(r["tokens"]) for r in ok)
    frames = sum(int(r["frames"]) for r in ok)
    nats = sum(float(r["total_nats"]) for r in ok)
    seconds = sum(float(r.get("duration", 0.0)) for r in ok)
    correct = sum(float(r["accuracy"]) * int(r["tokens"]) for r in ok)
    ent = sum(float(r["entropy"]) * int(r["tokens"]) for r in ok)
    nll = nats / tokens if tokens else float("nan")
    out = {
        "files": len(ok), "tokens": tokens, "frames": frames, "seconds": seconds,
        "nll": nll, "bits_per_token": nll / LN2, "perplexity": math.exp(nll) if tokens else float("nan"),
        "total_bits": nats / LN2, "bits_per_second": nats / LN2 / seconds if seconds else float("nan"),
        "bits_per_frame": nats / LN2 / frames if frames else float("nan"),
        "accuracy": correct / tokens if tokens else float("nan"),
        "entropy": ent / tokens if tokens else float("nan"),
    }
    if ok and all("nll_per_codebook" in r for r in ok):
        K = len(ok[0]["nll_per_codebook"])
        if all(len(r["nll_per_codebook"]) == K for r in ok):
            out["nll_per_codebook"] = [
                sum(r["nll_per_codebook"][k] * int(r["frames"]) for r in ok) / frames for k in range(K)
            ]
    return out
