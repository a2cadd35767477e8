"""Audio LMs behind ``audiotok score`` / ``train lm``: tokenizer identity, single-file checkpoints,
and one scoring interface over Whisper-GPT, the token-only GPT and EnCodec's own LM.

A scorer turns one file's codes ``[n_q, T]`` (and raw log-mel ``[T, 80]``) into model inputs and
targets, and maps fixed-shape windows of inputs to logits; ``audiotok.lm.scoring`` does the rest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError, WeightsError
from ..files import atomic_write
from ..registry import CodecSpec, get_codec
from ..weights import check_finite, file_sha256, load_torch_file
from .gpt import FEATURES, GPTConfig, aligned_mel, build_gpt, count_params
from .names import ARCHS, MODELS  # noqa: F401  (re-exported)
from .tokenizer import tokenizer_spec

CHECKPOINT_FORMAT = "audiotok-lm"
# 1: whisper-gpt squeezed its token embedding to d - d_s (loads as fusion "legacy");
# 2: fusion, mel_lag and n_codebooks in the config, info-control and the large size.
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_TOKENIZER_KEYS = ("codec", "sample_rate", "frame_rate", "bandwidth", "codebooks", "codec_sha256")


def file_digest(path: str | os.PathLike, n: int = 16) -> str:
    """The first ``n`` hex digits of a file's sha256 (identity of a weights file)."""
    return file_sha256(path, n)


def codec_name(codec) -> str:
    """The registry name of a loaded codec: a ``protocols.Codec`` (``spec.name``) or an ``encodec``
    model from ``codecs.encodec.load_codec`` (``name``)."""
    spec = getattr(codec, "spec", None)
    return spec.name if isinstance(spec, CodecSpec) else codec.name


def tokenizer_info(codec, bandwidth: float, codebooks: list[int]) -> dict:
    """The tokenizer settings of a loaded codec (a ``protocols.Codec`` from ``CodecSpec.load``, or an
    ``encodec`` model from ``codecs.encodec.load_codec``)."""
    spec = tokenizer_spec(codec_name(codec))
    path = getattr(codec, "checkpoint_path", None)
    return {
        "codec": spec.codec,
        "sample_rate": spec.sample_rate,
        "frame_rate": spec.frame_rate,
        "bandwidth": float(bandwidth),
        "n_q": get_codec(spec.codec).n_codebooks(bandwidth),
        "codebooks": [int(c) for c in codebooks],
        "codec_checkpoint": os.path.basename(path) if path else None,
        "codec_sha256": file_digest(path) if path else None,
    }


def _describe(tok: dict) -> str:
    return (f"{tok.get('codec')} at {tok.get('bandwidth'):g} kbps, codebooks {tok.get('codebooks')}, "
            f"codec weights {tok.get('codec_checkpoint')} (sha256 {tok.get('codec_sha256')})")


def check_tokenizer(path: str | os.PathLike, stored: dict, asked: dict) -> None:
    """Refuse a checkpoint whose tokenizer is not the one the codes come from."""
    diff = [k for k in _TOKENIZER_KEYS if stored.get(k) != asked.get(k)]
    if diff:
        raise WeightsError(
            f"checkpoint {path} was trained on tokens from {_describe(stored)} but this run tokenises with "
            f"{_describe(asked)} (differs in {', '.join(diff)}); pass the same --codec-checkpoint and "
            "--bandwidth as in training, since scores under different tokenizers are not comparable"
        )


# --- checkpoints -------------------------------------------------------------------------------
@dataclass
class LMCheckpoint:
    model: torch.nn.Module
    config: GPTConfig
    tokenizer: dict
    training: dict
    path: str | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    extra: dict | None = None

    @property
    def identity(self) -> dict:
        return {"arch": self.config.arch, "size": self.config.size, "fusion": self.config.fusion,
                "mel_lag": self.config.mel_lag, "params": count_params(self.model),
                "checkpoint": self.path, "sha256": file_digest(self.path) if self.path else None,
                "step": int(self.training.get("step", 0))}


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: GPTConfig, tokenizer: dict,
                    training: dict, optimizer: dict | None = None, scheduler: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write one self-describing file atomically (temp name in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config.to_dict(),
        "state_dict": state, "tokenizer": tokenizer, "training": training,
        "mel_norm": {"mean": state["mel_mean"].tolist(), "std": state["mel_std"].tolist()}
        if "mel_mean" in state else None,
        "optimizer": optimizer, "scheduler": scheduler, "extra": extra or {},
    }
    atomic_write(path, lambda f: torch.save(blob, f))  # exclusive temp file, renamed: never through a link
    return path


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, tokenizer: dict | None = None,
                    device: str | torch.device = "cpu") -> LMCheckpoint:
    """Load a checkpoint written by ``train lm``; refuse another arch or another tokenizer."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist; check the --checkpoint path")
    blob = load_torch_file(path, "audiotok LM checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not an audiotok LM checkpoint (write one with `audiotok train lm`)")
    cfg = config_from_checkpoint(path, blob)
    if arch is not None and cfg.arch != arch:
        raise WeightsError(f"checkpoint {path} holds a {cfg.arch} model, not {arch}; pass --model {cfg.arch}")
    if not isinstance(blob.get("tokenizer"), dict) or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(f"{path} lacks its tokenizer or state_dict; the checkpoint is damaged")
    if tokenizer is not None:
        check_tokenizer(path, blob["tokenizer"], tokenizer)
    check_finite(blob["state_dict"], path)
    try:
        model = build_gpt(cfg)
        model.load_state_dict(blob["state_dict"], strict=True)
    except Exception as exc:
        raise WeightsError(f"checkpoint {path} does not load into the {cfg.arch} model its config describes "
                           f"({_first_line(exc)}); the file is damaged") from None
    return LMCheckpoint(model.to(device), cfg, blob["tokenizer"], blob.get("training") or {}, str(path),
                        blob.get("optimizer"), blob.get("scheduler"), blob.get("extra"))


def config_from_checkpoint(path, blob: dict) -> GPTConfig:
    """The model config of a checkpoint of any readable version; refuse the others by name."""
    version = blob.get("version")
    if version not in READABLE_VERSIONS:
        raise WeightsError(f"checkpoint {path} has format version {version}, but this audiotok reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))}; use the audiotok release that wrote it "
                           "or train the model again")
    if not isinstance(blob.get("config"), dict):
        raise WeightsError(f"{path} has no model config; the checkpoint is damaged")
    conf = dict(blob["config"])
    if version == 1:
        conf["fusion"] = "legacy"  # v1 concatenated a d - d_s token embedding with a unit-scale branch
    known = set(GPTConfig.__dataclass_fields__)
    unknown = sorted(set(conf) - known)
    if unknown:
        raise WeightsError(f"{path} has a model config audiotok cannot read (unknown fields {unknown} in a "
                           f"version-{version} checkpoint); it was not written by this audiotok")
    return _checked_config(path, conf)


def _checked_config(path, raw: dict) -> GPTConfig:
    """The checkpoint's model config, checked enough that building the model cannot crash."""
    try:
        cfg = GPTConfig(**raw)
    except TypeError as exc:
        raise WeightsError(f"{path} has a model config audiotok cannot read ({exc}); the checkpoint is damaged") from None
    for name in ("dim", "layers", "heads", "ff", "spec_dim", "spec_layers", "spec_heads", "spec_ff", "context",
                 "n_mels", "vocab"):
        value = getattr(cfg, name)
        if type(value) is not int or value < (0 if name == "spec_layers" else 1):
            raise WeightsError(f"{path} has {name} = {value!r} in its model config, which is not a positive "
                               "whole number; the checkpoint is damaged")
    if cfg.dim % cfg.heads or (cfg.spec_heads and cfg.spec_dim % cfg.spec_heads):
        raise WeightsError(f"{path} has a model config whose width does not divide into its heads; "
                           "the checkpoint is damaged")
    if cfg.features not in FEATURES:
        raise WeightsError(f"{path} has features = {cfg.features!r} in its model config; the checkpoint is damaged")
    if cfg.arch not in MODELS or cfg.arch == "encodec-lm":
        raise WeightsError(f"{path} holds an unknown arch {cfg.arch!r}; the checkpoint is damaged")
    return cfg


def _first_line(exc: BaseException) -> str:
    """The gist of a loader's exception in one line (``load_state_dict`` puts it on line two)."""
    text = re.sub(r"^Error\(s\) in loading state_dict for \w+:", "", str(exc).strip())
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def read_tokenizer(path: str | os.PathLike) -> dict:
    """Only the tokenizer settings of a checkpoint (to tokenise before the model is built)."""
    return load_checkpoint(path).tokenizer


# --- scorers -----------------------------------------------------------------------------------
class GPTScorer:
    """Scores codebook 0 with Whisper-GPT, the token-only GPT or the information control."""

    def __init__(self, ckpt: LMCheckpoint, device: torch.device):
        self.ckpt = ckpt
        self.model = ckpt.model.to(device).eval()
        self.device = device
        self.name = ckpt.config.arch
        self.context = ckpt.config.context
        self.stride = self.context // 2
        self.codebooks = [0]
        self.uses_mel = self.model.uses_mel
        self.n_in = ckpt.config.n_codebooks
        self.bos = ckpt.config.bos
        self.mel_lag = ckpt.config.mel_lag
        self.fill = ckpt.config.feature_fill
        self.tokenizer = ckpt.tokenizer
        self.identity = {"model": self.name, **ckpt.identity}

    def inputs(self, codes: np.ndarray, mel: np.ndarray | None):
        """``([K, T] input tokens, [T, 80] input mel or None, [1, T] targets)``; K is 1 except for
        the information control (every codebook)."""
        codes = np.asarray(codes)
        if codes.shape[0] < self.n_in:
            raise ValueError(f"{self.name} needs {self.n_in} codebooks, the tokens have {codes.shape[0]}")
        c = torch.as_tensor(codes[: self.n_in].astype(np.int64))
        tokens = torch.cat([torch.full((self.n_in, 1), self.bos), c[:, :-1]], dim=1)
        m = None
        if self.uses_mel:
            if mel is None:
                raise ValueError("whisper-gpt needs the mel of the audio")
            m = aligned_mel(mel, self.mel_lag, self.fill)
        return tokens, m, c[:1]

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, mel: torch.Tensor | None, offsets: torch.Tensor) -> torch.Tensor:
        """``tokens [R, K, L]``, ``mel [R, L, 80]`` -> logits ``[R, L, 1, vocab]``."""
        m = mel.to(self.device) if mel is not None else None
        return self.model(tokens.to(self.device), m)[:, :, None]


class EncodecLMScorer:
    """Scores every codebook of the tokenizer with EnCodec's pretrained LM, as an exact stream.

    The LM's layers each attend 262 frames back, so its receptive field grows with depth: a
    window cannot reproduce it. Each file runs instead as one stream, in chunks of ``chunk``
    frames that carry the per-layer state, which equals ``encodec.compress``'s frame-by-frame loop
    (``context`` = 262 frames per layer, ``stride`` = 1 frame)."""

    uses_mel = False

    def __init__(self, lm, tokenizer: dict, device: torch.device, chunk: int = 512):
        from .encodec_lm import PAST_CONTEXT

        n_q = tokenizer["n_q"]
        if n_q > lm.n_q:
            raise WeightsError(f"the EnCodec LM models {lm.n_q} codebooks but the tokenizer gives {n_q}")
        self.lm = lm.to(device).eval()
        self.device = device
        self.name = "encodec-lm"
        self.context = PAST_CONTEXT
        self.stride = 1
        self.chunk = chunk
        self.codebooks = list(range(n_q))
        self.tokenizer = tokenizer
        path = getattr(lm, "checkpoint_path", None)
        self.identity = {"model": self.name, "arch": "encodec-lm", "size": "official" if getattr(lm, "official", True) else "custom",
                         "params": count_params(lm), "checkpoint": path,
                         "sha256": file_digest(path) if path else None, "step": None}

    def inputs(self, codes: np.ndarray, mel: np.ndarray | None):
        c = torch.as_tensor(np.asarray(codes[: len(self.codebooks)], dtype=np.int64))
        tokens = torch.cat([torch.zeros(c.shape[0], 1, dtype=torch.long), 1 + c[:, :-1]], dim=1)
        return tokens, None, c

    @torch.inference_mode()
    def stream(self, tokens: torch.Tensor, states, offset: int):
        """``tokens [R, K, chunk]`` -> (logits ``[R, chunk, K, 1024]``, states for the next chunk)."""
        from .encodec_lm import lm_step

        return lm_step(self.lm, tokens.to(self.device), states, offset)


def load_scorer(model: str, checkpoint, codec, bandwidth: float | None, device: torch.device):
    """The scorer for ``--model``; ``codec`` is the loaded tokenizer codec (None for a trained LM
    scoring codes files only: its recorded tokenizer stands for it)."""
    if model not in MODELS:
        raise UsageError(f"--model {model!r} is not valid; choose one of {', '.join(MODELS)}")
    if model == "encodec-lm":
        from .encodec_lm import load_encodec_lm

        spec = get_codec(codec_name(codec))
        bw = spec.check_bandwidth(spec.bandwidth_default if bandwidth is None else bandwidth)
        tok = tokenizer_info(codec, bw, list(range(spec.n_codebooks(bw))))
        return EncodecLMScorer(load_encodec_lm(spec.name, checkpoint), tok, device)
    if checkpoint is None:
        raise UsageError(f"--model {model} needs --checkpoint (a file written by `audiotok train lm`)")
    stored = read_tokenizer(checkpoint)
    bw = stored["bandwidth"] if bandwidth is None else float(bandwidth)
    if codec is None:  # codes files only: the tokenizer the LM records, at the bandwidth asked for
        tok = {**stored, "bandwidth": float(bw), "n_q": get_codec(stored["codec"]).n_codebooks(float(bw))}
    else:
        tok = tokenizer_info(codec, bw, list(stored.get("codebooks") or [0]))
    ck = load_checkpoint(checkpoint, model, tok, device)
    if ck.config.features != "mel":
        raise WeightsError(f"checkpoint {checkpoint} is a positive-control model that reads the codec's latent "
                           f"({ck.config.features}); `audiotok score` computes only the mel, so it cannot score it")
    return GPTScorer(ck, device)
