"""Feature ablation with patch-grid feature masks, via Captum."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import FeatureAblation as _FeatureAblation
from torch import Tensor

from captum_matex.baselines._captum import PerturbationBaseline
from captum_matex.baselines._registry import register


def patch_feature_mask(
    image_size: tuple[int, int], patch_size: tuple[int, int], cell: int, device=None
) -> Tensor:
    r"""``(1, 1, H, W)`` feature ids: one id per ``cell x cell`` block of patches.

    Args:
        image_size: ``(H, W)`` pixels.
        patch_size: ``(ph, pw)`` pixels per patch.
        cell: patches per side of one feature.
        device: device of the mask.

    Returns:
        Tensor: long ids, row-major over cells.
    """
    height, width = image_size
    ch, cw = patch_size[0] * cell, patch_size[1] * cell
    rows = torch.arange(height, device=device) // ch
    cols = torch.arange(width, device=device) // cw
    n_cols = (width + cw - 1) // cw
    return (rows[:, None] * n_cols + cols[None, :])[None, None]


@register("feature_ablation")
class FeatureAblation(PerturbationBaseline):
    r"""Score drop when one cell of patches (all channels) is set to a baseline.

    Captum's :class:`captum.attr.FeatureAblation` on
    :class:`~captum_matex.SimilarityForward` with a feature mask that groups
    the pixels of ``cell x cell`` patches (:func:`patch_feature_mask`):

    .. math::
        M_{xy} = \mathrm{relu}\big(C\,(s(x) - s(x_{g(x,y) \leftarrow b}))\big),

    max-normalised (:math:`g(x, y)`: the cell holding the pixel). With
    ``cell=1`` it equals :class:`Occlusion` with one-patch windows and
    strides (a consistency check); larger cells give coarser, cheaper maps.

    Args:
        cell (int): patches per side of one ablated feature. Default: 1
        baseline, perturbations_per_eval: as for :class:`PerturbationBaseline`.

    Examples::

        >>> maps = FeatureAblation(model, processor, cell=2).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    def __init__(self, model, tokenizer=None, *, cell: int = 1, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if cell < 1:
            raise ValueError("cell is a whole number of patches, at least 1")
        self.cell = cell

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        mask = patch_feature_mask(
            tuple(images.shape[-2:]), self.adapter.patch_size, self.cell, images.device
        ).expand(1, images.shape[1], -1, -1)
        return _FeatureAblation(self.forward_func).attribute(
            images,
            baselines=self.baseline,
            additional_forward_args=(text_embeddings,),
            feature_mask=mask,
            perturbations_per_eval=self.perturbations_per_eval,
        )
