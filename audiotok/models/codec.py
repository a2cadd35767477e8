"""EnCodec adapters: audio -> codes (``CodecEncoder``) and codes -> audio (``CodecDecoder``).

Uses the ``encodec`` package's model classes with weights resolved by ``audiotok.weights``.
Knows nothing about files: it gets arrays, it returns arrays.

Same codes whatever the batching: the 24 kHz model runs as a stream of fixed-length windows
(``streaming.StreamingEncoder``) in at most ``slots`` rows (on GPU always exactly ``slots``; on CPU
only the occupied rows, since a row's result there does not depend on the count: see
``streaming.py``); the 48 kHz model encodes its 1 s segments in fixed-size
groups (full segments) or alone (a file's shorter last segment).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError, WeightsError
from ..weights import resolve_encodec
from .encodec_spec import (  # noqa: F401  (re-exported: the adapters' vocabulary)
    BANDWIDTHS,
    CHANNELS,
    FRAME_RATES,
    SAMPLE_RATES,
    SEGMENT,
    EncodedItem,
    check_bandwidth,
    check_device,
    n_codebooks,
    segment_frames,
    segment_spans,
)
from .inference import for_inference


def resolve_device(device: str) -> torch.device:
    device = check_device(device)
    if device == "auto":
        import os

        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
        index = device.split(":", 1)[1] if ":" in device else "0"
        if int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices")
    return torch.device(device)


def load_codec(model: str, checkpoint=None, device: str | torch.device = "cpu"):
    """The ``encodec`` model ``model`` with weights from ``checkpoint`` or the torch hub cache."""
    import encodec

    path = resolve_encodec(model, checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"could not read checkpoint {path} ({type(exc).__name__}); the file is damaged") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    with warnings.catch_warnings(), _no_random_init():
        warnings.simplefilter("ignore")
        build = {"encodec_24khz": encodec.EncodecModel.encodec_model_24khz,
                 "encodec_48khz": encodec.EncodecModel.encodec_model_48khz}[model]
        m = build(pretrained=False)
    try:
        m.load_state_dict(state, strict=True)  # strict: every parameter and buffer is overwritten
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise WeightsError(f"checkpoint {path} does not hold {model} weights ({first})") from None
    m.name = model
    m.checkpoint_path = str(path)
    return m.to(device).eval()


@contextlib.contextmanager
def _no_random_init():
    """Build modules without drawing their random initial weights (0.2 s of a run's startup): the
    strict ``load_state_dict`` that follows overwrites every parameter and buffer. Patches
    ``torch.nn.init`` for the duration, so no other thread may build modules meanwhile."""
    names = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "xavier_uniform_", "zeros_", "ones_",
             "constant_", "trunc_normal_", "orthogonal_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


@dataclass
class _Slot:
    key: object
    audio: np.ndarray  # [N] mono at 24 kHz
    pos: int = 0
    fresh: bool = True

    def __post_init__(self):
        self.codes: list[np.ndarray] = []


class CodecEncoder:
    """Adapter: mono/stereo audio at the model rate -> ``EncodedItem``.

    ``slots`` (rows per model call) and ``window`` (samples per row, a multiple of 320) are fixed
    per device and never depend on the batch the engine hands over."""

    SHORT = 2560  # 24 kHz inputs shorter than this (8 frames) are encoded whole, as the official model does
    on_progress = None  # set by the pipeline: on_progress(key, samples_done, samples_total) within an input

    def __init__(self, model, bandwidth: float, device: torch.device, slots: int | None = None,
                 window: int | None = None):
        self.model = model
        self.name = model.name
        self.bandwidth = check_bandwidth(self.name, bandwidth)
        self.n_q = n_codebooks(self.name, self.bandwidth)
        self.device = device
        self.sample_rate = SAMPLE_RATES[self.name]
        self.channels = CHANNELS[self.name]
        self.frame_rate = FRAME_RATES[self.name]
        model.set_target_bandwidth(self.bandwidth)
        for_inference(model)
        cuda = device.type == "cuda"
        # CPU: 4 rows x 0.51 s was the fastest shape measured on 2 cores (benchmarks/encode.py
        # --sweep; about 50 k samples per call keep the activations cache-sized); GPU: big batches.
        self.slots = slots or (32 if cuda else 4)
        self.window = window or (72000 if cuda else 12160)
        if self.window % 320:
            raise ValueError("window must be a multiple of 320 samples")
        self.queue: list[_Slot] = []
        self.active: list[_Slot | None] = [None] * self.slots
        if self.name == "encodec_24khz":
            from .streaming import StreamingEncoder

            self.stream = StreamingEncoder(model.encoder)
            self.state = self.stream.init_state(self.slots, device=device)
        self.group = self.slots * (2 if not cuda else 1)  # 48 kHz full segments per call

    # --- engine interface -------------------------------------------------------------
    def run(self, batch):
        out = []
        for key, audio in batch:
            if self.name == "encodec_48khz":
                out.append((key, self._encode_segments(audio, key)))
            elif audio.shape[-1] < self.SHORT:
                out.append((key, self._encode_whole(audio)))
            else:
                self.queue.append(_Slot(key, np.ascontiguousarray(audio[0])))
        while self.queue:
            out.extend(self._step())
        return out

    def flush(self):
        out = []
        while any(s is not None for s in self.active):
            out.extend(self._step())
        return out

    def reset(self):
        self.queue.clear()
        self.active = [None] * self.slots
        if hasattr(self, "stream"):
            self.state = self.stream.init_state(self.slots, device=self.device)

    # --- 24 kHz -----------------------------------------------------------------------
    def _quantize(self, emb: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.encode(emb, self.frame_rate, self.bandwidth)  # [K, B, T]

    @torch.inference_mode()
    def _encode_whole(self, audio: np.ndarray) -> EncodedItem:
        x = torch.from_numpy(np.ascontiguousarray(audio))[None].to(self.device)
        codes = self._quantize(self.model.encoder(x))[:, 0]
        return EncodedItem(codes.cpu().numpy().astype(np.int16), None, audio.shape[-1])

    @torch.inference_mode()
    def _step(self):
        W, S = self.window, self.slots
        for r in range(S):
            if self.active[r] is None and self.queue:
                self.active[r] = self.queue.pop(0)
        x = np.zeros((S, 1, W), dtype=np.float32)
        fresh = np.ones(S, dtype=bool)
        ends = [W] * S  # real samples per row (a file's last window holds fewer)
        for r, slot in enumerate(self.active):
            if slot is not None:
                chunk = slot.audio[slot.pos:slot.pos + W]
                x[r, 0, :chunk.shape[0]] = chunk
                fresh[r] = slot.fresh
                ends[r] = chunk.shape[0]
        rows = [r for r, slot in enumerate(self.active) if slot is not None]
        if self.device.type == "cuda":
            xt = torch.from_numpy(x).pin_memory().to(self.device, non_blocking=True)
            emb = self.stream(xt, self.state, torch.from_numpy(fresh).to(self.device), ends)
            codes = self._quantize(emb).to(torch.int16).cpu().numpy()  # [K, S, W/320]
            where = {r: r for r in rows}
        else:
            # CPU: run only the occupied rows, so a lone long file does not pay for idle rows (a
            # row's result does not depend on the row count: see streaming.py, and the quantizer
            # gets at least two rows, which it rounds alike).
            run_rows = rows
            idx = torch.tensor(run_rows)
            sub = {"ctx": [c[idx] for c in self.state["ctx"]], "h": self.state["h"][:, idx],
                   "c": self.state["c"][:, idx]}
            emb = self.stream(torch.from_numpy(x[run_rows]), sub, torch.from_numpy(fresh[run_rows]),
                              [ends[r] for r in run_rows])
            for full, part in zip(self.state["ctx"], sub["ctx"]):
                full[idx] = part
            self.state["h"][:, idx] = sub["h"]
            self.state["c"][:, idx] = sub["c"]
            if emb.shape[0] == 1:
                emb = emb.expand(2, -1, -1).contiguous()
            codes = self._quantize(emb).to(torch.int16).numpy()  # [K, >= len(run_rows), W/320]
            where = {r: j for j, r in enumerate(run_rows)}
        done = []
        for r, slot in enumerate(self.active):
            if slot is None:
                continue
            slot.codes.append(codes[:, where[r]])
            slot.fresh = False
            slot.pos += W
            if slot.pos >= slot.audio.shape[0]:
                n = slot.audio.shape[0]
                frames = -(-n // 320)
                item = EncodedItem(np.ascontiguousarray(np.concatenate(slot.codes, axis=1)[:, :frames]), None, n)
                done.append((slot.key, item))
                self.active[r] = None
            elif self.on_progress is not None:
                self.on_progress(slot.key, slot.pos, slot.audio.shape[0])
        return done

    # --- 48 kHz -----------------------------------------------------------------------
    @torch.inference_mode()
    def _encode_segments(self, audio: np.ndarray, key=None) -> EncodedItem:
        spans = segment_spans(self.name, audio.shape[-1])
        x = torch.from_numpy(np.ascontiguousarray(audio))
        full = [i for i, (_, n) in enumerate(spans) if n == SEGMENT[self.name][0]]
        codes: list = [None] * len(spans)
        scales = np.zeros(len(spans), dtype=np.float32)
        G = self.group
        for g in range(0, len(full), G):
            idx = full[g:g + G]
            seg = torch.zeros(G, self.channels, SEGMENT[self.name][0])
            for j, i in enumerate(idx):
                off, n = spans[i]
                seg[j] = x[:, off:off + n]
            c, s = self._encode_frames(seg.to(self.device))
            for j, i in enumerate(idx):
                codes[i], scales[i] = c[:, j], s[j]
            if self.on_progress is not None:
                self.on_progress(key, g + len(idx), len(spans))
        for i, (off, n) in enumerate(spans):
            if codes[i] is None:
                c, s = self._encode_frames(x[None, :, off:off + n].to(self.device))
                codes[i], scales[i] = c[:, 0], s[0]
        return EncodedItem(np.ascontiguousarray(np.concatenate(codes, axis=1)), scales, audio.shape[-1])

    def _encode_frames(self, seg: torch.Tensor):
        """Exactly the official per-segment step: RMS normalisation, encoder, quantizer."""
        mono = seg.mean(dim=1, keepdim=True)
        scale = 1e-8 + mono.pow(2).mean(dim=2, keepdim=True).sqrt()
        emb = self.model.encoder(seg / scale)
        codes = self._quantize(emb).to(torch.int16).cpu().numpy()
        return codes, scale.view(-1).cpu().numpy().astype(np.float32)


class CodecDecoder:
    """Adapter: ``EncodedItem`` -> audio ``[channels, n_samples]`` at the model's rate.

    24 kHz: the causal decoder runs as a stream of ``window`` frames (``streaming.StreamingDecoder``;
    equal to the official whole-file decode up to float rounding) into one preallocated output, so
    memory does not grow with the file's length. 48 kHz: the official per-segment decode."""

    SHORT = 8  # frames: shorter codes are decoded whole, as the official model does
    on_progress = None  # set by the pipeline: on_progress(key, frames_done, frames_total) within an input

    def __init__(self, model, device: torch.device, window: int | None = None):
        self.model = model
        self.name = model.name
        self.device = device
        self.sample_rate = SAMPLE_RATES[self.name]
        for_inference(model)
        self.window = window or (450 if device.type == "cuda" else 300)  # frames (6 s / 4 s)
        if self.name == "encodec_24khz":
            from .streaming import StreamingDecoder

            self.stream = StreamingDecoder(model.decoder)

    @torch.inference_mode()
    def decode(self, item: EncodedItem, key=None) -> np.ndarray:
        n_q = item.codes.shape[0]
        if n_q > self.model.quantizer.n_q:
            raise WeightsError(f"the codes have {n_q} codebooks but {self.name} has {self.model.quantizer.n_q}")
        codes = torch.from_numpy(item.codes.astype(np.int64)).to(self.device)
        counts = segment_frames(self.name, item.n_samples)
        if sum(counts) != codes.shape[1]:
            raise ValueError(
                f"{codes.shape[1]} frames of codes do not fit {item.n_samples} samples for {self.name} "
                f"(expected {sum(counts)})"
            )
        if self.name == "encodec_24khz" and codes.shape[1] >= self.SHORT:
            return self._stream(codes, item.n_samples, key)
        frames = []
        start = 0
        for i, n in enumerate(counts):
            scale = None
            if item.scales is not None and self.model.normalize:
                scale = torch.tensor([[float(item.scales[i])]], device=self.device)
            frames.append((codes[None, :, start:start + n], scale))
            start += n
        wav = self.model.decode(frames)[0, :, :item.n_samples]
        return wav.float().cpu().numpy()

    def _stream(self, codes: torch.Tensor, n_samples: int, key=None) -> np.ndarray:
        W, hop, T = self.window, self.stream.hop, codes.shape[1]
        out = np.empty((1, n_samples), dtype=np.float32)
        state = self.stream.init_state(1, device=self.device)
        for start in range(0, T, W):
            part = codes[:, start:start + W]
            if part.shape[1] < W:  # the last window: pad with code 0; its samples are cut off below
                part = torch.cat([part, part.new_zeros(part.shape[0], W - part.shape[1])], dim=1)
            emb = self.model.quantizer.decode(part[:, None])  # [1, 128, W]
            wav = self.stream(emb, state, torch.tensor([start == 0], device=self.device))
            lo = start * hop
            n = min(W * hop, n_samples - lo)
            if n > 0:
                out[:, lo:lo + n] = wav[0, :, :n].float().cpu().numpy()
            if self.on_progress is not None:
                self.on_progress(key, min(T, start + W), T)
        return out

    def run(self, batch):
        out = []
        for key, item in batch:
            try:
                out.append((key, self.decode(item, key)))
            except (ValueError, WeightsError) as exc:
                from ..errors import InputError

                out.append((key, InputError(str(exc))))
        return out
