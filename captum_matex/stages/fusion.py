"""Stage 5: fuse rollouts and the consistency map, re-weighted by priors."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from captum_matex._maps import gaussian_smooth, normalize_max, normalize_minmax
from captum_matex.stages.basins import EvidenceBasins
from captum_matex.stages.gate import PriorGate
from captum_matex.stages.region_smoothing import RegionSmoothing


#: Default prior floors :math:`\lambda_p` (chosen on the phantom validation split).
DEFAULT_FLOORS = {"anatomy": 0.5, "text": 0.5}


class Fusion:
    r"""Combine the model's evidence and re-weight it by spatial priors.

    .. math::
        E = \alpha \cdot \operatorname{mean}_k \hat m_k + (1 - \alpha) \cdot \hat c,
        \qquad
        E' = \operatorname{relu}\big(G_\sigma * E - Q_q(G_\sigma * E)\big),

    .. math::
        M = \operatorname{minmax}\Big(E' \cdot \prod_p \big(\lambda'_p + (1 - \lambda'_p)\, p\big)\Big),
        \qquad \lambda'_p = 1 - g_p (1 - \lambda_p)

    where hats denote max-normalisation, :math:`G_\sigma *` Gaussian
    smoothing on the patch grid, :math:`Q_q` the per-sample ``background``
    quantile over patches (evidence at or below it is the film's background
    level, not evidence for the phrase) and :math:`g_p \in [0, 1]` is the
    :class:`~captum_matex.stages.gate.PriorGate` of prior :math:`p` on this
    sample (1 without a gate). With ``region_smoothing``, :math:`E'` is first
    averaged within the anatomical prior's region
    (:class:`~captum_matex.stages.RegionSmoothing`); with ``basins``, each
    :math:`p` is first spread over the evidence's basins
    (:class:`~captum_matex.stages.EvidenceBasins`). Every :math:`\lambda_p > 0`, so a prior can
    only re-weight the model's evidence, never create it; the gate keeps it
    off where the evidence does not lean towards it (flat or randomised
    evidence, evidence on the other side of the film than the phrase says).

    Defaults (``alpha=0.75``, ``sigma=1``, anatomy floor 0.5) were chosen on
    the phantom validation split by ``benchmarks/tune_matex.py`` (mean ratio
    to M2IB of pointing game, mIoU and CNR, anatomical prior on
    :func:`~captum_matex.zoo.phantom_atlas`). Every best setting there had the
    model-derived text prior switched off (floor 1), so MATEX leaves it out by
    default; the text floor 0.5 applies when a text prior is passed (the
    benchmark's ``matex_with_text_prior`` row).

    Args:
        alpha: weight of the multi-scale rollouts against the consistency map.
        floors: :math:`\lambda_p` per prior name (``"text"``, ``"anatomy"``);
            priors not listed use ``default_floor``. Default:
            :data:`DEFAULT_FLOORS`.
        default_floor: :math:`\lambda` for unlisted priors.
        sigma: Gaussian smoothing of :math:`E` in patch cells before the
            priors (0 disables it); needs the grid in the call.
        background: quantile :math:`q` of each sample's smoothed evidence
            over its patches that is subtracted (and the rest clipped at 0)
            before the priors, e.g. 0.5 (the median patch); ``None`` keeps
            the evidence as it is. Default: None (MATEX's defaults by readout:
            :data:`~captum_matex.matex.EVIDENCE_BACKGROUND`).
        gate: how far each prior may act on each sample, read from the
            smoothed evidence above its background, e.g. :class:`~captum_matex.stages.gate.PriorGate`
            ``()`` (needs the grid in the call); ``None`` applies every prior
            fully. Default: None (opt-in; see the method page for measurements).
        region_smoothing: averages the evidence over its neighbourhood inside
            the anatomical prior's region (prior ``"anatomy"``, opened as far
            as its gate), before the priors re-weight it, e.g.
            :class:`~captum_matex.stages.RegionSmoothing` ``()`` (needs the
            grid in the call, and the patch embeddings for its feature term);
            ``None`` leaves the evidence as it is. Default: None (MATEX's
            defaults by readout, with a fitted atlas:
            :data:`~captum_matex.matex.REGION_SMOOTHING`).
        basins: spreads each prior over the basins of the evidence (after
            any region smoothing), so that it scales whole regions of
            evidence and reshapes none, e.g.
            :class:`~captum_matex.stages.EvidenceBasins` ``()`` (needs the
            grid in the call); ``None`` re-weights patch by patch. Default:
            None (MATEX's default with a drawn atlas:
            :func:`~captum_matex.matex.default_fusion`)
    """

    def __init__(
        self,
        alpha: float = 0.75,
        floors: Mapping[str, float] | None = None,
        default_floor: float = 0.5,
        sigma: float = 1.0,
        background: float | None = None,
        gate: PriorGate | None = None,
        region_smoothing: RegionSmoothing | None = None,
        basins: EvidenceBasins | None = None,
    ) -> None:
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.floors = dict(DEFAULT_FLOORS if floors is None else floors)
        self.default_floor = default_floor
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = sigma
        if background is not None and not 0 <= background < 1:
            raise ValueError(f"background must lie in [0, 1) or be None, got {background}")
        self.background = background
        self.gate = gate
        self.region_smoothing = region_smoothing
        self.basins = basins
        for name, floor in {**self.floors, "default": default_floor}.items():
            if not 0 < floor <= 1:
                raise ValueError(f"prior floor for {name!r} must lie in (0, 1], got {floor}")

    def evidence(self, rollouts: Tensor | None, consistency: Tensor | None) -> Tensor:
        r"""The model's evidence :math:`E`, ``(B, N)``, from ``(B, K, N)`` rollouts
        and a ``(B, N)`` consistency map (either may be ``None``)."""
        parts = []
        if rollouts is not None:
            parts.append((self.alpha, normalize_max(rollouts, start_dim=2).mean(1)))
        if consistency is not None:
            parts.append((1 - self.alpha, normalize_max(consistency)))
        if not parts:
            raise ValueError("fusion needs the rollouts, the consistency map or both")
        if len(parts) == 1:
            return parts[0][1]
        return sum(weight * part for weight, part in parts)

    def __call__(
        self,
        rollouts: Tensor | None,
        consistency: Tensor | None,
        priors: Mapping[str, Tensor],
        grid: tuple[int, int] | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        r"""
        Args:
            rollouts: ``(B, K, N)`` multi-scale rollout maps, or ``None``.
            consistency: ``(B, N)`` consistency map, or ``None``.
            priors: name to ``(B, N)`` prior in [0, 1].
            grid: ``(h, w)`` patch grid with ``h * w = N`` (needed when ``sigma > 0``).
            features: ``(B, N, E)`` the last block's patch embeddings, read by
                region smoothing's feature term (``None``: spatial term only).

        Returns:
            ``(B, N)`` fused map in [0, 1].
        """
        fused = self.evidence(rollouts, consistency)
        regional = self.region_smoothing is not None and "anatomy" in priors
        reads_grid = self.gate is not None or self.basins is not None
        if grid is None and (self.sigma > 0 or regional or (reads_grid and priors)):
            raise ValueError(
                "Fusion with sigma > 0, a prior gate, region smoothing or evidence basins needs "
                "the patch grid: call it with grid=(h, w)"
            )
        if self.sigma > 0:
            fused = gaussian_smooth(fused.view(-1, *grid), self.sigma).flatten(1)
        if self.background is not None:
            # torch.quantile takes float32/float64 only: half-precision maps are read in float32
            level = fused.float().quantile(self.background, dim=1, keepdim=True).to(fused.dtype)
            fused = (fused - level).clamp_min(0)
        openings = {} if self.gate is None else {
            name: self.gate(fused, prior, grid) for name, prior in priors.items()}
        if regional:
            fused = self.region_smoothing(
                fused, priors["anatomy"], openings.get("anatomy"), grid, features)
        if self.basins is not None:
            priors = self.basins.spread(fused, priors, grid)
        return self.reweight(fused, priors, openings)

    def reweight(
        self,
        evidence: Tensor,
        priors: Mapping[str, Tensor],
        openings: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        r"""The evidence re-weighted by each prior,
        :math:`\operatorname{minmax}(E' \cdot \prod_p (\lambda'_p + (1 - \lambda'_p)\, p))`,
        on any grid (the patch grid, or pixels for a prior rendered there).

        Args:
            evidence: ``(B, ...)`` non-negative evidence :math:`E'`.
            priors: name to prior in [0, 1], the shape of ``evidence``.
            openings: name to ``(B, 1)`` gate :math:`g_p` per sample; a prior
                not listed is fully open (:math:`g_p = 1`). Default: None

        Returns:
            The re-weighted evidence, min-max normalised per sample.
        """
        openings = {} if openings is None else openings
        fused = evidence
        for name, prior in priors.items():
            floor = self.floors.get(name, self.default_floor)
            if name in openings:
                opening = openings[name].reshape(-1, *[1] * (evidence.dim() - 1))
                floor = 1 - opening * (1 - floor)
            fused = fused * (floor + (1 - floor) * prior.to(fused))
        return normalize_minmax(fused)
