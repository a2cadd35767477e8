"""What a run's numbers depend on, recorded in every output and manifest line so that two runs
can be compared.

audiotok's outputs are a function of the input, the model and its weights, the settings, the
device type and the thread count, and nothing else: never the batch size, the worker or shard
count, the order of inputs, the process, a rerun or the machine's load. No kernel or numeric path
is chosen by a stopwatch or a probe of the machine; every model call has a shape fixed by the
settings (and, for the 24 kHz codec on the CPU, by the file's own length). What can still change
numbers, and so is recorded here:

- the device type and, on the CPU, the thread count (torch splits reductions by thread: one
  thread rounds some layers differently from two or more) and the instruction set torch's
  kernels use (``cpu_capability``: AVX2, AVX512, ...);
- the library versions (torch, encodec, numpy, audiotok);
- the model-side shapes (``numerics`` of the adapter, e.g. the stream's rows x window).
"""

from __future__ import annotations

import platform
from typing import Any


def numeric_context(device: Any = None) -> dict:
    """The numeric context of this process for ``device`` (a torch device or its name)."""
    import numpy as np
    import torch

    from .. import __version__

    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "device_type": dev.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "audiotok": __version__,
        "machine": platform.machine(),
    }
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        info["cpu_capability"] = None
    try:
        import encodec

        info["encodec"] = getattr(encodec, "__version__", None)
    except ImportError:
        info["encodec"] = None
    if dev.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(dev)
        info.pop("threads")  # the GPU's reductions do not depend on the CPU threads
    return info
