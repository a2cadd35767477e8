"""Training Whisper-GPT and the token-only GPT on in-memory (tokens, mel) arrays (the step loop,
schedule and torchrun setup are `loop.py`'s, shared with `train mae`).

Random crops of ``context + 1`` positions of ``[BOS, c_0 .. c_T-1]`` (BOS: the tokenizer's codebook
size; with the silence slice and the aligned mel slices), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warmup then
cosine decay, gradient clipping at 1.0, dropout from the config. Crops and dropout are drawn from
generators seeded by (seed, rank, step), so a resumed run continues exactly where it stopped.
Under torchrun the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU); rank 0
evaluates and writes checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.progress import plural
from ..errors import UsageError
from ..lm.checkpoints import GPTScorer, LMCheckpoint, load_checkpoint, save_checkpoint
from ..lm.gpt import BOS, GPTConfig, aligned_mel, build_gpt
from ..lm.mel import MEL_BINS, SILENCE_LOG_MEL
from ..lm.scoring import WindowScorer, corpus_summary, file_scores
from ..lm.tokenizer import tokenizer_spec
from .loop import ProgressBar, StepConfig, adamw, distributed, run_steps, split_by_file


@dataclass
class Example:
    """One file: coarse tokens ``[T]``, raw log-mel ``[T, 80]`` (None for token-only training),
    for the information control every codebook ``[n_q, T]``, and for the positive control the
    codec latent ``[T, D]`` (the encoder output the codes quantise)."""

    id: str
    tokens: np.ndarray
    mel: np.ndarray | None
    duration: float
    codes: np.ndarray | None = None
    latent: np.ndarray | None = None

    def features(self, kind: str) -> np.ndarray | None:
        """The per-frame features a model reads (``GPTConfig.features``): ``mel`` or ``latent``."""
        if kind == "mel":
            return self.mel
        if kind == "latent":
            if self.latent is None:
                raise ValueError(f"{self.id} has no codec latent (featurise it with the latent kept)")
            return self.latent
        raise ValueError(f"unknown features {kind!r}")

    def input_codes(self, n: int) -> np.ndarray:
        """The first ``n`` codebooks ``[n, T]`` (codebook 0 alone needs only ``tokens``)."""
        if n == 1:
            return self.tokens[None]
        if self.codes is None or self.codes.shape[0] < n:
            have = 1 if self.codes is None else self.codes.shape[0]
            raise ValueError(f"{self.id} has {have} codebook(s); the information control needs {n}")
        return self.codes[:n]


@dataclass
class TrainConfig(StepConfig):
    patience: int | None = None  # early stopping: validations without improvement before stopping
    eval_every: int | None = None  # steps between validations (default: one epoch)
    extra: dict = field(default_factory=dict)


def mel_stats(examples: list[Example], kind: str = "mel") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and standard deviation of the training log-mel frames (the fixed affine); of
    the codec latent's dimensions with ``kind`` ``latent``."""
    feats = [e.features(kind) for e in examples]
    frames = np.concatenate([f for f in feats if f is not None and len(f)], axis=0).astype(np.float64)
    mean, std = frames.mean(0), frames.std(0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.maximum(std, 1e-3)).float()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    return cfg.lr_at(step)


class TokenCropSampler:
    """Random crops of ``context + 1`` positions, files drawn in proportion to their length.

    Tokens are ``[B, L]`` (``[B, K, L]`` when the model reads ``n_in`` > 1 codebooks); the mel of
    input position i is ``aligned_mel(mel, mel_lag)[i]``, the alignment the scorer uses. With
    ``features`` ``latent`` the codec latent takes the mel's place (same alignment; ``fill`` at BOS)."""

    def __init__(self, examples: list[Example], context: int, uses_mel: bool, mel_lag: int = 1, n_in: int = 1,
                 features: str = "mel", fill: float = SILENCE_LOG_MEL, bos: int = BOS):
        self.context, self.uses_mel, self.n_in, self.fill, self.bos = context, uses_mel, n_in, fill, bos
        self.seqs = []
        self.width = MEL_BINS
        for e in examples:
            codes = e.input_codes(n_in).astype(np.int64)
            tok = np.concatenate([np.full((n_in, 1), bos), codes], axis=1)
            mel = aligned_mel(e.features(features), mel_lag, fill).numpy() if uses_mel else None
            if mel is not None:
                self.width = mel.shape[-1]
            self.seqs.append((tok, mel))
        lengths = np.array([t.shape[1] - 1 for t, _ in self.seqs], dtype=np.float64)
        self.weights = torch.from_numpy(lengths / lengths.sum())

    def sample(self, batch: int, gen: torch.Generator):
        L = self.context
        tokens = torch.full((batch, self.n_in, L), self.bos, dtype=torch.long)
        targets = torch.full((batch, L), -100, dtype=torch.long)
        mel = torch.full((batch, L, self.width), self.fill) if self.uses_mel else None
        files = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        for b, f in enumerate(files):
            tok, m = self.seqs[f]
            span = min(L + 1, tok.shape[1])
            start = int(torch.randint(0, tok.shape[1] - span + 1, (1,), generator=gen))
            n = span - 1
            tokens[b, :, :n] = torch.from_numpy(tok[:, start:start + n])
            targets[b, :n] = torch.from_numpy(tok[0, start + 1:start + span])
            if mel is not None:
                mel[b, :n] = torch.from_numpy(m[start:start + n])
        return (tokens[:, 0] if self.n_in == 1 else tokens), mel, targets


def evaluate(model: torch.nn.Module, cfg: GPTConfig, tokenizer: dict, examples: list[Example],
             device: torch.device) -> dict:
    """Token-weighted scores of ``examples`` exactly as ``audiotok score`` computes them."""
    if not examples:
        return {}
    was_training = model.training
    records = score_examples(model, cfg, tokenizer, examples, device)
    model.train(was_training)
    return corpus_summary(records)


def score_examples(model: torch.nn.Module, cfg: GPTConfig, tokenizer: dict, examples: list[Example],
                   device: torch.device, rows: int = 8) -> list[dict]:
    """Per-file score records of ``examples`` (``audiotok score``'s windows and fields)."""
    scorer = GPTScorer(LMCheckpoint(model, cfg, tokenizer, {}), device)
    items = [(e.input_codes(cfg.n_codebooks), e.features(cfg.features)) for e in examples]
    scores = WindowScorer(scorer, rows=rows).score(items)
    return [{"status": "ok", "id": e.id, "duration": e.duration,
             **file_scores(fs, e.duration, tokenizer["frame_rate"])} for e, fs in zip(examples, scores)]


# Long on purpose: builds the model, its resume state and the two callbacks run_steps calls; the
# loop itself is train/loop.py's (docs/design.md, "Long signatures and long functions").
def train(arch: str, size: str, examples: list[Example], tokenizer: dict, out: str | os.PathLike,
          tcfg: TrainConfig, context: int = 256, device: torch.device | None = None, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True, stop_after: int | None = None,
          model_options: dict | None = None, val_examples: list[Example] | None = None) -> LMCheckpoint:
    """Train (or resume) a model and write its checkpoint to ``out``; returns the final checkpoint.

    ``stop_after``: leave after that many steps of this run, with a checkpoint to ``resume`` from
    (time-sliced jobs); the schedule still runs to ``tcfg.steps``. ``model_options``: extra
    ``GPTConfig.make`` arguments (``fusion``, ``mel_lag``, ``n_codebooks``, ``features`` /
    ``feature_dim``, ``shape``). ``val_examples``: a
    validation set chosen by the caller (then ``tcfg.val_fraction`` is not used). With
    ``tcfg.patience``, training stops after that many validations without a better validation NLL,
    and the checkpoint holds the weights of the best validation."""
    device = device or torch.device("cpu")
    dist = distributed(device)
    if val_examples is None:
        ids = [e.id for e in examples]
        train_ids, val_ids = split_by_file(ids, tcfg.val_fraction, tcfg.seed)
        by_id = {e.id: e for e in examples}
        train_set = [by_id[i] for i in train_ids]
        val_set = [by_id[i] for i in val_ids]
    else:
        train_set, val_set = list(examples), list(val_examples)
        train_ids, val_ids = [e.id for e in train_set], [e.id for e in val_set]

    # the vocabulary is the tokenizer's codebook size (BOS one past it)
    options = {"vocab": tokenizer_spec(tokenizer["codec"]).codebook_size, **(model_options or {})}
    cfg = GPTConfig.make(arch, size, context=context, **options)
    torch.manual_seed(tcfg.seed)
    model = build_gpt(cfg)
    start_step, history = 0, []
    opt_state = None
    if resume and os.path.exists(out):
        ck = load_checkpoint(out, arch, tokenizer)
        if ck.config.to_dict() != cfg.to_dict():
            raise UsageError(f"--resume: {out} holds a {ck.config.size} model with context {ck.config.context}; "
                             "pass the same --size and --context it was trained with")
        if ck.training.get("val_files") != val_ids:
            raise UsageError(f"--resume: the inputs, --val-fraction or --seed differ from the run that wrote {out}")
        model = ck.model
        start_step = int(ck.training.get("step", 0))
        history = list(ck.training.get("history", []))
        opt_state = ck.optimizer
    elif model.uses_mel:
        mean, std = mel_stats(train_set, cfg.features)
        model.mel_mean.copy_(mean)
        model.mel_std.copy_(std)
    model.to(device).train()

    opt = adamw(model.parameters(), lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    net = dist.wrap(model, device)

    for e in (*train_set, *val_set):
        try:
            e.input_codes(cfg.n_codebooks)
        except ValueError as exc:
            raise UsageError(f"{exc}; give encode outputs or audio at that bandwidth (delete an older feature "
                             "cache so that it is rebuilt with every codebook)") from None
    sampler = TokenCropSampler(train_set, context, model.uses_mel, cfg.mel_lag, cfg.n_codebooks, cfg.features,
                               cfg.feature_fill, cfg.bos)
    train_tokens = sum(len(e.tokens) for e in train_set)
    steps_per_epoch = max(1, math.ceil(train_tokens / (tcfg.batch_size * dist.world * context)))
    eval_every = tcfg.eval_every or steps_per_epoch
    training = {"step": start_step, "steps": tcfg.steps, "train_config": asdict(tcfg), "context": context,
                "world_size": dist.world, "train_files": train_ids, "val_files": val_ids,
                "steps_per_epoch": steps_per_epoch, "eval_every": eval_every, "history": history}
    stopper = _EarlyStop(tcfg.patience if val_set else None)

    def save(step: int) -> None:
        if dist.rank == 0:
            training["step"] = step
            save_checkpoint(out, model, cfg, tokenizer, training, opt.state_dict())

    def step_loss(step: int, gen: torch.Generator):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # dropout
        tokens, mel, targets = sampler.sample(tcfg.batch_size, gen)
        logits = net(tokens.to(device), mel.to(device) if mel is not None else None)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1),
                                   ignore_index=-100, reduction="sum")
        stat = dist.sum_(torch.tensor([loss_sum.item(), float(int((targets != -100).sum()))]))
        # mean over every token of every rank (DDP averages gradients over ranks)
        return loss_sum / max(1.0, float(stat[1]) / dist.world), float(stat[0]), int(stat[1])

    def validate(step: int, train_nll: float) -> bool:
        epoch = math.ceil(step / steps_per_epoch)
        entry = {"epoch": epoch, "step": step, "train_nll": train_nll}
        early = False
        if dist.rank == 0:
            val = evaluate(model, cfg, tokenizer, val_set, device)
            if val:
                entry.update(val_nll=val["nll"], val_accuracy=val["accuracy"], val_perplexity=val["perplexity"])
                early = stopper.update(val["nll"], step, model)
            history.append(entry)
            msg = f"epoch {epoch} (step {step}/{tcfg.steps}): train nll {entry['train_nll']:.4f}"
            if val:
                msg += f", val nll {val['nll']:.4f} (ppl {val['perplexity']:.2f}, acc {val['accuracy']:.3f})"
            bar.log(msg)
            if not early:
                save(step)
        early = dist.broadcast_flag(early)
        dist.barrier()
        return early

    if dist.rank == 0:
        log(f"{arch} {size}: {sum(p.numel() for p in model.parameters()):,} parameters; "
            f"{plural(len(train_set), 'training file')} ({train_tokens:,} tokens), "
            f"{plural(len(val_set), 'validation file')}; "
            f"{steps_per_epoch} steps per epoch; steps {start_step}..{tcfg.steps}")
    bar = ProgressBar(tcfg.steps, start_step, enabled=progress and dist.rank == 0)
    with bar:
        last = run_steps(start=start_step, steps=tcfg.steps, seed=tcfg.seed, rank=dist.rank, opt=opt,
                         lr_of=lambda step: lr_at(step, tcfg), step_loss=step_loss, clip=tcfg.clip,
                         clip_params=list(model.parameters()), bar=bar, eval_due=lambda s: s % eval_every == 0,
                         validate=validate, stop_after=stop_after)
    if stopper.best_state is not None and dist.rank == 0:
        model.load_state_dict(stopper.best_state)
        training["early_stopping"] = {"best_step": stopper.best_step, "best_val_nll": stopper.best,
                                      "stopped_at": last, "patience": tcfg.patience}
        bar.log(f"early stopping: validation NLL best at step {stopper.best_step} ({stopper.best:.4f}); "
                "the checkpoint holds those weights")
        save(last)
    if start_step >= tcfg.steps:
        save(start_step)
    dist.barrier()
    model.eval()
    return LMCheckpoint(model, cfg, tokenizer, training, str(out))


class _EarlyStop:
    """Tracks the best validation NLL and its weights; ``update`` says when to stop."""

    def __init__(self, patience: int | None):
        self.patience = patience
        self.best, self.best_step, self.bad = math.inf, 0, 0
        self.best_state: dict | None = None

    def update(self, val_nll: float, step: int, model: torch.nn.Module) -> bool:
        if self.patience is None:
            return False
        if val_nll < self.best:
            self.best, self.best_step, self.bad = val_nll, step, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience
