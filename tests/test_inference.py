"""audiotok.codecs.inference: the inference rewrite keeps EnCodec's function and measures nothing."""

from __future__ import annotations

import torch

from audiotok.codecs.inference import fold_weight_norm
from audiotok.testing import random_encodec, synthetic_audio


def test_folded_weight_norm_keeps_the_encoder_output():
    m = random_encodec("encodec_24khz")
    ref_model = random_encodec("encodec_24khz")
    fold_weight_norm(m)
    assert not any(hasattr(mod, "weight_g") for mod in m.modules())
    x = torch.from_numpy(synthetic_audio(0.5, seed=2))[None]
    with torch.inference_mode():
        got, ref = m.encoder(x), ref_model.encoder(x)
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-5

