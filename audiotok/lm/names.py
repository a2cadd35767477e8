"""The names model options accept (``train lm --arch/--size``, ``score --model``, ``train mae
--size/--frontend``), without torch, so that option errors and finished reruns are answered before
the model code is imported."""

from __future__ import annotations

ARCHS = ("whisper-gpt", "token-gpt", "info-control")
MODELS = (*ARCHS, "encodec-lm")
LM_NAMES = {"encodec_24khz": "encodec_lm_24khz"}  # codec -> its official EnCodec LM (weights.ENCODEC_CHECKPOINTS)

# d, N, heads, FF for the backbone; d_s, N_s, heads, FF for the spectrogram branch (whisper-gpt).
SIZES: dict[str, dict[str, int]] = {
    "large": dict(dim=512, layers=10, heads=8, ff=2048, spec_dim=64, spec_layers=2, spec_heads=2, spec_ff=256),
    "small": dict(dim=192, layers=6, heads=6, ff=768, spec_dim=64, spec_layers=2, spec_heads=2, spec_ff=256),
    "tiny": dict(dim=128, layers=4, heads=4, ff=512, spec_dim=64, spec_layers=1, spec_heads=2, spec_ff=256),
    "micro": dict(dim=64, layers=2, heads=2, ff=256, spec_dim=32, spec_layers=2, spec_heads=2, spec_ff=128),
}

# EnCodecMAE pretraining (train mae): front ends and sizes are the embedder's (registry.ENCODECMAE)
MAE_OPTIMIZERS = ("audiotok", "reference")  # train mae --optimizer
MAE_INITS = ("torch", "reference")  # train mae --init
