"""The HEAR 2021 API: shapes, dtypes, units (timestamps in milliseconds), attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok import hear
from audiotok.testing import fill_hf_cache, synthetic_audio

from .conftest import FIXTURE_ATOL, FIXTURE_RTOL, shared_path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fixture_dir():
    return shared_path("fixtures", "encodecmae")


@pytest.fixture(scope="module")
def model(fixture_dir):
    return hear.load_model(str(fixture_dir / "tiny_mel_st.pt"))


def test_model_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 24000
    assert model.scene_embedding_size == 64 and model.timestamp_embedding_size == 64


def test_timestamp_embeddings_shapes_and_milliseconds(model, fixture_dir):
    expected = np.load(fixture_dir / "expected.npz")
    audio = torch.from_numpy(np.stack([expected["wav_b"], synthetic_audio(9.0, seed=2)[0]]))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert isinstance(emb, torch.Tensor) and isinstance(ts, torch.Tensor)
    assert emb.shape == (2, 674, 64) and ts.shape == (2, 674)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    np.testing.assert_allclose(emb[0].numpy(), expected["last_b"], atol=FIXTURE_ATOL, rtol=FIXTURE_RTOL)
    # frame centres in ms: 318.5 / 24000 s after each chunk start, every 13.25 ms
    assert ts[0, 0].item() == pytest.approx(13.2708, abs=1e-3)
    assert ts[0, 1].item() - ts[0, 0].item() == pytest.approx(13.25, abs=1e-3)
    assert ts[0, 300].item() == pytest.approx(4000 + 13.2708, abs=1e-3)  # second chunk restarts at 4 s
    assert ts[0, -1].item() < 9000 and torch.equal(ts[0], ts[1])


def test_scene_embeddings_are_mean_of_frames(model):
    audio = torch.from_numpy(np.stack([synthetic_audio(1.5, seed=s)[0] for s in range(3)]))
    scene = hear.get_scene_embeddings(audio, model)
    emb, _ = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (3, 64) and scene.dtype == torch.float32
    torch.testing.assert_close(scene, emb.mean(dim=1))
    assert not torch.equal(scene[0], scene[1])


def test_bad_shape_is_rejected(model):
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(24000), model)


def test_default_model_comes_from_the_hf_cache(fixture_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hf_cache(tmp_path, "lpepino/encodecmae-v2", {"mel256-ec-base_st.pt": fixture_dir / "tiny_mel_st.pt"})
    m = hear.load_model()
    assert m.embedder.model_name == "mel256-ec-base_st" and m.scene_embedding_size == 64
