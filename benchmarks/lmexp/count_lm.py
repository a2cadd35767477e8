"""Unigram and bigram count models of coarse tokens: the baselines a neural LM must beat.

Smoothing interpolates with the lower order: ``p(b) = (n_b + a) / (N + a V)`` and
``p(b | a) = (n_ab + k p(b)) / (n_a + k)``; the first token of a file is scored under the unigram.
"""

from __future__ import annotations

import numpy as np


class CountLM:
    def __init__(self, order: int, vocab: int = 1024, add: float = 0.5, k: float = 8.0):
        if order not in (1, 2):
            raise ValueError("order is 1 (unigram) or 2 (bigram)")
        self.order, self.vocab, self.add, self.k = order, vocab, add, k
        self.uni = np.zeros(vocab, np.float64)
        self.bi = np.zeros((vocab, vocab), np.float64) if order == 2 else None

    def fit(self, sequences: list[np.ndarray]) -> CountLM:
        for s in sequences:
            s = np.asarray(s, np.int64)
            np.add.at(self.uni, s, 1.0)
            if self.bi is not None and len(s) > 1:
                np.add.at(self.bi, (s[:-1], s[1:]), 1.0)
        return self

    def unigram(self) -> np.ndarray:
        return (self.uni + self.add) / (self.uni.sum() + self.add * self.vocab)

    def surprisal(self, seq: np.ndarray) -> np.ndarray:
        """-ln p(c_t | c_{t-1}) per position (nats)."""
        s = np.asarray(seq, np.int64)
        p_uni = self.unigram()
        p = p_uni[s].copy()
        if self.bi is not None and len(s) > 1:
            a, b = s[:-1], s[1:]
            p[1:] = (self.bi[a, b] + self.k * p_uni[b]) / (self.bi[a].sum(1) + self.k)
        return -np.log(p)

    def distribution(self, prev: int | None) -> np.ndarray:
        """The full predictive distribution after ``prev`` (None: the first token)."""
        p_uni = self.unigram()
        if self.bi is None or prev is None:
            return p_uni
        row = self.bi[prev]
        return (row + self.k * p_uni) / (row.sum() + self.k)

    def accuracy(self, seq: np.ndarray) -> float:
        s = np.asarray(seq, np.int64)
        best_uni = int(np.argmax(self.unigram()))
        if self.bi is None:
            return float(np.mean(s == best_uni))
        guess = np.empty_like(s)
        guess[0] = best_uni
        if len(s) > 1:
            guess[1:] = np.argmax(self.bi[s[:-1]] + self.k * self.unigram()[None], axis=1)
        return float(np.mean(guess == s))


def fit_count_lm(order: int, train: list[np.ndarray], val: list[np.ndarray],
                 grid: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 4.0, 16.0, 64.0)) -> CountLM:
    """A count model whose smoothing constant is chosen on the validation sequences."""
    best, best_nll = None, np.inf
    for g in grid:
        lm = CountLM(order, add=g if order == 1 else 0.5, k=g).fit(train)
        tot = sum(lm.surprisal(v).sum() for v in val)
        n = sum(len(v) for v in val)
        if n == 0:
            return lm
        if tot / n < best_nll:
            best, best_nll = lm, tot / n
    return best
