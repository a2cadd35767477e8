"""audiotok.models.inference: the inference rewrites keep EnCodec's function."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiotok.models.inference import ELU, float64_elu_is_faster, fold_weight_norm, swap_elu
from audiotok.testing import random_encodec, synthetic_audio


def test_float64_elu_is_the_correctly_rounded_float32_elu():
    x = torch.randn(4, 32, 5000, generator=torch.Generator().manual_seed(1)) * 3
    got = ELU()(x.clone())
    exact = F.elu(x.double()).float()
    assert got.dtype == torch.float32 and torch.equal(got, exact)
    plain = F.elu(x)
    ulp = torch.finfo(torch.float32).eps * exact.abs().clamp(min=torch.finfo(torch.float32).tiny)
    assert ((plain - exact).abs() <= ulp).all()  # torch's own is within one ulp


def test_elu_choice_is_measured_once_and_either_choice_keeps_the_encoder_output():
    choice = float64_elu_is_faster()
    assert isinstance(choice, bool) and float64_elu_is_faster() is choice  # measured once per process
    for force in (True, False):
        m = random_encodec("encodec_24khz")
        ref_model = random_encodec("encodec_24khz")
        fold_weight_norm(m)
        swap_elu(m, force=force)
        kinds = {type(mod) for mod in m.encoder.modules()} & {ELU, nn.ELU}
        assert kinds == ({ELU} if force else {nn.ELU})
        x = torch.from_numpy(synthetic_audio(0.5, seed=2))[None]
        with torch.inference_mode():
            got, ref = m.encoder(x), ref_model.encoder(x)
        assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-5
