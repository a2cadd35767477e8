"""audiotok: EnCodec tokens, EnCodecMAE embeddings and audio-LM scores for large audio collections.

The Python API (each function runs the same pipeline as the command of the same name and returns
its summary; see docs/api.md)::

    import audiotok

    audiotok.encode_files(["data/"], "tokens/", bandwidth=6.0)
    audiotok.decode_files(["tokens/"], "audio/")
    audiotok.embed_files(["data/"], "emb/", pool="mean")
    audiotok.score_files(["data/"], checkpoints=["wgpt.pt"], output="scores.jsonl")
    audiotok.train_lm(["data/"], "wgpt.pt", arch="whisper-gpt", size="tiny", steps=2000)
    codes = audiotok.Encoder("encodec_24khz", 6.0).encode(wave, sample_rate=44100).codes
    emb = audiotok.load_embedder("mel256-ec-base_st").embed(wave, sample_rate=44100)
"""

__version__ = "0.1.0"

_LAZY = {
    "encode_files": ("jobs.encode", "encode_files"),
    "Encoder": ("jobs.encode", "Encoder"),
    "decode_files": ("jobs.decode", "decode_files"),
    "embed_files": ("jobs.embed", "embed_files"),
    "score_files": ("jobs.score", "score_files"),
    "train_lm": ("jobs.train_lm", "train_lm"),
    "load_embedder": ("embedders.chunking", "load_embedder"),
    "register_codec": ("registry", "register_codec"),
    "CodecSpec": ("registry", "CodecSpec"),
}

__all__ = [*_LAZY, "hear", "__version__"]


def __getattr__(name: str):
    """Lazy exports, so ``import audiotok`` stays light (no torch until used)."""
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name == "hear":
        return importlib.import_module(".hear", __name__)
    raise AttributeError(f"module 'audiotok' has no attribute {name!r}")
