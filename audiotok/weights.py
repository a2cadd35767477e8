"""Checkpoint names, caches, downloads and offline errors.

EnCodec weights live where torch hub keeps them (``$TORCH_HOME/hub/checkpoints``), under the
official file names, so a cache filled by the ``encodec`` package is reused as it is and vice versa.
Any codec's weights resolve from what its ``CodecSpec`` names, read at the moment of resolving
(``resolve_codec_weights``): its file in the torch hub cache (downloaded from ``weights_url``) or
in the Hugging Face cache (``hub_repo``). EnCodecMAE weights resolve through the Hugging Face cache
(see ``resolve_encodecmae``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .errors import WeightsError
from .registry import CODECS, ENCODECMAE_V1_NAMES, ENCODECMAE_V2_NAMES, ENCODECMAE_V2_REPO, CodecSpec

ENCODEC_BASE_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"

# the entropy-coding LMs' official weights files (the codecs' own come from their specs)
ENCODEC_LM_CHECKPOINTS = {
    "encodec_lm_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_lm_48khz": "encodec_lm_48khz-7add9fc3.th",
}


class _Checkpoints(Mapping):
    """Official weights file names by model name: every registered codec's ``checkpoint`` (read
    from the registry at each look-up, so a codec registered after import is found) and the
    EnCodec LMs'."""

    def _table(self) -> dict[str, str]:
        codecs = {s.name: s.checkpoint for s in CODECS.values() if s.checkpoint and not s.hub_repo}
        return {**codecs, **ENCODEC_LM_CHECKPOINTS}

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


ENCODEC_CHECKPOINTS: Mapping[str, str] = _Checkpoints()


def hub_checkpoint_dir() -> Path:
    """The folder torch hub (and so the ``encodec`` package) caches checkpoints in:
    ``$TORCH_HOME/hub/checkpoints`` (default ``${XDG_CACHE_HOME:-~/.cache}/torch``), as
    ``torch.hub.get_dir`` computes it, without importing torch; once torch is imported, its own
    answer (which honours ``torch.hub.set_dir``)."""
    import sys

    if "torch.hub" in sys.modules:
        return Path(sys.modules["torch.hub"].get_dir()) / "checkpoints"
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(home) / "hub" / "checkpoints"


def encodec_base_url() -> str:
    """Download root; ``AUDIOTOK_ENCODEC_URL`` overrides it (mirrors, tests on 127.0.0.1)."""
    url = os.environ.get("AUDIOTOK_ENCODEC_URL", ENCODEC_BASE_URL)
    return url if url.endswith("/") else url + "/"


def offline() -> bool:
    return os.environ.get("AUDIOTOK_OFFLINE", "") not in ("", "0") or os.environ.get(
        "HF_HUB_OFFLINE", ""
    ) not in ("", "0")


_SHA256_SEEN: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike, digits: int | None = None) -> str:
    """The sha256 of a file (hex; the first ``digits`` only when given). Remembered in this process
    for the file's (path, device, inode, size, mtime): a program that runs several commands on one
    checkpoint reads it once (0.2 s per 90 MB)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _SHA256_SEEN.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _SHA256_SEEN[key] = h.hexdigest()
    return digest[:digits] if digits else digest


def _sha256_prefix_ok(hexdigest: str, name: str) -> bool:
    """Whether a file's sha256 starts with the hash prefix its official name carries
    (``encodec_24khz-d7cc33bc.th``); names without one always pass."""
    stem = Path(name).stem
    return "-" not in stem or hexdigest.startswith(stem.rsplit("-", 1)[1])


def load_torch_file(path: str | os.PathLike, what: str = "torch checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU (pickled code is never run), with a
    damaged or foreign file reported as one ``WeightsError`` sentence."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"could not read {path} as a weights-only {what} ({_load_reason(exc)}); the file is damaged "
                           "or of another kind") from None


def _load_reason(exc: Exception) -> str:
    """torch.load's reason in a few words: for the weights-only unpickler, what it refused (its
    message otherwise opens with advice to load unsafely, which audiotok never does)."""
    text = str(exc).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = next((ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()), "")
        return f"refused by the weights-only unpickler: {detail}"[:160]
    return (text.splitlines() or [type(exc).__name__])[0][:160]


def download(url: str, dest: Path, check_name: str | None = None, option: str = "--checkpoint") -> Path:
    """Download ``url`` to ``dest`` atomically (``sinks.atomic_write``: temp file, fsync, rename),
    checking the announced length and the hash prefix that official checkpoint names carry."""
    from .files import atomic_write

    def fetch(out) -> None:
        h, got = hashlib.sha256(), 0
        with urllib.request.urlopen(url, timeout=60) as resp:
            expected = resp.headers.get("Content-Length", "")
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
                got += len(block)
        # HTTPResponse.read(n) returns b"" when the connection drops early instead of raising:
        # compare with the announced length so a cut download is never cached as complete
        if expected.isdigit() and got != int(expected):
            raise WeightsError(
                f"could not download {url} (the connection closed after {got} of {expected} bytes); "
                f"put the file at {dest} or pass {option} PATH"
            )
        if check_name and not _sha256_prefix_ok(h.hexdigest(), check_name):
            raise WeightsError(
                f"downloaded {url} but its sha256 does not match the hash in its name; "
                "the download is corrupt or the mirror serves another file"
            )

    try:
        atomic_write(dest, fetch)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
        raise WeightsError(
            f"could not download {url} ({exc}); put the file at {dest} or pass {option} PATH"
        ) from None
    return dest


def resolve_encodec(name: str, checkpoint: str | os.PathLike | None = None, option: str = "--checkpoint") -> Path:
    """Path of the weights file for the EnCodec model or LM ``name`` (a key of ENCODEC_CHECKPOINTS).

    An explicit ``checkpoint`` wins; else the torch hub cache; else a download (unless offline).
    ``option``: the command's option that gives this file (named in messages)."""
    if checkpoint is not None:
        return _given(checkpoint, option)
    try:
        filename = ENCODEC_CHECKPOINTS[name]
    except KeyError:
        raise WeightsError(
            f"unknown EnCodec model {name!r}; choose one of {', '.join(ENCODEC_CHECKPOINTS)}"
        ) from None
    spec = CODECS.get(name)
    url = spec.weights_url if spec is not None and spec.weights_url else ENCODEC_BASE_URL + filename
    return _cached_or_download(filename, url, option)


def _given(checkpoint: str | os.PathLike, option: str) -> Path:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist; check the {option} path")
    return path


def _download_url(url: str) -> str:
    """``url`` with the EnCodec download root replaced by ``AUDIOTOK_ENCODEC_URL`` when that is set."""
    if url.startswith(ENCODEC_BASE_URL):
        return encodec_base_url() + url[len(ENCODEC_BASE_URL):]
    return url


def _cached_or_download(filename: str, url: str | None, option: str) -> Path:
    cached = hub_checkpoint_dir() / filename
    if cached.is_file():
        return cached
    if url is None:
        raise WeightsError(f"{filename} is not in the torch hub cache and has no download address; "
                           f"put it at {cached} or pass {option} PATH")
    if offline():
        raise WeightsError(
            f"{filename} is not in the torch hub cache and downloads are off; "
            f"put it at {cached} or pass {option} PATH"
        )
    return download(_download_url(url), cached, check_name=filename, option=option)


def resolve_codec_weights(spec: CodecSpec, checkpoint: str | os.PathLike | None = None,
                          option: str = "--checkpoint") -> Path | None:
    """The weights file of the codec ``spec``, from what its spec names (read now, so a codec
    registered after import resolves too): an explicit ``checkpoint`` wins; else ``spec.checkpoint``
    from the Hugging Face cache (``spec.hub_repo``) or the torch hub cache (downloaded from
    ``spec.weights_url`` unless offline). None for a codec that names no weights file (its
    implementation makes its own)."""
    if checkpoint is not None:
        return _given(checkpoint, option)
    if spec.default_weights:  # the codec finds its own files (Mimi: model.safetensors + config.json)
        import importlib

        module, _, attr = spec.default_weights.partition(":")
        return getattr(importlib.import_module(module), attr)(option)
    if not spec.checkpoint:
        return None
    if spec.hub_repo:
        return _hf_file(spec.hub_repo, spec.checkpoint, option)
    return _cached_or_download(spec.checkpoint, spec.weights_url, option)


def weights_source(spec: CodecSpec) -> str:
    """Where the official weights of ``spec`` come from, in a few words (``audiotok models``)."""
    if spec.weights_source:
        return spec.weights_source
    if not spec.checkpoint:
        return "built in (no weights file)"
    if spec.hub_repo:
        return f"hf://{spec.hub_repo}/{spec.checkpoint}"
    return _download_url(spec.weights_url) if spec.weights_url else f"{spec.checkpoint} (no download address)"


def cached_weights(spec: CodecSpec) -> Path | None:
    """The official weights file of ``spec`` if it is cached on this machine (no network, no download)."""
    if not spec.checkpoint:
        return None
    if spec.hub_repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(spec.hub_repo, spec.checkpoint)
        return Path(found) if isinstance(found, str) else None
    cached = hub_checkpoint_dir() / spec.checkpoint
    return cached if cached.is_file() else None


# --- EnCodecMAE (Hugging Face hub) ---------------------------------------------------------------
# the released names and their hub repositories are facts of the embedder's registry entry


def _hf_file(repo: str, filename: str, option: str | None = None) -> Path:
    """``repo``/``filename`` from the Hugging Face cache (downloaded first unless offline).

    The cache is tried first; on a miss, whether the Hub can be reached at all is checked with
    one short connection attempt, so a machine without network gets its answer at once instead
    of after huggingface_hub's retries."""
    from huggingface_hub import hf_hub_download

    local_only = offline()
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises several types)
        pass
    why = "downloads are off (HF_HUB_OFFLINE or AUDIOTOK_OFFLINE)"
    if not local_only:
        host = hub_unreachable()
        if host is None:
            try:
                return Path(hf_hub_download(repo_id=repo, filename=filename))
            except Exception as exc:  # offline, 404, HTTP, OS errors
                why = f"the download failed ({type(exc).__name__})"
        else:
            why = f"{host} cannot be reached (no network?)"
    from huggingface_hub.constants import HF_HUB_CACHE

    raise WeightsError(
        f"{filename} of the Hugging Face repo {repo} is not in the cache ({HF_HUB_CACHE}) and {why}; "
        f"fetch it with `{hf_download_command(repo, filename)}` where there is network, "
        + (f"or pass the file with {option} PATH" if option else
           "or pass a local checkpoint file with --model PATH (load_embedder(PATH) in Python)")
    )


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the Hub (or the HTTPS proxy in use) opens within ``timeout``
    seconds; else the ``host:port`` that could not be reached."""
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(hub_endpoint())
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return f"{host}:{port}"
    return None


def hf_download_command(repo: str, filename: str) -> str:
    """The download command of the installed huggingface_hub: ``hf download`` (1.0 and later),
    ``huggingface-cli download`` (older), else a Python one-liner."""
    from importlib import metadata

    try:
        scripts = {ep.name for ep in metadata.distribution("huggingface_hub").entry_points
                   if ep.group == "console_scripts"}
    except metadata.PackageNotFoundError:
        scripts = set()
    if "hf" in scripts:
        return f"hf download {repo} {filename}"
    if "huggingface-cli" in scripts:
        return f"huggingface-cli download {repo} {filename}"
    return f"python -c \"from huggingface_hub import hf_hub_download; hf_hub_download('{repo}', '{filename}')\""


def resolve_encodecmae(name_or_path: str | os.PathLike) -> Path:
    """A local EnCodecMAE checkpoint (v2 ``.pt`` file or v1 folder), or a released name resolved
    through the Hugging Face cache: v2 names -> ``lpepino/encodecmae-v2/<name>.pt``; v1 names
    (``base``, ``encodecmae-base``...) -> the folder holding ``model.pt`` and ``config.gin`` of
    ``lpepino/encodecmae-<name>``."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    looks_local = os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".ckpt")) or text.startswith(".")
    if looks_local:
        raise WeightsError(f"EnCodecMAE checkpoint {path} does not exist; check the path or give a released name")
    v1 = text[len("encodecmae-"):] if text.startswith("encodecmae-") else text
    if v1 in ENCODECMAE_V1_NAMES:
        repo = f"lpepino/encodecmae-{v1}"
        model = _hf_file(repo, "model.pt")
        _hf_file(repo, "config.gin")
        return model.parent
    if text in ENCODECMAE_V2_NAMES or text.startswith(("mel256-", "ec-ec-")):
        return _hf_file(ENCODECMAE_V2_REPO, f"{text}.pt")
    raise WeightsError(
        f"unknown EnCodecMAE model {text!r}; give a checkpoint path or one of "
        f"{', '.join(ENCODECMAE_V2_NAMES + ENCODECMAE_V1_NAMES)}"
    )


def check_finite(state, path) -> None:
    """Refuse a checkpoint with a NaN or infinite value in any floating-point tensor (a model built
    from it gives all-zero codes, constant audio or NaN scores while reporting success).
    ``state`` is a mapping of names to tensors (nested mappings are searched too)."""
    stack = [("", state)]
    while stack:
        prefix, obj = stack.pop()
        if isinstance(obj, dict):
            stack.extend((f"{prefix}{k}.", v) for k, v in obj.items())
            continue
        if getattr(obj, "is_floating_point", None) and obj.is_floating_point() and obj.numel():
            import torch

            # a finite sum means every term is finite (NaN and inf propagate; an overflow gives inf,
            # which only sends the tensor to the exact check below). ~20x faster than
            # isfinite(x).all(), which cost every command ~0.3 s per 23M weights at start-up
            if bool(torch.isfinite(obj.sum())):
                continue
            if not bool(torch.isfinite(obj).all()):
                name = prefix[:-1]
                kind = "NaN" if bool(torch.isnan(obj).any()) else "infinite"
                raise WeightsError(f"checkpoint {path} holds {kind} values in {name}, so every result would be "
                                   "garbage; the file is damaged: download or train it again")
