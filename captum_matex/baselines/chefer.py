"""Gradient-weighted attention rollout (Chefer, Gur, Wolf, ICCV 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer, resolve_block
from captum_matex.stages.attention import GradWeightedAttention


@register("chefer")
class CheferGradRollout(Explainer):
    r"""Generic attention-model explainability (GAE) of Chefer et al.

    Chefer, Gur and Wolf, *Generic Attention-model Explainability for
    Interpreting Bi-Modal and Encoder-Decoder Transformers*, ICCV 2021
    (reference code: github.com/hila-chefer/Transformer-MM-Explainability).

    With :math:`\bar A^l = \mathrm{mean}_h\,\mathrm{relu}(\nabla_{A^l} s \odot A^l)`
    the relevance starts at :math:`R = I` and, for every block from
    ``start_layer`` on,

    .. math::
        R \leftarrow R + \bar A^l R .

    The map is :math:`R[\mathrm{CLS}, \mathrm{patches}]` (with an attention-pooling
    probe instead of a class token, :math:`\bar A_{\mathrm{probe}} R`), bilinearly upsampled
    and min-max normalised. One forward pass and one backward pass that
    stops at block ``start_layer``.

    The authors' CLIP notebook uses only the last block (``start_layer=-1``),
    which is the default; ``start_layer=0`` is the ViT setting of the paper.

    Args:
        start_layer (int): first block rolled (negative counts from the end).
            Default: -1

    Examples::

        >>> maps = CheferGradRollout(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["right upper lobe opacity"],))
    """

    display_name = "Chefer GAE"
    captures_attention = True

    def __init__(self, model, tokenizer=None, *, start_layer: int = -1, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.start_layer = start_layer
        self._relevance = GradWeightedAttention("mean")

    def patch_map(self, trace: VisionTrace) -> Tensor:
        start = resolve_block(self.start_layer, self.adapter.num_layers, "start_layer")
        attentions = trace.attentions[start:]  # only these: autograd stops at the earliest
        probe = [] if trace.readout_attention is None else [trace.readout_attention]
        grads = torch.autograd.grad(trace.score.sum(), attentions + probe)
        with torch.no_grad():
            relevance = self._relevance([a.detach() for a in attentions], grads[: len(attentions)])
            tokens = relevance.shape[-1]
            rel = torch.eye(tokens, device=relevance.device, dtype=relevance.dtype)
            rel = rel.expand(relevance.shape[0], tokens, tokens)
            for block in relevance.unbind(1):
                rel = rel + block @ rel
            # an attention-pooling probe is one more step: R_probe = A_probe R
            readout = self._relevance.block(probe[0].detach(), grads[-1]).mean(1) if probe else None
        return trace.read(rel, readout)
