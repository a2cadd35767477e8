"""EnCodec's own entropy-coding LM (``encodec_lm_24khz``) as a scorer of every codebook.

The network is the ``encodec`` package's ``LMModel`` (5 layers, dim 200, 3.5 s past context)
with the official weights, resolved like the codec's (``audiotok.weights.resolve_encodec``).
Its input at frame ``t`` is ``1 + codes[:, t - 1]`` (0 at the first frame) and its output scores
every codebook of frame ``t``, exactly as ``encodec.compress`` streams it (``lm_step``).
"""

from __future__ import annotations

import re
import warnings

import torch

from ..errors import WeightsError
from ..weights import check_finite, load_torch_file, resolve_encodec
from .names import LM_NAMES

FRAME_RATE = 75
PAST_CONTEXT = int(3.5 * FRAME_RATE)  # 262 frames


def build_lm(n_q: int, frame_rate: int = FRAME_RATE):
    """An ``encodec.model.LMModel`` with the official hyper-parameters (random weights)."""
    from encodec.model import LMModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LMModel(n_q, 1024, num_layers=5, dim=200, past_context=int(3.5 * frame_rate))


def load_encodec_lm(codec: str = "encodec_24khz", checkpoint=None):
    """The official LM for ``codec`` from ``checkpoint`` or the torch hub cache, in eval mode."""
    if codec not in LM_NAMES:
        raise WeightsError(f"EnCodec has no pretrained LM for {codec}; use encodec_24khz")
    path = resolve_encodec(LM_NAMES[codec], checkpoint)
    state = load_torch_file(path, "EnCodec LM checkpoint")
    if not isinstance(state, dict) or not any(k.startswith("emb.") for k in state):
        raise WeightsError(f"checkpoint {path} does not hold EnCodec LM weights (no emb.* tensors)")
    check_finite(state, path)
    n_q = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"emb\.(\d+)\.", k)))
    lm = build_lm(n_q)
    try:
        lm.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise WeightsError(f"checkpoint {path} does not hold EnCodec LM weights ({first})") from None
    lm.checkpoint_path = str(path)
    return lm.eval()


def lm_step(lm, indices: torch.Tensor, states: list[torch.Tensor] | None, offset: int):
    """One streaming step of ``LMModel`` over a chunk: ``indices [B, K, L]`` (1 + code, 0 = none)
    -> (logits ``[B, L, K, 1024]``, new states).

    The same computation as ``LMModel.forward`` (which returns softmax probabilities): calling it
    chunk after chunk with the returned states equals ``encodec.compress``'s frame-by-frame stream."""
    from encodec.modules.transformer import create_sin_embedding

    B, K, L = indices.shape
    x = sum(lm.emb[k](indices[:, k]) for k in range(K))
    tr = lm.transformer
    if states is None:
        states = [torch.zeros_like(x[:, :1]) for _ in range(1 + len(tr.layers))]
    positions = torch.arange(L, device=x.device).view(1, -1, 1) + offset
    x = tr.norm_in(x) + create_sin_embedding(positions, x.shape[-1], max_period=tr.max_period)
    new_states = []
    for past, layer in zip(states, tr.layers):
        x, layer_input = layer(x, past, tr.past_context)
        new_states.append(torch.cat([past, layer_input], dim=1)[:, -tr.past_context:])
    return torch.stack([lm.linears[k](x) for k in range(K)], dim=2), new_states
