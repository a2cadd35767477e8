"""The loop `train lm` and `train mae` share (train/loop.py): when it validates, stops and resumes,
its schedule and its optimiser groups."""

from __future__ import annotations

import pytest
import torch

from audiotok.train.loop import ProgressBar, adamw, run_steps, step_generator, warmup_cosine


def _run(start, steps, *, eval_every=3, stop_after=None, stop_early_at=None):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    seen, draws = [], []

    def step_loss(step, gen):
        draws.append(float(torch.rand(1, generator=gen)))
        return (w ** 2).sum(), float(step), 1

    def validate(step, metric):
        seen.append((step, metric))
        return step == stop_early_at

    last = run_steps(start=start, steps=steps, seed=5, rank=0, opt=opt, lr_of=lambda s: 0.1, step_loss=step_loss,
                     clip=1.0, clip_params=[w], bar=ProgressBar(steps, start, enabled=False),
                     eval_due=lambda s: s % eval_every == 0, validate=validate, stop_after=stop_after)
    return last, seen, draws, w.detach().clone()


def test_validates_when_due_at_the_end_and_reports_the_mean_since_the_last_validation():
    last, seen, _, _ = _run(0, 7)
    assert last == 7
    assert seen == [(3, 1.0), (6, 4.0), (7, 6.0)]  # steps 0-2, 3-5, then step 6 alone


def test_a_run_cut_short_then_resumed_draws_what_one_run_draws():
    _, _, whole, w_whole = _run(0, 7)
    last, seen, first, _ = _run(0, 7, stop_after=4)
    assert last == 4 and seen[-1][0] == 4  # a checkpoint to resume from
    _, _, rest, _ = _run(4, 7)
    assert first + rest == whole
    assert whole[2] == float(torch.rand(1, generator=step_generator(5, 0, 2)))


def test_early_stop_leaves_after_the_validation_that_asks():
    last, seen, draws, _ = _run(0, 20, stop_early_at=6)
    assert last == 6 and [s for s, _ in seen] == [3, 6] and len(draws) == 6


def test_nothing_to_do_when_resumed_at_the_end():
    last, seen, draws, _ = _run(7, 7)
    assert (last, seen, draws) == (7, [], [])


def test_schedule_and_optimiser_groups():
    assert warmup_cosine(0, lr=1.0, steps=100, warmup=10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, lr=1.0, steps=100, warmup=10, min_lr_ratio=0.1) == pytest.approx(1.0)
    assert warmup_cosine(100, lr=1.0, steps=100, warmup=10, min_lr_ratio=0.1) == pytest.approx(0.1)
    lin = torch.nn.Linear(3, 2)
    groups = adamw(lin.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 0.1), (1, 0.0)]  # no decay on the bias
    (one,) = adamw(lin.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, decay_vectors=True).param_groups
    assert len(one["params"]) == 2 and one["weight_decay"] == 0.05
