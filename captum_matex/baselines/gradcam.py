"""Grad-CAM on the patch tokens of a vision transformer block (Selvaraju et al., ICCV 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer, resolve_block


@register("gradcam")
class ViTGradCAM(Explainer):
    r"""Grad-CAM with the patch tokens of one block as the feature map.

    Selvaraju et al., *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*, ICCV 2017, applied to ViT tokens as in
    pytorch-grad-cam (token reshape) and the CLIP baselines of Chefer et al.
    and Zhao et al.

    With :math:`Z \in \mathbb{R}^{N \times D}` the patch tokens leaving block
    :math:`l` and :math:`s` the image-text cosine,

    .. math::
        w_c = \frac1N \sum_j \frac{\partial s}{\partial Z_{jc}},\qquad
        M_j = \mathrm{relu}\Big(\sum_c w_c Z_{jc}\Big),

    reshaped to the patch grid, upsampled and min-max normalised. Prefix
    (CLS) tokens are left out of the channel weights (pytorch-grad-cam's
    convention; the Grad-ECLIP scripts average over the CLS token too).

    The default block is the one before the last (as in the Grad-ECLIP
    scripts): the last block's patch tokens do not reach the CLS-pooled
    score at all (their gradient is zero), so Grad-CAM there is empty.

    Args:
        layer (int): block whose output tokens are used (negative counts from
            the end). Default: -2

    Examples::

        >>> maps = ViTGradCAM(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    display_name = "Grad-CAM"
    captures_hidden_states = True

    def __init__(self, model, tokenizer=None, *, layer: int = -2, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.layer = layer

    def patch_map(self, trace: VisionTrace) -> Tensor:
        feats = trace.hidden_states[resolve_block(self.layer, self.adapter.num_layers)]
        (grad,) = torch.autograd.grad(trace.score.sum(), feats)
        prefix = trace.num_prefix_tokens
        feats, grad = feats.detach()[:, prefix:], grad[:, prefix:]
        return (grad.mean(1, keepdim=True) * feats).sum(-1).clamp_min(0)
