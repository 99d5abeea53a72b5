r"""Smooth the model's evidence within the anatomical prior's regions."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_matex._maps import squared_cell_distances


class RegionSmoothing:
    r"""Average the model's evidence over the patches of the prior's region
    that lie near it and that the model represents alike, so that evidence
    on a few decisive patches covers the structure they belong to (a part of
    :class:`~captum_matex.stages.Fusion`).

    With :math:`e` the evidence and :math:`p` the prior on the patch grid,
    the region is :math:`r = \min(p / \ell, 1)` (every patch where the prior
    reaches ``level`` :math:`\ell` of its peak is wholly inside) and the
    evidence becomes

    .. math::
        e' = (1 - w g)\, e + w g\, r \odot (K e),
        \qquad
        K_{ij} = \frac{r_j\, k_{ij}}{\sum_m r_m\, k_{im}},
        \quad
        k_{ij} = \exp\Big(-\frac{\|x_i - x_j\|^2}{2 s^2}
            + \frac{\cos(f_i, f_j)}{\tau}\Big),

    a bilateral filter restricted to the region: :math:`x_i` is patch
    :math:`i`'s cell on the grid, :math:`f_i` its embedding in the model's
    last block (the feature term is left out when ``temperature`` is
    ``None`` or no embeddings are given) and :math:`g` the prior's gate on
    the sample (1 without a gate). It only moves the evidence: no patch
    rises above its own evidence or the largest in the region, a map that
    is zero stays zero, and with the gate closed (flat or randomised evidence,
    evidence on the other side) nothing changes.

    MATEX smooths by default on every readout when its atlas is fitted to
    the films (:data:`~captum_matex.matex.REGION_SMOOTHING`; phantom CLIP,
    SigLIP and report model with the phantom-fitted atlas: mIoU and CNR
    up). With a drawn atlas such as the built-in one it never smooths: a
    drawn region's edges miss the film's structures, and its priors weigh
    whole evidence basins instead
    (:class:`~captum_matex.stages.EvidenceBasins`; the benchmark's
    ``matex_region_smoothing`` row adds the smoothing there too).
    Measurements: method and results pages.

    Args:
        weight (float, optional): :math:`w`, how much of the evidence is
            replaced by its regional mean. Default: 0.75
        level (float, optional): :math:`\ell`, the prior value (its peak is
            1) from which a patch counts as wholly inside the region.
            Default: 0.25
        sigma (float, optional): :math:`s`, the spatial width in patch
            cells. Default: 3.0
        temperature (float, optional): :math:`\tau` of the feature term;
            ``None`` for a spatial kernel only. Default: 0.5

    Defaults were chosen on the phantom validation films (phantom SigLIP and
    phantom CLIP, phantom atlas, seeds 0 and 2, 300 pairs each; method page).
    """

    def __init__(
        self, weight: float = 0.75, level: float = 0.25, sigma: float = 3.0,
        temperature: float | None = 0.5,
    ) -> None:
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must lie in [0, 1], got {weight}")
        if not 0 < level <= 1:
            raise ValueError(f"level must lie in (0, 1], got {level}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be > 0 or None, got {temperature}")
        self.weight = weight
        self.level = level
        self.sigma = sigma
        self.temperature = temperature

    def kernel(
        self, region: Tensor, grid: tuple[int, int], features: Tensor | None = None
    ) -> Tensor:
        r"""``(B, N, N)`` row-stochastic :math:`K` for ``(B, N)`` regions on an
        ``(h, w)`` grid and optional ``(B, N, E)`` patch embeddings (rows with
        no region at all are zero)."""
        distances = squared_cell_distances(grid).to(region)
        logits = (-distances / (2 * self.sigma**2)).expand(region.shape[0], -1, -1)
        if self.temperature is not None and features is not None:
            unit = torch.nn.functional.normalize(features.to(region), dim=-1)
            logits = logits + unit @ unit.transpose(1, 2) / self.temperature
        weights = (logits - logits.amax(-1, keepdim=True)).exp() * region[:, None, :]
        return weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(region.dtype).tiny)

    def __call__(
        self, evidence: Tensor, prior: Tensor, opening: Tensor | None, grid: tuple[int, int],
        features: Tensor | None = None,
    ) -> Tensor:
        r"""
        Args:
            evidence (Tensor): ``(B, h * w)`` non-negative evidence.
            prior (Tensor): ``(B, h * w)`` prior in [0, 1].
            opening (Tensor or None): ``(B, 1)`` gate of the prior, ``None`` for open.
            grid (tuple[int, int]): ``(h, w)`` patch grid (row-major).
            features (Tensor, optional): ``(B, h * w, E)`` patch embeddings
                for the feature term.

        Returns:
            Tensor: the smoothed ``(B, h * w)`` evidence, in its dtype.
        """
        work = torch.promote_types(evidence.dtype, torch.float32)
        e = evidence.to(work)
        region = (prior.to(work) / self.level).clamp(max=1)
        regional = region * (self.kernel(region, grid, features) @ e[..., None])[..., 0]
        share = self.weight if opening is None else self.weight * opening.to(work)
        return ((1 - share) * e + share * regional).to(evidence.dtype)

    def __repr__(self) -> str:
        return (f"RegionSmoothing(weight={self.weight}, level={self.level}, sigma={self.sigma}, "
                f"temperature={self.temperature})")
