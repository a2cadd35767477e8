"""audiotok: EnCodec tokens, EnCodecMAE embeddings and audio-LM scores for large audio collections."""

__version__ = "0.1.0"
