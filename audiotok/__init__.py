"""audiotok: EnCodec tokens, EnCodecMAE embeddings and audio-LM scores for large audio collections."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports, so ``import audiotok`` stays light (no torch until used)."""
    if name == "load_embedder":
        from .embedder import load_embedder

        return load_embedder
    if name == "hear":
        import importlib

        return importlib.import_module(".hear", __name__)
    raise AttributeError(f"module 'audiotok' has no attribute {name!r}")
