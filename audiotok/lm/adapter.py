"""Pipeline adapters for the LM commands (the engine's ``run`` / ``flush`` / ``reset`` shape).

``LMFeatures`` tokenises audio with the same codec adapter ``encode`` uses (any registered codec's
``Codec.encoder``) and adds the causal log-mel of the same samples (at the codec's rate and hop);
``ScoreAdapter`` scores those with one or more LMs. Scores use fixed-shape windows, so they do not
depend on which files share a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs.encodec import EncodedItem, WithAudio
from .mel import MEL_HOP, MEL_SAMPLE_RATE, causal_log_mel
from .scoring import FrameScores, WindowScorer


@dataclass
class LMItem:
    codes: np.ndarray  # int16 [n_q, T]
    mel: np.ndarray | None  # float32 [T, 80] raw log-mel
    n_samples: int
    latent: np.ndarray | None = None  # float32 [T, D]: the codec encoder's output the codes quantise


class LMFeatures(WithAudio):
    """Audio ``[1, N]`` at the codec's rate -> ``LMItem`` (codes through the codec adapter, mel alongside).

    ``mel``: ``(sample_rate, hop)`` of the mel (``lm.tokenizer.mel_hop``; default: from the
    adapter's ``spec``, which EnCodec's adapters carry). ``with_latent`` also keeps the codec's latent (EnCodec:
    the encoder output before quantisation, one ``[D]`` vector per code frame: the planted signal of
    the positive control). It is the whole-file encoder output of the same samples; the streamed
    codes are its quantisation (tested)."""

    def __init__(self, encoder, with_mel: bool, with_latent: bool = False, mel: tuple[int, int] | None = None):
        super().__init__(encoder)
        self.with_mel = with_mel
        self.with_latent = with_latent
        self.mel = mel if mel is not None or not with_mel else adapter_mel(encoder)

    def mel_of(self, audio: np.ndarray) -> np.ndarray:
        """The raw log-mel ``[T, 80]`` of mono audio ``[1, N]``."""
        return causal_log_mel(audio[0], *self.mel).numpy()

    def combine(self, audio, item: EncodedItem) -> LMItem:
        mel = self.mel_of(audio) if self.with_mel else None
        latent = codec_latent(self.encoder, audio) if self.with_latent else None
        return LMItem(item.codes, mel, item.n_samples, latent)


def adapter_mel(encoder) -> tuple[int, int]:
    """``(sample_rate, hop)`` of the mel for a codec adapter that carries its ``spec`` (EnCodec's do)."""
    spec = getattr(encoder, "spec", None)
    if spec is None or not getattr(spec, "hop", None):
        raise ValueError("LMFeatures needs mel=(sample_rate, hop) for an adapter without a spec of whole-sample frames")
    return int(spec.sample_rate), int(spec.hop)


def codec_latent(encoder, audio: np.ndarray) -> np.ndarray:
    """The latent ``[T, D]`` of mono audio ``[1, N]`` at the codec's rate (streamed codecs only)."""
    import torch

    if not getattr(encoder, "streaming", False) or not hasattr(encoder, "model"):
        raise ValueError(f"the latent is kept for streamed EnCodec models only, not {getattr(encoder, 'name', encoder)}")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(encoder.device)
        z = encoder.model.encoder(x)[0].T  # [T, D]
    return np.ascontiguousarray(z.float().cpu().numpy())


class CodesOnly:
    """Stands in for ``LMFeatures`` when every input is a codes file and no codec was loaded."""

    on_progress = None

    def __init__(self, with_mel: bool, mel: tuple[int, int] = (MEL_SAMPLE_RATE, MEL_HOP)):
        self.with_mel = with_mel
        self.mel = mel  # (sample_rate, hop) of the mel of codes files' source audio

    def run(self, batch):
        from ..errors import InputError

        return [(k, InputError("is audio, but this run loaded no codec to tokenise it")) for k, _ in batch]

    def flush(self):
        return []

    def reset(self) -> None:
        pass


@dataclass
class ItemScores:
    item: LMItem
    scores: list[FrameScores]  # one per scorer


class ScoreAdapter:
    """``LMFeatures`` (or codes already computed) followed by every scorer, over all files finished in a call."""

    def __init__(self, features: LMFeatures, scorers: list, rows: int = 8):
        self.features = features
        self.scorers = [WindowScorer(s, rows=rows) for s in scorers]

    @property
    def on_progress(self):
        """Progress within a file: its tokenisation (audio seconds through the codec, as in ``encode``)."""
        return self.features.on_progress

    @on_progress.setter
    def on_progress(self, report) -> None:
        self.features.on_progress = report

    def run(self, batch):
        """``batch``: audio ``[1, N]`` (tokenised here) and ``lm_inputs.EncodedInput`` (codes read
        from an ``encode`` output; only the mel is computed, from the same source samples)."""
        from .inputs import EncodedInput

        encoded = [(k, p) for k, p in batch if isinstance(p, EncodedInput)]
        audio = [(k, p) for k, p in batch if not isinstance(p, EncodedInput)]
        results = [(k, self._from_codes(p)) for k, p in encoded]
        return self._score(results + (self.features.run(audio) if audio else []))

    def _from_codes(self, p):
        mel = causal_log_mel(p.audio[0], *self.features.mel).numpy() if self.features.with_mel else None
        return LMItem(p.codes, mel, p.n_samples)

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
                out.append((key, ItemScores(item, [scores[j] for scores in per_scorer])))
        return out
