"""Stage 4c: the text-guided prior of a generative model, read from its decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from captum_matex._maps import is_flat, normalize_max
from captum_matex.stages.consistency import weigh_by_agreement
from captum_matex.targets import TargetPass


class DecoderAttentionPrior:
    r"""Where the decoder looks on the image while it predicts the phrase.

    For decoder layer :math:`l`, the gradient-weighted attention
    :math:`\bar D^l` (stage 1's reduction, of the phrase's log-likelihood)
    is read from the rows that predict the phrase's tokens to the image
    tokens' columns, averaged over those rows; the layers are weighted by
    their agreement (:func:`~captum_matex.stages.consistency.weigh_by_agreement`,
    as the vision blocks are), and the map is resized from the image-token
    grid to the patch grid and max-normalised. Where the decoder gives the
    image no positive relevance the prior is uniform (all ones), so it can
    never erase the vision tower's evidence.

    Args:
        temperature: :math:`\tau` of the layer weighting.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(
        self, decoder_relevance: Tensor, target_pass: TargetPass, grid: tuple[int, int]
    ) -> Tensor:
        r"""
        Args:
            decoder_relevance: ``(M, L_d, S, S)`` reduced decoder attention.
            target_pass: the pass it came from (its ``query_mask``,
                ``image_mask`` positions and ``image_grid``).
            grid: ``(h, w)`` patch grid of the vision tower.

        Returns:
            ``(M, h * w)`` prior in [0, 1].
        """
        queries = target_pass.query_mask.to(decoder_relevance)
        rows = (queries[:, None, None] @ decoder_relevance).squeeze(2)
        rows = rows / queries.sum(-1).clamp_min(1)[:, None, None]
        cells = rows[..., target_pass.image_mask]  # (M, L_d, h_i * w_i)
        prior = weigh_by_agreement(cells, self.temperature).map
        prior = prior.view(-1, 1, *target_pass.image_grid)
        if tuple(target_pass.image_grid) != tuple(grid):
            prior = F.interpolate(prior, size=grid, mode="bilinear", align_corners=False)
        prior = prior.flatten(1).clamp_min(0)
        return normalize_max(prior).masked_fill(is_flat(prior)[:, None], 1.0)
