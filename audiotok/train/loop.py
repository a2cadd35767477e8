"""The training loop `train lm` and `train mae` share, and everything around it that is not
about one model: torchrun setup, the split by file, the optimiser and its schedule, the per-step
random generators, the progress bar and the step loop itself.

A trainer supplies a model, a ``step_loss(step, gen)`` (draw a batch from ``gen``, run the model,
return the loss to minimise and what to report) and a ``validate(step, train_metric)`` that
evaluates, records and saves; ``run_steps`` does the rest in one fixed order (learning rate,
loss, zero grads, backward, clipping, optimiser step, progress, validation), so both trainers
resume, validate and stop the same way. Every random draw of step ``s`` on rank ``r`` comes from
``step_generator(seed, r, s)``: a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass
class StepConfig:
    """What every training run sets: the schedule, the optimiser's numbers, the seed and the held-out
    share (``train lm``'s ``TrainConfig`` and ``train mae``'s ``MaeTrainConfig`` add their own and
    set their defaults)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    clip: float = 1.0
    warmup: int | None = None  # default: 5 % of the steps, at most 200
    min_lr_ratio: float = 0.1
    seed: int = 0
    val_fraction: float = 0.1

    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else max(1, min(200, self.steps // 20))

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, lr=self.lr, steps=self.steps, warmup=self.warmup_steps(),
                             min_lr_ratio=self.min_lr_ratio)


def warmup_cosine(step: int, *, lr: float, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr`` at
    the last step (``warmup`` 0 and ``min_lr_ratio`` 1: a constant ``lr``)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float], weight_decay: float,
          decay_vectors: bool = False) -> torch.optim.AdamW:
    """AdamW over ``params``: weight decay on matrices only (biases, norms and scales, the
    parameters of fewer than 2 dimensions, in a group without decay), or on every parameter with
    ``decay_vectors`` (one group, as the EnCodecMAE reference)."""
    params = list(params)
    if decay_vectors:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def split_by_file(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded held-out split by file: (train ids, validation ids); validation is empty when
    ``fraction`` is 0 or there is only one file."""
    ids = sorted(ids)
    n_val = 0 if fraction <= 0 or len(ids) < 2 else min(len(ids) - 1, max(1, round(fraction * len(ids))))
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    val = sorted(shuffled[:n_val])
    return [i for i in ids if i not in set(val)], val


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator of every random draw of ``step`` on ``rank`` (crops, masks, dropout seed)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + rank * 100_003 + step)


@dataclass
class Distributed:
    """This process's place under torchrun (``world`` 1: a plain run) and the collectives the
    loop needs; every method is a no-op in a plain run."""

    rank: int
    world: int

    @property
    def active(self) -> bool:
        return self.world > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in DistributedDataParallel under torchrun, else ``model`` itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)])
        dist.broadcast(t, 0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group (gloo on CPU, NCCL on GPU) when there is one."""
    from ..engine.distributed import current_share

    share = current_share()
    if share.world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(share.rank, share.world)


class ProgressBar:
    """A rich progress bar on stderr (steps, the running training metric, the learning rate);
    ``log`` prints above it (or plainly when the bar is off)."""

    def __init__(self, total: int, done: int, enabled: bool, metric: str = "nll"):
        self.enabled, self.total, self.done, self.metric = enabled, total, done, metric
        self._p = None

    def __enter__(self):
        if self.enabled:
            import sys

            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                               console=Console(file=sys.stderr, highlight=False))
            self._p.__enter__()
            self._task = self._p.add_task("train", total=self.total, completed=self.done, info="")
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def update(self, step: int, value: float, lr: float) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=step, info=f"{self.metric} {value:.4f}  lr {lr:.2e}")

    def log(self, msg: str) -> None:
        if self._p is not None:
            self._p.console.print(msg)
        else:
            import sys

            print(msg, file=sys.stderr, flush=True)


StepLoss = Callable[[int, torch.Generator], tuple[torch.Tensor, float, float]]


# 13 parameters: what differs between the trainers (step, validation, checkpointing callbacks) and
# the schedule; the loop itself is the same for both.
def run_steps(*, start: int, steps: int, seed: int, rank: int, opt: torch.optim.Optimizer,
              lr_of: Callable[[int], float], step_loss: StepLoss, clip: float | None,
              clip_params: list[torch.nn.Parameter], bar: ProgressBar, eval_due: Callable[[int], bool],
              validate: Callable[[int, float], bool], stop_after: int | None = None) -> int:
    """Steps ``start`` .. ``steps - 1``; returns the number of the last step done.

    ``step_loss(step, gen)`` returns (the loss to backpropagate, a sum and a count of what to
    report: the running metric is sum / count since the last validation). After step ``s + 1``
    the loop validates when ``eval_due(s + 1)``, at the last step, and when ``stop_after`` steps
    of this run are done (then it leaves, with a checkpoint to resume from); ``validate(step,
    metric)`` returns True to stop early."""
    total, count = 0.0, 0.0
    step = start
    for step in range(start, steps):
        gen = step_generator(seed, rank, step)
        lr = lr_of(step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, value, n = step_loss(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip_params, clip)
        opt.step()
        total += value
        count += n
        bar.update(step + 1, total / max(1, count), lr)
        stop = stop_after is not None and step + 1 - start >= stop_after
        if eval_due(step + 1) or step + 1 == steps or stop:
            early = validate(step + 1, total / max(1, count))
            total, count = 0.0, 0.0
            if early:
                return step + 1
        if stop:
            return step + 1
    return step + 1 if steps > start else start
