"""Training EnCodecMAE (``audiotok train mae``; the step loop is ``loop.py``'s): masked prediction of the EnCodec codes
(stage 1) or of k-means cluster ids of a teacher's last-layer x0 stream (stage 2, self-training).

Random crops of ``crop_seconds`` (aligned to the codec's 320-sample frames, so a crop's targets are
a slice of its file's codes), time-gap masks, AdamW (betas 0.9/0.95). Two optimiser presets:
``audiotok`` (weight decay 0.05 on matrices, linear warmup then cosine decay, gradient clipping at
1.0) and ``reference`` (the reference's: weight decay 0.05 on every parameter, constant lr, no
warmup, no clipping); two inits: ``torch`` (PyTorch's defaults) and ``reference`` (Xavier-uniform,
zero biases). Every validation also scores the pretext baselines on the same masked frames
(unigram cross-entropy and accuracy, copy-nearest-visible accuracy). Crops and masks are drawn
from generators seeded by (seed, rank, step), so a resumed run continues exactly where it stopped.
Under torchrun the model is wrapped in DistributedDataParallel (gloo on CPU); rank 0 validates and
writes checkpoints (atomically) in the official v2 layout with the training state beside it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..embedders.encodecmae import EC_CODEC, SAMPLE_RATE, EncodecMAE
from ..errors import UsageError, WeightsError
from ..lm.names import MAE_INITS as INITS
from ..lm.names import MAE_OPTIMIZERS as OPTIMIZERS
from .loop import ProgressBar, StepConfig, adamw, distributed, run_steps, split_by_file
from .mae_net import (
    IMPORTS,
    MaeTrainer,
    MaeTrainSpec,
    gin_config,
    mae_loss,
    nearest_centroid,
    teacher_frames,
    time_gap_mask,
)

HOP = EC_CODEC.hop  # samples per frame of the target codec (EnCodec 24 kHz: 320, 75 Hz)
FORMAT = "audiotok-encodecmae-train"
LEARNED_CE_MARGIN = 0.3  # a run has learned when stream 0's masked CE is this far below the unigram's
LEARNED_ACC_MARGIN = 0.05  # ... and its masked accuracy this far above the better baseline


@dataclass
class MaeExample:
    """One file: mono 24 kHz audio as int16 ``[N]`` and its EnCodec 6 kbps codes ``[8, frames]``."""

    id: str
    audio: np.ndarray
    codes: np.ndarray


@dataclass
class MaeTrainConfig(StepConfig):
    lr: float = 1e-4
    weight_decay: float = 0.05
    crop_seconds: float = 4.0
    mask_ratio: float = 0.5
    span: int = 15
    eval_every: int = 500
    val_crops: int = 64
    optimizer: str = "audiotok"  # "audiotok" or "reference" (OPTIMIZERS)
    init: str = "torch"  # "torch" or "reference" (INITS)
    keep_steps: tuple[int, ...] = ()  # also keep a copy of the checkpoint at these steps (0: untrained)

    def warmup_steps(self) -> int:
        return 0 if self.optimizer == "reference" else super().warmup_steps()

    def clip_norm(self) -> float | None:
        """Gradient clipping (None: none, as the reference)."""
        return None if self.optimizer == "reference" else self.clip

    @property
    def crop_samples(self) -> int:
        return max(HOP, int(round(self.crop_seconds * SAMPLE_RATE / HOP)) * HOP)


@dataclass
class SelfTraining:
    """Stage 2: the teacher network, the k-means centroids of its last-layer frames (the targets),
    and the teacher checkpoint's full state_dict (v2 key names), which the student starts from."""

    teacher: EncodecMAE
    centroids: torch.Tensor  # [clusters, teacher dim]
    teacher_path: str
    teacher_state: dict | None = None


def make_optimizer(model: torch.nn.Module, tcfg: MaeTrainConfig):
    """AdamW over the trainable parameters and the learning rate of each step (``lr_at(step)``).

    ``reference``: one group, weight decay on every parameter, constant ``lr`` (the reference
    trains with ``AdamW(model.parameters(), lr, betas=(0.9, 0.95), weight_decay=0.05)`` and no
    scheduler). ``audiotok``: no decay on biases, norms and scales; warmup then cosine decay."""
    if tcfg.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer {tcfg.optimizer!r} is not valid; choose {' or '.join(OPTIMIZERS)}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(trainable, lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay,
                decay_vectors=tcfg.optimizer == "reference")
    if tcfg.optimizer == "reference":
        return opt, lambda step: tcfg.lr
    return opt, tcfg.lr_at


# --- batches -----------------------------------------------------------------------------------
class AudioCropSampler:
    """Random crops (files drawn in proportion to their length), start on a codec frame boundary."""

    def __init__(self, examples: list[MaeExample], crop: int):
        self.examples, self.crop = examples, crop
        lengths = np.array([max(1, e.audio.shape[0]) for e in examples], dtype=np.float64)
        self.weights = torch.from_numpy(lengths / lengths.sum())

    def sample(self, batch: int, gen: torch.Generator) -> list[tuple[int, int]]:
        files = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        out = []
        for f in files:
            n = self.examples[f].audio.shape[0]
            last = max(0, (n - self.crop) // HOP)
            out.append((f, HOP * int(torch.randint(0, last + 1, (1,), generator=gen))))
        return out


def make_batch(examples: list[MaeExample], picks: list[tuple[int, int]], crop: int, model: MaeTrainer,
               device: torch.device, gen: torch.Generator, tcfg: MaeTrainConfig,
               self_training: SelfTraining | None):
    """Features, lengths, mask and targets ``[B, T, streams]`` for crops ``(file, start)``."""
    B = len(picks)
    wave = torch.zeros(B, crop)
    ns = []
    for b, (f, start) in enumerate(picks):
        a = examples[f].audio[start:start + crop]
        wave[b, : a.shape[0]] = torch.from_numpy(a.astype(np.float32) / 32768.0)
        ns.append(a.shape[0])
    wave = wave.to(device)
    feats = model.features(wave)
    T = feats.shape[1]
    lengths = [min(T, model.frames_for(n), -(-n // HOP)) for n in ns]
    if self_training is None:
        targets = torch.zeros(B, T, model.spec.n_targets, dtype=torch.long)
        for b, (f, start) in enumerate(picks):
            c = examples[f].codes[: model.spec.n_targets, start // HOP: start // HOP + lengths[b]]
            lengths[b] = min(lengths[b], c.shape[1])
            targets[b, : c.shape[1]] = torch.from_numpy(c.T.astype(np.int64))
    else:
        tlen = torch.tensor([self_training.teacher.cfg.frames(n) for n in ns])
        frames = teacher_frames(self_training.teacher, wave, tlen)
        ids = nearest_centroid(frames, self_training.centroids).cpu()  # [B, T']
        targets = torch.zeros(B, T, 1, dtype=torch.long)
        Tt = min(T, ids.shape[1])
        targets[:, :Tt, 0] = ids[:, :Tt]
        lengths = [min(n, Tt, int(t)) for n, t in zip(lengths, tlen)]
    mask = time_gap_mask(lengths, T, gen, tcfg.mask_ratio, tcfg.span)
    return feats, torch.tensor(lengths), mask, targets.to(device)


# --- self-training: k-means on a teacher ---------------------------------------------------------
def fit_centroids(teacher: EncodecMAE, examples: list[MaeExample], clusters: int, crop: int, seed: int,
                  frames_wanted: int | None = None, log: Callable[[str], None] = print) -> torch.Tensor:
    """k-means (scikit-learn's mini-batch k-means, seeded) on teacher x0 frames of random crops."""
    from sklearn.cluster import MiniBatchKMeans

    wanted = frames_wanted or max(20 * clusters, 10000)
    sampler = AudioCropSampler(examples, crop)
    gen = torch.Generator().manual_seed(seed + 7919)
    rows, total = [], 0
    while total < wanted:
        picks = sampler.sample(8, gen)
        wave = torch.zeros(len(picks), crop)
        ns = []
        for b, (f, start) in enumerate(picks):
            a = examples[f].audio[start:start + crop]
            wave[b, : a.shape[0]] = torch.from_numpy(a.astype(np.float32) / 32768.0)
            ns.append(a.shape[0])
        lens = torch.tensor([teacher.cfg.frames(n) for n in ns])
        frames = teacher_frames(teacher, wave, lens)
        for b, t in enumerate(lens.tolist()):
            rows.append(frames[b, :t].float().numpy())
            total += t
        if len(rows) > 100000:
            break
    data = np.concatenate(rows)[:wanted]
    if data.shape[0] < clusters:
        raise UsageError(f"--clusters {clusters} is more than the {data.shape[0]} teacher frames the training "
                         "audio gives; use fewer clusters or more audio")
    log(f"k-means: {clusters} clusters on {data.shape[0]:,} teacher frames")
    km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=3, batch_size=4096, max_iter=100)
    km.fit(data)
    return torch.from_numpy(km.cluster_centers_.astype(np.float32))


# --- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: MaeTrainer, training: dict, optimizer: dict | None,
                    centroids: torch.Tensor | None = None) -> Path:
    """The official v2 layout (``state_dict``, ``config``, ``imports``) plus ``audiotok`` (training
    state: spec, step, history, optimizer) and, after self-training, ``centroids``; atomic."""
    from ..files import atomic_write

    blob = {"state_dict": model.v2_state(), "config": gin_config(model.spec, training["train_config"]["lr"], training["train_config"]["crop_seconds"]), "imports": IMPORTS,
            "audiotok": {"format": FORMAT, "spec": model.spec.to_dict(), "training": training,
                         "optimizer": optimizer}}
    if centroids is not None:
        blob["centroids"] = centroids.detach().cpu()
    buf = io.BytesIO()
    torch.save(blob, buf)
    path = Path(path)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))
    return path


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by ``save_checkpoint`` (weights only), with its training state."""
    from ..weights import load_torch_file

    blob = load_torch_file(path, "train mae checkpoint")
    if not isinstance(blob, dict) or not isinstance(blob.get("audiotok"), dict) or blob["audiotok"].get("format") != FORMAT:
        raise WeightsError(f"{path} was not written by `audiotok train mae`, so it cannot be resumed")
    return blob


# --- validation --------------------------------------------------------------------------------
def validation_crops(examples: list[MaeExample], crop: int, limit: int) -> list[tuple[int, int]]:
    """Fixed crops of ``examples``, up to ``limit``: consecutive crops of each file, round robin;
    when a round has more files than crops left, the crops go to files spread evenly over the
    list (before, the first files took them all: with inputs sorted by folder, 64 crops of 1152
    files came from one folder, the drums, and measured nothing else)."""
    per_file = [[(i, s) for s in range(0, max(1, e.audio.shape[0] - crop + 1), crop)] for i, e in enumerate(examples)]
    out = []
    depth = 0
    while len(out) < limit and any(depth < len(p) for p in per_file):
        round_ = [p[depth] for p in per_file if depth < len(p)]
        need = limit - len(out)
        if len(round_) > need:
            round_ = [round_[int(i)] for i in np.linspace(0, len(round_) - 1, need).round()]
        out += round_
        depth += 1
    return out


def target_counts(model: MaeTrainer, examples: list[MaeExample], tcfg: MaeTrainConfig, device: torch.device,
                  self_training: SelfTraining | None) -> torch.Tensor:
    """How often each target class occurs in the training data ``[streams, classes]`` (int64): every
    frame of every training file's codes; for self-training, the k-means ids of fixed crops of the
    training files (up to ``val_crops`` of them)."""
    Q, K = model.spec.n_targets, model.spec.target_classes
    counts = torch.zeros(Q, K, dtype=torch.long)
    if self_training is None:
        for e in examples:
            c = torch.from_numpy(e.codes[:Q].astype(np.int64))
            counts += torch.stack([torch.bincount(c[q], minlength=K)[:K] for q in range(Q)])
        return counts
    crops = validation_crops(examples, tcfg.crop_samples, tcfg.val_crops)
    gen = torch.Generator().manual_seed(tcfg.seed + 15485863)
    for i in range(0, len(crops), tcfg.batch_size):
        _, lengths, _, targets = make_batch(examples, crops[i:i + tcfg.batch_size], tcfg.crop_samples, model,
                                            device, gen, tcfg, self_training)
        valid = torch.arange(targets.shape[1])[None] < lengths[:, None]
        counts[0] += torch.bincount(targets[..., 0].cpu()[valid], minlength=K)[:K]
    return counts


def target_usage(counts: torch.Tensor) -> list[dict]:
    """Per stream: classes used, their entropy (nats) and perplexity, from ``target_counts``."""
    out = []
    for q, c in enumerate(counts.double()):
        p = c[c > 0] / c.sum().clamp(min=1)
        h = float(-(p * p.log()).sum())
        out.append({"stream": q, "used": int((c > 0).sum()), "classes": int(c.numel()), "entropy": h,
                    "perplexity": math.exp(h)})
    return out


def report_usage(usage: list[dict], log: Callable[[str], None], kmeans: bool) -> None:
    """Log the targets' class usage; a loud warning for a stream using under half its classes."""
    what = "k-means ids" if kmeans else "codebook"
    log("targets on the training audio: " + "; ".join(
        f"{what} {u['stream']}: {u['used']}/{u['classes']} used, entropy {u['entropy']:.2f} nats" for u in usage))
    for u in usage:
        if u["used"] < u["classes"] / 2:
            log(f"WARNING: {what} {u['stream']} uses only {u['used']} of its {u['classes']} classes on the training "
                f"audio (entropy {u['entropy']:.2f} nats): its targets carry little information. With a codec "
                "whose codebooks were not fitted to audio like this (e.g. random weights), fit them to the "
                "training audio first (audiotok.testing.fit_encodec), or give more varied audio.")


def unigram_logp(counts: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the unigram baseline, add-1/2 smoothed ``[streams, classes]``."""
    c = counts.double() + 0.5
    return (c / c.sum(1, keepdim=True)).log()


def nearest_visible(valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For every frame, the index of the nearest valid visible frame of its crop (the earlier one on
    ties; itself when visible) ``[B, T]``; -1 for a crop without visible frames."""
    B, T = mask.shape
    out = torch.full((B, T), -1, dtype=torch.long)
    t = torch.arange(T)
    for b in range(B):
        vis = torch.nonzero(valid[b] & ~mask[b])[:, 0]
        if vis.numel():
            d = (t[:, None] - vis[None]).abs()  # [T, V]; argmin takes the first (earlier) on ties
            out[b] = vis[d.argmin(1)]
    return out


class PretextScores:
    """Sums over masked frames: the model's cross-entropy and hits per stream, and those of the
    unigram baseline (the training data's class frequencies) and of copying the target of the
    nearest visible frame."""

    def __init__(self, logp: torch.Tensor):
        self.logp = logp
        self.guess = logp.argmax(1)
        Q = logp.shape[0]
        self.n = 0
        self.model_ce, self.model_hit = torch.zeros(Q, dtype=torch.float64), torch.zeros(Q, dtype=torch.long)
        self.uni_ce, self.uni_hit = torch.zeros(Q, dtype=torch.float64), torch.zeros(Q, dtype=torch.long)
        self.copy_hit = torch.zeros(Q, dtype=torch.long)

    def add(self, stats: dict, targets: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> None:
        targets, mask = targets.cpu(), mask.cpu()
        valid = torch.arange(targets.shape[1])[None] < lengths.cpu()[:, None]
        m = valid & mask
        tm = targets[m]  # [M, Q]
        Q = tm.shape[1]
        self.n += int(m.sum())
        self.model_ce += stats["masked_ce"]
        self.model_hit += stats["correct"]
        self.uni_ce -= self.logp[torch.arange(Q)[None], tm].sum(0)
        self.uni_hit += (tm == self.guess[None]).sum(0)
        src = nearest_visible(valid, mask)
        b_idx = torch.arange(targets.shape[0])[:, None].expand_as(src)
        copied = targets[b_idx, src.clamp(min=0)][m]  # [M, Q]
        self.copy_hit += ((copied == tm) & (src[m] >= 0)[:, None]).sum(0)

    def result(self) -> dict:
        n = max(1, self.n)
        out = {"val_masked_ce": (self.model_ce / n).tolist(), "val_masked_accuracy": (self.model_hit.double() / n).tolist(),
               "baseline_unigram_ce": (self.uni_ce / n).tolist(),
               "baseline_unigram_accuracy": (self.uni_hit.double() / n).tolist(),
               "baseline_copy_accuracy": (self.copy_hit.double() / n).tolist()}
        best = max(out["baseline_unigram_accuracy"][0], out["baseline_copy_accuracy"][0])
        out["learned"] = bool(out["val_masked_ce"][0] <= out["baseline_unigram_ce"][0] - LEARNED_CE_MARGIN
                              and out["val_masked_accuracy"][0] >= best + LEARNED_ACC_MARGIN)
        return out


@torch.no_grad()
def evaluate(model: MaeTrainer, examples: list[MaeExample], tcfg: MaeTrainConfig, device: torch.device,
             self_training: SelfTraining | None, counts: torch.Tensor | None = None) -> dict:
    """Loss, masked-frame cross-entropy and accuracy per target stream on fixed crops and fixed
    masks, and the pretext baselines on the same masked frames (``counts``: the training data's
    class counts for the unigram; ``target_counts``)."""
    if not examples:
        return {}
    was = model.training
    model.eval()
    crops = validation_crops(examples, tcfg.crop_samples, tcfg.val_crops)
    gen = torch.Generator().manual_seed(tcfg.seed + 104729)
    total, weight = 0.0, 0
    if counts is None:
        counts = torch.zeros(model.spec.n_targets, model.spec.target_classes, dtype=torch.long)
    scores = PretextScores(unigram_logp(counts))
    for i in range(0, len(crops), tcfg.batch_size):
        feats, lengths, mask, targets = make_batch(examples, crops[i:i + tcfg.batch_size], tcfg.crop_samples,
                                                   model, device, gen, tcfg, self_training)
        loss, st = mae_loss(model(feats, lengths, mask), targets, lengths, mask, model.spec.weights)
        n = len(lengths)
        total += float(loss) * n
        weight += n
        scores.add(st, targets, lengths, mask)
    model.train(was)
    return {"val_loss": total / max(1, weight), **scores.result()}


def format_validation(entry: dict) -> str:
    """One validation's numbers as log lines: the losses, then per stream the model's masked
    cross-entropy and accuracy against the baselines."""
    lines = [f"val loss {entry['val_loss']:.4f}; masked frames, per stream: model CE / unigram CE, "
             "model acc / unigram acc / copy-nearest-visible acc"]
    for q, (ce, uce, acc, uacc, cacc) in enumerate(zip(entry["val_masked_ce"], entry["baseline_unigram_ce"],
                                                       entry["val_masked_accuracy"], entry["baseline_unigram_accuracy"],
                                                       entry["baseline_copy_accuracy"])):
        lines.append(f"  {q}: CE {ce:.3f} / {uce:.3f}, acc {acc:.3f} / {uacc:.3f} / {cacc:.3f}")
    lines.append("  stream 0 " + ("beats" if entry["learned"] else "does not yet beat") + " the baselines "
                 f"(CE >= {LEARNED_CE_MARGIN} nats below unigram and accuracy >= {LEARNED_ACC_MARGIN * 100:.0f} "
                 "points above the better baseline)")
    return "\n".join(lines)


# --- the loop ----------------------------------------------------------------------------------
# Long on purpose: builds the model, its resume state and the two callbacks run_steps calls; the
# loop itself is train/loop.py's (docs/design.md, "Long signatures and long functions").
def train(examples: list[MaeExample], out: str | os.PathLike, spec: MaeTrainSpec, tcfg: MaeTrainConfig,
          codec_encoder_state: dict | None = None, codec_info: dict | None = None,
          self_training: SelfTraining | None = None, device: torch.device | None = None, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True, stop_after: int | None = None) -> MaeTrainer:
    """Train (or resume) an EnCodecMAE and write its checkpoint to ``out``; returns the model.

    ``stop_after``: leave after that many steps of this run, with a checkpoint to ``resume`` from."""
    device = device or torch.device("cpu")
    dist = distributed(device)
    train_ids, val_ids = split_by_file([e.id for e in examples], tcfg.val_fraction, tcfg.seed)
    by_id = {e.id: e for e in examples}
    train_set = [by_id[i] for i in train_ids]
    val_set = [by_id[i] for i in val_ids]

    if tcfg.init not in INITS:
        raise UsageError(f"--init {tcfg.init!r} is not valid; choose {' or '.join(INITS)}")
    torch.manual_seed(tcfg.seed)
    model = MaeTrainer(spec, codec_encoder_state)
    if tcfg.init == "reference":
        model.reference_init()
    start_step, history, opt_state = 0, [], None
    if resume and os.path.exists(out):
        blob = read_training_checkpoint(out)
        saved = blob["audiotok"]
        if saved["spec"] != spec.to_dict():
            raise UsageError(f"--resume: {out} holds a {saved['spec']['size']} {saved['spec']['frontend']} model with "
                             f"{saved['spec']['n_targets']} target stream(s); pass the options it was trained with")
        if saved["training"].get("val_files") != val_ids:
            raise UsageError(f"--resume: the inputs, --val-fraction or --seed differ from the run that wrote {out}")
        was = saved["training"].get("train_config", {}).get("optimizer", "audiotok")
        if was != tcfg.optimizer:
            raise UsageError(f"--resume: {out} was trained with --optimizer {was}; pass the same")
        model.load_v2_state(blob["state_dict"])
        start_step = int(saved["training"]["step"])
        history = list(saved["training"].get("history", []))
        opt_state = saved["optimizer"]
        if self_training is not None and not torch.equal(blob.get("centroids", torch.empty(0)), self_training.centroids):
            raise UsageError(f"--resume: the k-means centroids differ from those saved in {out}")
    elif self_training is not None and self_training.teacher_state is not None:
        loaded, skipped = start_from_teacher(model, self_training.teacher_state)
        if dist.rank == 0:
            log(f"the student starts from the teacher's weights: {len(loaded)} tensors loaded, "
                f"{len(skipped)} kept from the init ({', '.join(skipped) or 'none'}: not in the teacher or of another shape)")
    model.to(device).train()

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt, lr_of = make_optimizer(model, tcfg)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    clip = tcfg.clip_norm()
    net = dist.wrap(model, device)

    crop = tcfg.crop_samples
    sampler = AudioCropSampler(train_set, crop)
    training = {"step": start_step, "steps": tcfg.steps, "train_config": asdict(tcfg), "world_size": dist.world,
                "train_files": train_ids, "val_files": val_ids, "history": history, "codec": codec_info,
                "targets": "kmeans" if self_training else "encodec",
                "teacher": self_training.teacher_path if self_training else None}
    centroids = self_training.centroids if self_training else None
    keep = set(tcfg.keep_steps)

    def save(step: int) -> None:
        if dist.rank == 0:
            training["step"] = step
            save_checkpoint(out, model, training, opt.state_dict(), centroids)
            if step in keep:
                copy_checkpoint(out, kept_checkpoint_path(out, step))

    counts = None
    if dist.rank == 0:
        n_params = sum(p.numel() for _, p in trainable)
        hours = sum(e.audio.shape[0] for e in train_set) / SAMPLE_RATE / 3600
        log(f"EnCodecMAE {spec.size} ({spec.frontend}): {n_params:,} trainable parameters; {len(train_set)} training "
            f"files ({hours:.2f} h), {len(val_set)} validation files; steps {start_step}..{tcfg.steps}; "
            f"optimizer {tcfg.optimizer}, init {tcfg.init}, lr {tcfg.lr:g}")
        counts = target_counts(model, train_set, tcfg, device, self_training)
        training["target_usage"] = target_usage(counts)
        report_usage(training["target_usage"], log, self_training is not None)
    bar = ProgressBar(tcfg.steps, start_step, enabled=progress and dist.rank == 0, metric="loss")

    def validate(step: int, train_loss: float | None) -> bool:
        if dist.rank == 0:
            entry = {"step": step, "train_loss": train_loss}
            entry.update(evaluate(model, val_set, tcfg, device, self_training, counts))
            history.append(entry)
            msg = f"step {step}/{tcfg.steps}: train loss " + ("-" if train_loss is None else f"{train_loss:.4f}")
            if "val_loss" in entry:
                msg += "; " + format_validation(entry)
            bar.log(msg) if progress else log(msg)
            save(step)
        dist.barrier()
        return False

    def step_loss(step: int, gen: torch.Generator):
        picks = sampler.sample(tcfg.batch_size, gen)
        feats, lengths, mask, targets = make_batch(train_set, picks, crop, model, device, gen, tcfg, self_training)
        loss, _ = mae_loss(net(feats, lengths, mask), targets, lengths, mask, spec.weights)
        mean = dist.sum_(torch.tensor([float(loss.detach())])) / dist.world  # the mean over ranks, reported
        return loss, float(mean[0]), 1

    with bar:
        if start_step == 0 and 0 in keep:
            validate(0, None)  # the untrained model (and its baselines)
        run_steps(start=start_step, steps=tcfg.steps, seed=tcfg.seed, rank=dist.rank, opt=opt, lr_of=lr_of,
                  step_loss=step_loss, clip=clip, clip_params=[p for _, p in trainable], bar=bar,
                  eval_due=lambda s: s % tcfg.eval_every == 0 or s in keep, validate=validate, stop_after=stop_after)
    if start_step >= tcfg.steps:
        save(start_step)
    dist.barrier()
    return model.eval()


def kept_checkpoint_path(out: str | os.PathLike, step: int) -> Path:
    """Where ``--keep-steps`` keeps the checkpoint of ``step``: ``mae.pt`` -> ``mae.step2000.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.step{step}{out.suffix}")


def copy_checkpoint(src: Path, dst: Path) -> None:
    from ..files import atomic_write

    data = Path(src).read_bytes()
    atomic_write(Path(dst), lambda f: f.write(data))


def start_from_teacher(model: MaeTrainer, teacher_state: dict) -> tuple[list[str], list[str]]:
    """Load every tensor of the teacher's state_dict whose name and shape the student has (the
    reference's non-strict start of self-training); returns (loaded, skipped) key names."""
    mine = model.v2_state()
    loaded, skipped = [], []
    for k, v in mine.items():
        t = teacher_state.get(k)
        if isinstance(t, torch.Tensor) and t.shape == v.shape:
            mine[k] = t.to(v.dtype)
            loaded.append(k)
        else:
            skipped.append(k)
    model.load_v2_state(mine)
    return loaded, skipped


def load_teacher(path: str | os.PathLike) -> tuple[EncodecMAE, dict]:
    """A teacher for self-training: any checkpoint ``audiotok embed`` reads (ours or official),
    as the inference network and its full state_dict (v2 key names) for the student's start."""
    from ..embedders.encodecmae import build_model, read_checkpoint
    from ..weights import resolve_encodecmae

    ckpt = read_checkpoint(resolve_encodecmae(str(path)))
    state = dict(ckpt.state)
    return build_model(ckpt), state
