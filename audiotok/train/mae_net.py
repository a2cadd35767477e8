"""The EnCodecMAE training network (specs/encodecmae.md, "What the tool adds on top").

Time-gap masking of exactly half of a crop's frames (floor) in spans; only the visible frames go
through the encoder (gathered, padded, padded keys masked); ``visible_encoder.post_net`` is applied
to its visible outputs, which are scattered back into exact zeros at the masked and padded
positions, then scaled positions -> 2-layer decoder -> head, as the reference computes it. Modules are named as in the official v2 checkpoints, so
``state_dict()`` is already in that layout (the shared feed-forward of a stack is listed under
every layer, as ``torch.save`` of the reference model lists it) and ``audiotok embed`` or the
reference loaders read a saved model unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..embedders.encodecmae import (
    EC_CODEC,
    EC_HOP,
    MASK_BIAS,
    SAMPLE_RATE,
    Block,
    EncodecMAE,
    MaeConfig,
    _seanet_encoder,
    sinusoidal_positions,
)
from ..embedders.fbank import FBANK_NORM, kaldi_fbank
from ..registry import ENCODECMAE

# per-codebook weights of the masked-prediction loss (codebook 0 first)
CODEBOOK_WEIGHTS = (0.22407463, 0.1759858, 0.14499009, 0.12150037, 0.10315603, 0.08831368, 0.07608274, 0.06589669)
TARGET_BANDWIDTH = 6.0  # kbps of the target codes: 8 codebooks of EnCodec 24 kHz (stage 1)
N_CODEBOOKS, CODEBOOK_SIZE = EC_CODEC.n_codebooks(TARGET_BANDWIDTH), EC_CODEC.codebook_size  # 8, 1024
MASKED_WEIGHT = 0.9  # loss = 0.9 x masked-frame loss + 0.1 x visible-frame loss
DECODER_LAYERS = 2
FRONTENDS = ENCODECMAE.frontends
SIZES = ENCODECMAE.sizes

EC_PREFIX = "wav_encoder.encoder."  # + the SEANetEncoder's own keys (model.N...)
REFERENCE_EC_PREFIX = "wav_encoder.encoder.model."


@dataclass
class MaeTrainSpec:
    """What the training network is: sizes, front end and targets."""

    size: str
    frontend: str  # "mel256" or "ec"
    layers: int
    dim: int
    heads: int
    ff_dim: int
    n_targets: int = N_CODEBOOKS  # target streams (8 codebooks, or 1 for self-training)
    target_classes: int = CODEBOOK_SIZE  # classes per stream (1024 codes, or the k-means clusters)

    @classmethod
    def make(cls, size: str, frontend: str, clusters: int | None = None) -> MaeTrainSpec:
        ENCODECMAE.check_size(size)
        ENCODECMAE.check_frontend(frontend)
        layers, dim, heads, ff = SIZES[size]
        if clusters is None:
            return cls(size, frontend, layers, dim, heads, ff)
        return cls(size, frontend, layers, dim, heads, ff, 1, int(clusters))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def weights(self) -> tuple[float, ...]:
        return CODEBOOK_WEIGHTS[: self.n_targets] if self.n_targets == N_CODEBOOKS else (1.0,) * self.n_targets

    def mae_config(self) -> MaeConfig:
        kind, feats = FRONTENDS[self.frontend]
        return MaeConfig(kind, feats, self.dim, self.layers, self.heads, self.ff_dim)


# --- masking -----------------------------------------------------------------------------------
def time_gap_mask(lengths: list[int], frames: int, gen: torch.Generator, ratio: float = 0.5,
                  span: int = 15) -> torch.Tensor:
    """``[B, frames]`` bool, True = masked: exactly ``floor(ratio * n)`` of each item's ``n`` valid
    frames, as the reference masks them: random spans of ``span`` frames (half the crop for crops
    shorter than two spans) are added until at least that many frames are masked, then the excess
    is unmasked from the start of the first span. Frames past an item's length are never masked."""
    out = torch.zeros(len(lengths), frames, dtype=torch.bool)
    for b, n in enumerate(lengths):
        n = int(n)
        need = int(ratio * n)  # the reference's int64 cast: floor
        if n < 2 or need < 1:
            continue
        width = max(1, min(span, n // 2))
        row = out[b, :n]
        first = None
        while int(row.sum()) < need:
            start = int(torch.randint(0, n - width + 1, (1,), generator=gen))
            first = start if first is None else first
            row[start:start + width] = True
        excess = int(row.sum()) - need  # < width: the last span pushed the count past need
        row[first:first + excess] = False
    return out


# --- network -----------------------------------------------------------------------------------
class _Layer(Block):
    """A ResiDual block that holds (a reference to) its stack's shared feed-forward as ``ff_layer``."""

    def __init__(self, dim: int, heads: int, ff: nn.Module):
        super().__init__(dim, heads)
        self.ff_layer = ff

    def forward(self, x0, x1, bias):  # noqa: D102
        return super().forward(x0, x1, self.ff_layer, bias)


class _Stack(nn.Module):
    """``encoder_layers`` sharing one feed-forward, ``final_norm``; output ``x0 + final_norm(x1)``."""

    def __init__(self, n: int, dim: int, heads: int, ff_dim: int):
        super().__init__()
        ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        self.encoder_layers = nn.ModuleList(_Layer(dim, heads, ff) for _ in range(n))
        self.final_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x0 = x1 = x
        for layer in self.encoder_layers:
            x0, x1 = layer(x0, x1, bias)
        return x0 + self.final_norm(x1)


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))


class _Holder(nn.Module):
    """An empty module to name sub-modules as the reference does (``masker.positional_encoder``)."""


def _key_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive attention bias ``[B, 1, 1, T]`` hiding invalid keys (None when all are valid)."""
    if bool(valid.all()):
        return None
    neg = max(MASK_BIAS, torch.finfo(dtype).min)
    return torch.zeros(valid.shape[0], 1, 1, valid.shape[1], dtype=dtype, device=valid.device).masked_fill(
        ~valid[:, None, None, :], neg)


class MaeTrainer(nn.Module):
    """The whole EnCodecMAE: front end, masker positions, visible encoder, decoder, head."""

    def __init__(self, spec: MaeTrainSpec, codec_encoder_state: dict | None = None):
        super().__init__()
        self.spec = spec
        cfg = self.cfg = spec.mae_config()
        D = spec.dim
        self.wav_encoder = _Holder()
        if cfg.frontend == "ec":
            if codec_encoder_state is None:
                raise ValueError("the ec front end needs the EnCodec encoder's weights")
            enc = _seanet_encoder()
            enc.load_state_dict(codec_encoder_state, strict=True)
            for p in enc.parameters():
                p.requires_grad_(False)  # the codec's encoder is a fixed front end
            self.wav_encoder.encoder = enc
        self.wav_encoder.post_net = nn.Linear(cfg.in_features, D)
        self.masker = _Holder()
        self.masker.positional_encoder = _Scale()
        self.visible_encoder = _Stack(spec.layers, D, spec.heads, spec.ff_dim)
        self.visible_encoder.post_net = nn.Linear(D, D)
        self.decoder = _Stack(DECODER_LAYERS, D, spec.heads, spec.ff_dim)
        self.decoder.positional_encoder = _Scale()
        self.head = _Holder()
        self.head.layer = nn.Linear(D, spec.n_targets * spec.target_classes)

    # --- front end ---------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` waveforms -> ``[B, T, F]`` (normalised log mel, or EnCodec latents)."""
        if self.cfg.frontend == "ec":
            enc = self.wav_encoder.encoder
            enc.eval()
            return enc(wave.unsqueeze(1)).transpose(1, 2)
        mean, std = FBANK_NORM
        return (kaldi_fbank(wave, self.cfg.in_features, SAMPLE_RATE) - mean) / std

    def frames_for(self, n_samples: int) -> int:
        return self.cfg.frames(n_samples)

    # --- the network -------------------------------------------------------------------------
    def _visible(self, feats: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor):
        """The visible encoder's output ``[B, V, D]`` for the visible frames (``~mask`` and
        ``t < length``) gathered in time order and zero-padded to the longest item, the gather
        index ``[B, V, D]`` into the ``T`` frames, and which of the V slots are real ``[B, V]``."""
        B, T, _ = feats.shape
        D = self.spec.dim
        x = self.wav_encoder.post_net(feats)
        x = x + self.masker.positional_encoder.scale * sinusoidal_positions(T, D, x.device)
        t = torch.arange(T, device=x.device)
        keep = (t[None] < lengths[:, None].to(x.device)) & ~mask.to(x.device)
        n_vis = keep.sum(1)
        V = max(1, int(n_vis.max()))
        order = torch.argsort((~keep).long() * T + t[None], dim=1)[:, :V]  # visible frames first, in time order
        vis_valid = torch.arange(V, device=x.device)[None] < n_vis[:, None]
        index = order[..., None].expand(B, V, D)
        xv = x.gather(1, index) * vis_valid[..., None]
        return self.visible_encoder(xv, _key_bias(vis_valid, xv.dtype)), index, vis_valid

    def encode_visible(self, feats: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, T, D]`` at visible frames, zeros at masked and padded ones.

        Only the visible frames (``~mask`` and ``t < length``) are gathered into the encoder."""
        B, T, _ = feats.shape
        enc, index, vis_valid = self._visible(feats, lengths, mask)
        enc = enc * vis_valid[..., None]
        return torch.zeros(B, T, enc.shape[-1], dtype=enc.dtype, device=enc.device).scatter(1, index, enc)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, n_targets, target_classes]`` for every frame.

        As the reference: ``visible_encoder.post_net`` is applied to the visible tokens, which are
        then put in place in a sequence of exact zeros (masked and padded frames stay 0, with no
        post_net bias), scaled positions are added, then the decoder and the head."""
        B, T, _ = feats.shape
        enc, index, vis_valid = self._visible(feats, lengths, mask)
        y = self.visible_encoder.post_net(enc) * vis_valid[..., None]
        y = torch.zeros(B, T, y.shape[-1], dtype=y.dtype, device=y.device).scatter(1, index, y)
        y = y + self.decoder.positional_encoder.scale * sinusoidal_positions(T, self.spec.dim, y.device)
        valid = torch.arange(T, device=y.device)[None] < lengths[:, None].to(y.device)
        out = self.decoder(y, _key_bias(valid, y.dtype))
        return self.head.layer(out).view(B, T, self.spec.n_targets, self.spec.target_classes)

    def reference_init(self) -> None:
        """The reference's initialisation: Xavier-uniform Linear weights, zero biases, LayerNorms
        at 1 / 0 (positional scales stay 1; the ec front end's fixed codec encoder is left as loaded)."""
        frozen = {id(m) for m in self.wav_encoder.encoder.modules()} if hasattr(self.wav_encoder, "encoder") else set()
        with torch.no_grad():
            for m in self.modules():
                if id(m) in frozen:
                    continue
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()

    def v2_state(self) -> dict:
        """``state_dict`` in the official v2 key layout, on the CPU. The ec front end's EnCodec encoder
        is ``wav_encoder.encoder.model.model.*`` there (the reference wraps encodec's SEANetEncoder,
        whose own Sequential is ``.model``); this module holds the SEANetEncoder itself."""
        return {REFERENCE_EC_PREFIX + k[len(EC_PREFIX):] if k.startswith(EC_PREFIX) else k: v.detach().cpu()
                for k, v in self.state_dict().items()}

    def load_v2_state(self, state: dict) -> None:
        """The inverse of ``v2_state`` (strict); checkpoints written before the reference layout load too."""
        ref = REFERENCE_EC_PREFIX + "model."  # every SEANet key starts with model.
        self.load_state_dict({EC_PREFIX + k[len(REFERENCE_EC_PREFIX):] if k.startswith(ref) else k: v
                              for k, v in state.items()}, strict=True)


def mae_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor,
             weights: tuple[float, ...], masked_weight: float = MASKED_WEIGHT) -> tuple[torch.Tensor, dict]:
    """``masked_weight`` x (mean over masked frames of the weighted sum of per-stream cross-entropies)
    + (1 - ``masked_weight``) x (the same over visible frames). Frames past ``lengths`` do not count.

    Returns the loss and statistics (the two partial losses, frame counts, per-stream correct
    predictions and summed cross-entropy on masked frames)."""
    B, T, Q, K = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, K).float(), targets.reshape(-1), reduction="none").view(B, T, Q)
    w = torch.tensor(weights, dtype=ce.dtype, device=ce.device)
    per_frame = (ce * w).sum(-1)
    valid = torch.arange(T, device=logits.device)[None] < lengths[:, None].to(logits.device)
    m = valid & mask.to(logits.device)
    v = valid & ~mask.to(logits.device)
    zero = per_frame.sum() * 0.0
    masked = per_frame[m].mean() if bool(m.any()) else zero
    visible = per_frame[v].mean() if bool(v.any()) else zero
    loss = masked_weight * masked + (1 - masked_weight) * visible
    with torch.no_grad():
        correct = ((logits.argmax(-1) == targets) & m[..., None]).sum((0, 1))
        masked_ce = (ce.detach() * m[..., None]).sum((0, 1))
    stats = {"masked_loss": float(masked.detach()), "visible_loss": float(visible.detach()), "masked_frames": int(m.sum()),
             "visible_frames": int(v.sum()), "correct": correct.cpu(), "masked_ce": masked_ce.double().cpu()}
    return loss, stats


# --- self-training targets ---------------------------------------------------------------------
@torch.inference_mode()
def teacher_frames(teacher: EncodecMAE, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The teacher's last-layer output ``[B, T, D]`` for ``[B, N]``: the combined stack output
    ``x0 + final_norm(x1)``, what ``embed`` gives as the last layer and what the reference clusters
    (its ``create_st_dataset``: layer -1 with ``postnorm_last_activation``)."""
    feats = teacher.features(wave)
    B, T, _ = feats.shape
    if lengths is None:
        lengths = torch.full((B,), T)
    return teacher(feats, lengths.clamp(max=T), [teacher.cfg.layers - 1])[0]


def nearest_centroid(frames: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean distance; the first on ties) per frame."""
    flat = frames.reshape(-1, frames.shape[-1]).float()
    c = centroids.to(flat)
    d = (flat * flat).sum(1, keepdim=True) - 2 * flat @ c.T + (c * c).sum(1)[None]
    return d.argmin(1).view(frames.shape[:-1])


# --- checkpoint config -------------------------------------------------------------------------
IMPORTS = "\n".join(f"{m}: {a}" for m, a in (
    ("encodecmae.models.encoders", "encodecmae.models.encoders"), ("encodecmae.models.heads", "encodecmae.models.heads"),
    ("encodecmae.models.losses", "encodecmae.models.losses"), ("encodecmae.models.masks", "encodecmae.models.masks"),
    ("encodecmae.models.targets", "encodecmae.models.targets"),
    ("encodecmae.models.transformers", "encodecmae.models.transformers"), ("encodecmae.models", "encodecmae.models"),
    ("encodecmae.tasks", "encodecmae.tasks"), ("encodecmae.tasks.utils", "encodecmae.tasks.utils"),
    ("encodecmae.tasks.data", "encodecmae.tasks.data"), ("encodecmae.tasks.features", "encodecmae.tasks.features"),
    ("torch.utils.data", "torch.utils.data"), ("torch.optim", "torch.optim"), ("torch.nn", "torch.nn")))
M = "encodecmae.models"


# Long on purpose: the reference's gin file as a template, one line per setting.
def gin_config(spec: MaeTrainSpec, lr: float = 1e-4, crop_seconds: float = 4.0) -> str:
    """The gin configuration of ``spec`` in the structure the official v2 checkpoints carry.

    Targets are declared as precomputed (``IdentityTarget`` on ``targets`` read by
    ``LoadNumpyProcessor``): audiotok computes them itself (EnCodec codes or k-means ids), so the
    model holds no target network and its state_dict has exactly the tensors the reference model
    with that target has. ``audiotok embed`` reads the sizes and heads from it."""
    kind, feats = FRONTENDS[spec.frontend]
    weights = "[" + ", ".join(f"{w:.8g}" for w in spec.weights) + "]"
    macros = {
        "MASK_GAP_SIZE": 15, "MASK_PROP": 0.5, "MASKED_LOSS_WEIGHT": MASKED_WEIGHT,
        "MAX_AUDIO_DURATION": f"{crop_seconds:g}", "MAX_LR": f"{lr:g}", "MODEL_DIM": spec.dim,
        "NUM_DECODER_HEADS": spec.heads, "NUM_DECODER_LAYERS": DECODER_LAYERS, "NUM_ENCODEC_TARGETS": N_CODEBOOKS,
        "NUM_ENCODER_HEADS": spec.heads, "NUM_ENCODER_LAYERS": spec.layers, "NUM_MEL_BINS": 256,
        "NUM_TARGET_TOKENS": spec.target_classes, "NUM_TOTAL_TARGETS": spec.n_targets,
        "QUANTIZER_WEIGHTS": weights, "RETURN_ONLY_LAST_Q": False, "WAV_FEATURE_DIM": 128,
    }
    processors = [f"@{M.replace('models', 'tasks')}.features.ReadAudioProcessor"]
    if kind == "mel":
        processors.append(f"@{M.replace('models', 'tasks')}.features.MelspectrogramProcessor")
    sections: list[tuple[str, dict]] = [
        ("AdamW", {"AdamW.betas": "(0.9, 0.95)", "AdamW.lr": "%MAX_LR", "AdamW.weight_decay": 0.05}),
        ("DictDataset", {"DictDataset.out_cols": "['wav', 'wav_features', 'targets']",
                         "DictDataset.preprocessor": "@encodecmae.tasks.features.SequentialProcessor"}),
        ("EncodecMAE", {
            "EncodecMAE.decoder": f"@decoder/{M}.transformers.TransformerEncoder",
            "EncodecMAE.head": f"@{M}.heads.FrameLevelClassificationHead",
            "EncodecMAE.loss": f"@{M}.losses.EnCodecMAEClassificationLoss",
            "EncodecMAE.masker": f"@{M}.masks.PatchoutMask", "EncodecMAE.optimizer": "@torch.optim.AdamW",
            "EncodecMAE.target_encoder": f"@{M}.targets.IdentityTarget",
            "EncodecMAE.visible_encoder": f"@encoder/{M}.transformers.TransformerEncoder",
            "EncodecMAE.wav_encoder": f"@{M}.encoders.WavEncoder"}),
        ("EnCodecMAEClassificationLoss", {"EnCodecMAEClassificationLoss.masked_weight": "%MASKED_LOSS_WEIGHT",
                                          "EnCodecMAEClassificationLoss.quantizer_weights": "%QUANTIZER_WEIGHTS"}),
        ("EncodecQuantizer", {"EncodecQuantizer.key_in": "'wav'", "EncodecQuantizer.n": "%NUM_ENCODEC_TARGETS",
                              "EncodecQuantizer.return_only_last": "%RETURN_ONLY_LAST_Q",
                              "EncodecQuantizer.use_encodec_encoder": True}),
        ("fit_model", {"fit_model.model_cls": f"@{M}.EncodecMAE"}),
        ("FrameLevelClassificationHead", {"FrameLevelClassificationHead.model_dim": "%MODEL_DIM",
                                          "FrameLevelClassificationHead.num_streams": "%NUM_TOTAL_TARGETS",
                                          "FrameLevelClassificationHead.num_tokens": "%NUM_TARGET_TOKENS"}),
        ("get_model", {"get_model.model": f"@{M}.EncodecMAE",
                       "get_model.processor": "@encodecmae.tasks.features.SequentialProcessor"}),
        ("IdentityTarget", {"IdentityTarget.key_in": "'targets'", "IdentityTarget.key_out": "'targets'"}),
        ("decoder_proj/Linear", {"decoder_proj/Linear.in_features": "%MODEL_DIM",
                                 "decoder_proj/Linear.out_features": "%MODEL_DIM"}),
        ("wav_encoder_proj/Linear", {
            "wav_encoder_proj/Linear.in_features": "%NUM_MEL_BINS" if kind == "mel" else "%WAV_FEATURE_DIM",
            "wav_encoder_proj/Linear.out_features": "%MODEL_DIM"}),
        ("LoadNumpyProcessor", {"LoadNumpyProcessor.key_in": "'filename_targets'",
                                "LoadNumpyProcessor.key_out": "'targets'"}),
    ]
    if kind == "mel":
        sections.append(("MelspectrogramProcessor", {
            "MelspectrogramProcessor.dither": 0.0, "MelspectrogramProcessor.frame_length": 26.56,
            "MelspectrogramProcessor.frame_shift": 13.28, "MelspectrogramProcessor.htk_compat": True,
            "MelspectrogramProcessor.key_in": "'wav'", "MelspectrogramProcessor.key_out": "'wav_features'",
            "MelspectrogramProcessor.norm_stats": f"[{FBANK_NORM[0]}, {FBANK_NORM[1]}]",
            "MelspectrogramProcessor.num_mel_bins": "%NUM_MEL_BINS",
            "MelspectrogramProcessor.sample_frequency": SAMPLE_RATE, "MelspectrogramProcessor.use_energy": False,
            "MelspectrogramProcessor.window_type": "'hanning'"}))
    for stack in ("decoder", "encoder"):
        sections.append((f"{stack}/MultiHeadAttention", {
            f"{stack}/MultiHeadAttention.model_dim": "%MODEL_DIM",
            f"{stack}/MultiHeadAttention.num_heads": f"%NUM_{stack.upper()}_HEADS"}))
    sections += [
        ("PatchoutMask", {"PatchoutMask.masker": f"@{M}.masks.TimeGapMask",
                          "PatchoutMask.positional_encoder": f"@{M}.transformers.SinusoidalPositionalEmbeddings"}),
        ("ReadAudioProcessor", {"ReadAudioProcessor.key_in": "'filename_audio'", "ReadAudioProcessor.key_out": "'wav'",
                                "ReadAudioProcessor.max_length": "%MAX_AUDIO_DURATION"}),
        ("SequentialProcessor", {"SequentialProcessor.processors": "[" + ", ".join(processors) + "]"}),
        ("SinusoidalPositionalEmbeddings", {"SinusoidalPositionalEmbeddings.embedding_dim": "%MODEL_DIM"}),
        ("TimeGapMask", {"TimeGapMask.gap_size": "%MASK_GAP_SIZE", "TimeGapMask.p_mask": "%MASK_PROP"}),
    ]
    for stack, key_in, key_out, pad in (("decoder", "decoder_in", "decoder_out", "feature_padding_mask"),
                                        ("encoder", "visible_tokens", "decoder_in", "visible_padding_mask")):
        p = f"{stack}/transformers.TransformerEncoder."
        b = {p + "attention_layer": f"@{stack}/{M}.transformers.MultiHeadAttention", p + "compile": False,
             p + "ff_dim": spec.ff_dim, p + "key_in": f"'{key_in}'", p + "key_out": f"'{key_out}'",
             p + "key_padding_mask": f"'{pad}'", p + "model_dim": "%MODEL_DIM",
             p + "num_layers": f"%NUM_{stack.upper()}_LAYERS"}
        if stack == "decoder":
            b[p + "positional_encoder"] = f"@{M}.transformers.SinusoidalPositionalEmbeddings"
        else:
            b.update({p + "key_transformer_in": None, p + "key_transformer_out": "'visible_embeddings'",
                      p + "post_net": "@decoder_proj/torch.nn.Linear"})
        sections.append((f"{stack}/transformers.TransformerEncoder", b))
    wav = {"WavEncoder.encoder": "@torch.nn.Identity" if kind == "mel" else f"@{M}.encoders.EncodecEncoder",
           "WavEncoder.fs": SAMPLE_RATE, "WavEncoder.hop_length": EC_HOP,
           "WavEncoder.key_in": "'wav_features'" if kind == "mel" else "'wav'", "WavEncoder.key_out": "'wav_features'",
           "WavEncoder.post_net": "@wav_encoder_proj/torch.nn.Linear"}
    sections.append(("WavEncoder", wav))
    rule = "# " + "=" * 78
    lines = ["# Macros:", rule] + [f"{k} = {v}" for k, v in macros.items()] + [""]
    for title, bindings in sections:
        lines += [f"# Parameters for {title}:", rule] + [f"{k} = {v}" for k, v in bindings.items()] + [""]
    return "\n".join(lines)
