"""Grad-CAM on the patch tokens of a vision transformer block (Selvaraju et al., ICCV 2017)."""

from __future__ import annotations

from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._base import _DEFAULT, BaselineAttribution, resolve_block
from captum_matex.baselines._registry import register


@register("gradcam")
class ViTGradCAM(BaselineAttribution):
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
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        layer (int): block whose output tokens are used (negative counts from
            the end). Default: -2
        normalize: ``"minmax"`` (default), ``"max"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).

    Examples::

        >>> maps = ViTGradCAM(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        layer: int = -2,
        normalize=_DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, normalize=normalize, eval_mode=eval_mode)
        self.layer = layer

    @classmethod
    def get_name(cls) -> str:
        """``"Grad-CAM"``."""
        return "Grad-CAM"

    @log_usage()
    @accepts_tuple
    def attribute(
        self, inputs: Tensor, additional_forward_args: Any = None, output: OutputKind = "image"
    ) -> Tensor:
        r"""
        Args:
            inputs: ``(B, C, H, W)`` pixel values.
            additional_forward_args: ``(text,)``: per-sample token ids or
                embeddings, ``B`` phrases or one phrase.
            output: ``"image"``, ``"pixel"`` or ``"grid"``.

        Returns:
            Non-negative maps on the device of ``inputs``.
        """
        with self.adapter.explaining(self.eval_mode, exposes_attention=False):
            images, text = self._resolve(inputs, additional_forward_args)
            layer = resolve_block(self.layer, self.adapter.num_layers)
            with torch.enable_grad():
                trace = self.adapter.trace(
                    images.detach().requires_grad_(True), text.embeddings,
                    attentions=False, hidden_states=True,
                )
                feats = trace.hidden_states[layer]
                (grad,) = torch.autograd.grad(trace.score.sum(), feats)
        prefix = trace.num_prefix_tokens
        with torch.no_grad():
            feats, grad = feats.detach()[:, prefix:], grad[:, prefix:]
            weights = grad.mean(1, keepdim=True)
            cam = (weights * feats).sum(-1).clamp_min(0)
        return self._finish_grid(cam.reshape(-1, *trace.grid), images, output)
