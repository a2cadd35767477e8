"""audiotok probe: grouped folds, separable vs shuffled labels, per-layer sweep, labels CSV,
audio inputs with baselines, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audiotok.embedders.probing import cross_validate, make_folds, match_labels


def test_folds_never_share_a_group_and_test_every_item_once():
    rng = np.random.default_rng(0)
    groups = [f"spk{i // 5}" for i in range(60)]  # 12 speakers of 5 items
    labels = [["a", "b", "c"][(i // 5) % 3] if i % 2 else ["a", "b", "c"][rng.integers(3)] for i in range(60)]
    folds = make_folds(labels, groups, 4, seed=0)
    assert len(folds) == 4
    seen = np.zeros(60, dtype=int)
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        seen[test] += 1
    assert (seen == 1).all()


def _separable(n_per=20, classes=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(classes):
        centre = np.zeros(dim)
        centre[c] = 8.0
        X.append(centre + rng.standard_normal((n_per, dim)))
        y += [f"c{c}"] * n_per
    return np.concatenate(X).astype(np.float32), y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_separable_scores_about_100_and_shuffled_labels_about_chance(kind):
    X, y = _separable(30)
    groups = [str(i) for i in range(len(y))]
    r = cross_validate(X, y, make_folds(y, groups, 5, 0), kind, 0)
    assert r["accuracy"] >= 0.98 and r["macro_f1"] >= 0.98
    assert np.array(r["confusion"]).trace() >= 0.98 * len(y)
    shuffled = list(np.random.default_rng(1).permutation(y))
    r = cross_validate(X, shuffled, make_folds(shuffled, groups, 5, 0), kind, 0)
    assert abs(r["accuracy"] - 1 / 3) < 0.15 and np.array(r["confusion"]).sum() == len(y)


def test_labels_match_by_path_tail_without_extension():
    rows = [("audio/speech/a.wav", "speech", "s1"), ("audio/music/a.wav", "music", None), ("b.flac", "x", None)]
    got = match_labels(["emb/speech/a.npz", "emb/music/a.npz", "deep/tree/b.npz", "c.npz"], rows)
    assert got == [("speech", "s1"), ("music", "audio/music/a.wav"), ("x", "b.flac"), None]


def _write_layers(root, n_per=12, seed=0):
    """npz files as `embed --layer all` writes them: layer 0 noise, layer 1 separable."""
    X, y = _separable(n_per, dim=8, seed=seed)
    noise = np.random.default_rng(seed + 5).standard_normal(X.shape).astype(np.float32)
    for i, (row, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        np.savez(root / label / f"f{i}.npz", embedding=np.stack([noise[i], row]), layer=np.asarray("all"),
                 pooling=np.asarray("mean"))
    return y


def test_probe_command_sweeps_layers_and_writes_report_and_plot(cli, tmp_path):
    y = _write_layers(tmp_path / "emb")
    r = cli("probe", tmp_path / "emb", "--labels-from-parent", "-o", tmp_path / "r.json", "--plot", tmp_path / "p.png",
            "--folds", "3", "--probe", "linear")
    assert r.code == 0, r
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["classes"] == ["c0", "c1", "c2"] and rep["n_items"] == len(y) and rep["folds"] == 3
    by_layer = {x["layer"]: x for x in rep["results"]}
    assert set(by_layer) == {"0", "1"}
    assert by_layer["1"]["accuracy"] >= 0.95 and by_layer["0"]["accuracy"] < 0.7
    assert len(by_layer["1"]["fold_accuracy"]) == 3 and np.array(by_layer["1"]["confusion"]).sum() == len(y)
    assert "layer" in r.out and "accuracy" in r.out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_with_a_labels_csv_keeps_groups_apart(cli, tmp_path):
    X, y = _separable(10, classes=2, dim=4)
    lines = ["path,label,group"]
    for i, (row, label) in enumerate(zip(X, y)):
        np.save(tmp_path / f"x{i}.npy", row)
        lines.append(f"audio/x{i}.wav,{label},g{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    r = cli("probe", *[tmp_path / f"x{i}.npy" for i in range(len(y))], "--labels", tmp_path / "labels.csv",
            "-o", tmp_path / "r.json", "--folds", "2")
    assert r.code == 0, r
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_groups"] == 10 and {x["probe"] for x in rep["results"]} == {"linear", "mlp"}
    a, b = rep["fold_test_groups"]
    assert not set(a) & set(b) and len(a) + len(b) == 10


def test_probe_on_audio_with_baselines(cli, tmp_path):
    from audiotok.testing import encodecmae_gin, random_encodecmae_state, save_encodecmae_checkpoint
    from tests.conftest import write_wav

    ckpt = save_encodecmae_checkpoint(tmp_path / "m.pt", random_encodecmae_state(dim=32, layers=2, heads=4, ff_dim=64),
                                      encodecmae_gin(32, 2, 4, 64))
    for i in range(8):
        write_wav(tmp_path / "audio" / ("low" if i % 2 else "high") / f"{i}.wav", 0.5, seed=i)
    r = cli("probe", tmp_path / "audio", "--labels-from-parent", "--model", ckpt, "--baseline", "logmel,random",
            "--folds", "2", "--probe", "linear", "-o", tmp_path / "r.json", "--threads", "1")
    assert r.code == 0, r
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["threads"] == 1
    feats = [(x["features"], x["layer"]) for x in rep["results"]]
    assert feats == [(str(ckpt), "0"), (str(ckpt), "1"), ("random-init", "0"), ("random-init", "1"),
                     ("log-mel mean+std", "-")]


def test_probe_usage_errors(cli, tmp_path):
    _write_layers(tmp_path / "emb", n_per=3)
    r = cli("probe", tmp_path / "emb")
    assert r.code == 2 and "exactly one of --labels" in r.err
    r = cli("probe", tmp_path / "emb", "--labels-from-parent", "--baseline", "logmel")
    assert r.code == 2 and "--baseline needs audio inputs" in r.err
    r = cli("probe", tmp_path / "emb", "--labels-from-parent", "--folds", "20")
    assert r.code == 2 and "--folds 20 needs at least 20 groups" in r.err
    r = cli("probe", tmp_path / "emb", "--labels", tmp_path / "missing.csv")
    assert r.code == 2 and "cannot be read" in r.err


def test_frame_level_embeddings_are_pooled_on_the_fly(tmp_path):
    from audiotok.embedders.probing import read_embedding_file

    frames = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)  # --layer all --pool none
    np.savez(tmp_path / "a.npz", embedding=frames, layer=np.asarray("all"), pooling=np.asarray("none"))
    arr, names = read_embedding_file(str(tmp_path / "a.npz"), "mean")
    assert names == ["0", "1"] and arr.shape == (2, 5)
    np.testing.assert_allclose(arr, frames.mean(1), rtol=1e-6)
    arr, _ = read_embedding_file(str(tmp_path / "a.npz"), "meanstd")
    np.testing.assert_allclose(arr, np.concatenate([frames.mean(1), frames.std(1)], -1), rtol=1e-5)
    np.save(tmp_path / "b.npy", frames[0])  # bare [T, D]
    arr, names = read_embedding_file(str(tmp_path / "b.npy"), "max")
    assert names == ["-1"]
    np.testing.assert_array_equal(arr[0], frames[0].max(0))
