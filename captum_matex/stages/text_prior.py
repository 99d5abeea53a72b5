"""Stage 4a: model-derived text-guided spatial prior (dense patch-text similarity)."""

from __future__ import annotations

from torch import Tensor

from captum_matex._maps import gaussian_smooth, is_flat, normalize_max
from captum_matex.targets import CosineSimilarity


class PatchTextPrior:
    r"""Where the model's own patch tokens match the phrase.

    .. math::
        p_j = \operatorname{relu}\big(\cos(\mathrm{proj}(\mathrm{ln}(z_j)), e_t)\big)

    for the last-block patch tokens :math:`z_j`, smoothed with a Gaussian and
    max-normalised. Where no patch has a positive similarity the prior is
    uniform (all ones), so it can never erase the evidence.

    Args:
        sigma: Gaussian smoothing in patch cells (0 disables smoothing).
    """

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = sigma

    def __call__(
        self, patch_embeddings: Tensor, text_embeddings: Tensor, grid: tuple[int, int]
    ) -> Tensor:
        r"""
        Args:
            patch_embeddings: ``(B, N, E)`` projected patch tokens.
            text_embeddings: ``(B, E)``.
            grid: ``(h, w)`` with ``h * w = N``.

        Returns:
            ``(B, N)`` prior in [0, 1].
        """
        sim = CosineSimilarity()(patch_embeddings, text_embeddings[:, None]).clamp_min(0)
        sim = gaussian_smooth(sim.view(-1, *grid), self.sigma).flatten(1)
        uninformative = is_flat(sim)[:, None]  # no (or only noise) similarity: neutral prior
        return normalize_max(sim).masked_fill(uninformative, 1.0)
