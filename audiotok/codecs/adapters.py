"""What the decode adapters of every codec family share: each item decoded at once (nothing held
back between calls), and an item whose codes do not fit the model (a ``ValueError`` or
``WeightsError`` of its ``decode``) fails alone with an ``InputError`` while the rest are decoded."""

from __future__ import annotations

from ..errors import InputError, WeightsError


class ItemDecoder:
    """Base of the decode adapters: subclasses give ``decode(item, key) -> [channels, N] audio``."""

    on_progress = None  # set by the pipeline: on_progress(key, done, total) within an input

    def decode(self, item, key=None):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def run(self, batch):
        out = []
        for key, item in batch:
            try:
                out.append((key, self.decode(item, key)))
            except (ValueError, WeightsError) as exc:
                out.append((key, InputError(str(exc))))
        return out

    def flush(self):
        return []  # each item is decoded at once: nothing is held back

    def reset(self) -> None:
        pass
