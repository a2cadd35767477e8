"""The HEAR 2021 API entry point (``hear-eval-kit --module audiotok.hear``): the importable module
name HEAR asks for; the implementation is ``audiotok.embedders.hear``."""

from .embedders.hear import (
    DEFAULT_MODEL,
    HearModel,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)

__all__ = ["DEFAULT_MODEL", "HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
