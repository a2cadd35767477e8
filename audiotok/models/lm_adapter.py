"""Pipeline adapters for the LM commands (the engine's ``run`` / ``flush`` / ``reset`` shape).

``LMFeatures`` tokenises audio with the same ``CodecEncoder`` ``encode`` uses and adds the causal
log-mel of the same samples; ``ScoreAdapter`` scores those with one or more LMs. Scores use
fixed-shape windows, so they do not depend on which files share a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..features import causal_log_mel
from ..scoring import FrameScores, WindowScorer
from .codec import CodecEncoder, EncodedItem


@dataclass
class LMItem:
    codes: np.ndarray  # int16 [n_q, T]
    mel: np.ndarray | None  # float32 [T, 80] raw log-mel
    n_samples: int


class LMFeatures:
    """Audio ``[1, N]`` at 24 kHz -> ``LMItem`` (codes through the codec adapter, mel alongside)."""

    def __init__(self, encoder: CodecEncoder, with_mel: bool):
        self.encoder = encoder
        self.with_mel = with_mel
        self.audio: dict = {}

    def run(self, batch):
        for key, audio in batch:
            self.audio[key] = audio
        return self._attach(self.encoder.run(batch))

    def flush(self):
        return self._attach(self.encoder.flush())

    def reset(self):
        self.encoder.reset()
        self.audio.clear()

    def _attach(self, results):
        out = []
        for key, res in results:
            audio = self.audio.pop(key, None)
            if isinstance(res, Exception):
                out.append((key, res))
                continue
            assert isinstance(res, EncodedItem)
            mel = causal_log_mel(audio[0]).numpy() if self.with_mel else None
            out.append((key, LMItem(res.codes, mel, res.n_samples)))
        return out


@dataclass
class ScoreResult:
    item: LMItem
    scores: list[FrameScores]  # one per scorer


class ScoreAdapter:
    """``LMFeatures`` followed by every scorer, over all files finished in a call."""

    def __init__(self, features: LMFeatures, scorers: list, rows: int = 8):
        self.features = features
        self.scorers = [WindowScorer(s, rows=rows) for s in scorers]

    def run(self, batch):
        return self._score(self.features.run(batch))

    def flush(self):
        return self._score(self.features.flush())

    def reset(self):
        self.features.reset()

    def _score(self, results):
        ok = [(k, r) for k, r in results if not isinstance(r, Exception)]
        out = [(k, r) for k, r in results if isinstance(r, Exception)]
        if ok:
            per_scorer = [ws.score([(r.codes, r.mel) for _, r in ok]) for ws in self.scorers]
            for j, (key, item) in enumerate(ok):
                out.append((key, ScoreResult(item, [scores[j] for scores in per_scorer])))
        return out
