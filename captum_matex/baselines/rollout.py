"""Attention rollout (Abnar and Zuidema, ACL 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer, resolve_block
from captum_matex.stages.rollout import rollout

#: how the heads of one block are fused
HEAD_REDUCTIONS = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}


@register("rollout")
class AttentionRollout(Explainer):
    r"""Raw attention rollout, no gradients and no text.

    Abnar and Zuidema, *Quantifying Attention Flow in Transformers*, ACL 2020.

    Each block's head-averaged attention gets the residual connection and
    its rows are renormalised; the blocks are multiplied in forward order:

    .. math::
        \hat A^l = \mathrm{rownorm}\big(\mathrm{mean}_h A^l + I\big),\qquad
        R = \hat A^{L-1} \cdots \hat A^{s}.

    The map is :math:`R[\mathrm{CLS}, \mathrm{patches}]`, upsampled and
    min-max normalised. It ignores the phrase (the same map for every text):
    a text-agnostic reference row for benchmarks.

    Args:
        start_layer (int): first block rolled (negative counts from the end).
            Default: 0
        head_reduction (str): ``"mean"`` (Abnar and Zuidema), ``"max"`` or
            ``"min"`` over heads. Default: ``"mean"``

    Examples::

        >>> maps = AttentionRollout(model).attribute(pixel_values,
        ...                                          additional_forward_args=(ids,))
    """

    display_name = "Attention rollout"
    captures_attention = True
    uses_gradients = False

    def __init__(
        self, model, tokenizer=None, *, start_layer: int = 0, head_reduction: str = "mean",
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        if head_reduction not in HEAD_REDUCTIONS:
            raise ValueError(f"head_reduction must be 'mean', 'max' or 'min', got {head_reduction!r}")
        self.start_layer = start_layer
        self.head_reduction = head_reduction

    def patch_map(self, trace: VisionTrace) -> Tensor:
        start = resolve_block(self.start_layer, len(trace.attentions), "start_layer")
        heads = torch.stack(trace.attentions[start:], 1)  # (B, L', H, T, T)
        fused = HEAD_REDUCTIONS[self.head_reduction](heads, 2)
        probe = trace.readout_attention
        readout = None if probe is None else HEAD_REDUCTIONS[self.head_reduction](probe, 1).mean(1)
        return trace.read(rollout(fused.float()), readout)
