"""``--device`` and ``--threads``: their spelling (checked without torch) and what they resolve to.

Every command takes both through one ``Runtime``: ``Runtime.check(device, threads)`` when the
options are checked (before torch is imported), ``runtime.start()`` when the model is about to load."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Runtime:
    """Where and with how many threads a command computes (``--device``, ``--threads``)."""

    device: str = "auto"
    threads: int | None = None

    @classmethod
    def check(cls, device: str = "auto", threads: int | None = None) -> Runtime:
        """The options' spelling, checked without torch (a ``UsageError`` naming the option)."""
        return cls(check_device(device), check_threads(threads))

    def start(self, world: int = 1):
        """``(torch.device, threads in force)``: the device resolved (``UsageError`` if it is not
        here) and torch's thread count applied. With ``world`` processes on the machine (torchrun)
        and no ``--threads``, each takes its share of torch's default."""
        dev = resolve_device(self.device)
        threads = self.threads
        if threads is None and world > 1:
            import torch

            threads = max(1, torch.get_num_threads() // world)
        return dev, apply_threads(threads)


def check_device(device: str) -> str:
    """The spelling of ``--device`` (auto, cpu, cuda, cuda:N); whether the device exists is checked
    by ``resolve_device`` when the model is loaded."""
    d = device.strip().lower()
    if d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit()):
        return d
    raise UsageError(f"--device {device!r} is not valid; use auto, cpu, cuda or cuda:N")


def check_threads(threads: int | None) -> int | None:
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads} is not valid; give 1 or more (or leave it out for torch's default)")
    return threads


def resolve_device(device):
    """A ``torch.device`` for ``--device`` (``auto``: this rank's GPU under torchrun, else the CPU)."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
        index = device.split(":", 1)[1] if ":" in device else "0"
        if int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices")
    return torch.device(device)


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (``None``: keep torch's default, which honours
    ``OMP_NUM_THREADS``); returns the count in force. Numbers can depend on it (see provenance.py)."""
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
