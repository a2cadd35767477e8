"""EnCodecMAE inference network (docs/references.md, EnCodecMAE) and a strict loader for the official
checkpoints (v2 ``<name>.pt`` files and v1 ``model.pt`` + ``config.gin`` folders).

Only the path that produces embeddings is built: front-end (256-bin Kaldi fbank or the EnCodec
24 kHz encoder's continuous latents) -> Linear -> scaled sinusoidal positions -> ResiDual encoder.
Knows nothing about files beyond the checkpoint it is asked to read.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..codecs.inference import for_inference
from ..errors import UsageError, WeightsError
from ..registry import ENCODEC_24KHZ
from ..weights import check_finite
from .fbank import FBANK_FRAME_MS, FBANK_NORM, FBANK_SHIFT_MS, fbank_geometry, kaldi_fbank

EC_CODEC = ENCODEC_24KHZ  # the codec of the ec front end (its encoder's latents) and of the pretraining targets
SAMPLE_RATE = EC_CODEC.sample_rate  # 24000
EC_HOP = EC_CODEC.hop  # one latent frame per 320 samples
DEFAULT_FF = 4096  # the reference's TransformerEncoder default when the config has no ff_dim binding
DEFAULT_HEADS = 12  # every released model (small, base, large) uses 12 heads
MASK_BIAS = -1e9  # added to the scores of padded keys, as the reference does

# checkpoint key groups that do not take part in computing embeddings
IGNORED_PREFIXES = ("decoder.", "head.", "target_encoder.", "extra_head.", "visible_encoder.post_net.")
IGNORED_KEYS = ("decoder.positional_encoder.scale",)
V1_RENAMES = (
    ("wav_encoder.model.", "wav_encoder.encoder.model."),
    ("feat_projector.", "wav_encoder.post_net."),
    ("decoder_projector.", "visible_encoder.post_net."),
)


# --- configuration ---------------------------------------------------------------------------
@dataclass
class MaeConfig:
    """Architecture of one checkpoint (read from its gin config and tensor shapes)."""

    frontend: str  # "mel" (Kaldi fbank) or "ec" (EnCodec 24 kHz latents)
    in_features: int  # 256 (mel) or 128 (ec)
    dim: int
    layers: int
    heads: int
    ff_dim: int
    mel_frame_ms: float = FBANK_FRAME_MS
    mel_shift_ms: float = FBANK_SHIFT_MS
    mel_norm: tuple[float, float] = FBANK_NORM

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def hop(self) -> int:
        """Samples between frames."""
        return EC_HOP if self.frontend == "ec" else fbank_geometry(SAMPLE_RATE, self.mel_frame_ms, self.mel_shift_ms)[1]

    @property
    def window(self) -> int:
        """Samples the first frame needs (shorter inputs are zero-padded to this)."""
        return 1 if self.frontend == "ec" else fbank_geometry(SAMPLE_RATE, self.mel_frame_ms, self.mel_shift_ms)[0]

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.hop

    def frames(self, n_samples: int) -> int:
        """Frames for a chunk of ``n_samples`` (after padding a too-short chunk to one window)."""
        n = max(int(n_samples), self.window)
        if self.frontend == "ec":
            return -(-n // EC_HOP)
        return 1 + (n - self.window) // self.hop

    def frame_centre(self, t: int) -> float:
        """Centre of frame ``t`` of a chunk, in samples from the chunk start."""
        if self.frontend == "ec":
            return t * EC_HOP + EC_HOP / 2
        return t * self.hop + self.window / 2


def parse_gin(text: str) -> tuple[dict, dict]:
    """Macros and bindings of a gin config string (as ``gin.config_str()`` writes it).

    Returns ``(macros, bindings)``; binding keys keep their scope (``encoder/...TransformerEncoder.ff_dim``),
    values are Python literals where possible, ``%MACRO`` resolved, ``@refs`` kept as strings."""
    lines, cur = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        more = line.endswith("\\")
        cur += (" " if cur else "") + (line[:-1] if more else line).strip()
        depth = sum(cur.count(c) for c in "([{") - sum(cur.count(c) for c in ")]}")
        if not more and depth <= 0:
            lines.append(cur)
            cur = ""
    if cur:
        lines.append(cur)
    macros: dict = {}
    bindings: dict = {}
    for stmt in lines:
        m = re.match(r"^([\w./]+)\s*=\s*(.*)$", stmt.strip(), re.S)
        if not m:
            continue
        name, value = m.group(1), _gin_value(m.group(2).strip())
        if "." in name.split("/")[-1]:
            bindings[name] = value
        else:
            macros[name] = value
    for key, value in list(bindings.items()):
        if isinstance(value, str) and value.startswith("%"):
            bindings[key] = macros.get(value[1:], value)
    return macros, bindings


def _gin_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _binding(bindings: dict, param: str, scope_word: str | None = None):
    """Value of the first binding ending in ``param`` (e.g. ``MultiHeadAttention.num_heads``) whose
    scope contains ``scope_word`` (None: any scope)."""
    for key, value in bindings.items():
        scope, _, tail = key.rpartition("/")
        if not (tail == param or tail.endswith("." + param)):
            continue
        if scope_word is None or scope_word in scope.split("/")[-1:]:
            return value
    return None


def _encoder_ff(bindings: dict) -> int | None:
    """The encoder's ff_dim binding (encoder-scoped, else unscoped); None when the config leaves
    the code default (4096) in place."""
    scoped = _binding(bindings, "TransformerEncoder.ff_dim", "encoder")
    if scoped is not None:
        return scoped
    return next((v for k, v in bindings.items() if "/" not in k and k.endswith("TransformerEncoder.ff_dim")), None)


def config_from_checkpoint(state: dict, gin_text: str) -> MaeConfig:
    """Sizes from tensor shapes, the number of heads (and checks) from the gin config."""
    macros, bindings = parse_gin(gin_text or "")
    try:
        post = state["wav_encoder.post_net.weight"]
        ff0 = state["visible_encoder.encoder_layers.0.ff_layer.0.weight"]
        q_out = int(state["visible_encoder.encoder_layers.0.att_layer.wq.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"the checkpoint has no {exc.args[0]} tensor, so it is not an EnCodecMAE model") from None
    dim, in_features = int(post.shape[0]), int(post.shape[1])
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"visible_encoder\.encoder_layers\.(\d+)\.", k))}
    layers = max(layer_ids) + 1
    heads = _binding(bindings, "MultiHeadAttention.num_heads", "encoder")
    if heads is None:
        heads = macros.get("NUM_ENCODER_HEADS", DEFAULT_HEADS)
    frontend = "ec" if any(k.startswith("wav_encoder.encoder.model.") for k in state) else "mel"
    cfg = MaeConfig(frontend, in_features, dim, layers, int(heads), int(ff0.shape[0]))
    checks = {
        "MODEL_DIM": (macros.get("MODEL_DIM"), dim),
        "NUM_ENCODER_LAYERS": (macros.get("NUM_ENCODER_LAYERS"), layers),
        "encoder ff_dim": (_encoder_ff(bindings), cfg.ff_dim),
    }
    for what, (declared, found) in checks.items():
        if isinstance(declared, int) and declared != found:
            raise WeightsError(f"the checkpoint's config says {what} = {declared} but its tensors have {found}")
    if cfg.heads <= 0 or q_out != cfg.heads * cfg.head_dim:
        raise WeightsError(f"the checkpoint's query projection has {q_out} outputs, which does not fit "
                           f"{cfg.heads} heads of width {dim} // {cfg.heads}")
    if frontend == "mel":
        bins = _binding(bindings, "MelspectrogramProcessor.num_mel_bins")
        if isinstance(bins, int) and bins != in_features:
            raise WeightsError(f"the config asks for {bins} mel bins but the input projection takes {in_features}")
        norm = _binding(bindings, "MelspectrogramProcessor.norm_stats")
        if isinstance(norm, (list, tuple)) and len(norm) == 2:
            cfg.mel_norm = (float(norm[0]), float(norm[1]))
        for attr, param in (("mel_frame_ms", "frame_length"), ("mel_shift_ms", "frame_shift")):
            v = _binding(bindings, "MelspectrogramProcessor." + param)
            if isinstance(v, (int, float)):
                setattr(cfg, attr, float(v))
    elif in_features != 128:
        raise WeightsError(f"the EnCodec front-end gives 128 features but the input projection takes {in_features}")
    return cfg


# --- network ---------------------------------------------------------------------------------
def sinusoidal_positions(n: int, dim: int, device=None) -> torch.Tensor:
    """``[n, dim]``: sin on even channels, cos on odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    pos = torch.arange(n, dtype=torch.float32, device=device).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    angles = pos * inv_freq
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


class Attention(nn.Module):
    """Multi-head self-attention without biases; channel ``c`` belongs to head ``c % heads``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        inner = heads * self.head_dim
        self.wq = nn.Linear(dim, inner, bias=False)
        self.wk = nn.Linear(dim, inner, bias=False)
        self.wv = nn.Linear(dim, inner, bias=False)
        self.wo = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.head_dim, self.heads).permute(0, 3, 1, 2)  # [B, H, T, hd]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        qkv = F.linear(x, torch.cat([self.wq.weight, self.wk.weight, self.wv.weight]))
        q, k, v = (self._split(y) for y in qkv.chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale head_dim ** -0.5
        b, _, t, _ = out.shape
        return self.wo(out.permute(0, 2, 3, 1).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    """ResiDual block: x0 is post-normed, x1 accumulates the raw branch outputs."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.att_layer = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x0, x1, ff: nn.Module, bias):
        a = self.att_layer(x0, bias)
        x0 = self.norm1(x0 + a)
        x1 = x1 + a
        f = ff(x0)
        return self.norm2(x0 + f), x1 + f


class EncodecMAE(nn.Module):
    """The EnCodecMAE encoder path: waveform chunks -> features -> selected layers."""

    def __init__(self, cfg: MaeConfig):
        super().__init__()
        self.cfg = cfg
        self.codec_encoder = _seanet_encoder() if cfg.frontend == "ec" else None
        self.post_net = nn.Linear(cfg.in_features, cfg.dim)
        self.pos_scale = nn.Parameter(torch.ones(()))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads) for _ in range(cfg.layers))
        self.ff = nn.Sequential(nn.Linear(cfg.dim, cfg.ff_dim), nn.ReLU(), nn.Linear(cfg.ff_dim, cfg.dim))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-5)

    @torch.inference_mode()
    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Front-end for equal-length chunks ``[B, N]`` (N >= ``cfg.window``) -> ``[B, T, F]`` float32."""
        if self.codec_encoder is not None:
            return self.codec_encoder(wave.unsqueeze(1)).transpose(1, 2)
        mean, std = self.cfg.mel_norm
        fb = kaldi_fbank(wave, self.cfg.in_features, SAMPLE_RATE, self.cfg.mel_frame_ms, self.cfg.mel_shift_ms)
        return (fb - mean) / std

    @torch.inference_mode()
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """``feats [B, T, F]`` with valid lengths ``[B]`` -> one ``[B, T, D]`` per index in ``layers``
        (0 .. L-1; L-1 is the combined output ``x0 + final_norm(x1)``, i < L-1 the x0 stream after block i)."""
        dtype = self.post_net.weight.dtype
        b, t, _ = feats.shape
        x = self.post_net(feats.to(dtype))
        x = x + (self.pos_scale * sinusoidal_positions(t, self.cfg.dim, x.device)).to(dtype)
        bias = None
        if bool((lengths < t).any()):
            pad = torch.arange(t, device=x.device).unsqueeze(0) >= lengths.to(x.device).unsqueeze(1)
            neg = max(MASK_BIAS, torch.finfo(dtype).min)
            bias = torch.zeros(b, 1, 1, t, dtype=dtype, device=x.device).masked_fill(pad[:, None, None, :], neg)
        wanted = set(layers)
        last = self.cfg.layers - 1
        out: dict[int, torch.Tensor] = {}
        x0 = x1 = x
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            x0, x1 = block(x0, x1, self.ff, bias)
            if i in wanted:
                out[i] = x0 + self.final_norm(x1) if i == last else x0
        return [out[i] for i in layers]


def _seanet_encoder() -> nn.Module:
    """The ``encodec`` package's 24 kHz encoder (random init; weights come from the checkpoint)."""
    from encodec.modules import SEANetEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SEANetEncoder(channels=1, norm="weight_norm", causal=True)


def resolve_layers(layer: int | str, n_layers: int) -> list[int]:
    """``-1`` / ``"-1"`` / ``"all"`` -> 0-based layer indices (L-1 = combined last output)."""
    if isinstance(layer, str):
        if layer.strip().lower() == "all":
            return list(range(n_layers))
        try:
            layer = int(layer)
        except ValueError:
            raise UsageError(f"--layer {layer!r} is not valid; give an index, a negative index or 'all'") from None
    if not -n_layers <= int(layer) < n_layers:
        raise UsageError(f"--layer {layer} is out of range: this model has {n_layers} layers "
                         f"(0..{n_layers - 1} or -{n_layers}..-1)")
    return [int(layer) % n_layers]


# --- loading ---------------------------------------------------------------------------------
@dataclass
class LoadedCheckpoint:
    state: dict
    config_text: str
    layout: str  # "v2" or "v1"
    path: Path


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read a v2 ``<name>.pt`` or a v1 folder (``model.pt`` + ``config.gin``), with
    ``torch.load(weights_only=True)``; v1 key names are mapped to v2 ones."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _read_v1(path)
    if not path.is_file():
        raise WeightsError(f"EnCodecMAE checkpoint {path} does not exist; give a .pt file, a v1 model folder or a released name")
    blob = _torch_load(path)
    if not isinstance(blob, dict):
        raise WeightsError(f"{path} does not hold an EnCodecMAE checkpoint (expected a dict with a state_dict)")
    if "state_dict" not in blob and any(k.startswith("visible_encoder.") for k in blob):
        blob = {"state_dict": blob}
    state = blob.get("state_dict")
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold an EnCodecMAE checkpoint (no state_dict in it)")
    config = blob.get("config") or ""
    gin_file = path.parent / "config.gin"
    if not config and gin_file.is_file():
        config = gin_file.read_text(encoding="utf-8", errors="replace")
    if _is_v1(state):
        return LoadedCheckpoint(v1_to_v2(state), config, "v1", path)
    return LoadedCheckpoint(dict(state), config, "v2", path)


def _read_v1(folder: Path) -> LoadedCheckpoint:
    model_file, gin_file = folder / "model.pt", folder / "config.gin"
    if not model_file.is_file():
        raise WeightsError(f"v1 model folder {folder} has no model.pt; it must hold model.pt and config.gin")
    blob = _torch_load(model_file)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{model_file} does not hold an EnCodecMAE state_dict")
    config = gin_file.read_text(encoding="utf-8", errors="replace") if gin_file.is_file() else ""
    return LoadedCheckpoint(v1_to_v2(state) if _is_v1(state) else dict(state), config, "v1", folder)


def _torch_load(path: Path):
    from ..weights import load_torch_file

    return load_torch_file(path, "EnCodecMAE checkpoint")


def _is_v1(state: dict) -> bool:
    return any(k.startswith(("wav_encoder.model.", "feat_projector.", "decoder_projector.")) or k == "positional_encoder.scale"
               for k in state)


def v1_to_v2(state: dict) -> dict:
    """Rename v1 keys to the v2 layout (the single position scale feeds both v2 scale keys)."""
    out = {}
    for key, value in state.items():
        if key == "positional_encoder.scale":
            out["masker.positional_encoder.scale"] = value
            out["decoder.positional_encoder.scale"] = value
            continue
        for old, new in V1_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def _our_key(key: str) -> str | None:
    """Our parameter name for a checkpoint key (None: not part of our network)."""
    if key == "masker.positional_encoder.scale":
        return "pos_scale"
    if key.startswith("wav_encoder.post_net."):
        return "post_net." + key[len("wav_encoder.post_net."):]
    if key.startswith("wav_encoder.encoder."):
        rest = key[len("wav_encoder.encoder."):]
        if rest.startswith("model.model."):  # the reference's layout: EncodecEncoder.model (SEANet) .model
            rest = rest[len("model."):]
        return "codec_encoder." + _weight_norm_name(rest)
    if key.startswith("visible_encoder.final_norm."):
        return "final_norm." + key[len("visible_encoder.final_norm."):]
    m = re.match(r"visible_encoder\.encoder_layers\.(\d+)\.(.*)$", key)
    if m:
        i, rest = m.groups()
        if rest.startswith("ff_layer."):
            return "ff." + rest[len("ff_layer."):]
        return f"blocks.{i}.{rest}"
    return None


def _weight_norm_name(name: str) -> str:
    """Newer torch saves weight norm as parametrizations; encodec's modules use weight_g / weight_v."""
    return name.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v")


def build_model(ckpt: LoadedCheckpoint) -> EncodecMAE:
    """Build the network for ``ckpt`` and load it strictly.

    Every checkpoint tensor must be used or belong to a known group the encoder does not need
    (decoder, head, targets, the decoder-side projection); every parameter must be present; the
    per-layer copies of the shared feed-forward must be identical."""
    state = ckpt.state
    check_finite(state, ckpt.path)
    try:
        cfg = config_from_checkpoint(state, ckpt.config_text)
        model = EncodecMAE(cfg)
    except WeightsError as exc:
        raise WeightsError(f"{ckpt.path}: {exc}") from None
    except Exception as exc:  # a config value the network cannot be built with (0 heads, a string...)
        raise WeightsError(f"{ckpt.path}: its config does not describe a buildable EnCodecMAE model "
                           f"({_first_line(exc)}); the checkpoint is damaged") from None
    ours = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        name = _our_key(key)
        if name is None:
            if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
                continue
            unknown.append(key)
            continue
        if name not in ours:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(ours[name].shape):
            raise WeightsError(f"{ckpt.path}: tensor {key} has shape {tuple(value.shape)}, "
                               f"the model built from its config needs {tuple(ours[name].shape)}")
        if name in loaded:
            if not torch.equal(loaded[name], value):
                raise WeightsError(f"{ckpt.path}: {key} differs from layer 0's copy, but the feed-forward "
                                   "is shared by every layer of the encoder")
            continue
        loaded[name] = value
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise WeightsError(f"{ckpt.path}: unexpected tensor {unknown[0]}{more}; this is not a checkpoint audiotok can read")
    missing = [k for k in ours if k not in loaded]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise WeightsError(f"{ckpt.path}: tensor for {missing[0]}{more} is missing; the checkpoint is incomplete")
    try:
        model.load_state_dict(loaded, strict=True)
    except Exception as exc:
        raise WeightsError(f"{ckpt.path}: the tensors do not load into the model ({_first_line(exc)})") from None
    if model.codec_encoder is not None:
        for_inference(model.codec_encoder)
    return model.eval()


def _first_line(exc: BaseException) -> str:
    """The gist of a loader's exception in one line (``load_state_dict`` puts it on line two)."""
    text = re.sub(r"^Error\(s\) in loading state_dict for \w+:", "", str(exc).strip())
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def load_mae(path: str | Path) -> EncodecMAE:
    """Read and strictly load an EnCodecMAE checkpoint (file or v1 folder) on the CPU in float32."""
    return build_model(read_checkpoint(path))
