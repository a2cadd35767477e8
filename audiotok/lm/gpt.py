"""Whisper-GPT (coarse EnCodec tokens + causal mel slices, early fusion), its token-only baseline and
the all-codebook information control.

Every arch predicts the next coarse token (codebook 0). Position ``t`` of the input holds the
token ``c_{t-1}`` (BOS at position 0: the id one past the codes, the tokenizer's codebook size,
1024 for EnCodec) and, for Whisper-GPT, the mel slice aligned with it (``aligned_mel``: a silence
slice at the BOS step); ``logits[:, t]`` scores ``c_t``. See
docs/references.md (Whisper-GPT) and docs/score.md.

- ``token-gpt``: token embedding (width d) -> backbone -> head.
- ``whisper-gpt``: the token model **plus** a spectrogram branch, fused so that both streams enter
  the backbone at the same scale at initialisation (``fusion``):
  ``add`` (default): E[c] + Linear(d_s -> d)(s); ``proj``: concat(E[c] (d), s (d_s)) ->
  Linear(d + d_s -> d); for both the branch's final LayerNorm gain starts at the token embedding's
  std; ``legacy``: the version-1 layout (token width d - d_s concatenated with a unit-scale branch,
  no projection), kept so that old checkpoints load. ``add`` is the default because it trained
  best (validation NLL, docs/score.md "Fusion: chosen by training"); a checkpoint records its fusion.
- ``info-control``: token-only, input = sum of every codebook's embedding of the previous frame.

``mel_lag`` = 1 is the causal alignment; 0 and -1 are deliberately leaky controls: the input at
position t carries m_t (the slice that ends where c_t's hop ends; its Hann window puts little weight
on c_t's own 320 samples, so this leak is weak) or m_{t+1} (the window centred on c_t's samples: a
strong leak).

``features`` says what the branch reads per frame: ``mel`` (the causal log-mel, 80 bins) or
``latent`` (the codec encoder's output before quantisation, ``n_mels`` = its width): the planted
signal of the positive control. With ``mel_lag`` 0 the input predicting c_t then holds z_t, whose
nearest level-0 codeword *is* c_t. Both go through the same branch and the same ``aligned_mel``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..registry import DEFAULT_CODEC, get_codec
from .blocks import CausalStack, init_weights
from .mel import MEL_BINS, SILENCE_LOG_MEL
from .names import ARCHS, SIZES  # noqa: F401  (re-exported)

# The vocabulary is the tokenizer's codebook size (``GPTConfig.vocab``, from the codec's spec) and BOS
# the id one past it (``bos``). These two names are the default tokenizer's (EnCodec 24 kHz: 1024).
VOCAB = get_codec(DEFAULT_CODEC).codebook_size
BOS = VOCAB
FUSIONS = ("proj", "add", "legacy")
# what the branch reads per frame -> the value of the slice at the BOS position (lag 1): a silent
# log-mel slice for the mel, a zero vector for the codec latent
FEATURES = {"mel": SILENCE_LOG_MEL, "latent": 0.0}
DEFAULT_FUSION = "add"  # chosen by training (docs/score.md)
CONTEXT = 256
EMB_STD = 0.02  # init std of embeddings and linear weights (blocks.init_weights)


@dataclass
class GPTConfig:
    arch: str
    size: str
    dim: int
    layers: int
    heads: int
    ff: int
    spec_dim: int
    spec_layers: int
    spec_heads: int
    spec_ff: int
    context: int = CONTEXT
    dropout: float = 0.1
    n_mels: int = MEL_BINS
    vocab: int = VOCAB
    fusion: str = DEFAULT_FUSION
    mel_lag: int = 1
    n_codebooks: int = 1  # input codebooks (info-control: every codebook of the tokenizer)
    features: str = "mel"  # what the branch reads: "mel" or "latent" (the positive control; FEATURES)
    extra: dict = field(default_factory=dict)

    @classmethod
    def make(cls, arch: str, size: str, context: int = CONTEXT, dropout: float = 0.1, fusion: str = DEFAULT_FUSION,
             mel_lag: int = 1, n_codebooks: int = 1, features: str = "mel", feature_dim: int | None = None,
             shape: dict | None = None, vocab: int = VOCAB) -> GPTConfig:
        """A config of ``size``; ``vocab``: the tokenizer's codebook size (BOS is ``vocab``);
        ``features`` / ``feature_dim``: what the branch reads and its width
        (the mel: 80 bins; the latent: the codec's latent width, required); ``shape``: widths or
        depths that replace the size's (the parameter-matched baseline, ``controls.matched_shape``)."""
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}")
        if mel_lag not in (-1, 0, 1):
            raise ValueError("mel_lag is 1 (causal), 0 or -1 (the leaky controls)")
        if features not in FEATURES:
            raise ValueError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
        if features == "latent" and feature_dim is None:
            raise ValueError("features 'latent' needs feature_dim (the codec latent's width)")
        dims = dict(SIZES[size])
        unknown = set(shape or {}) - set(dims)
        if unknown:
            raise ValueError(f"shape sets {sorted(unknown)}; it can set {', '.join(dims)}")
        dims.update(shape or {})
        n = n_codebooks if arch == "info-control" else 1
        return cls(arch=arch, size=size, context=context, dropout=dropout, fusion=fusion, mel_lag=mel_lag,
                   n_codebooks=n, features=features, n_mels=feature_dim or MEL_BINS, vocab=int(vocab), **dims)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def uses_mel(self) -> bool:
        """The model reads aligned per-frame features (the mel, or the latent of the positive control)."""
        return self.arch == "whisper-gpt"

    @property
    def bos(self) -> int:
        """The token id at position 0 (one past the codebook's ids)."""
        return self.vocab

    @property
    def feature_fill(self) -> float:
        """The value of the feature slice at the BOS position (and of padding)."""
        return FEATURES[self.features]


def aligned_mel(mel: np.ndarray | torch.Tensor, lag: int = 1, fill: float = SILENCE_LOG_MEL) -> torch.Tensor:
    """The mel input of positions ``0..T-1`` for a file's raw log-mel ``[T, 80]``: position t
    carries m_{t-lag}. With ``lag`` 1 that is m_{t-1} (a silence slice, ``fill``, at the BOS
    position), so the model predicting c_t has seen audio up to where c_{t-1} ends; ``lag`` 0 (leaky
    control) carries m_t; ``lag`` -1 (strongly leaky control) m_{t+1}, the last position repeating
    the last slice. Any per-frame features ``[T, D]`` (the codec latent) are aligned the same way."""
    m = torch.as_tensor(np.asarray(mel), dtype=torch.float32)
    if lag == 0 or m.shape[0] == 0:
        return m
    if lag == -1:
        return torch.cat([m[1:], m[-1:]])
    return torch.cat([torch.full((1, m.shape[-1]), fill), m[:-1]])


class AudioGPT(nn.Module):
    """Every arch of this module; ``cfg.arch`` chooses the inputs (see the module docstring)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.uses_mel = cfg.uses_mel
        self.n_in = cfg.n_codebooks
        tok_width = cfg.dim - cfg.spec_dim if self.uses_mel and cfg.fusion == "legacy" else cfg.dim
        self.tok_emb = nn.Embedding(self.n_in * (cfg.vocab + 1), tok_width)
        if self.uses_mel:
            self.spec_in = nn.Linear(cfg.n_mels, cfg.spec_dim)
            self.spec = CausalStack(cfg.spec_dim, cfg.spec_layers, cfg.spec_heads, cfg.spec_ff, cfg.context,
                                    cfg.dropout)
            if cfg.fusion == "proj":
                self.fuse = nn.Linear(cfg.dim + cfg.spec_dim, cfg.dim)
            elif cfg.fusion == "add":
                self.fuse = nn.Linear(cfg.spec_dim, cfg.dim)
            self.register_buffer("mel_mean", torch.full((cfg.n_mels,), SILENCE_LOG_MEL / 2))
            self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.backbone = CausalStack(cfg.dim, cfg.layers, cfg.heads, cfg.ff, cfg.context, cfg.dropout)
        self.head = nn.Linear(cfg.dim, cfg.vocab)
        init_weights(self)
        with torch.no_grad():
            if self.n_in > 1:  # a sum of n embeddings keeps the single embedding's scale
                self.tok_emb.weight.mul_(self.n_in ** -0.5)
            if self.uses_mel and cfg.fusion != "legacy":
                # the branch leaves its final LayerNorm at the token embedding's scale
                self.spec.ln.weight.fill_(EMB_STD)
                fan_in = self.fuse.in_features
                nn.init.normal_(self.fuse.weight, std=fan_in ** -0.5)  # keeps that scale through the projection

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` (one codebook) or ``[B, K, L]`` -> ``[B, L, width]`` (sum over codebooks)."""
        if tokens.dim() == 2:
            tokens = tokens[:, None]
        if tokens.shape[1] != self.n_in:
            raise ValueError(f"{self.cfg.arch} takes {self.n_in} codebook(s) per position, got {tokens.shape[1]}")
        offsets = torch.arange(self.n_in, device=tokens.device)[None, :, None] * (self.cfg.vocab + 1)
        return self.tok_emb(tokens + offsets).sum(1)

    def streams(self, tokens: torch.Tensor, mel: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The two streams that are fused: token embedding ``[B, L, d]`` and branch output ``[B, L, d_s]``."""
        e = self.embed_tokens(tokens)
        if not self.uses_mel:
            return e, None
        if mel is None:
            raise ValueError("whisper-gpt needs the mel slices aligned with the tokens")
        m = (mel - self.mel_mean) / self.mel_std
        return e, self.spec(self.spec_in(m))

    def fused(self, tokens: torch.Tensor, mel: torch.Tensor | None) -> torch.Tensor:
        e, s = self.streams(tokens, mel)
        if s is None:
            return e
        if self.cfg.fusion == "proj":
            return self.fuse(torch.cat([e, s], dim=-1))
        if self.cfg.fusion == "add":
            return e + self.fuse(s)
        return torch.cat([e, s], dim=-1)

    def forward(self, tokens: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens [B, L]`` or ``[B, K, L]`` (0..vocab, BOS = vocab), ``mel [B, L, 80]`` raw log-mel -> logits
        ``[B, L, vocab]``."""
        return self.head(self.backbone(self.fused(tokens, mel)))


def build_gpt(cfg: GPTConfig) -> AudioGPT:
    return AudioGPT(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
