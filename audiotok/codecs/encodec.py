"""EnCodec adapters: audio -> codes (``CodecEncoder``) and codes -> audio (``CodecDecoder``).

Uses the ``encodec`` package's model classes with weights resolved by ``audiotok.weights``.
Knows nothing about files: it gets arrays, it returns arrays.

Same codes whatever the batching: the 24 kHz model runs as a stream of fixed-shape calls
(``streaming.StreamingEncoder``; rows x window fixed per device type and, on the CPU, by the file's
own length: ``StreamShape``); the 48 kHz model encodes its 1 s segments in fixed-size groups (full
segments) or alone (a file's shorter last segment). On the CPU the 24 kHz streams compute channels
last (``codecs.layout``) in lanes of one torch thread (``rows.LanedRows``), so their codes are the
same for ``--threads`` 1 to 4.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..engine.devices import resolve_device  # noqa: F401  (re-exported)
from ..engine.lanes import Lanes, lane_plan
from ..errors import WeightsError
from ..formats.codes import EncodedItem
from ..registry import CodecSpec, get_codec
from ..weights import check_finite, load_torch_file, resolve_encodec
from .adapters import ItemDecoder
from .inference import for_inference
from .layout import default_layout
from .rows import LanedRows, StreamShape


def load_codec(model: str, checkpoint=None, device: str | torch.device = "cpu", option: str = "--checkpoint"):
    """The ``encodec`` model ``model`` with weights from ``checkpoint`` or the torch hub cache
    (``option``: the command's option for that file, named in messages)."""
    import encodec

    spec = get_codec(model)
    path = resolve_encodec(spec.name, checkpoint, option)
    state = load_torch_file(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint {path} does not hold {spec.name} weights (it holds a {type(state).__name__})")
    check_finite(state, path)
    build = {"encodec_24khz": encodec.EncodecModel.encodec_model_24khz,
             "encodec_48khz": encodec.EncodecModel.encodec_model_48khz}[spec.name]
    # Built on the CPU: its random initial weights cost ~0.1 s, whereas building on the meta device
    # imports torch._dynamo (~1 s of startup). fork_rng: drawing them leaves the caller's RNG as it was.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        m = build(pretrained=False)
    try:
        # strict: every parameter and buffer comes from the file; assign: keep its tensors
        m.load_state_dict(state, strict=True, assign=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise WeightsError(f"checkpoint {path} does not hold {spec.name} weights ({first})") from None
    m.name = spec.name
    m.checkpoint_path = str(path)
    return m.to(device).eval()


class EncodecCodec:
    """The EnCodec models behind the registry's ``protocols.Codec`` shape."""

    def __init__(self, spec: CodecSpec, checkpoint=None, device="cpu"):
        self.spec = spec
        self.device = resolve_device(device)
        self.model = load_codec(spec.name, checkpoint, self.device)
        self.checkpoint_path = self.model.checkpoint_path

    def encoder(self, bandwidth: float, device=None) -> CodecEncoder:
        return CodecEncoder(self.model, bandwidth, self.device if device is None else resolve_device(device))

    def decoder(self, device=None) -> CodecDecoder:
        return CodecDecoder(self.model, self.device if device is None else resolve_device(device))


def load_encodec(spec: CodecSpec, checkpoint=None, device="cpu") -> EncodecCodec:
    """``CodecSpec.implementation`` of the EnCodec models."""
    return EncodecCodec(spec, checkpoint, device)


# The shapes every call runs at. On the CPU: files shorter than LONE_SECONDS share calls of
# 4 rows x 12160 samples (the fastest shape measured on 2 cores; idle rows are zeros and cost time
# only at the end of a run), longer ones run alone in calls of 1 row x 48640 (no idle rows for a
# long file; 1.25x the cost per second of a full 4-row call, a third of a 4-row call with one
# file). Which shape a file gets depends on its length only, so its codes do not depend on what
# else is encoded. On CUDA every file shares calls of 32 rows x 72000.
CPU_SHARED = StreamShape(4, 12160)
CPU_LONE = StreamShape(1, 48640)
CUDA_SHARED = StreamShape(32, 72000)
LONE_SECONDS = 30.0


class CodecEncoder:
    """Adapter: mono/stereo audio at the model rate -> ``EncodedItem``.

    Every model call has a fixed shape (``StreamShape``) chosen from the device type and, on the
    CPU, the file's own length: never from the batch the engine hands over, the machine's load or
    a measurement. ``shared`` / ``lone`` override the shapes (tests and benchmarks)."""

    SHORT = 2560  # 24 kHz inputs shorter than this (8 frames) are encoded whole, as the official model does
    on_progress = None  # set by the pipeline: on_progress(key, samples_done, samples_total) within an input

    def __init__(self, model, bandwidth: float, device: torch.device, shared: StreamShape | None = None,
                 lone: StreamShape | None = None, lone_seconds: float | None = None, layout: str | None = None,
                 lanes: Lanes | None = None):
        self.model = model
        self.name = model.name
        self.spec = get_codec(self.name)
        self.bandwidth = self.spec.check_bandwidth(bandwidth)
        self.n_q = self.spec.n_codebooks(self.bandwidth)
        self.device = device
        self.sample_rate = self.spec.sample_rate
        self.channels = self.spec.channels
        self.frame_rate = self.spec.frame_rate
        self.streaming = self.spec.segment_length is None  # one causal stream per file (24 kHz)
        model.set_target_bandwidth(self.bandwidth)
        for_inference(model)
        cuda = device.type == "cuda"
        self.shared_shape = shared or (CUDA_SHARED if cuda else CPU_SHARED)
        self.lone_shape = None if cuda and lone is None else (lone or CPU_LONE)
        self.lone_samples = int((LONE_SECONDS if lone_seconds is None else lone_seconds) * self.sample_rate)
        for shape in filter(None, (self.shared_shape, self.lone_shape)):
            if shape.window % 320:
                raise ValueError("window must be a multiple of 320 samples")
        self.group = 8 if not cuda else 32  # 48 kHz full segments per call
        if self.streaming:
            from .streaming import StreamingEncoder

            self.stream = StreamingEncoder(model.encoder, layout or default_layout(device))
            self.lanes = lanes if lanes is not None else Lanes(*lane_plan(device))
            self.rows = LanedRows(self, self.lanes, self.shared_shape, self.lone_shape, self.lone_samples, 320,
                                  lambda rows: self.stream.init_state(rows, device=self.device),
                                  self._encode_window)

    def numerics(self) -> dict:
        """What this adapter's codes depend on beyond the audio and the weights (for metadata)."""
        out = {"stream_shared": self.shared_shape.describe(), "group_48khz": self.group}
        if self.streaming:
            out["stream_layout"] = self.stream.layout
            if self.lanes.n > 1:
                out.update(threads=self.lanes.threads_per_lane, lanes=self.lanes.n)
        if self.lone_shape is not None:
            out["stream_lone"] = self.lone_shape.describe()
            out["lone_seconds"] = self.lone_samples / self.sample_rate
        return out

    # --- engine interface -------------------------------------------------------------
    def run(self, batch):
        out, streamed = [], []
        for key, audio in batch:
            if not self.streaming:
                out.append((key, self._encode_segments(audio, key)))
            elif audio.shape[-1] < self.SHORT:  # in a lane too: every 24 kHz call rounds as the lanes' do
                out.append((key, self.lanes.submit(self._encode_whole, audio, cost=0.0).result()))
            else:
                streamed.append((key, audio[0]))
        if self.streaming:
            out.extend(self.rows.run(streamed))
        return out

    def flush(self):
        return self.rows.flush() if self.streaming else []

    def reset(self):
        if self.streaming:
            self.rows.reset()

    # --- 24 kHz -----------------------------------------------------------------------
    def _quantize(self, emb: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.encode(emb, self.frame_rate, self.bandwidth)  # [K, B, T]

    def _encode_window(self, x: torch.Tensor, state, fresh: torch.Tensor, ends: list) -> np.ndarray:
        """One fixed-shape call of the streaming encoder (``rows.RowStreams``): int16 ``[rows, K, frames]``."""
        emb = self.stream(x, state, fresh, ends)
        return self._quantize(emb).to(torch.int16).cpu().numpy().transpose(1, 0, 2)

    @torch.inference_mode()
    def _encode_whole(self, audio: np.ndarray) -> EncodedItem:
        x = torch.from_numpy(np.ascontiguousarray(audio))[None].to(self.device)
        codes = self._quantize(self.model.encoder(x))[:, 0]
        return EncodedItem(codes.cpu().numpy().astype(np.int16), None, audio.shape[-1])

    # --- 48 kHz -----------------------------------------------------------------------
    @torch.inference_mode()
    def _encode_segments(self, audio: np.ndarray, key=None) -> EncodedItem:
        spans = self.spec.segment_spans(audio.shape[-1])
        seg_len = self.spec.segment_length
        x = torch.from_numpy(np.ascontiguousarray(audio))
        full = [i for i, (_, n) in enumerate(spans) if n == seg_len]
        codes: list = [None] * len(spans)
        scales = np.zeros(len(spans), dtype=np.float32)
        G = self.group
        for g in range(0, len(full), G):
            idx = full[g:g + G]
            seg = torch.zeros(G, self.channels, seg_len)
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


class WithAudio:
    """Adapter: a codec encoder's results, each combined with the audio it was computed from
    (``combine(audio, item)``, for subclasses), for the commands that need both (the LM and MAE
    training data, scoring). Per-item errors pass through unchanged."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.audio: dict = {}

    @property
    def on_progress(self):
        """Progress within a file is the encoder's (audio seconds through the codec, as in ``encode``)."""
        return self.encoder.on_progress

    @on_progress.setter
    def on_progress(self, report) -> None:
        self.encoder.on_progress = report

    def combine(self, audio: np.ndarray, item: EncodedItem):
        raise NotImplementedError

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
            out.append((key, res if isinstance(res, Exception) else self.combine(audio, res)))
        return out


class CodecDecoder(ItemDecoder):
    """Adapter: ``EncodedItem`` -> audio ``[channels, n_samples]`` at the model's rate.

    24 kHz: the causal decoder runs as a stream of ``window`` frames (``streaming.StreamingDecoder``;
    equal to the official whole-file decode up to float rounding) into one preallocated output, so
    memory does not grow with the file's length. 48 kHz: the official per-segment decode."""

    SHORT = 8  # frames: shorter codes are decoded whole, as the official model does

    def __init__(self, model, device: torch.device, window: int | None = None, layout: str | None = None):
        self.model = model
        self.name = model.name
        self.spec = get_codec(self.name)
        self.device = device
        self.sample_rate = self.spec.sample_rate
        for_inference(model)
        self.window = window or (450 if device.type == "cuda" else 300)  # frames (6 s / 4 s)
        self.streaming = self.spec.segment_length is None
        if self.streaming:
            from .streaming import StreamingDecoder

            self.stream = StreamingDecoder(model.decoder, layout or default_layout(device))

    def numerics(self) -> dict:
        """What the decoded samples depend on beyond the codes and the weights (for metadata)."""
        if not self.streaming:
            return {}
        return {"stream_window": self.window, "stream_layout": self.stream.layout}

    @torch.inference_mode()
    def decode(self, item: EncodedItem, key=None) -> np.ndarray:
        n_q = item.codes.shape[0]
        if n_q > self.model.quantizer.n_q:
            raise WeightsError(f"the codes have {n_q} codebooks but {self.name} has {self.model.quantizer.n_q}")
        codes = torch.from_numpy(item.codes.astype(np.int64)).to(self.device)
        counts = self.spec.segment_frames(item.n_samples)
        if sum(counts) != codes.shape[1]:
            raise ValueError(
                f"{codes.shape[1]} frames of codes do not fit {item.n_samples} samples for {self.name} "
                f"(expected {sum(counts)})"
            )
        if self.streaming and codes.shape[1] >= self.SHORT:
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


