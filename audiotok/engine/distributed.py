"""Which share of the inputs this process takes: ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK)
or ``--shard K/N`` for job arrays. Encoding needs no process group: ranks never talk, each writes
its own outputs and manifest part; the last one to finish merges the parts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Share:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} is not of the form K/N (e.g. 0/4)") from None
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--shard {text}: K must be in 0..N-1 and N >= 1")
    return k, n


def current_share(shard: str | None = None) -> Share:
    """This process's share from ``--shard`` or the torchrun environment (not both)."""
    env_world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if shard:
        if env_world > 1:
            raise UsageError("--shard cannot be combined with torchrun; use one or the other")
        k, n = parse_shard(shard)
        return Share(k, n, 0)
    if env_world > 1:
        return Share(int(os.environ.get("RANK", "0")), env_world, int(os.environ.get("LOCAL_RANK", "0")))
    return Share()
