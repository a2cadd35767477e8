"""The arms of the hybrid-vs-tokens experiment and their controls, built by one code path.

Every arm is ``train.lm.train`` on the same examples with a ``GPTConfig`` from ``arm_options``; a
control differs from ``whisper-gpt`` in one thing only: ``whisper-gpt-shuffled`` gets the mel of
another file (``shuffle_mel``), ``whisper-gpt-leaky`` sees the current frame's mel (``mel_lag`` 0),
``whisper-gpt-leaky-centred`` the next one, whose window is centred on the predicted frame's samples
(``mel_lag`` -1).
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from .lm import Example

# arm -> (arch, size override or None, GPTConfig options, mel shuffled across files)
ARMS: dict[str, tuple[str, str | None, dict, bool]] = {
    "token-gpt": ("token-gpt", None, {}, False),
    "whisper-gpt": ("whisper-gpt", None, {}, False),
    "whisper-gpt-shuffled": ("whisper-gpt", None, {}, True),
    "whisper-gpt-leaky": ("whisper-gpt", None, {"mel_lag": 0}, False),
    "whisper-gpt-leaky-centred": ("whisper-gpt", None, {"mel_lag": -1}, False),
    "info-control": ("info-control", None, {}, False),
    "token-gpt-large": ("token-gpt", "large", {}, False),
}


def arm_options(arm: str, size: str, n_codebooks: int, fusion: str | None = None) -> tuple[str, str, dict, bool]:
    """``(arch, size, GPTConfig.make options, shuffle)`` of an arm."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")
    arch, big, opts, shuffle = ARMS[arm]
    opts = dict(opts)
    if arch == "info-control":
        opts["n_codebooks"] = n_codebooks
    if arch == "whisper-gpt" and fusion is not None:
        opts["fusion"] = fusion
    return arch, big or size, opts, shuffle


def shuffle_mel(examples: list[Example], seed: int, donors: list[Example] | None = None) -> list[Example]:
    """The same files with each one's mel taken from another file, repeated or cut to the file's
    length: the mel stream keeps its statistics but carries nothing about these tokens. Donors are
    the files themselves (a seeded derangement) or, when given, ``donors`` (never a file's own mel)."""
    pool = list(donors) if donors is not None else list(examples)
    rng = random.Random(seed)
    if donors is None:
        if len(examples) < 2:
            raise ValueError("shuffling the mel across files needs at least two files (or donors)")
        order = list(range(len(examples)))
        while True:
            perm = order[:]
            rng.shuffle(perm)
            if all(i != j for i, j in zip(order, perm)):
                break
    else:
        perm = []
        for e in examples:
            choices = [j for j, d in enumerate(pool) if d.id != e.id]
            if not choices:
                raise ValueError(f"no donor file other than {e.id}")
            perm.append(rng.choice(choices))
    out = []
    for e, j in zip(examples, perm):
        donor = pool[j].mel
        idx = np.arange(len(e.tokens)) % len(donor)
        out.append(replace(e, mel=np.ascontiguousarray(donor[idx])))
    return out
