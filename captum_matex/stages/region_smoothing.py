r"""Smooth the model's evidence within the anatomical prior's regions."""

from __future__ import annotations

from torch import Tensor

from captum_matex._maps import gaussian_smooth

_TINY = 1e-6


class RegionSmoothing:
    r"""Average the model's evidence over its neighbourhood inside the prior's
    region, so that evidence on a few decisive patches covers the structure
    they lie in (an opt-in part of :class:`~captum_matex.stages.Fusion`).

    With :math:`e` the evidence and :math:`p` the prior on the patch grid,
    the region is :math:`r = \min(p / \ell, 1)` (every patch where the prior
    reaches ``level`` :math:`\ell` of its peak is wholly inside) and the
    evidence becomes

    .. math::
        e' = (1 - w g)\, e + w g\, r \cdot \frac{G_s * (r\, e)}{G_s * r},

    the second term a normalised convolution: the mean of the evidence over
    the region's patches within about ``sigma`` :math:`s` cells, with
    :math:`g` the prior's gate on the sample (1 without a gate). It only moves
    the evidence: a patch gets no more than the largest evidence near it in
    the region, a map that is zero stays zero, and with the gate closed (flat
    or randomised evidence, evidence on the other side) nothing changes.

    Measured on phantom films (results page): with the phantom-fitted atlas
    it trades a little mIoU against MATEX for CNR above MATEX without the
    prior; with the generic atlas, whose regions miss the phantom's anatomy,
    it costs the pointing game, so MATEX leaves it out by default (the
    benchmark's ``matex_region_smoothing`` row).

    Args:
        weight (float, optional): :math:`w`, how much of the evidence is
            replaced by its regional mean. Default: 0.5
        level (float, optional): :math:`\ell`, the prior value (its peak is
            1) from which a patch counts as wholly inside the region.
            Default: 0.25
        sigma (float, optional): :math:`s`, the Gaussian's width in patch
            cells. Default: 2.0

    Weight, level and sigma were chosen on the phantom validation films
    (phantom CLIP, seeds 0 and 2, 300 pairs each; method page).
    """

    def __init__(self, weight: float = 0.5, level: float = 0.25, sigma: float = 2.0) -> None:
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must lie in [0, 1], got {weight}")
        if not 0 < level <= 1:
            raise ValueError(f"level must lie in (0, 1], got {level}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.weight = weight
        self.level = level
        self.sigma = sigma

    def __call__(
        self, evidence: Tensor, prior: Tensor, opening: Tensor | None, grid: tuple[int, int]
    ) -> Tensor:
        r"""
        Args:
            evidence (Tensor): ``(B, h * w)`` non-negative evidence.
            prior (Tensor): ``(B, h * w)`` prior in [0, 1].
            opening (Tensor or None): ``(B, 1)`` gate of the prior, ``None`` for open.
            grid (tuple[int, int]): ``(h, w)`` patch grid (row-major).

        Returns:
            Tensor: the smoothed ``(B, h * w)`` evidence.
        """
        region = (prior.to(evidence) / self.level).clamp(max=1)
        mass = gaussian_smooth((region * evidence).view(-1, *grid), self.sigma).flatten(1)
        cover = gaussian_smooth(region.view(-1, *grid), self.sigma).flatten(1)
        regional = region * mass / cover.clamp_min(_TINY)
        share = self.weight if opening is None else self.weight * opening.to(evidence)
        return (1 - share) * evidence + share * regional

    def __repr__(self) -> str:
        return f"RegionSmoothing(weight={self.weight}, level={self.level}, sigma={self.sigma})"
