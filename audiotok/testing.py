"""Small random-weight checkpoints in the official layouts, for tests and benchmarks.

Nothing here downloads. A random EnCodec from ``pretrained=False`` has all-zero codebooks (every
code would be 0) and ill-conditioned latents, so ``random_encodec`` centres the latents and fits
each residual codebook by k-means: codes then vary, with margins, as they do with trained weights.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import numpy as np


def synthetic_audio(seconds: float, sample_rate: int = 24000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Deterministic test signal ``[channels, N]`` float32: a chirp, a few harmonics and noise bursts."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    f0, f1 = 60.0 + 40 * rng.random(), 2000.0 + 3000 * rng.random()
    dur = max(seconds, 1e-3)
    phase = 2 * np.pi * f0 * dur / np.log(f1 / f0) * (np.exp(t / dur * np.log(f1 / f0)) - 1)
    x = 0.3 * np.sin(phase)
    fund = 110 * (1 + rng.random())
    for k in range(1, 5):
        x += 0.1 / k * np.sin(2 * np.pi * fund * k * t + rng.random() * 6) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    env = (np.sin(2 * np.pi * (1.5 + rng.random()) * t) > 0.3).astype(np.float64)
    x += 0.08 * env * rng.standard_normal(n)
    out = np.stack([np.roll(x, 37 * c) * (1 - 0.1 * c) for c in range(channels)])
    return (0.8 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


_ENCODEC_CACHE: dict = {}


def test_cache_dir() -> Path:
    """Where built test models are kept between runs: ``$AUDIOTOK_TEST_CACHE``, else
    ``$XDG_CACHE_HOME/audiotok/test-models`` (``~/.cache/audiotok/test-models``)."""
    env = os.environ.get("AUDIOTOK_TEST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audiotok" / "test-models"


def _builder_key(model: str, seed: int) -> str:
    """Names one built model: the builder's own source, the versions whose numbers it depends on,
    the model and the seed. Any change to how a model is built gives a new name."""
    import hashlib
    import inspect

    import encodec
    import torch

    parts = [inspect.getsource(f) for f in (synthetic_audio, _calibration_audio, _kmeans, _nearest, _build_random_encodec)]
    parts += [torch.__version__, getattr(encodec, "__version__", "?"), np.__version__, model, str(seed)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _load_state(path: Path) -> dict | None:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None


@contextlib.contextmanager
def _build_lock(path: Path, wait: bool):
    """Holds ``PATH.lock`` (flock) while one process builds ``path``: yields False without waiting
    when ``wait`` is false and another process holds it. Without flock (or a writable folder), True."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _cached_random_state(model: str, seed: int, wait: bool = True) -> dict | None:
    """The state dict of ``_build_random_encodec(model, seed)``, built once per machine: kept in
    ``test_cache_dir()`` (written atomically; an unreadable file is rebuilt). Processes that need
    it at the same time (test workers) build it once: the others wait for it, or, with ``wait``
    false, get None at once to build something else meanwhile."""
    path = test_cache_dir() / f"{model}-seed{seed}-{_builder_key(model, seed)}.pt"
    state = _load_state(path)
    if state is not None:
        return state
    with _build_lock(path, wait) as mine:
        if not mine:
            return None
        state = _load_state(path)  # built by the process that held the lock
        if state is not None:
            return state
        return _build_and_save(model, seed, path)


def _build_and_save(model: str, seed: int, path: Path) -> dict:
    import torch

    from .files import atomic_write

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers whatever the machine's cores, and no thread barriers under load
    try:
        with torch.random.fork_rng(devices=[]):
            state = {k: v.detach().clone() for k, v in _build_random_encodec(model, seed).state_dict().items()}
    finally:
        torch.set_num_threads(threads)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError:  # a read-only home: build again next time
        pass
    return state


def random_encodec(model: str = "encodec_24khz", seed: int = 0):
    """A random-weight ``encodec.EncodecModel`` (eval mode) conditioned like a trained one.

    A random EnCodec puts every latent in a tiny region far from the origin, where the official
    float32 distance search cancels and any rounding difference flips codes. So the latents of a
    few seconds of varied synthetic audio are centred and scaled to unit spread (through the
    encoder's last convolution), and each residual codebook is fitted to them by k-means (float64,
    seeded): codes are then the true nearest codewords with clear margins, as with trained
    weights. Built once per (model, seed) and machine (kept on disk, see ``test_cache_dir``);
    every call returns a fresh copy."""
    import encodec
    import torch

    key = (model, seed)
    if key not in _ENCODEC_CACHE:
        prebuild_random_encodecs([model], seed)
    build = {"encodec_24khz": encodec.EncodecModel.encodec_model_24khz,
             "encodec_48khz": encodec.EncodecModel.encodec_model_48khz}[model]
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        m = build(pretrained=False)
    m.load_state_dict({k: v.clone() for k, v in _ENCODEC_CACHE[key].items()}, strict=True, assign=True)
    m.name = model
    return m.eval()


def prebuild_random_encodecs(models: list[str], seed: int = 0) -> None:
    """Make ``random_encodec(m, seed)`` ready for every model: from the disk cache, else built here.
    A model another process is building is skipped at first (this one builds the next) and waited
    for at the end, so test workers that start together build different models at the same time
    instead of each building all of them."""
    todo = [m for m in models if (m, seed) not in _ENCODEC_CACHE]
    for wait in (False, True):
        for model in list(todo):
            state = _cached_random_state(model, seed, wait=wait)
            if state is not None:
                _ENCODEC_CACHE[(model, seed)] = state
                todo.remove(model)


def _calibration_audio(sr: int, channels: int, seed: int, seconds: float) -> np.ndarray:
    """Varied synthetic audio: tones, chirps and noise bursts at several levels."""
    pieces, rng, i = [], np.random.default_rng(seed), 0
    while sum(p.shape[-1] for p in pieces) < seconds * sr:
        x = synthetic_audio(1.5, sr, seed=seed * 1000 + i, channels=channels)
        pieces.append(x * float(rng.choice([0.05, 0.2, 0.6, 1.0])))
        i += 1
    return np.concatenate(pieces, axis=-1).astype(np.float32)


def _kmeans(points, k: int, gen, iters: int = 6, chunk: int = 8192):
    """Plain Lloyd k-means in float64 from ``k`` distinct sampled points; empty clusters keep
    their previous centre. Distances are computed ``chunk`` points at a time."""
    import torch

    centres = points[torch.randperm(points.shape[0], generator=gen)[:k]].clone()
    for _ in range(iters):
        sums = torch.zeros_like(centres)
        counts = torch.zeros(k, dtype=points.dtype)
        for part in points.split(chunk):
            onehot = torch.nn.functional.one_hot(_nearest(part, centres, chunk), k).to(points.dtype)  # [n, k]
            sums += onehot.T @ part
            counts += onehot.sum(0)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _nearest(points, centres, chunk: int = 8192):
    import torch

    c2 = (centres * centres).sum(1)
    return torch.cat([((p * p).sum(1, keepdim=True) - 2 * p @ centres.T + c2).argmin(1)
                      for p in points.split(chunk)])


def _build_random_encodec(model: str, seed: int, audio: np.ndarray | None = None, iters: int = 6,
                          codebooks: int | None = None):
    """A random EnCodec whose latents are centred and scaled on ``audio`` (``[channels, N]`` at the
    model's rate; default: synthetic calibration audio, 1.6 frames per codeword) and whose first
    ``codebooks`` residual codebooks (default: all) are fitted to those latents by k-means."""
    import encodec
    import torch

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model == "encodec_24khz":
            m = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
        elif model == "encodec_48khz":
            m = encodec.EncodecModel.encodec_model_48khz(pretrained=False)
        else:
            raise ValueError(model)
    m.name = model  # pretrained=False names it "unset"; the official CLI needs the real name
    m.eval()
    sr, ch = m.sample_rate, m.channels
    k = m.quantizer.bins
    frame_rate = m.frame_rate
    if audio is None:
        audio = _calibration_audio(sr, ch, seed, seconds=1.6 * k / frame_rate)  # 1.6 points per codeword
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
    with torch.inference_mode():
        if m.normalize:  # the 48 kHz model sees RMS-normalised segments
            x = x / (1e-8 + x.mean(1, keepdim=True).pow(2).mean(2, keepdim=True).sqrt())
        step = 60 * sr  # a minute at a time
        latents = torch.cat([m.encoder(x[..., i:i + step])[0].T for i in range(0, x.shape[-1], step)
                             if x.shape[-1] - i >= m.encoder.hop_length]).contiguous().double()  # [T, D]
    last = m.encoder.model[-1].conv.conv  # the SConv1d producing the latents
    mean, std = latents.mean(0), latents.std(0).mean()
    with torch.no_grad():
        if hasattr(last, "weight_g"):
            last.weight_g.mul_(1.0 / float(std))
        else:
            last.weight.mul_(1.0 / float(std))
        last.bias.copy_(((last.bias.double() - mean) / std).float())
    residual = (latents - mean) / std
    gen = torch.Generator().manual_seed(seed + 1)
    for layer in m.quantizer.vq.layers[:codebooks]:
        cb = layer._codebook
        centres = _kmeans(residual, cb.codebook_size, gen, iters)
        with torch.no_grad():
            cb.embed.copy_(centres.float())
            cb.embed_avg.copy_(centres.float())
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
        residual = residual - centres[_nearest(residual, centres)]
    return m


def fit_encodec(audio: list[np.ndarray], model: str = "encodec_24khz", seed: int = 0, frames_per_code: int = 50,
                iters: int = 10, bandwidth: float | None = None):
    """A random-weight EnCodec (as ``random_encodec``) whose latent centring and residual codebooks
    are fitted to ``audio`` instead of synthetic signals: the targets ``train mae`` makes with it
    then use the codebooks on audio like this, as a trained codec's do.

    ``audio``: arrays ``[channels, N]`` (or ``[N]``) at the model's rate, e.g. random segments of a
    pretraining corpus; they must give at least ``frames_per_code`` latent frames per codeword
    (1024 codewords: 50 x 1024 frames = 683 s at 24 kHz), else ``ValueError``. Deterministic for
    the same audio and seed. ``bandwidth`` (kbps): fit only the codebooks that bandwidth uses
    (e.g. 6: the first 8 of 32); the others keep their random initial values, so codes at a higher
    bandwidth are meaningless past them."""
    import encodec

    build = {"encodec_24khz": encodec.EncodecModel.encodec_model_24khz,
             "encodec_48khz": encodec.EncodecModel.encodec_model_48khz}[model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape = build(pretrained=False)
    hop, k, ch = shape.encoder.hop_length, shape.quantizer.bins, shape.channels
    pieces = []
    for a in audio:
        a = np.asarray(a, dtype=np.float32)
        a = a[None] if a.ndim == 1 else a
        pieces.append(np.repeat(a, ch, 0) if a.shape[0] == 1 and ch > 1 else a)
    frames = sum(p.shape[-1] // hop for p in pieces)
    if frames < frames_per_code * k:
        raise ValueError(f"the audio gives {frames} frames; fitting {k} codewords needs at least "
                         f"{frames_per_code * k} ({frames_per_code} per codeword)")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers whatever the machine's cores, and no thread barriers under load
    try:
        with torch.random.fork_rng(devices=[]):
            codebooks = None if bandwidth is None else shape.quantizer.get_num_quantizers_for_bandwidth(
                shape.frame_rate, bandwidth)
            return _build_random_encodec(model, seed, np.concatenate(pieces, axis=-1), iters, codebooks)
    finally:
        torch.set_num_threads(threads)


def save_encodec_checkpoint(model, directory: str | os.PathLike, filename: str | None = None) -> Path:
    """Save ``model.state_dict()`` as the official checkpoint would be saved (a plain state dict).

    With the default file name (the official one) the file can stand in the torch hub cache; the
    name's hash prefix is not the file's, which is fine there (hashes are checked on download only)."""
    import torch

    from .weights import ENCODEC_CHECKPOINTS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or ENCODEC_CHECKPOINTS[model.name])
    torch.save(model.state_dict(), path)
    return path


def random_encodec_lm(n_q: int = 32, seed: int = 0):
    """A random-weight EnCodec token LM in the official layout (``encodec.model.LMModel(n_q, 1024,
    num_layers=5, dim=200, past_context=262)``), eval mode."""
    import torch

    from .lm.encodec_lm import build_lm

    torch.manual_seed(seed)
    return build_lm(n_q).eval()


def save_encodec_lm_checkpoint(lm, directory: str | os.PathLike, filename: str | None = None) -> Path:
    """Save ``lm.state_dict()`` as the official ``encodec_lm_24khz`` checkpoint is saved (a plain state dict)."""
    import torch

    from .weights import ENCODEC_CHECKPOINTS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or ENCODEC_CHECKPOINTS["encodec_lm_24khz"])
    torch.save(lm.state_dict(), path)
    return path


def save_random_lm_checkpoint(path: str | os.PathLike, codec_weights: str | os.PathLike, arch: str = "token-gpt",
                              size: str = "micro", context: int = 16, bandwidth: float = 6.0, seed: int = 0) -> Path:
    """An untrained ``train lm`` checkpoint (random weights, step 0) whose tokenizer is the EnCodec
    24 kHz weights file ``codec_weights`` at ``bandwidth``: ``audiotok score`` loads and runs it."""
    import torch

    from .lm.checkpoints import save_checkpoint
    from .lm.gpt import GPTConfig, build_gpt
    from .registry import get_codec
    from .weights import file_sha256

    spec = get_codec("encodec_24khz")
    n_q = spec.n_codebooks(bandwidth)
    codebooks = list(range(n_q)) if arch == "info-control" else [0]
    tokenizer = {"codec": spec.name, "sample_rate": spec.sample_rate, "frame_rate": spec.frame_rate,
                 "bandwidth": float(bandwidth), "n_q": n_q, "codebooks": codebooks,
                 "codec_checkpoint": os.path.basename(codec_weights), "codec_sha256": file_sha256(codec_weights, 16)}
    cfg = GPTConfig.make(arch, size, context=context, n_codebooks=len(codebooks))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_gpt(cfg)
    return save_checkpoint(path, model, cfg, tokenizer, {"step": 0})


# --- EnCodecMAE checkpoints in the official layouts ------------------------------------------------
def encodecmae_gin(dim: int, layers: int, heads: int, ff_dim: int | None = None, frontend: str = "mel") -> str:
    """A gin config string in the style ``gin.config_str()`` writes for the official models
    (macros block, scoped bindings, ``\\`` continuations); ``ff_dim`` None leaves the 4096 default."""
    ff = "" if ff_dim is None else f"encoder/transformers.TransformerEncoder.ff_dim = {ff_dim}\n"
    enc = "@torch.nn.Identity" if frontend == "mel" else "@encodecmae.models.encoders.EncodecEncoder"
    feat = 256 if frontend == "mel" else 128
    return (
        "# Macros:\n# " + "=" * 78 + "\n"
        f"MODEL_DIM = {dim}\nNUM_DECODER_HEADS = {heads}\nNUM_DECODER_LAYERS = 2\n"
        f"NUM_ENCODER_HEADS = {heads}\nNUM_ENCODER_LAYERS = {layers}\nNUM_MEL_BINS = 256\n"
        "QUANTIZER_WEIGHTS = \\\n    [0.2241,\n     0.176]\n\n"
        "# Parameters for encoder/MultiHeadAttention:\n# " + "=" * 78 + "\n"
        "encoder/MultiHeadAttention.model_dim = %MODEL_DIM\n"
        "encoder/MultiHeadAttention.num_heads = %NUM_ENCODER_HEADS\n\n"
        "# Parameters for MelspectrogramProcessor:\n# " + "=" * 78 + "\n"
        "MelspectrogramProcessor.frame_length = 26.56\nMelspectrogramProcessor.frame_shift = 13.28\n"
        "MelspectrogramProcessor.norm_stats = [-6.12, 4.82]\nMelspectrogramProcessor.num_mel_bins = %NUM_MEL_BINS\n\n"
        f"# Parameters for WavEncoder:\n# {'=' * 78}\nWavEncoder.encoder = {enc}\n\n"
        f"wav_encoder_proj/Linear.in_features = {feat}\n"
        "# Parameters for encoder/transformers.TransformerEncoder:\n# " + "=" * 78 + "\n"
        "encoder/transformers.TransformerEncoder.attention_layer = \\\n"
        "    @encoder/encodecmae.models.transformers.MultiHeadAttention\n"
        + ff +
        "encoder/transformers.TransformerEncoder.model_dim = %MODEL_DIM\n"
        "encoder/transformers.TransformerEncoder.num_layers = %NUM_ENCODER_LAYERS\n"
    )


def random_encodecmae_state(frontend: str = "mel", dim: int = 64, layers: int = 2, heads: int = 4,
                            ff_dim: int = 128, seed: int = 0, head_outputs: int = 1024) -> dict:
    """A random state_dict with every key an official v2 checkpoint has (decoder, head and, for the
    EnCodec front-end, the encoder's weights); the feed-forward tensors of each stack are one
    tensor shared by every layer, as ``torch.save`` keeps them. Non-trivial biases, LayerNorm
    affines and position scales."""
    import torch

    g = torch.Generator().manual_seed(seed)
    inner = heads * (dim // heads)

    def w(out, inp):
        bound = (6.0 / (out + inp)) ** 0.5
        return (torch.rand(out, inp, generator=g) * 2 - 1) * bound

    def b(n, centre=0.0, spread=0.1):
        return centre + spread * torch.randn(n, generator=g)

    feat = 256 if frontend == "mel" else 128
    sd: dict = {"wav_encoder.post_net.weight": w(dim, feat), "wav_encoder.post_net.bias": b(dim),
                "masker.positional_encoder.scale": torch.tensor(0.5 + torch.rand((), generator=g).item())}
    if frontend == "ec":
        from .embedders.encodecmae import _seanet_encoder

        torch.manual_seed(seed)
        for k, v in _seanet_encoder().state_dict().items():
            sd["wav_encoder.encoder.model." + k] = v.clone()  # the reference's layout (SEANet's .model inside)
    for stack, n_layers in (("visible_encoder", layers), ("decoder", 2)):
        ff = {"0.weight": w(ff_dim, dim), "0.bias": b(ff_dim), "2.weight": w(dim, ff_dim), "2.bias": b(dim)}
        for i in range(n_layers):
            p = f"{stack}.encoder_layers.{i}."
            for name in ("wq", "wk", "wv"):
                sd[p + f"att_layer.{name}.weight"] = w(inner, dim)
            sd[p + "att_layer.wo.weight"] = w(dim, inner)
            for k, v in ff.items():
                sd[p + "ff_layer." + k] = v  # the same tensor object in every layer
            for norm in ("norm1", "norm2"):
                sd[p + norm + ".weight"] = b(dim, 1.0, 0.2)
                sd[p + norm + ".bias"] = b(dim, 0.0, 0.2)
        sd[f"{stack}.final_norm.weight"] = b(dim, 1.0, 0.2)
        sd[f"{stack}.final_norm.bias"] = b(dim, 0.0, 0.2)
    sd["visible_encoder.post_net.weight"] = w(dim, dim)
    sd["visible_encoder.post_net.bias"] = b(dim)
    sd["decoder.positional_encoder.scale"] = torch.tensor(0.5 + torch.rand((), generator=g).item())
    sd["head.layer.weight"] = w(head_outputs, dim)
    sd["head.layer.bias"] = b(head_outputs)
    return sd


def v2_to_v1_state(state: dict) -> dict:
    """The v1 key names of a v2 state_dict (inverse of the loader's renames; one position scale,
    plus the ``extra_head`` v1 self-trained models carry)."""
    import torch

    renames = (("wav_encoder.encoder.model.", "wav_encoder.model."), ("wav_encoder.post_net.", "feat_projector."),
               ("visible_encoder.post_net.", "decoder_projector."))
    out = {}
    for key, value in state.items():
        if key == "decoder.positional_encoder.scale":
            continue
        if key == "masker.positional_encoder.scale":
            out["positional_encoder.scale"] = value
            continue
        for new, old in renames:
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = value
    dim = state["wav_encoder.post_net.weight"].shape[0]
    out["extra_head.layer.weight"] = torch.zeros(8, dim)
    out["extra_head.layer.bias"] = torch.zeros(8)
    return out


def save_encodecmae_checkpoint(path: str | os.PathLike, state: dict, config: str, layout: str = "v2") -> Path:
    """Write ``state`` as an official v2 ``<name>.pt`` (dict: state_dict, config, imports) or, with
    ``layout="v1"``, as a v1 folder ``path/`` holding ``model.pt``, ``config.gin`` and ``imports``."""
    import torch

    path = Path(path)
    imports = "encodecmae.models: encodecmae.models\ntorch.nn: torch.nn"
    if layout == "v2":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, "config": config, "imports": imports}, path)
        return path
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": v2_to_v1_state(state)}, path / "model.pt")
    (path / "config.gin").write_text(config, encoding="utf-8")
    (path / "imports").write_text(imports, encoding="utf-8")
    return path


def fill_hf_cache(cache: str | os.PathLike, repo: str, files: dict[str, str | os.PathLike],
                  commit: str = "0" * 40) -> Path:
    """Lay files out as ``huggingface_hub`` caches them (``models--owner--name/{blobs,snapshots,refs}``)
    so offline resolution finds them. Returns the snapshot folder."""
    import shutil

    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        shutil.copyfile(src, snap / name)
    return snap


# --- DAC ------------------------------------------------------------------------------------------
# the encoder's strides of each released DAC (their product is the spec's hop); the rest of the
# configuration (rate, codebooks, codebook size) is the codec's spec
DAC_ENCODER_RATES = {"dac_16khz": (2, 4, 5, 8), "dac_24khz": (2, 4, 5, 8), "dac_44khz": (2, 4, 8, 8)}


def dac_kwargs(model: str = "dac_44khz", encoder_dim: int = 4, decoder_dim: int = 32) -> dict:
    """The official ``DAC(...)`` keyword arguments of ``model`` with (by default small) channel counts;
    ``encoder_dim=64, decoder_dim=1536`` is the released configuration."""
    from .registry import get_codec

    spec, rates = get_codec(model), DAC_ENCODER_RATES[model]
    assert math.prod(rates) == spec.hop, (model, rates, spec.hop)
    return {"encoder_dim": encoder_dim, "encoder_rates": list(rates), "latent_dim": None, "decoder_dim": decoder_dim,
            "decoder_rates": list(rates[::-1]), "n_codebooks": spec.n_q, "codebook_size": spec.codebook_size,
            "codebook_dim": 8, "quantizer_dropout": False, "sample_rate": spec.sample_rate}


def save_dac_checkpoint(path: str | os.PathLike, model: str = "dac_44khz", seed: int = 0, encoder_dim: int = 4,
                        decoder_dim: int = 32) -> Path:
    """A random-weight DAC ``weights*.pth`` in the official layout (``{"state_dict", "metadata":
    {"kwargs"}}``, weight-norm ``weight_g`` / ``weight_v`` keys), as ``model.save(path, package=False)``
    of ``descript-audio-codec`` writes it. Random unit-norm codebooks: codes vary, but near-ties are
    likelier than with trained weights (fine for invariance tests; parity uses tests/fixtures/dac)."""
    import torch

    from .codecs.dac import DacConfig, build_model

    kwargs = dac_kwargs(model, encoder_dim, decoder_dim)
    config = DacConfig.from_kwargs(kwargs, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(config)
        for m in net.modules():
            if hasattr(m, "alpha"):  # varies per channel as in trained models
                m.alpha.data.uniform_(0.5, 2.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "metadata": {"kwargs": kwargs}}, path)
    return path
