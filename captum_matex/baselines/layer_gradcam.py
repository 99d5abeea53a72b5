"""Captum's LayerGradCam on ViT tokens through a token-to-grid wrapper."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerGradCam as _LayerGradCam
from torch import Tensor, nn

from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._captum import CaptumBaseline
from captum_matex.baselines._registry import register
from captum_matex.explainer import resolve_block


class TokenGrid(nn.Module):
    r"""Identity on patch tokens that shows them to Captum as a feature map.

    ``(B, N, D)`` patch tokens in, ``(B, D, h, w)`` out, so
    :class:`captum.attr.LayerGradCam` (which averages gradients over the
    trailing spatial dimensions and sums over dimension 1) sees channels and
    a grid.

    Args:
        grid: ``(h, w)`` patch grid.
    """

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)

    def forward(self, patch_tokens: Tensor) -> Tensor:
        """``(B, N, D)`` -> ``(B, D, h, w)``."""
        return patch_tokens.transpose(1, 2).reshape(
            patch_tokens.shape[0], patch_tokens.shape[2], *self.grid
        )


class _SplitForward:
    r"""Score with a :class:`TokenGrid` spliced in after vision block ``block``."""

    def __init__(self, adapter: VisionLanguageAdapter, block: int, to_grid: TokenGrid) -> None:
        self.adapter, self.block, self.to_grid = adapter, block, to_grid

    def __call__(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        prefix = self.adapter.num_prefix_tokens
        with torch.no_grad():
            tokens = self.adapter.embed_tokens(images, upto_block=self.block)
        tokens = tokens.detach().requires_grad_(True)
        grid = self.to_grid(tokens[:, prefix:])
        patches = grid.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens[:, :prefix], patches], 1)
        return self.adapter.trace(
            tokens, text_embeddings, attentions=False, start_block=self.block + 1
        ).score


@register("layer_gradcam")
class LayerGradCam(CaptumBaseline):
    r"""Captum's :class:`captum.attr.LayerGradCam` on the patch tokens of a block.

    Selvaraju et al., ICCV 2017. The image tower is split after block
    ``layer``; a :class:`TokenGrid` between the halves presents the patch
    tokens as a ``(B, D, h, w)`` feature map, so Captum computes

    .. math::
        M = \mathrm{relu}\Big(\sum_c \mathrm{mean}_{xy}
        \Big(\frac{\partial s}{\partial Z_{cxy}}\Big) Z_{cxy}\Big),

    which is :class:`ViTGradCAM` computed by Captum (the two agree; a
    cross-check of both). Upsampled and min-max normalised.

    Args:
        layer (int): block whose output tokens are used. Default: -2

    Examples::

        >>> maps = LayerGradCam(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    default_normalize = "minmax"

    def __init__(
        self, model, tokenizer=None, *, layer: int = -2, **options: Any
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.layer = layer

    display_name = "LayerGradCam"

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        block = resolve_block(self.layer, self.adapter.num_layers)
        to_grid = TokenGrid(self.adapter.grid_size(images))
        forward = _SplitForward(self.adapter, block, to_grid)
        with torch.enable_grad():
            return _LayerGradCam(forward, to_grid).attribute(
                images, additional_forward_args=(text_embeddings,), relu_attributions=False
            )
