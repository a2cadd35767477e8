"""One EnCodecMAE training step equals the reference's: the same weights, features, mask and
targets give the reference's logits, loss and gradients (``tests/fixtures/mae_step``, made by
``make_expected.py`` there with the reference code), and the reference init and optimiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiotok.train.mae import MaeTrainConfig, make_optimizer
from audiotok.train.mae_net import CODEBOOK_WEIGHTS, MaeTrainer, MaeTrainSpec, mae_loss, time_gap_mask

FIXTURE = Path(__file__).parent / "fixtures" / "mae_step" / "expected.pt"


@pytest.fixture(scope="module")
def ref():
    return torch.load(FIXTURE, weights_only=True)


def _model(ref) -> MaeTrainer:
    s = ref["sizes"]
    spec = MaeTrainSpec("tiny", "mel256", s["layers"], s["dim"], s["heads"], s["ff_dim"], s["streams"], s["classes"])
    model = MaeTrainer(spec)
    model.load_v2_state({k: v.float() for k, v in ref["state_dict"].items()})
    return model.train()


def test_one_training_step_equals_the_reference(ref):
    model = _model(ref)
    assert torch.equal(ref["loss_weights"], torch.tensor(CODEBOOK_WEIGHTS))
    feats, targets = ref["features"].float(), ref["targets"].long()
    full = ref["full"]
    logits = model(feats, full["lengths"], full["mask"])
    assert (logits - full["logits"]).abs().max() <= 1e-5
    loss, st = mae_loss(logits, targets, full["lengths"], full["mask"], CODEBOOK_WEIGHTS)
    assert abs(float(loss.detach()) - float(full["loss"])) <= 1e-6
    assert abs(st["masked_loss"] - float(full["masked_loss"])) <= 1e-6
    assert abs(st["visible_loss"] - float(full["visible_loss"])) <= 1e-6
    loss.backward()
    grads = dict(model.named_parameters())
    assert set(grads) == set(full["grads"])  # every parameter, the shared feed-forwards once
    for name, want in full["grads"].items():
        got = grads[name].grad
        rel = float((got - want).abs().max() / want.abs().max())
        assert rel <= 1e-4, (name, rel)
    assert full["grads"]["visible_encoder.post_net.bias"].abs().max() > 0


def test_padded_crop_logits_equal_the_reference(ref):
    model = _model(ref)
    p = ref["padded"]
    with torch.no_grad():
        logits = model(ref["features"].float(), p["lengths"], p["mask"])
    assert (logits[1] - p["logits_item1"]).abs().max() <= 1e-5
    assert (logits[0] - ref["full"]["logits"][0]).abs().max() <= 1e-5


def test_masked_and_padded_frames_reach_the_decoder_as_exact_zeros(ref):
    """post_net's bias must not leak into masked frames: changing it moves only visible frames'
    decoder inputs, so with a zero decoder the masked frames' logits do not move at all."""
    model = _model(ref)
    seen = {}
    model.decoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    mask = ref["full"]["mask"]
    with torch.no_grad():
        model(ref["features"].float(), ref["full"]["lengths"], mask)
        scale = model.decoder.positional_encoder.scale
        from audiotok.embedders.encodecmae import sinusoidal_positions

        raw = seen["x"] - scale * sinusoidal_positions(mask.shape[1], model.spec.dim, seen["x"].device)
    assert raw[mask].abs().max() <= 1e-6 and raw[~mask].abs().min(-1).values.gt(0).all()


def test_mask_takes_floor_half_of_every_crop_like_the_reference(ref):
    assert ref["full"]["mask"].sum(1).tolist() == [20, 20]  # the reference's own mask of 40 frames
    gen = torch.Generator().manual_seed(0)
    lengths = [300, 121, 29, 3, 2, 1]
    for _ in range(20):
        mask = time_gap_mask(lengths, 300, gen)
        for b, n in enumerate(lengths):
            assert int(mask[b, :n].sum()) == n // 2 and not mask[b, n:].any()


def test_reference_init_is_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = MaeTrainer(MaeTrainSpec.make("tiny", "mel256"))
    model.reference_init()
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert not p.any(), name
        elif "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        elif p.dim() == 2:
            bound = (6.0 / (p.shape[0] + p.shape[1])) ** 0.5
            assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound, name
        else:
            assert float(p.detach()) == 1.0, name  # positional scales


def test_reference_optimiser_is_constant_lr_adamw_with_decay_on_every_parameter():
    model = MaeTrainer(MaeTrainSpec.make("tiny", "mel256"))
    tcfg = MaeTrainConfig(steps=100, lr=1e-4, optimizer="reference")
    opt, lr_at = make_optimizer(model, tcfg)
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["weight_decay"] == 0.05 and g["betas"] == (0.9, 0.95) and g["lr"] == 1e-4
    assert sum(p.numel() for p in g["params"]) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert {lr_at(s) for s in (0, 1, 50, 99)} == {1e-4}
    assert tcfg.clip_norm() is None
    default, lr_default = make_optimizer(model, MaeTrainConfig(steps=100, lr=1e-3))
    assert [grp["weight_decay"] for grp in default.param_groups] == [0.05, 0.0]
    assert lr_default(0) < lr_default(10) and lr_default(99) < lr_default(10)
    assert MaeTrainConfig().clip_norm() == 1.0
