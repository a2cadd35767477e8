"""Every model audiotok knows and its facts, for ``audiotok models`` (no torch, no network).

    from audiotok.jobs.models import list_models
    for codec in list_models()["codecs"]:
        print(codec["name"], codec["frame_rate"], codec["weights_cached"])

Codecs come from the registry (with any ``AUDIOTOK_PLUGINS`` codec), so a codec registered
from outside the package is listed with its facts like the built-in ones.
"""

from __future__ import annotations


def codec_facts(spec) -> dict:
    """What a codec is, as ``audiotok models`` prints it."""
    from ..weights import cached_weights, weights_source

    cached = cached_weights(spec)
    return {
        "name": spec.name, "description": spec.description, "sample_rate": spec.sample_rate,
        "channels": spec.channels, "frame_rate": spec.frame_rate, "hop": spec.hop,
        "codebooks": spec.n_q, "codebook_size": spec.codebook_size,
        "bandwidths": list(spec.bandwidths), "codebook_counts": spec.codebook_counts,
        "default_bandwidth": spec.bandwidth_default,
        "default_codebooks": spec.n_codebooks(spec.bandwidth_default),
        "segments": None if not spec.segment_length else {"length": spec.segment_length, "stride": spec.segment_stride},
        "formats": ["npz", "parquet", *(["npy"] if spec.name == _npy_codec() else []), *(["ecdc"] if spec.ecdc else [])],
        "weights_file": spec.checkpoint, "weights_source": weights_source(spec),
        "weights_cached": None if not spec.checkpoint else cached is not None,
        "weights_path": str(cached) if cached is not None else None,
        "aliases": list(spec.aliases),
    }


def _npy_codec() -> str:
    from ..formats.codes import NPY_CODEC

    return NPY_CODEC


def embedder_facts() -> list[dict]:
    """The released models of every registered embedder family (``embed -m``, ``probe -m`` take
    them by name)."""
    from ..registry import EMBEDDERS

    out = []
    for family in EMBEDDERS.values():
        for name, (repo, filename) in family.released.items():
            out.append({"name": name, "family": family.name, "sample_rate": family.sample_rate,
                        "frame_rate": family.frame_rate, "weights_source": f"hf://{repo}/{filename}",
                        "weights_cached": _hf_cached(repo, filename)})
    return out


def _hf_cached(repo: str, filename: str) -> bool | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    return isinstance(try_to_load_from_cache(repo, filename), str)


def lm_facts() -> list[dict]:
    """The LMs ``score -m`` takes: the trained ones (``train lm``; vocabulary = their codec's
    codebook size) and EnCodec's own entropy-coding LM."""
    from ..lm.names import ARCHS, LM_NAMES
    from ..registry import DEFAULT_CODEC, get_codec
    from ..weights import ENCODEC_BASE_URL, ENCODEC_CHECKPOINTS, hub_checkpoint_dir

    out = [{"name": arch, "weights_source": "audiotok train lm (no public weights)", "codecs": "any registered codec",
            "vocab": "the codec's codebook size (BOS one past it)", "weights_cached": None} for arch in ARCHS]
    for codec, lm in LM_NAMES.items():
        spec = get_codec(codec)
        filename = ENCODEC_CHECKPOINTS[lm]
        out.append({"name": "encodec-lm", "weights_source": ENCODEC_BASE_URL + filename, "codecs": codec,
                    "vocab": spec.codebook_size, "codebooks": spec.n_q, "weights_file": filename,
                    "weights_cached": (hub_checkpoint_dir() / filename).is_file(),
                    "default": codec == DEFAULT_CODEC})
    return out


def list_models() -> dict:
    """``{"codecs": [...], "embedders": [...], "lms": [...]}`` with each model's facts."""
    from ..registry import CODECS

    specs = {s.name: s for s in CODECS.values()}
    return {"codecs": [codec_facts(specs[n]) for n in sorted(specs)], "embedders": embedder_facts(),
            "lms": lm_facts()}


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


def format_models(models: dict) -> str:
    """The human-readable listing of ``list_models()``."""
    lines = ["Codecs (encode -m, decode, train lm --codec):"]
    for c in models["codecs"]:
        counts = ", ".join(f"{b:g} ({n})" for b, n in zip(c["bandwidths"], c["codebook_counts"]))
        lines += [f"  {c['name']}: {c['description']}".rstrip(": "),
                  f"    {c['sample_rate']} Hz, {c['channels']} channel(s), {c['frame_rate']:g} frames/s"
                  + (f" (hop {c['hop']})" if c["hop"] else "")
                  + f", up to {c['codebooks']} x {c['codebook_size']} codes",
                  f"    kbps (codebooks): {counts}; default {c['default_bandwidth']:g} ({c['default_codebooks']})",
                  f"    formats: {', '.join(c['formats'])}",
                  f"    weights: {c['weights_source']}; cached here: {_yes(c['weights_cached'])}"
                  + (f" ({c['weights_path']})" if c["weights_path"] else "")]
    lines.append("Embedders (embed -m, probe -m):")
    for e in models["embedders"]:
        lines.append(f"  {e['name']} ({e['family']}, {e['sample_rate']} Hz, {e['frame_rate']:g} frames/s): "
                     f"{e['weights_source']}; cached here: {_yes(e['weights_cached'])}")
    lines.append("Audio LMs (score -m, train lm --arch):")
    for m in models["lms"]:
        lines.append(f"  {m['name']} (codecs: {m['codecs']}; vocab: {m['vocab']}): {m['weights_source']}"
                     + (f"; cached here: {_yes(m['weights_cached'])}" if m["weights_cached"] is not None else ""))
    return "\n".join(lines)
