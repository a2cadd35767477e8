"""Whisper-GPT (coarse EnCodec tokens + causal mel slices, early fusion) and its token-only baseline.

Both predict the next coarse token (codebook 0). Position ``t`` of the input holds the token
``c_{t-1}`` (BOS 1024 at position 0) and, for Whisper-GPT, the mel slice aligned with it (a
silence slice at the BOS step); ``logits[:, t]`` scores ``c_t``. See docs/references.md, Whisper-GPT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..features import MEL_BINS, SILENCE_LOG_MEL
from .blocks import CausalStack, init_weights

VOCAB = 1024
BOS = 1024
ARCHS = ("whisper-gpt", "token-gpt")
CONTEXT = 256

# d, N, heads, FF for the backbone; d_s, N_s, heads, FF for the spectrogram branch (whisper-gpt).
# N_s for tiny/micro is chosen so token-gpt (full-width embedding, no branch) is within 2 % in size.
SIZES: dict[str, dict[str, int]] = {
    "small": dict(dim=192, layers=6, heads=6, ff=768, spec_dim=64, spec_layers=2, spec_heads=2, spec_ff=256),
    "tiny": dict(dim=128, layers=4, heads=4, ff=512, spec_dim=64, spec_layers=1, spec_heads=2, spec_ff=256),
    "micro": dict(dim=64, layers=2, heads=2, ff=256, spec_dim=32, spec_layers=2, spec_heads=2, spec_ff=128),
}


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
    extra: dict = field(default_factory=dict)

    @classmethod
    def make(cls, arch: str, size: str, context: int = CONTEXT, dropout: float = 0.1) -> GPTConfig:
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}")
        return cls(arch=arch, size=size, context=context, dropout=dropout, **SIZES[size])

    def to_dict(self) -> dict:
        return asdict(self)


class WhisperGPT(nn.Module):
    """Token embedding (width d - d_s) concatenated with a causal spectrogram branch (width d_s)."""

    uses_mel = True

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab + 1, cfg.dim - cfg.spec_dim)
        self.spec_in = nn.Linear(cfg.n_mels, cfg.spec_dim)
        self.spec = CausalStack(cfg.spec_dim, cfg.spec_layers, cfg.spec_heads, cfg.spec_ff, cfg.context, cfg.dropout)
        self.backbone = CausalStack(cfg.dim, cfg.layers, cfg.heads, cfg.ff, cfg.context, cfg.dropout)
        self.head = nn.Linear(cfg.dim, cfg.vocab)
        self.register_buffer("mel_mean", torch.full((cfg.n_mels,), SILENCE_LOG_MEL / 2))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        init_weights(self)

    def forward(self, tokens: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens [B, L]`` (0..1024), ``mel [B, L, 80]`` raw log-mel -> logits ``[B, L, 1024]``."""
        if mel is None:
            raise ValueError("whisper-gpt needs the mel slices aligned with the tokens")
        m = (mel - self.mel_mean) / self.mel_std
        s = self.spec(self.spec_in(m))
        x = torch.cat([self.tok_emb(tokens), s], dim=-1)
        return self.head(self.backbone(x))


class TokenGPT(nn.Module):
    """The same backbone on tokens only, with a full-width token embedding."""

    uses_mel = False

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab + 1, cfg.dim)
        self.backbone = CausalStack(cfg.dim, cfg.layers, cfg.heads, cfg.ff, cfg.context, cfg.dropout)
        self.head = nn.Linear(cfg.dim, cfg.vocab)
        init_weights(self)

    def forward(self, tokens: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens [B, L]`` -> logits ``[B, L, 1024]`` (``mel`` is ignored)."""
        return self.head(self.backbone(self.tok_emb(tokens)))


def build_gpt(cfg: GPTConfig) -> WhisperGPT | TokenGPT:
    return WhisperGPT(cfg) if cfg.arch == "whisper-gpt" else TokenGPT(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
