"""One ``Runtime`` for --device/--threads in every command; the embedder registry that embed, probe
and train mae read (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotok.engine.devices import Runtime
from audiotok.errors import UsageError
from audiotok.registry import EMBEDDERS, ENCODECMAE, EmbedderSpec, get_embedder, register_embedder

from .conftest import shared_path


def test_runtime_checks_spelling_without_torch_and_applies_once():
    assert Runtime.check(" CPU ", 1) == Runtime("cpu", 1)
    with pytest.raises(UsageError, match="--device 'gpu' is not valid"):
        Runtime.check("gpu")
    with pytest.raises(UsageError, match="--threads 0 is not valid"):
        Runtime.check("cpu", 0)
    before = torch.get_num_threads()
    try:
        dev, threads = Runtime("cpu", 1).start()
        assert dev == torch.device("cpu") and threads == 1 == torch.get_num_threads()
        torch.set_num_threads(2)
        # under torchrun with no --threads each of the world's processes takes its share
        assert Runtime("cpu", None).start(world=2)[1] == 1
    finally:
        torch.set_num_threads(before)


def test_runtime_refuses_a_missing_gpu_in_one_sentence():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="no CUDA GPU is available; use --device cpu"):
        Runtime.check("cuda").start()


@pytest.mark.parametrize("command", ["embed", "score", "decode"])
def test_every_command_refuses_a_bad_device_before_any_work(cli, tmp_path, command):
    args = {"embed": ["embed", str(tmp_path), "-o", str(tmp_path / "o")],
            "score": ["score", str(tmp_path), "--model", "encodec-lm"],
            "decode": ["decode", str(tmp_path), "-o", str(tmp_path / "o")]}[command]
    r = cli(*args, "--device", "tpu")
    assert r.code == 2 and "--device 'tpu' is not valid" in r.err
    assert not (tmp_path / "o").exists()


def test_encodecmae_facts_live_in_the_embedder_registry():
    spec = get_embedder("encodecmae")
    assert spec is ENCODECMAE and spec.sample_rate == 24000
    assert spec.sizes["tiny"] == (4, 96, 4, 384) and spec.frontends == {"mel256": ("mel", 256), "ec": ("ec", 128)}
    assert "mel256-ec-base_st" in spec.released and "base" in spec.released
    from audiotok.train.mae_net import FRONTENDS, SIZES, MaeTrainSpec

    assert SIZES is spec.sizes and FRONTENDS is spec.frontends
    with pytest.raises(UsageError, match="--size 'huge' is not valid; choose one of tiny, small, base, large"):
        MaeTrainSpec.make("huge", "mel256")
    with pytest.raises(UsageError, match="--frontend 'wav' is not valid; choose one of mel256, ec"):
        MaeTrainSpec.make("tiny", "wav")
    with pytest.raises(UsageError, match="not a known embedder"):
        get_embedder("wav2vec")


def test_embedder_spec_loads_what_embed_and_probe_load():
    path = shared_path("fixtures", "encodecmae", "tiny_mel_st.pt")
    from audiotok.embedders.encodecmae import load_mae

    net, resolved = ENCODECMAE.load(str(path))
    ref = load_mae(path)
    assert str(resolved) == str(path)
    for (k, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_an_embedder_family_registered_from_outside_is_loaded_by_name(tmp_path):
    calls = []
    spec = EmbedderSpec(name="toy-embedder", sample_rate=16000, frame_rate=50.0, frontends={}, sizes={},
                        released={"toy-1": ("me/toy", "toy-1.pt")},
                        implementation="numpy:asarray", resolver="os:fspath", description="a test family")
    register_embedder(spec)
    try:
        assert get_embedder("toy-embedder") is spec
        net, path = spec.load(str(tmp_path))
        calls.append(path)
        assert isinstance(net, np.ndarray) and calls == [str(tmp_path)]
        with pytest.raises(ValueError, match="already registered"):
            register_embedder(EmbedderSpec(**{**spec.__dict__, "sample_rate": 8000}))
    finally:
        EMBEDDERS.pop("toy-embedder", None)
