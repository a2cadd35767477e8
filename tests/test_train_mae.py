"""EnCodecMAE pretraining: masking, the visible-only encoder, the loss, the loop (resume, loss
falls), self-training targets and checkpoints that ``embed`` reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiotok.embedders.encodecmae import LoadedCheckpoint, build_model, load_mae
from audiotok.testing import synthetic_audio
from audiotok.train.loop import split_by_file
from audiotok.train.mae import (
    MaeExample,
    MaeTrainConfig,
    PretextScores,
    SelfTraining,
    evaluate,
    fit_centroids,
    kept_checkpoint_path,
    make_batch,
    nearest_visible,
    read_training_checkpoint,
    report_usage,
    start_from_teacher,
    target_counts,
    target_usage,
    train,
    unigram_logp,
)
from audiotok.train.mae_net import (
    CODEBOOK_WEIGHTS,
    MaeTrainer,
    MaeTrainSpec,
    gin_config,
    mae_loss,
    nearest_centroid,
    teacher_frames,
    time_gap_mask,
)


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of True in a 1-d bool tensor."""
    out, n = [], 0
    for v in row.tolist() + [False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def test_time_gap_mask_covers_half_in_spans_and_never_pads():
    gen = torch.Generator().manual_seed(0)
    lengths = [300, 120, 20, 1]
    mask = time_gap_mask(lengths, 300, gen)
    assert mask.shape == (4, 300) and mask.dtype == torch.bool
    for b, n in enumerate(lengths[:3]):
        assert int(mask[b, :n].sum()) == math.floor(0.5 * n)  # exactly, as the reference trims
        assert not mask[b, n:].any()
    # spans of 15 frames; only the first span drawn can be cut short (where the excess is unmasked)
    assert sum(r < 15 for r in _runs(mask[0])) <= 1 and sum(r < 15 for r in _runs(mask[1])) <= 1
    assert sum(r < 10 for r in _runs(mask[2])) <= 1  # short crops: spans of half the crop
    assert not mask[3].any()
    again = time_gap_mask(lengths, 300, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    assert not torch.equal(mask, time_gap_mask(lengths, 300, torch.Generator().manual_seed(1)))


def test_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    B, T, Q, K = 2, 4, 8, 5
    logits = torch.randn(B, T, Q, K, dtype=torch.float64)
    targets = torch.randint(0, K, (B, T, Q))
    lengths = torch.tensor([4, 3])
    mask = torch.tensor([[True, False, True, False], [False, True, False, True]])  # item 1 frame 3 is padding
    loss, st = mae_loss(logits.float(), targets, lengths, mask, CODEBOOK_WEIGHTS)

    def frame_loss(b, t):
        total = 0.0
        for q in range(Q):
            z = logits[b, t, q].tolist()
            lse = math.log(sum(math.exp(v) for v in z))
            total += CODEBOOK_WEIGHTS[q] * (lse - z[int(targets[b, t, q])])
        return total

    masked = [(0, 0), (0, 2), (1, 1)]
    visible = [(0, 1), (0, 3), (1, 0), (1, 2)]
    want = 0.9 * sum(frame_loss(*f) for f in masked) / 3 + 0.1 * sum(frame_loss(*f) for f in visible) / 4
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert st["masked_frames"] == 3 and st["visible_frames"] == 4
    argmax = logits.argmax(-1)
    assert st["correct"].tolist() == [sum(int(argmax[b, t, q] == targets[b, t, q]) for b, t in masked) for q in range(Q)]


def _tiny(frontend="mel256", clusters=None, codec_state=None):
    torch.manual_seed(0)
    return MaeTrainer(MaeTrainSpec.make("tiny", frontend, clusters), codec_state)


def test_only_visible_frames_enter_the_encoder():
    model = _tiny().eval()
    torch.manual_seed(1)
    feats = torch.randn(2, 60, 256)
    lengths = torch.tensor([60, 45])
    mask = time_gap_mask([60, 45], 60, torch.Generator().manual_seed(3))
    ref = model.encode_visible(feats, lengths, mask)
    changed = feats.clone()
    changed[mask] = 100 * torch.randn(int(mask.sum()), 256)  # every masked frame
    changed[1, 45:] = -7.0  # padding
    out = model.encode_visible(changed, lengths, mask)
    assert torch.equal(ref, out)
    assert not ref[mask].any() and not ref[1, 45:].any()  # zeros at masked and padded positions
    visible = torch.nonzero(~mask[0])[0, 0]
    changed[0, visible] += 1.0
    assert not torch.equal(model.encode_visible(changed, lengths, mask)[0], ref[0])


def _examples(n=4, seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        audio = (synthetic_audio(seconds, seed=seed * 10 + i)[0] * 32767).astype(np.int16)
        frames = -(-audio.shape[0] // 320)
        # learnable targets: codes follow the signal's local loudness
        env = np.abs(audio.astype(np.float32)).reshape(-1)[: frames * 320 - 320].reshape(frames - 1, 320).mean(1)
        env = np.concatenate([env, env[-1:]])
        base = (env / (env.max() + 1e-9) * 15).astype(np.int64)
        codes = np.stack([(base * (q + 3) + rng.integers(0, 2, frames)) % 1024 for q in range(8)]).astype(np.int16)
        out.append(MaeExample(f"f{i}.wav", audio, codes))
    return out


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = _tiny().train()
    ex = _examples(2)
    tcfg = MaeTrainConfig(crop_seconds=0.64, batch_size=2)  # 15360 samples: 47 mel frames, 48 code frames
    gen = torch.Generator().manual_seed(0)
    feats, lengths, mask, targets = make_batch(ex, [(0, 0), (1, 320 * 10)], tcfg.crop_samples,
                                               model, torch.device("cpu"), gen, tcfg, None)
    assert feats.shape == (2, 47, 256) and targets.shape == (2, 47, 8) and lengths.tolist() == [47] * 2
    assert torch.equal(targets[1, :, 2], torch.from_numpy(ex[1].codes[2, 10:57].astype(np.int64)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, _ = mae_loss(model(feats, lengths, mask), targets, lengths, mask, CODEBOOK_WEIGHTS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_resume_is_exact_and_the_checkpoint_records_the_run(tmp_path):
    ex = _examples(5)
    tcfg = MaeTrainConfig(steps=6, batch_size=2, lr=1e-3, seed=2, crop_seconds=0.64, val_fraction=0.2, eval_every=3)
    spec = MaeTrainSpec.make("tiny", "mel256")
    quiet = {"progress": False, "log": lambda m: None}
    full = train(ex, tmp_path / "full.pt", spec, tcfg, **quiet)
    train(ex, tmp_path / "part.pt", spec, tcfg, stop_after=4, **quiet)
    assert read_training_checkpoint(tmp_path / "part.pt")["audiotok"]["training"]["step"] == 4
    resumed = train(ex, tmp_path / "part.pt", spec, tcfg, resume=True, **quiet)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    blob = read_training_checkpoint(tmp_path / "part.pt")
    hist = blob["audiotok"]["training"]["history"]
    assert [h["step"] for h in hist] == [3, 4, 6]
    assert len(hist[-1]["val_masked_accuracy"]) == 8 and hist[-1]["val_loss"] > 0
    assert blob["audiotok"]["training"]["val_files"] == split_by_file([e.id for e in ex], 0.2, 2)[1]
    assert not list(tmp_path.glob(".part.pt.tmp*"))
    with pytest.raises(Exception, match="--resume"):
        train(ex, tmp_path / "part.pt", MaeTrainSpec.make("small", "mel256"), tcfg, resume=True, **quiet)


def test_nearest_visible_frame_is_the_closest_earlier_on_ties():
    mask = torch.tensor([[False, True, True, False, True, True, True, False], [True] * 8,
                         [False, True, False, True, True, True, True, True]])
    valid = torch.tensor([[True] * 7 + [False], [True] * 8, [True] * 8])
    near = nearest_visible(valid, mask)
    assert near[0].tolist()[:7] == [0, 0, 3, 3, 3, 3, 3]  # frame 7 is padding, never copied from
    assert near[1].tolist() == [-1] * 8  # nothing visible
    assert near[2].tolist()[:2] == [0, 0]  # frame 1 is as near to 0 as to 2: the earlier


def test_pretext_baselines_are_counted_on_the_masked_frames():
    counts = torch.tensor([[6, 2, 0, 0], [0, 0, 0, 8]])  # 2 streams, 4 classes
    logp = unigram_logp(counts)
    assert torch.allclose(logp.exp().sum(1), torch.ones(2, dtype=torch.float64))
    assert logp[0, 0] == pytest.approx(math.log(6.5 / 10)) and logp[0, 2] == pytest.approx(math.log(0.5 / 10))
    scores = PretextScores(logp)
    targets = torch.tensor([[[0, 3], [1, 3], [1, 2], [0, 3]]])  # [1, T=4, 2]
    mask = torch.tensor([[False, True, True, False]])
    stats = {"masked_ce": torch.tensor([1.0, 2.0], dtype=torch.float64), "correct": torch.tensor([1, 2])}
    scores.add(stats, targets, torch.tensor([4]), mask)
    r = scores.result()
    # masked frames 1 and 2: unigram guesses class 0 / class 3; copies come from frames 0 and 3
    assert r["baseline_unigram_accuracy"] == [0.0, 0.5]
    assert r["baseline_copy_accuracy"] == [0.0, 0.5]  # frame 1 copies frame 0 (0, 3); frame 2 copies frame 3 (0, 3)
    assert r["baseline_unigram_ce"][0] == pytest.approx(-(math.log(2.5 / 10) * 2) / 2)
    assert r["val_masked_ce"] == [0.5, 1.0] and r["val_masked_accuracy"] == [0.5, 1.0]
    assert r["learned"] is True  # CE 0.5 <= 1.386 - 0.3 and accuracy 0.5 >= 0 + 0.05
    stats["correct"] = torch.tensor([0, 2])
    scores = PretextScores(logp)
    scores.add(stats, targets, torch.tensor([4]), mask)
    assert scores.result()["learned"] is False


def test_validation_and_history_carry_the_baselines(tmp_path):
    ex = _examples(5)
    tcfg = MaeTrainConfig(steps=3, batch_size=2, lr=1e-3, seed=2, crop_seconds=0.64, val_fraction=0.4, eval_every=3,
                          keep_steps=(0, 2))
    logs = []
    train(ex, tmp_path / "m.pt", MaeTrainSpec.make("tiny", "mel256"), tcfg, progress=False, log=logs.append)
    tr = read_training_checkpoint(tmp_path / "m.pt")["audiotok"]["training"]
    assert [h["step"] for h in tr["history"]] == [0, 2, 3]
    for key in ("val_masked_ce", "baseline_unigram_ce", "baseline_unigram_accuracy", "baseline_copy_accuracy"):
        assert len(tr["history"][-1][key]) == 8, key
    assert tr["history"][0]["train_loss"] is None
    assert [u["stream"] for u in tr["target_usage"]] == list(range(8))
    assert read_training_checkpoint(kept_checkpoint_path(tmp_path / "m.pt", 0))["audiotok"]["training"]["step"] == 0
    assert read_training_checkpoint(kept_checkpoint_path(tmp_path / "m.pt", 2))["audiotok"]["training"]["step"] == 2
    assert not kept_checkpoint_path(tmp_path / "m.pt", 3).exists()
    text = "\n".join(logs)
    assert "unigram CE" in text and "copy-nearest-visible" in text and "codebook 0:" in text
    # the unigram's counts are the training files' codes
    counts = target_counts(_tiny(), ex[:2], tcfg, torch.device("cpu"), None)
    assert counts.shape == (8, 1024) and int(counts[0].sum()) == sum(e.codes.shape[1] for e in ex[:2])
    entry = evaluate(_tiny(), ex[2:], tcfg, torch.device("cpu"), None, counts)
    assert 0 <= entry["baseline_copy_accuracy"][0] <= 1 and entry["baseline_unigram_ce"][0] > 0


def test_a_codebook_using_few_codes_is_reported_loudly():
    counts = torch.zeros(2, 1024, dtype=torch.long)
    counts[0, :800] = 5
    counts[1, :3] = 100
    usage = target_usage(counts)
    assert [u["used"] for u in usage] == [800, 3]
    assert usage[0]["entropy"] == pytest.approx(math.log(800))
    logs = []
    report_usage(usage, logs.append, kmeans=False)
    assert "codebook 0: 800/1024 used" in logs[0]
    assert len(logs) == 2 and logs[1].startswith("WARNING: codebook 1 uses only 3 of its 1024")


def test_the_student_starts_from_the_teachers_weights():
    teacher = _tiny()
    state = teacher.v2_state()
    student = _tiny(clusters=16)
    torch.manual_seed(5)
    student.reference_init()
    loaded, skipped = start_from_teacher(student, state)
    assert skipped == ["head.layer.weight", "head.layer.bias"]  # 16 outputs here, 8 x 1024 in the teacher
    mine = student.v2_state()
    assert all(torch.equal(mine[k], state[k]) for k in loaded) and len(loaded) == len(state) - 2


def test_saved_checkpoint_is_v2_and_embed_gives_the_in_memory_embedding(tmp_path, cli):
    import soundfile as sf

    ex = _examples(3)
    tcfg = MaeTrainConfig(steps=2, batch_size=2, crop_seconds=0.64, val_fraction=0.0)
    model = train(ex, tmp_path / "m.pt", MaeTrainSpec.make("tiny", "mel256"), tcfg, progress=False, log=lambda m: None)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert isinstance(blob["config"], str) and isinstance(blob["imports"], str)
    assert blob["state_dict"]["head.layer.weight"].shape == (8 * 1024, 96)
    assert "decoder.encoder_layers.1.ff_layer.2.bias" in blob["state_dict"]
    net = load_mae(tmp_path / "m.pt")  # the strict loader
    assert (net.cfg.layers, net.cfg.dim, net.cfg.heads, net.cfg.ff_dim) == (4, 96, 4, 384)
    wave = synthetic_audio(4.0, seed=9)
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "a.wav"), wave[0], 24000, subtype="FLOAT")
    r = cli("embed", tmp_path / "in", "-o", tmp_path / "emb", "--model", tmp_path / "m.pt", "--pool", "none")
    assert r.code == 0, r
    got = np.load(tmp_path / "emb" / "a.npz")["embedding"]
    with torch.no_grad():
        feats = model.features(torch.from_numpy(wave))
        T = feats.shape[1]
        mine = model.encode_visible(feats, torch.tensor([T]), torch.zeros(1, T, dtype=torch.bool))[0].numpy()
    assert got.shape == (300, 96) == mine.shape
    np.testing.assert_allclose(got, mine, rtol=0, atol=1e-5)


def test_ec_frontend_model_loads_strictly_with_the_codec_encoder_inside(hub_cache):
    from audiotok.weights import ENCODEC_CHECKPOINTS

    codec = torch.load(hub_cache / "hub" / "checkpoints" / ENCODEC_CHECKPOINTS["encodec_24khz"], weights_only=True)
    state = {k[len("encoder."):]: v for k, v in codec.items() if k.startswith("encoder.")}
    model = _tiny("ec", codec_state=state)
    assert not any(p.requires_grad for p in model.wav_encoder.encoder.parameters())
    saved = model.v2_state()
    # the reference's key layout: wav_encoder.encoder (its EncodecEncoder) .model (encodec's SEANetEncoder) .model...
    ec_keys = {k[len("wav_encoder.encoder.model."):] for k in saved if k.startswith("wav_encoder.encoder.")}
    assert ec_keys == {k for k in state if k.startswith("model.")} and all(k.startswith("model.") for k in ec_keys)
    net = build_model(LoadedCheckpoint(saved, gin_config(model.spec), "v2", "mem"))
    assert net.cfg.frontend == "ec" and net.cfg.in_features == 128
    again = _tiny("ec", codec_state=state)
    again.load_v2_state(saved)  # --resume reads the layout it writes
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    wave = torch.from_numpy(synthetic_audio(0.5, seed=3))
    f_train = model.features(wave)
    f_inf = net.features(wave)
    assert f_train.shape == (1, 38, 128)
    torch.testing.assert_close(f_train, f_inf, rtol=0, atol=1e-5)


def test_self_training_targets_are_the_nearest_centroids():
    ex = _examples(3)
    teacher = build_model(LoadedCheckpoint(_tiny().v2_state(), gin_config(_tiny().spec), "v2", "teacher"))
    centroids = fit_centroids(teacher, ex, 16, 24000, seed=0, frames_wanted=600, log=lambda m: None)
    assert centroids.shape == (16, 96)
    student = _tiny(clusters=16)
    assert student.head.layer.out_features == 16
    tcfg = MaeTrainConfig(crop_seconds=1.0)
    st = SelfTraining(teacher, centroids, "teacher.pt")
    picks = [(0, 0), (2, 3200)]
    _, lengths, _, targets = make_batch(ex, picks, tcfg.crop_samples, student, torch.device("cpu"),
                                        torch.Generator().manual_seed(0), tcfg, st)
    assert targets.shape == (2, 74, 1)
    wave = torch.stack([torch.from_numpy(ex[f].audio[s:s + 24000].astype(np.float32) / 32768) for f, s in picks])
    frames = teacher_frames(teacher, wave).numpy().astype(np.float64)
    c = centroids.numpy().astype(np.float64)
    d = ((frames[:, :, None, :] - c[None, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(targets[..., 0].numpy(), d.argmin(-1))
    one = torch.randn(5, 96)
    assert nearest_centroid(one, centroids).tolist() == ((one[:, None] - centroids[None]) ** 2).sum(-1).argmin(1).tolist()


# --- the command ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    from tests.conftest import write_wav

    d = tmp_path_factory.mktemp("mae_audio")
    for i in range(3):
        write_wav(d / f"a{i}.wav", 2.0, seed=i)
    return d


COMMON = ("--batch-size", "2", "--crop-seconds", "0.64", "--device", "cpu", "--workers", "0", "--quiet")


def test_train_mae_command_then_self_training_on_its_clusters(cli, audio_dir, tmp_path):
    ckpt = tmp_path / "m.pt"
    r = cli("train", "mae", audio_dir, "-o", ckpt, "--steps", "2", "--val-fraction", "0.34", *COMMON)
    assert r.code == 0, r
    blob = read_training_checkpoint(ckpt)
    tr = blob["audiotok"]["training"]
    assert tr["step"] == 2 and len(tr["train_files"]) == 2 and len(tr["val_files"]) == 1
    assert tr["targets"] == "encodec" and tr["codec"]["codec"] == "encodec_24khz" and tr["codec"]["n_q"] == 8
    assert len(list((tmp_path / "m.pt.cache").rglob("*.npz"))) == 3  # decoded and tokenised once
    r = cli("train", "mae", audio_dir, "-o", ckpt, "--steps", "2", *COMMON)
    assert r.code == 2 and "exists; pass --resume" in r.err
    r = cli("train", "mae", audio_dir, "-o", ckpt, "--steps", "3", "--val-fraction", "0.34", "--resume", *COMMON)
    assert r.code == 0, r
    assert read_training_checkpoint(ckpt)["audiotok"]["training"]["step"] == 3
    st = tmp_path / "st.pt"
    r = cli("train", "mae", audio_dir, "-o", st, "--steps", "1", "--self-train", ckpt, "--clusters", "8",
            "--kmeans-frames", "200", *COMMON)
    assert r.code == 0, r
    blob = read_training_checkpoint(st)
    assert blob["centroids"].shape == (8, 96) and blob["state_dict"]["head.layer.weight"].shape == (8, 96)
    assert blob["audiotok"]["training"]["targets"] == "kmeans" and blob["audiotok"]["training"]["teacher"] == str(ckpt)
    r = cli("embed", audio_dir / "a0.wav", "-o", tmp_path / "emb", "--model", st)
    assert r.code == 0, r
    assert np.load(tmp_path / "emb" / "a0.npz")["embedding"].shape == (96,)


def test_train_mae_rejects_bad_options(cli, audio_dir, tmp_path):
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--size", "huge")
    assert r.code == 2 and "--size 'huge' is not valid" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--frontend", "wav")
    assert r.code == 2 and "--frontend 'wav' is not valid" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--resume")
    assert r.code == 2 and "no checkpoint" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--self-train", tmp_path / "none.pt", *COMMON)
    assert r.code != 0 and "does not exist" in r.err


@pytest.mark.slow
def test_torchrun_two_processes_train_mae(audio_dir, hub_cache, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "TORCH_HOME": str(hub_cache), "AUDIOTOK_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "audiotok", "train", "mae", str(audio_dir), "--steps", "2", "-o", str(tmp_path / "ddp.pt"), *COMMON]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    tr = read_training_checkpoint(tmp_path / "ddp.pt")["audiotok"]["training"]
    assert tr["world_size"] == 2 and tr["step"] == 2
    assert load_mae(tmp_path / "ddp.pt").cfg.layers == 4


def test_train_mae_reads_an_encode_folder_with_the_same_codes(cli, audio_dir, tmp_path):
    r = cli("encode", audio_dir, "-o", tmp_path / "tok", "--quiet")
    assert r.code == 0, r
    r = cli("train", "mae", tmp_path / "tok", "-o", tmp_path / "m.pt", "--steps", "1", "--ext", "npz", *COMMON)
    assert r.code == 0, r
    tr = read_training_checkpoint(tmp_path / "m.pt")["audiotok"]["training"]
    assert sorted(tr["train_files"] + tr["val_files"]) == ["a0.npz", "a1.npz", "a2.npz"]
    from audiotok.train.mae_data import read_encoded

    ex = read_encoded(str(tmp_path / "tok" / "a1.npz"), "a1")
    assert ex.codes.shape == (8, 150) and ex.audio.shape == (48000,)
    z = np.load(tmp_path / "tok" / "a1.npz")
    np.testing.assert_array_equal(ex.codes, z["codes"][:8])


def test_train_mae_refuses_codes_made_with_other_codec_weights(cli, audio_dir, tmp_path):
    from audiotok.testing import random_encodec, save_encodec_checkpoint

    assert cli("encode", audio_dir, "-o", tmp_path / "tok", "--quiet").code == 0
    other = save_encodec_checkpoint(random_encodec(seed=3), tmp_path / "other", "encodec_24khz.th")
    r = cli("train", "mae", tmp_path / "tok", "-o", tmp_path / "m.pt", "--steps", "1", "--ext", "npz",
            "--codec-checkpoint", other, *COMMON)
    assert r.code == 2 and "no usable training input" in r.err
    assert r.err.count("was encoded with other codec weights") == 3 and not (tmp_path / "m.pt").exists()


def test_train_mae_option_errors_for_the_presets(cli, audio_dir, tmp_path):
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--optimizer", "sgd")
    assert r.code == 2 and "--optimizer 'sgd' is not valid" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--init", "zeros")
    assert r.code == 2 and "--init 'zeros' is not valid" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--steps", "10", "--keep-steps", "0,20")
    assert r.code == 2 and "--keep-steps 20 is not a step of this run" in r.err
    r = cli("train", "mae", audio_dir, "-o", tmp_path / "m.pt", "--keep-steps", "a,b")
    assert r.code == 2 and "--keep-steps 'a,b' is not valid" in r.err


def test_config_has_the_structure_of_an_official_checkpoint():
    from audiotok.embedders.encodecmae import parse_gin
    from tests.conftest import shared_path

    ref = torch.load(shared_path("fixtures", "encodecmae", "tiny_mel_st.pt"), weights_only=True)
    ref_macros, ref_bindings = parse_gin(ref["config"])
    spec = MaeTrainSpec.make("tiny", "mel256", clusters=1024)
    macros, bindings = parse_gin(gin_config(spec))
    assert set(macros) == set(ref_macros) and set(bindings) == set(ref_bindings)
    assert macros["MODEL_DIM"] == 96 and macros["NUM_ENCODER_HEADS"] == 4 and macros["NUM_TOTAL_TARGETS"] == 1
    assert bindings["encoder/transformers.TransformerEncoder.ff_dim"] == 384
    assert {k: v for k, v in bindings.items() if "Melspectrogram" in k or "TimeGapMask" in k or "AdamW" in k} == \
        {k: v for k, v in ref_bindings.items() if "Melspectrogram" in k or "TimeGapMask" in k or "AdamW" in k}
    assert list(parse_gin(gin_config(MaeTrainSpec.make("tiny", "mel256")))[0]["QUANTIZER_WEIGHTS"]) == \
        list(ref_macros["QUANTIZER_WEIGHTS"]) == list(CODEBOOK_WEIGHTS)
    import re

    def layout(keys):  # key names with the layer index left out (the fixture has 2 layers, tiny 4)
        return {re.sub(r"encoder_layers\.\d+\.", "encoder_layers.N.", k) for k in keys}

    assert layout(_tiny(clusters=1024).v2_state()) == layout(ref["state_dict"])  # the tensors of such a reference model


@pytest.mark.slow
def test_fit_encodec_fits_the_codebooks_to_the_given_audio():
    """A codec whose codebooks are fitted to some audio uses most codewords on that audio (the
    default random codec, fitted to 22 s of synthetic signals, uses far fewer on other audio)."""
    import encodec  # noqa: F401

    from audiotok.testing import fit_encodec, random_encodec

    rng = np.random.default_rng(0)
    pieces = [synthetic_audio(4.0, seed=100 + i) * float(rng.choice([0.1, 0.5, 1.0])) for i in range(4)]  # 1200 frames
    with pytest.raises(ValueError, match="needs at least"):
        fit_encodec(pieces, frames_per_code=2)
    fitted = fit_encodec(pieces, frames_per_code=1, iters=4, bandwidth=1.5)  # codebooks 0 and 1 fitted
    x = torch.from_numpy(np.concatenate(pieces, axis=-1))[None]
    used = []
    for m in (fitted, random_encodec()):
        m.set_target_bandwidth(1.5)  # codebook 0 is the one counted
        with torch.inference_mode():
            used.append(len(torch.unique(m.encode(x)[0][0][0, 0])))
    assert used[0] > 512 and used[0] > 1.5 * used[1], used
    again = fit_encodec(pieces, frames_per_code=1, iters=4, bandwidth=1.5)
    assert all(torch.equal(a, b) for a, b in zip(fitted.state_dict().values(), again.state_dict().values()))


def test_validation_and_usage_crops_spread_over_the_files():
    """With more files than crops, the fixed crops (validation, and stage 2's target usage) come from
    files spread over the list, not from its first files (inputs sorted by folder put one kind of
    audio first: 64 crops of 1152 files all came from the drums folder)."""
    from audiotok.train.mae import validation_crops

    class Ex:
        def __init__(self, n):
            self.audio = np.zeros(n, np.int16)

    files = [Ex(10) for _ in range(100)]
    crops = validation_crops(files, 4, 8)
    assert [f for f, _ in crops] == [0, 14, 28, 42, 57, 71, 85, 99] and all(s == 0 for _, s in crops)
    everything = validation_crops(files, 4, 1000)  # 2 crops per file, the first crop of every file first
    assert len(everything) == 200 and everything[:100] == [(i, 0) for i in range(100)] and everything[100] == (0, 4)
    assert validation_crops([Ex(20)], 4, 3) == [(0, 0), (0, 4), (0, 8)]
