"""Attention modules computed explicitly, so that their probabilities can be read."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def explicit_mha(
    mha: nn.MultiheadAttention,
    record: Callable[[nn.Module, dict[str, Tensor]], None],
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""``nn.MultiheadAttention.forward`` with the probabilities materialised.

    Computes :math:`\mathrm{softmax}(QK^\top/\sqrt{d} + M)\,V` from the
    module's own ``in_proj`` and ``out_proj`` weights (the same math as the
    fused path) and hands ``query``, ``key``, ``value`` (``(B, T, D)``, heads
    concatenated, before scaling), ``context`` (before the out-projection) and
    ``attention`` (``(B, H, T, T)``, the tensor multiplied with the values) to
    ``record``.
    """
    if key_padding_mask is not None or is_causal:
        raise NotImplementedError("explicit attention supports attn_mask only")
    if not mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    heads = mha.num_heads
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
    weights = mha.in_proj_weight.chunk(3)
    q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def split(t: Tensor) -> Tensor:
        return t.unflatten(-1, (heads, -1)).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-2, -1) * mha.head_dim**-0.5
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        logits = logits.masked_fill(attn_mask, float("-inf"))
    elif attn_mask is not None:
        logits = logits + attn_mask
    probs = F.dropout(logits.softmax(-1), mha.dropout, mha.training)
    context = (probs @ split(v)).transpose(1, 2).flatten(2)
    out = mha.out_proj(context)
    record(mha, dict(query=q, key=k, value=v, context=context, attention=probs))
    if not mha.batch_first:
        out = out.transpose(0, 1)
    weights = (probs.mean(1) if average_attn_weights else probs) if need_weights else None
    return out, weights
