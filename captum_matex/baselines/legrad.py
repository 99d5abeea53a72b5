"""LeGrad: explainability via feature formation sensitivity (Bousselham et al., 2024)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._base import _DEFAULT, BaselineAttribution, resolve_block
from captum_matex.baselines._registry import register


@register("legrad")
class LeGrad(BaselineAttribution):
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
        model: a supported image-text model or an adapter; the adapter needs
            :meth:`~captum_matex.adapters.VisionLanguageAdapter.project_tokens`.
        tokenizer: tokenizer or processor for text given as strings.
        start_layer (int): first explained block (negative counts from the
            end). Default: -2
        normalize: ``"minmax"`` (reference), ``"max"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).

    Examples::

        >>> maps = LeGrad(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["right apical pneumothorax"],))
    """

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        start_layer: int = -2,
        normalize=_DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, normalize=normalize, eval_mode=eval_mode)
        self.start_layer = start_layer

    @classmethod
    def get_name(cls) -> str:
        """``"LeGrad"``."""
        return "LeGrad"

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
        with self.adapter.explaining(self.eval_mode):
            images, text = self._resolve(inputs, additional_forward_args)
            start = resolve_block(self.start_layer, self.adapter.num_layers, "start_layer")
            with torch.enable_grad():
                trace = self.adapter.trace(
                    images.detach().requires_grad_(True), text.embeddings,
                    attentions=True, hidden_states=True,
                )
                total = 0
                blocks = range(start, len(trace.attentions))
                for block in blocks:
                    pooled = trace.hidden_states[block].mean(1, keepdim=True)
                    embedding = self.adapter.project_tokens(pooled)[:, 0]
                    score = F.cosine_similarity(
                        embedding, trace.text_embeddings.to(embedding), dim=-1
                    )
                    (grad,) = torch.autograd.grad(
                        score.sum(), trace.attentions[block], retain_graph=block != blocks[-1]
                    )
                    total = total + grad.clamp_min(0).mean(1).mean(1)
        grid_maps = total[:, trace.num_prefix_tokens :].reshape(-1, *trace.grid)
        return self._finish_grid(grid_maps, images, output)
