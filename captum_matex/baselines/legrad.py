"""LeGrad: explainability via feature formation sensitivity (Bousselham et al., 2024)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer, resolve_block


@register("legrad")
class LeGrad(Explainer):
    r"""LeGrad for CLIP-style image towers.

    Bousselham, Boggust, Chaybouti, Strobelt and Kuehne, *LeGrad: An
    Explainability Method for Vision Transformers via Feature Formation
    Sensitivity*, arXiv 2404.03214, 2024 (reference code:
    github.com/WalBouss/LeGrad, ``LeWrapper.compute_legrad_clip``).

    Every block :math:`l` from ``start_layer`` on is read out as an image
    embedding of its own: the mean of *all* its output tokens through the
    final norm and projection, scored against the text,
    :math:`s^l = \cos(\mathrm{proj}(\mathrm{ln}(\mathrm{mean}_t z^l_t)), e_t)`.
    Its gradient with respect to the same block's attention gives

    .. math::
        m^l_j = \frac{1}{H T}\sum_{h, i} \mathrm{relu}\Big(
        \frac{\partial s^l}{\partial A^l_{h,ij}}\Big),\qquad
        M = \mathrm{minmax}\Big(\sum_l m^l\Big)

    over patch columns :math:`j` (all query rows, CLS included). One
    forward pass and one backward pass per explained block. Default: the
    last two blocks (the reference's ``layer_index=-2``).

    Args:
        start_layer (int): first explained block (negative counts from the
            end). Default: -2

    Examples::

        >>> maps = LeGrad(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["right apical pneumothorax"],))
    """

    display_name = "LeGrad"
    captures_attention = True
    captures_hidden_states = True

    def __init__(self, model, tokenizer=None, *, start_layer: int = -2, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.start_layer = start_layer

    def patch_map(self, trace: VisionTrace) -> Tensor:
        start = resolve_block(self.start_layer, self.adapter.num_layers, "start_layer")
        blocks = range(start, len(trace.attentions))
        total = 0
        for block in blocks:
            tokens = trace.hidden_states[block]
            embedding = self.adapter.image_embedding(tokens, self.adapter.block_readout)
            score = self.adapter.target(embedding, trace.text_embeddings)
            (grad,) = torch.autograd.grad(
                score.sum(), trace.attentions[block], retain_graph=block != blocks[-1]
            )
            total = total + grad.clamp_min(0).mean(1).mean(1)
        return total[:, trace.num_prefix_tokens :]
