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


def test_channels_last_convolution_equals_conv1d_on_every_path():
    """``layout.conv1d_nwc`` against ``F.conv1d`` on ``[rows, C, time]``: oneDNN's channels-last
    kernel (short reductions), im2col + GEMM (strided), one GEMM per tap (stride 1, dilated or
    not, rows laid end to end), pointwise, grouped; one row and several. Same output up to float
    rounding, and which path runs is fixed by the weight (``gemm_from``), not by the input."""
    import torch.nn.functional as F

    from audiotok.codecs.layout import conv1d_nwc, nwc_weight

    g = torch.Generator().manual_seed(0)
    cases = [  # (in, out, kernel, stride, dilation, groups, gemm_from)
        (16, 8, 3, 1, 1, 1, 1024), (16, 8, 3, 1, 1, 1, 8), (16, 8, 7, 1, 3, 1, 8), (16, 12, 4, 2, 1, 1, 8),
        (16, 12, 4, 2, 1, 1, 1024), (16, 8, 1, 1, 1, 1, 1024), (16, 16, 3, 1, 1, 4, 8), (32, 8, 7, 1, 9, 1, 64),
    ]
    for c_in, c_out, k, s, d, groups, gemm_from in cases:
        w = torch.randn(c_out, c_in // groups, k, generator=g) / (k * c_in) ** 0.5
        b = torch.randn(c_out, generator=g)
        nwc = nwc_weight(w, groups=groups, gemm_from=gemm_from)
        gemm = groups == 1 and (k == 1 or k * c_in >= gemm_from)
        assert (nwc.gemm is not None) == gemm and (nwc.conv is None) == gemm
        for rows in (1, 3):
            x = torch.randn(rows, c_in, 97, generator=g)
            want = F.conv1d(x, w, b, s, 0, d, groups)
            got = conv1d_nwc(x.transpose(1, 2).contiguous(), nwc, b, s, d, groups)
            assert got.shape == (rows, want.shape[2], c_out)
            torch.testing.assert_close(got.transpose(1, 2), want, rtol=1e-5, atol=1e-5)
