"""Train an audio LM (Whisper-GPT, the token-only GPT or the information control) on audio files or
``encode`` outputs; the work behind ``audiotok train lm``.

    from audiotok import train_lm

    result = train_lm(["data/"], "wgpt.pt", arch="whisper-gpt", size="tiny", steps=2000)
    result.checkpoint, result.failed, result.training["history"][-1]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.devices import Runtime
from ..engine.runner import as_inputs, eprint
from ..errors import UsageError


@dataclass
class TrainResult:
    checkpoint: Path
    failed: list[tuple[str, str]]  # (input, reason) of the inputs left out of training
    training: dict = field(default_factory=dict)  # the checkpoint's training record (split, history)

    @property
    def status(self) -> int:
        """The command's exit status: 0, or 1 when some inputs failed and were left out."""
        return 1 if self.failed else 0


def check_train_options(out: Path, arch: str, size: str, resume: bool, patience: int | None, steps: int,
                        batch_size: int, context: int, lr: float, val_fraction: float) -> None:
    """Option errors, before torch is imported."""
    from ..lm.names import ARCHS, SIZES

    if arch not in ARCHS:
        raise UsageError(f"--arch {arch!r} is not valid; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise UsageError(f"--size {size!r} is not valid; choose one of {', '.join(SIZES)}")
    for name, value, least in (("--steps", steps, 1), ("--batch-size", batch_size, 1), ("--context", context, 2)):
        if value < least:
            raise UsageError(f"{name} {value} is not valid; give {least} or more")
    if lr < 0:
        raise UsageError(f"--lr {lr:g} is not valid; give 0 or more")
    if not 0.0 <= val_fraction <= 0.9:
        raise UsageError(f"--val-fraction {val_fraction:g} is not valid; give a fraction from 0 to 0.9")
    if out.suffix.lower() in (".wav", ".flac", ".npz", ".npy") or out.is_dir():
        raise UsageError(f"-o {out} must be a checkpoint file path (e.g. model.pt)")
    if resume and not out.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {out} yet; run without --resume first")
    if not resume and out.exists():
        raise UsageError(f"{out} exists; pass --resume to continue it or choose another -o")
    if resume and patience is not None:
        raise UsageError("--patience keeps the best weights in memory and cannot --resume; run it in one go")


# One keyword per `train lm` option, so the API and the CLI stay one-to-one (docs/design.md).
def train_lm(inputs, out: str | Path, *, arch: str = "whisper-gpt", size: str = "micro", steps: int = 1000,
             batch_size: int = 16, context: int = 256, lr: float = 3e-4, seed: int = 0, val_fraction: float = 0.1,
             resume: bool = False, patience: int | None = None, eval_every: int | None = None,
             codec: str | None = None, codec_checkpoint: str | Path | None = None, bandwidth: float | None = None,
             n_q: int | None = None, cache: str | Path | None = None,
             ext=None, exclude=None, device: str = "auto", threads: int | None = None, batch_seconds: float = 60.0,
             workers: int = 1, progress: bool = False, log: Callable[[str], None] = eprint) -> TrainResult:
    """Train (or ``resume``) an LM on ``inputs`` (audio files, directories, globs, ``-``; ``.npz``
    files written by ``encode`` are read instead of tokenised) and write its checkpoint to ``out``
    (atomically, at every validation). Audio is tokenised and featurised once into ``cache``
    (default: ``OUT.cache`` beside the checkpoint). Options are checked before torch is imported;
    messages go to ``log``. Inputs that fail are left out and listed in ``result.failed``; a
    ``UsageError`` when none is usable. Under torchrun each process trains on its share (DDP).
    ``codec``: the registered codec that tokenises (default ``encodec_24khz``; the vocabulary is its
    codebook size, the mel follows its sample rate and hop); ``bandwidth`` or ``n_q`` its codebooks
    (default: the codec's default bandwidth)."""
    out = Path(out)
    check_train_options(out, arch, size, resume, patience, steps, batch_size, context, lr, val_fraction)
    runtime = Runtime.check(device, threads)
    if batch_seconds <= 0:
        raise UsageError(f"batch_seconds must be positive, not {batch_seconds}")
    from ..engine.sources import AUDIO_EXTENSIONS, check_inputs_exist, normalise_extensions
    from ..lm.tokenizer import mel_hop, tokenizer_spec
    from ..registry import get_codec

    spec = tokenizer_spec(codec, "--codec")
    if spec.channels != 1:
        raise UsageError(f"--codec {spec.codec} codes {spec.channels} channels, but the LMs read one stream of mono "
                         "tokens; choose a mono codec (audiotok models lists them)")
    bandwidth = get_codec(spec.codec).choose_bandwidth(bandwidth, n_q)
    mel = mel_hop({"codec": spec.codec, "sample_rate": spec.sample_rate, "frame_rate": spec.frame_rate})
    if ext is None:
        ext = (*AUDIO_EXTENSIONS, "npz")
    exts = normalise_extensions([ext] if isinstance(ext, str) else [",".join(ext)])
    paths = as_inputs(inputs)
    check_inputs_exist(paths)  # a missing input is a usage error before torch loads
    from ..files import prepare_checkpoint_paths

    cache_root = prepare_checkpoint_paths(out, cache)
    from .encode import codec_weights

    weights, _ = codec_weights(spec.codec, codec_checkpoint, option="--codec-checkpoint")  # missing: exit 3 now


    from ..engine.distributed import current_share
    from ..lm.adapter import LMFeatures
    from ..lm.checkpoints import tokenizer_info
    from ..train.data import cache_dir, lm_cache, read_cached, read_encoded
    from ..train.inputs import collect_examples
    from ..train.lm import TrainConfig, train
    from ..train.loop import distributed

    share = current_share()
    dev, _ = runtime.start(world=share.world)
    distributed(dev)  # joins torchrun's process group, if any
    loaded = get_codec(spec.codec).load(weights, dev)
    n_in = get_codec(spec.codec).n_codebooks(bandwidth) if arch == "info-control" else 1
    tokenizer = tokenizer_info(loaded, bandwidth, list(range(n_in)))

    def read_code_file(path: str, ident: str):
        example = read_encoded(path, arch == "whisper-gpt", tokenizer)
        example.id = ident
        return example

    examples, failed = collect_examples(
        paths, exts, lm_cache(cache_dir(cache_root, tokenizer), tokenizer["codec"]),
        lambda: LMFeatures(loaded.encoder(tokenizer["bandwidth"], dev), with_mel=True, mel=mel),
        lambda path, ident: read_cached(path, ident, tokenizer), read_code_file,
        batch_seconds=batch_seconds, workers=workers, quiet=not progress, share=share, log=log, label="tokenise",
        exclude=list(exclude or []))
    if not examples:
        raise UsageError("no usable training input (every input failed; see the messages above)")
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction,
                       patience=patience, eval_every=eval_every)
    ck = train(arch, size, examples, tokenizer, out, tcfg, context=context, device=dev, resume=resume,
               log=log, progress=progress, model_options={"n_codebooks": n_in})
    if share.rank == 0:
        log(f"checkpoint: {out}")
    return TrainResult(out, failed, ck.training)
