"""Training loop for EnCodecMAE (``audiotok train mae``): masked prediction of the EnCodec codes
(stage 1) or of k-means cluster ids of a teacher's last-layer x0 stream (stage 2, self-training).

Random crops of ``crop_seconds`` (aligned to the codec's 320-sample frames, so a crop's targets are
a slice of its file's codes), time-gap masks, AdamW (betas 0.9/0.95, weight decay 0.05 on
matrices), linear warmup then cosine decay, gradient clipping at 1.0. Crops and masks are drawn
from generators seeded by (seed, rank, step), so a resumed run continues exactly where it stopped.
Under torchrun the model is wrapped in DistributedDataParallel (gloo on CPU); rank 0 validates and
writes checkpoints (atomically) in the official v2 layout with the training state beside it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..embedders.encodecmae import SAMPLE_RATE, EncodecMAE
from ..errors import UsageError, WeightsError
from .lm import _Bar, _step_generator, lr_at, split_by_file
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

HOP = 320  # samples per EnCodec frame (75 Hz)
FORMAT = "audiotok-encodecmae-train"


@dataclass
class MaeExample:
    """One file: mono 24 kHz audio as int16 ``[N]`` and its EnCodec 6 kbps codes ``[8, frames]``."""

    id: str
    audio: np.ndarray
    codes: np.ndarray


@dataclass
class MaeTrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    clip: float = 1.0
    warmup: int | None = None  # default: 5 % of the steps, at most 200
    min_lr_ratio: float = 0.1
    seed: int = 0
    val_fraction: float = 0.1
    crop_seconds: float = 4.0
    mask_ratio: float = 0.5
    span: int = 15
    eval_every: int = 500
    val_crops: int = 64

    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else max(1, min(200, self.steps // 20))

    @property
    def crop_samples(self) -> int:
        return max(HOP, int(round(self.crop_seconds * SAMPLE_RATE / HOP)) * HOP)


@dataclass
class SelfTraining:
    """Stage-2 targets: the teacher network and the k-means centroids of its last-layer x0 frames."""

    teacher: EncodecMAE
    centroids: torch.Tensor  # [clusters, teacher dim]
    teacher_path: str


# --- batches -----------------------------------------------------------------------------------
class CropSampler:
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
    sampler = CropSampler(examples, crop)
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
    """Fixed crops of the held-out files: consecutive crops of each file, round robin, up to ``limit``."""
    per_file = [[(i, s) for s in range(0, max(1, e.audio.shape[0] - crop + 1), crop)] for i, e in enumerate(examples)]
    out = []
    depth = 0
    while len(out) < limit and any(depth < len(p) for p in per_file):
        out += [p[depth] for p in per_file if depth < len(p)]
        depth += 1
    return out[:limit]


@torch.no_grad()
def evaluate(model: MaeTrainer, examples: list[MaeExample], tcfg: MaeTrainConfig, device: torch.device,
             self_training: SelfTraining | None) -> dict:
    """Loss and masked-frame accuracy per target stream on fixed crops and fixed masks."""
    if not examples:
        return {}
    was = model.training
    model.eval()
    crops = validation_crops(examples, tcfg.crop_samples, tcfg.val_crops)
    gen = torch.Generator().manual_seed(tcfg.seed + 104729)
    total, weight = 0.0, 0
    correct = torch.zeros(model.spec.n_targets, dtype=torch.long)
    masked = 0
    for i in range(0, len(crops), tcfg.batch_size):
        feats, lengths, mask, targets = make_batch(examples, crops[i:i + tcfg.batch_size], tcfg.crop_samples,
                                                   model, device, gen, tcfg, self_training)
        loss, st = mae_loss(model(feats, lengths, mask), targets, lengths, mask, model.spec.weights)
        n = len(lengths)
        total += float(loss) * n
        weight += n
        correct += st["correct"]
        masked += st["masked_frames"]
    model.train(was)
    acc = (correct.double() / max(1, masked)).tolist()
    return {"val_loss": total / max(1, weight), "val_masked_accuracy": acc}


# --- the loop ----------------------------------------------------------------------------------
def train(examples: list[MaeExample], out: str | os.PathLike, spec: MaeTrainSpec, tcfg: MaeTrainConfig,
          codec_encoder_state: dict | None = None, codec_info: dict | None = None,
          self_training: SelfTraining | None = None, device: torch.device | None = None, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True, stop_after: int | None = None) -> MaeTrainer:
    """Train (or resume) an EnCodecMAE and write its checkpoint to ``out``; returns the model.

    ``stop_after``: leave after that many steps of this run, with a checkpoint to ``resume`` from."""
    from ..engine.distributed import current_share

    share = current_share()
    device = device or torch.device("cpu")
    ddp = share.world > 1
    if ddp:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    train_ids, val_ids = split_by_file([e.id for e in examples], tcfg.val_fraction, tcfg.seed)
    by_id = {e.id: e for e in examples}
    train_set = [by_id[i] for i in train_ids]
    val_set = [by_id[i] for i in val_ids]

    torch.manual_seed(tcfg.seed)
    model = MaeTrainer(spec, codec_encoder_state)
    start_step, history, opt_state = 0, [], None
    if resume and os.path.exists(out):
        blob = read_training_checkpoint(out)
        saved = blob["audiotok"]
        if saved["spec"] != spec.to_dict():
            raise UsageError(f"--resume: {out} holds a {saved['spec']['size']} {saved['spec']['frontend']} model with "
                             f"{saved['spec']['n_targets']} target stream(s); pass the options it was trained with")
        if saved["training"].get("val_files") != val_ids:
            raise UsageError(f"--resume: the inputs, --val-fraction or --seed differ from the run that wrote {out}")
        model.load_v2_state(blob["state_dict"])
        start_step = int(saved["training"]["step"])
        history = list(saved["training"].get("history", []))
        opt_state = saved["optimizer"]
        if self_training is not None and not torch.equal(blob.get("centroids", torch.empty(0)), self_training.centroids):
            raise UsageError(f"--resume: the k-means centroids differ from those saved in {out}")
    model.to(device).train()

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.dim() >= 2]
    no_decay = [p for n, p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr, betas=tcfg.betas)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    crop = tcfg.crop_samples
    sampler = CropSampler(train_set, crop)
    training = {"step": start_step, "steps": tcfg.steps, "train_config": asdict(tcfg), "world_size": share.world,
                "train_files": train_ids, "val_files": val_ids, "history": history, "codec": codec_info,
                "targets": "kmeans" if self_training else "encodec",
                "teacher": self_training.teacher_path if self_training else None}
    centroids = self_training.centroids if self_training else None

    def save(step: int) -> None:
        if share.rank == 0:
            training["step"] = step
            save_checkpoint(out, model, training, opt.state_dict(), centroids)

    if share.rank == 0:
        n_params = sum(p.numel() for _, p in trainable)
        hours = sum(e.audio.shape[0] for e in train_set) / SAMPLE_RATE / 3600
        log(f"EnCodecMAE {spec.size} ({spec.frontend}): {n_params:,} trainable parameters; {len(train_set)} training "
            f"files ({hours:.2f} h), {len(val_set)} validation files; steps {start_step}..{tcfg.steps}")
    bar = _Bar(tcfg.steps, start_step, enabled=progress and share.rank == 0)
    run_loss, run_n = 0.0, 0
    with bar:
        for step in range(start_step, tcfg.steps):
            gen = _step_generator(tcfg.seed, share.rank, step)
            picks = sampler.sample(tcfg.batch_size, gen)
            feats, lengths, mask, targets = make_batch(train_set, picks, crop, model, device, gen, tcfg, self_training)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tcfg)
            loss, _ = mae_loss(net(feats, lengths, mask), targets, lengths, mask, spec.weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], tcfg.clip)
            opt.step()
            stat = torch.tensor([float(loss.detach())])
            if ddp:
                import torch.distributed as dist

                dist.all_reduce(stat)
                stat /= share.world
            run_loss += float(stat[0])
            run_n += 1
            bar.update(step + 1, run_loss / run_n, lr_at(step, tcfg))
            last = step + 1 == tcfg.steps
            stop = stop_after is not None and step + 1 - start_step >= stop_after
            if (step + 1) % tcfg.eval_every == 0 or last or stop:
                entry = {"step": step + 1, "train_loss": run_loss / run_n}
                if share.rank == 0:
                    entry.update(evaluate(model, val_set, tcfg, device, self_training))
                    history.append(entry)
                    msg = f"step {step + 1}/{tcfg.steps}: train loss {entry['train_loss']:.4f}"
                    if "val_loss" in entry:
                        accs = " ".join(f"{a:.3f}" for a in entry["val_masked_accuracy"])
                        msg += f", val loss {entry['val_loss']:.4f}, masked accuracy per stream {accs}"
                    bar.log(msg)
                    save(step + 1)
                run_loss, run_n = 0.0, 0
                if ddp:
                    import torch.distributed as dist

                    dist.barrier()
            if stop:
                break
    if start_step >= tcfg.steps:
        save(start_step)
    if ddp:
        import torch.distributed as dist

        dist.barrier()
    return model.eval()


def load_teacher(path: str | os.PathLike) -> EncodecMAE:
    """A teacher for self-training: any checkpoint ``audiotok embed`` reads (ours or official)."""
    from ..embedders.encodecmae import load_mae
    from ..weights import resolve_encodecmae

    return load_mae(resolve_encodecmae(str(path)))

