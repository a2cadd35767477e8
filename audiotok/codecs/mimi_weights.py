"""Mimi's weights without torch: the model's configuration, the official files and their two
layouts (names only; ``mimi.py`` builds the network).

Two official layouts hold the same tensors:

- transformers (hub ``kyutai/mimi``: ``model.safetensors`` + ``config.json``): flat names such as
  ``encoder.layers.0.conv.weight``, ``encoder_transformer.layers.0.self_attn.q_proj.weight``,
  ``quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum``; queries and keys
  are stored permuted for transformers' half-split rotary embedding. transformers 5.x's own
  module names (``encoder.encoder_seanet.layers...``, ``decoder.decoder_transformer...``) are
  accepted too.
- moshi (``tokenizer-*.safetensors``): ``encoder.model.0.conv.conv.weight``,
  ``encoder_transformer.transformer.layers.0.self_attn.in_proj_weight`` (queries, keys and values
  stacked, interleaved rotary layout), ``quantizer.rvq_first.vq.layers.0._codebook.embedding_sum``.

audiotok computes in the moshi layout: a transformers file is renamed and its query/key rows
un-permuted (the inverse of transformers' ``convert_mimi_checkpoint_to_pytorch.py``). Loading is
strict: the file must hold exactly the tensors the configuration asks for, with their shapes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import WeightsError

HUB_REPO = "kyutai/mimi"
HUB_FILES = ("model.safetensors", "config.json")


@dataclass(frozen=True)
class MimiConfig:
    """The network's shape (defaults: the released ``kyutai/mimi``). Field names follow
    transformers' ``MimiConfig`` so ``config.json`` maps onto it."""

    sampling_rate: int = 24000
    audio_channels: int = 1
    hidden_size: int = 512  # SEANet latent = transformer width
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    head_dim: int = 64
    intermediate_size: int = 2048
    sliding_window: int = 250
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    frame_rate: float = 12.5
    upsample_groups: int = 512
    source: str = field(default="default", compare=False)

    @property
    def encoder_hop(self) -> int:
        return math.prod(self.upsampling_ratios)

    @property
    def downsample_stride(self) -> int:
        return int(round(self.sampling_rate / self.encoder_hop / self.frame_rate))

    @property
    def hop(self) -> int:
        """Samples per frame (1920 for the released model)."""
        return self.encoder_hop * self.downsample_stride

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> MimiConfig:
        """The configuration in a transformers ``config.json``; a file of another model, or one
        asking for a variant audiotok does not compute (non-causal, a convolution shortcut, other
        activations...), is a ``WeightsError``."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise WeightsError(f"could not read {path} as a Mimi config.json ({exc})") from None
        if not isinstance(raw, dict) or raw.get("model_type") != "mimi":
            kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
            raise WeightsError(f"{path} is not a Mimi config.json (its model_type is {kind!r}, not 'mimi')")
        fixed = {"use_causal_conv": True, "pad_mode": "constant", "use_conv_shortcut": False, "hidden_act": "gelu",
                 "trim_right_ratio": 1.0, "attention_bias": False}
        for key, want in fixed.items():
            if key in raw and raw[key] != want:
                raise WeightsError(f"{path} asks for {key}={raw[key]!r}; audiotok computes Mimi with {key}={want!r} "
                                   "only (the released model's)")
        if raw.get("num_key_value_heads", raw.get("num_attention_heads")) != raw.get("num_attention_heads"):
            raise WeightsError(f"{path} asks for grouped key/value heads, which the released Mimi does not use")
        kw = {}
        for f in cls.__dataclass_fields__:
            if f in raw and f != "source":
                kw[f] = tuple(raw[f]) if isinstance(raw[f], list) else raw[f]
        rope = raw.get("rope_parameters") or {}
        if "rope_theta" in rope:
            kw["rope_theta"] = rope["rope_theta"]
        if raw.get("_frame_rate") is not None:
            kw["frame_rate"] = raw["_frame_rate"]
        if kw.get("codebook_dim") is None:
            kw["codebook_dim"] = kw.get("hidden_size", cls.hidden_size)
        if "vector_quantization_hidden_dimension" in raw and raw["vector_quantization_hidden_dimension"] != kw.get(
                "codebook_dim", cls.codebook_dim):
            raise WeightsError(f"{path}: vector_quantization_hidden_dimension differs from codebook_dim, which the "
                               "released Mimi never does")
        try:
            cfg = cls(**kw, source=str(path))
        except TypeError as exc:
            raise WeightsError(f"{path} is not a usable Mimi config.json ({exc})") from None
        if cfg.hidden_size % cfg.num_attention_heads or cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
            raise WeightsError(f"{path}: hidden_size {cfg.hidden_size} is not num_attention_heads x head_dim")
        if cfg.upsample_groups not in (1, cfg.hidden_size):
            raise WeightsError(f"{path}: upsample_groups must be 1 or hidden_size")
        if cfg.sampling_rate / cfg.encoder_hop / cfg.frame_rate != cfg.downsample_stride:
            raise WeightsError(f"{path}: frame_rate {cfg.frame_rate} is not the SEANet rate over a whole stride")
        return cfg

    def with_source(self, source: str) -> MimiConfig:
        return replace(self, source=source)


# --- the moshi layout: every tensor the configuration asks for, with its shape -----------------------
def encoder_plan(c: MimiConfig) -> list[tuple]:
    """The SEANet encoder's layers in order: ``("conv", index, cin, cout, kernel, stride, dilation)``,
    ``("res", index, dim, dilation)`` and ``("elu",)`` (``index``: position in ``encoder.model``)."""
    plan, i, mult = [("conv", 0, c.audio_channels, c.num_filters, c.kernel_size, 1, 1)], 1, 1
    for ratio in reversed(c.upsampling_ratios):
        for j in range(c.num_residual_layers):
            plan.append(("res", i, mult * c.num_filters, c.dilation_growth_rate ** j))
            i += 1
        plan += [("elu",), ("conv", i + 1, mult * c.num_filters, mult * c.num_filters * 2, ratio * 2, ratio, 1)]
        i += 2
        mult *= 2
    plan += [("elu",), ("conv", i + 1, mult * c.num_filters, c.hidden_size, c.last_kernel_size, 1, 1)]
    return plan


def decoder_plan(c: MimiConfig) -> list[tuple]:
    """The SEANet decoder's layers: as ``encoder_plan``, with ``("convtr", index, cin, cout, kernel, stride)``."""
    mult = 2 ** len(c.upsampling_ratios)
    plan, i = [("conv", 0, c.hidden_size, mult * c.num_filters, c.kernel_size, 1, 1)], 1
    for ratio in c.upsampling_ratios:
        plan += [("elu",), ("convtr", i + 1, mult * c.num_filters, mult * c.num_filters // 2, ratio * 2, ratio)]
        i += 2
        for j in range(c.num_residual_layers):
            plan.append(("res", i, mult * c.num_filters // 2, c.dilation_growth_rate ** j))
            i += 1
        mult //= 2
    plan += [("elu",), ("conv", i + 1, c.num_filters, c.audio_channels, c.last_kernel_size, 1, 1)]
    return plan


def expected_shapes(c: MimiConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the model, in the moshi layout (``in_proj_weight``)."""
    s: dict[str, tuple[int, ...]] = {}
    for part, plan in (("encoder", encoder_plan(c)), ("decoder", decoder_plan(c))):
        for op in plan:
            if op[0] == "conv":
                _, i, cin, cout, k = op[:5]
                s[f"{part}.model.{i}.conv.conv.weight"] = (cout, cin, k)
                s[f"{part}.model.{i}.conv.conv.bias"] = (cout,)
            elif op[0] == "convtr":
                _, i, cin, cout, k, _ = op
                s[f"{part}.model.{i}.convtr.convtr.weight"] = (cin, cout, k)
                s[f"{part}.model.{i}.convtr.convtr.bias"] = (cout,)
            elif op[0] == "res":
                _, i, dim, _ = op
                hidden = dim // c.compress
                s[f"{part}.model.{i}.block.1.conv.conv.weight"] = (hidden, dim, c.residual_kernel_size)
                s[f"{part}.model.{i}.block.1.conv.conv.bias"] = (hidden,)
                s[f"{part}.model.{i}.block.3.conv.conv.weight"] = (dim, hidden, 1)
                s[f"{part}.model.{i}.block.3.conv.conv.bias"] = (dim,)
    d, ff = c.hidden_size, c.intermediate_size
    for tr in ("encoder_transformer", "decoder_transformer"):
        for layer in range(c.num_hidden_layers):
            p = f"{tr}.transformer.layers.{layer}."
            s[p + "self_attn.in_proj_weight"] = (3 * d, d)
            s[p + "self_attn.out_proj.weight"] = (d, d)
            for n in ("norm1", "norm2"):
                s[p + n + ".weight"] = (d,)
                s[p + n + ".bias"] = (d,)
            s[p + "linear1.weight"] = (ff, d)
            s[p + "linear2.weight"] = (d, ff)
            s[p + "layer_scale_1.scale"] = (d,)
            s[p + "layer_scale_2.scale"] = (d,)
    stride = c.downsample_stride
    s["downsample.conv.conv.conv.weight"] = (d, d, 2 * stride)
    s["upsample.convtr.convtr.convtr.weight"] = (d, d // c.upsample_groups, 2 * stride)
    levels = {"rvq_first": c.num_semantic_quantizers, "rvq_rest": c.num_quantizers - c.num_semantic_quantizers}
    for rvq, n in levels.items():
        s[f"quantizer.{rvq}.input_proj.weight"] = (c.codebook_dim, d, 1)
        s[f"quantizer.{rvq}.output_proj.weight"] = (d, c.codebook_dim, 1)
        for q in range(n):
            p = f"quantizer.{rvq}.vq.layers.{q}._codebook."
            s[p + "_initialized"] = (1,)
            s[p + "cluster_usage"] = (c.codebook_size,)
            s[p + "embedding_sum"] = (c.codebook_size, c.codebook_dim)
    return s


# --- renames -------------------------------------------------------------------------------------
_TO_HF = [
    ("conv.conv.conv", "conv"), ("convtr.convtr.convtr", "conv"), ("conv.conv", "conv"), ("convtr.convtr", "conv"),
    ("quantizer.rvq_first.vq", "quantizer.semantic_residual_vector_quantizer"),
    ("quantizer.rvq_first", "quantizer.semantic_residual_vector_quantizer"),
    ("quantizer.rvq_rest.vq", "quantizer.acoustic_residual_vector_quantizer"),
    ("quantizer.rvq_rest", "quantizer.acoustic_residual_vector_quantizer"),
    ("_codebook", "codebook"), ("_initialized", "initialized"), ("embedding_sum", "embed_sum"),
    ("encoder.model", "encoder.layers"), ("decoder.model", "decoder.layers"),
    ("encoder_transformer.transformer", "encoder_transformer"), ("decoder_transformer.transformer", "decoder_transformer"),
    ("linear1", "mlp.fc1"), ("linear2", "mlp.fc2"), ("self_attn.out_proj", "self_attn.o_proj"),
    ("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"),
    ("layer_scale_1", "self_attn_layer_scale"), ("layer_scale_2", "mlp_layer_scale"),
]
# transformers 5.x module names -> the flat names of the hub file
_HF5_PREFIXES = [
    ("encoder.encoder_seanet.layers.", "encoder.layers."), ("encoder.encoder.layers.", "encoder.layers."),
    ("encoder.encoder_transformer.", "encoder_transformer."), ("encoder.downsample.", "downsample."),
    ("decoder.upsample.", "upsample."), ("decoder.decoder_transformer.", "decoder_transformer."),
    ("decoder.decoder_seanet.layers.", "decoder.layers."), ("decoder.decoder.layers.", "decoder.layers."),
]
# moshi's other spellings of the attention projections (its own load hook accepts them all)
_MOSHI_ALIASES = [("self_attn.in_projs.0.weight", "self_attn.in_proj_weight"),
                  ("self_attn.in_proj.weight", "self_attn.in_proj_weight"),
                  ("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")]


def hf_name(moshi_name: str) -> str:
    """The transformers name of a moshi-layout tensor (``in_proj_weight`` -> ``q_proj.weight``'s stem)."""
    name = moshi_name
    for old, new in _TO_HF:
        if old in name:
            name = name.replace(old, new)
    return name


def layout_of(names) -> str | None:
    """``"moshi"``, ``"transformers"`` or None (neither) for a file's tensor names."""
    names = list(names)
    if any(n.startswith(("encoder.model.", "encoder_transformer.transformer.")) for n in names):
        return "moshi"
    if any(n.startswith(("encoder.layers.", "encoder.encoder_seanet.", "encoder.encoder.layers.", "encoder_transformer.layers.",
                         "encoder.encoder_transformer.")) for n in names):
        return "transformers"
    return None


def to_moshi_layout(tensors: dict, config: MimiConfig, path) -> dict:
    """``tensors`` (either layout) renamed to the moshi layout, checked strictly against ``config``:
    a missing, extra or misshapen tensor is a ``WeightsError`` naming it."""
    layout = layout_of(tensors)
    if layout is None:
        raise WeightsError(f"checkpoint {path} does not hold Mimi weights (neither the transformers layout of "
                           f"{HUB_REPO} nor moshi's tokenizer layout)")
    expected = expected_shapes(config)
    out: dict = {}
    if layout == "moshi":
        for name, t in tensors.items():
            for old, new in _MOSHI_ALIASES:
                if name.endswith(old):
                    name = name[: -len(old)] + new
            out[name] = t
    else:
        flat = {}
        for name, t in tensors.items():
            for old, new in _HF5_PREFIXES:
                if name.startswith(old):
                    name = new + name[len(old):]
                    break
            flat[name] = t
        heads, hd = config.num_attention_heads, config.head_dim
        for name in expected:
            stem = hf_name(name)
            if name.endswith("self_attn.in_proj_weight"):
                base = stem[: -len("in_proj_weight")]
                parts = [flat.pop(base + p + "_proj.weight", None) for p in "qkv"]
                if any(p is None for p in parts):
                    continue  # reported as missing below
                q, k, v = parts
                out[name] = _stack_qkv(_unpermute(q, heads, hd), _unpermute(k, heads, hd), v)
            elif stem in flat:
                out[name] = flat.pop(stem)
        for name, t in flat.items():
            out["<transformers>" + name] = t  # left over: reported as unexpected
    missing = [n for n in expected if n not in out]
    extra = [n.replace("<transformers>", "") for n in out if n not in expected]
    what = f"checkpoint {path} does not hold the Mimi weights its configuration ({config.source}) asks for"
    if missing:
        raise WeightsError(f"{what}: {len(missing)} tensors are missing, the first {_hf_or_moshi(missing[0], layout)}")
    if extra:
        raise WeightsError(f"{what}: {len(extra)} tensors are unexpected, the first {extra[0]}")
    for name, shape in expected.items():
        got = tuple(out[name].shape)
        if got != shape:
            raise WeightsError(f"{what}: {_hf_or_moshi(name, layout)} has shape {list(got)}, expected {list(shape)}")
    return out


def _hf_or_moshi(name: str, layout: str) -> str:
    return name if layout == "moshi" else hf_name(name).replace("in_proj_weight", "q_proj.weight")


def _unpermute(w, heads: int, head_dim: int):
    """transformers' half-split rotary rows back to moshi's interleaved ones (inverse of its ``permute``)."""
    rows, cols = w.shape
    return w.reshape(heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


def _stack_qkv(q, k, v):
    import torch

    return torch.cat([q, k, v], dim=0)


# --- files -----------------------------------------------------------------------------------------
def config_for(checkpoint: Path) -> MimiConfig:
    """The configuration of a weights file: ``config.json`` beside it, else the released model's."""
    beside = checkpoint.with_name("config.json")
    if beside.is_file():
        return MimiConfig.from_json(beside)
    return MimiConfig(source=f"the default {HUB_REPO} configuration")


def default_weights(option: str = "--checkpoint") -> Path:
    """The hub ``kyutai/mimi`` ``model.safetensors`` (with its ``config.json`` beside it) from the
    Hugging Face cache, downloaded first unless offline; a ``WeightsError`` naming the files otherwise."""
    from ..weights import hf_download_command, hub_unreachable, offline

    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        hf_hub_download = None
    if hf_hub_download is not None:
        try:
            paths = [Path(hf_hub_download(repo_id=HUB_REPO, filename=f, local_files_only=True)) for f in HUB_FILES]
            return paths[0]
        except Exception:  # not cached (huggingface_hub raises several types)
            pass
    why = "downloads are off (HF_HUB_OFFLINE or AUDIOTOK_OFFLINE)"
    if hf_hub_download is not None and not offline():
        host = hub_unreachable()
        if host is None:
            try:
                paths = [Path(hf_hub_download(repo_id=HUB_REPO, filename=f)) for f in HUB_FILES]
                return paths[0]
            except Exception as exc:
                why = f"the download failed ({type(exc).__name__})"
        else:
            why = f"{host} cannot be reached (no network?)"
    raise WeightsError(
        f"the Mimi weights (model.safetensors and config.json of the Hugging Face repo {HUB_REPO}) are not in the "
        f"cache and {why}; fetch them with `{hf_download_command(HUB_REPO, 'model.safetensors')}` and "
        f"`{hf_download_command(HUB_REPO, 'config.json')}` where there is network, or pass {option} "
        "model.safetensors (config.json beside it) or moshi's tokenizer-*.safetensors"
    )


def read_safetensors(path: Path) -> dict:
    """Every tensor of a ``.safetensors`` file (CPU), a damaged or foreign file as one sentence."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError("reading Mimi weights needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"could not read {path} as a safetensors file ({first}); Mimi weights are "
                           "model.safetensors (transformers layout) or tokenizer-*.safetensors (moshi)") from None
