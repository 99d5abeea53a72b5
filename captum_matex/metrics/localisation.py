r"""Localisation metrics: how well a map agrees with ground-truth boxes.

Every metric takes ``maps`` of shape ``(B, H, W)`` or ``(B, C, H, W)``
(channels are summed) and ``masks``, the ``(B, H, W)`` bool union of each
sample's boxes at the maps' resolution (see :func:`boxes_to_mask`), and
returns a ``(B,)`` float tensor, one score per image-phrase pair. Average
over a data set with :func:`torch.nanmean` *and* report how many values were
NaN.

Conventions for degenerate inputs (shared by all metrics here):

* **Empty mask** (a phrase without a box, e.g. a normal study): the score is
  ``NaN``. There is nothing to localise, so the sample says nothing about the
  map; benchmarks must skip it, not count it as a hit or a miss. Metrics that
  compare inside with outside (:func:`cnr`, :func:`pixel_auroc`) are also
  ``NaN`` when the mask covers the whole image.
* **Constant map**: carries no location, so it scores what a map without
  information earns: pointing game 0 (no maximum to point with), energy
  pointing game ``|B| / (H W)`` (the box's share of the image, chance
  level), mIoU 0 (nothing survives min-max normalisation), CNR 0 (no
  contrast), pixel AUROC 0.5, top-k precision ``|B| / (H W)``.
* **Map with NaN or inf**: treated as a constant map (so it scores at chance
  level, never as a hit) and a ``RuntimeWarning`` says how many there were.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from captum_matex._maps import normalize_minmax
from captum_matex.metrics._common import (
    average_ranks,
    check_masks,
    flatten_maps,
    informative,
    sanitise,
)

Box = Sequence[float]

MIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def boxes_to_mask(
    boxes: Sequence[Sequence[Box]], size: tuple[int, int], device: torch.device | None = None
) -> Tensor:
    r"""Union of each sample's ``(x, y, w, h)`` pixel boxes as a ``(B, H, W)`` bool mask.

    A pixel ``(row, col)`` is inside a box when its centre lies inside,
    i.e. ``x <= col + 0.5 <= x + w`` and likewise for rows. A sample without
    boxes gets an all-False mask (every metric then returns NaN for it).

    Args:
        boxes: per sample, a list of ``(x, y, w, h)`` boxes in pixels of the
            maps' coordinate frame (MS-CXR boxes are in original image pixels).
        size: ``(H, W)`` of the mask.
        device: device of the mask.

    Returns:
        ``(B, H, W)`` bool tensor.
    """
    height, width = size
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    for i, sample_boxes in enumerate(boxes):
        for x, y, w, h in sample_boxes:
            masks[i] |= (cols >= x) & (cols <= x + w) & (rows >= y) & (rows <= y + h)
    return masks


def _prepare(maps: Tensor, masks: Tensor, metric: str) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened ``(B, N)`` maps (non-finite ones zeroed), ``(B, N)`` masks, ``(B,)`` has-box."""
    maps = flatten_maps(maps)
    masks = check_masks(masks, maps.shape)
    flat, _ = sanitise(maps.flatten(1), metric)
    flat_masks = masks.flatten(1)
    return flat, flat_masks, flat_masks.any(1)


def _nan_where_empty(scores: Tensor, has_box: Tensor) -> Tensor:
    return torch.where(has_box, scores, torch.full_like(scores, float("nan")))


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    r"""Pointing game (Zhang et al., 2018): is the map's maximum inside the boxes?

    .. math::

        \mathrm{PG} = \mathbb{1}\left[\arg\max_p M_p \in B\right]

    **Higher is better** (range [0, 1]; the data-set mean is the hit rate).
    Ties take the first maximum in row-major order. A constant map has no
    maximum to point with and scores 0; a map with NaN/inf is treated as
    constant (0, with a warning); an empty mask gives NaN (nothing to point
    at: skip the sample).

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.
        tolerance: pixels by which the boxes are grown (square dilation)
            before the test, as in the "pointing game with tolerance" of
            Zhang et al. (15 pixels there).

    Returns:
        ``(B,)`` float tensor of hits (1.0), misses (0.0) and NaN for samples
        without a box.
    """
    maps = flatten_maps(maps)
    masks = check_masks(masks, maps.shape)
    has_box = masks.flatten(1).any(1)
    if tolerance > 0:
        kernel = 2 * tolerance + 1
        masks = torch.nn.functional.max_pool2d(
            masks[:, None].float(), kernel, stride=1, padding=tolerance
        )[:, 0].bool()
    flat, _ = sanitise(maps.flatten(1), "pointing_game")
    peak = flat.argmax(1)
    hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    scores = (hit & informative(flat)).to(flat.dtype)
    return _nan_where_empty(scores, has_box)


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Energy-based pointing game (Wang et al., Score-CAM, 2020): share of the
    map's mass inside the boxes.

    .. math::

        \mathrm{EPG} = \frac{\sum_{p \in B} M^+_p}{\sum_p M^+_p},
        \qquad M^+ = \max(M, 0)

    **Higher is better** (range [0, 1]; a uniform map scores
    ``|B| / (H W)``, the chance level). Negative values are clipped to zero
    first (energy is non-negative). A map whose clipped sum is zero
    (constant, all non-positive, or NaN/inf) scores the chance level
    ``|B| / (H W)``; an empty mask gives NaN.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.

    Returns:
        ``(B,)`` float tensor.
    """
    flat, flat_masks, has_box = _prepare(maps, masks, "energy_pointing_game")
    energy = flat.clamp_min(0)
    total = energy.sum(1)
    inside = (energy * flat_masks).sum(1)
    chance = flat_masks.sum(1).to(flat.dtype) / flat.shape[1]
    scores = torch.where(total > 0, inside / total.clamp_min(torch.finfo(flat.dtype).tiny), chance)
    return _nan_where_empty(scores, has_box)


def minmax_normalize(maps: Tensor) -> Tensor:
    r"""Per-sample min-max normalisation of maps to [0, 1].

    .. math:: \tilde M = \frac{M - \min M}{\max M - \min M}

    The package's one noise-safe normalisation
    (:func:`captum_matex._maps.normalize_minmax`): a constant map, or one
    whose spread is rounding noise, becomes all zeros; NaN/inf values stay
    non-finite.

    Args:
        maps: ``(B, ...)`` tensor.

    Returns:
        Tensor of the same shape with each sample in [0, 1].
    """
    return torch.where(torch.isfinite(maps), normalize_minmax(maps), maps)


def miou(
    maps: Tensor, masks: Tensor, thresholds: Sequence[float] = MIOU_THRESHOLDS
) -> Tensor:
    r"""Mean intersection over union of the thresholded map and the boxes.

    As in BioViL (Boecking et al., 2022) phrase grounding, averaged over
    thresholds ``t`` in {0.1, 0.2, 0.3, 0.4, 0.5} on the min-max normalised
    map:

    .. math::

        \mathrm{mIoU} = \frac{1}{|T|} \sum_{t \in T}
            \frac{|\{\tilde M > t\} \cap B|}{|\{\tilde M > t\} \cup B|}

    **Higher is better** (range [0, 1]). A constant map (or one with NaN/inf)
    normalises to zeros, predicts nothing and scores 0; an empty mask gives
    NaN.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.
        thresholds: thresholds on the min-max normalised map.

    Returns:
        ``(B,)`` float tensor.
    """
    flat, flat_masks, has_box = _prepare(maps, masks, "miou")
    norm = minmax_normalize(flat)
    ious = []
    for t in thresholds:
        pred = norm > t
        inter = (pred & flat_masks).sum(1)
        union = (pred | flat_masks).sum(1)
        ious.append(inter.to(flat.dtype) / union.clamp_min(1).to(flat.dtype))
    scores = torch.stack(ious, 1).mean(1)
    return _nan_where_empty(scores, has_box)


def cnr(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Contrast-to-noise ratio between the map inside and outside the boxes.

    BioViL's phrase-grounding metric (Boecking et al., ECCV 2022):

    .. math::

        \mathrm{CNR} = \frac{|\mu_{in} - \mu_{out}|}{\sqrt{\sigma^2_{in} + \sigma^2_{out}}}

    with means and *population* variances (``ddof = 0``, NumPy's ``var``
    default, as in the hi-ml/NumPy evaluation) of the map's pixels inside
    and outside the union of boxes. **Higher is better** (range
    ``[0, inf)``). The ratio is unchanged by any affine rescaling
    ``M -> a M + b`` (``a != 0``), so the map is used as given (raw
    similarities, min-max normalised or not, give the same value); it is not
    clipped. A constant map (or one with NaN/inf) has no contrast and scores
    0; a map constant inside and (at another value) constant outside
    separates perfectly and scores ``inf``; an empty mask or a mask covering
    the whole image gives NaN. The hi-ml reference pads pixels outside the
    model's centre crop with NaN before scoring: fill or crop those here
    instead, a NaN map scores as constant.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.

    Returns:
        ``(B,)`` float tensor.
    """
    flat, flat_masks, has_box = _prepare(maps, masks, "cnr")
    flat = flat.double()
    inside = flat_masks.double()
    outside = 1.0 - inside
    n_in, n_out = inside.sum(1), outside.sum(1)
    mu_in = (flat * inside).sum(1) / n_in.clamp_min(1)
    mu_out = (flat * outside).sum(1) / n_out.clamp_min(1)
    var_in = ((flat - mu_in[:, None]).square() * inside).sum(1) / n_in.clamp_min(1)
    var_out = ((flat - mu_out[:, None]).square() * outside).sum(1) / n_out.clamp_min(1)
    contrast = (mu_in - mu_out).abs()
    noise = (var_in + var_out).sqrt()
    scores = torch.where(
        noise > 0, contrast / noise.clamp_min(1e-300), torch.where(contrast > 0, math.inf, 0.0)
    )
    scores = torch.where(informative(flat), scores, torch.zeros_like(scores))
    scores = torch.where((n_in > 0) & (n_out > 0), scores, math.nan)
    return scores.to(maps.dtype if maps.is_floating_point() else torch.float32)


def pixel_auroc(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Area under the ROC curve of the map as a pixel classifier of the boxes.

    Rank-based (Mann-Whitney U), ties given their average rank, which equals
    the probability that a random box pixel outscores a random background
    pixel, ties counting one half:

    .. math::

        \mathrm{AUROC} = \frac{\sum_{p \in B} r_p - |B|(|B| + 1)/2}{|B|\,|\bar B|}

    where ``r_p`` is the 1-based average rank of pixel ``p`` among all
    pixels. **Higher is better** (range [0, 1], chance 0.5). A constant map
    (or one with NaN/inf) scores 0.5; an empty mask or a mask covering the
    whole image gives NaN.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.

    Returns:
        ``(B,)`` float tensor.
    """
    flat, flat_masks, _ = _prepare(maps, masks, "pixel_auroc")
    ranks = average_ranks(flat)
    pos = flat_masks.sum(1).double()
    neg = flat.shape[1] - pos
    rank_sum = (ranks * flat_masks).sum(1)
    scores = (rank_sum - pos * (pos + 1) / 2) / (pos * neg).clamp_min(1)
    scores = torch.where((pos > 0) & (neg > 0), scores, math.nan)
    return scores.to(flat.dtype)


def top_k_precision(maps: Tensor, masks: Tensor, fraction: float = 0.1) -> Tensor:
    r"""Precision of the map's top ``fraction`` of pixels: the share of them inside
    the boxes.

    .. math::

        \mathrm{P@k} = \frac{|\mathrm{top}_k(M) \cap B|}{k},
        \qquad k = \max(1, \mathrm{round}(\mathrm{fraction} \cdot H W))

    **Higher is better** (range [0, 1]; chance ``|B| / (H W)``). Ties at the
    k-th value are resolved in expectation: pixels strictly above it count
    fully, and the remaining places are filled by the tied pixels in
    proportion to how many of them lie in the boxes (the mean precision over
    all tie-breaks). A constant map (or one with NaN/inf) thus scores
    ``|B| / (H W)``; an empty mask gives NaN.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool ground truth.
        fraction: share of pixels taken, in (0, 1].

    Returns:
        ``(B,)`` float tensor.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flat, flat_masks, has_box = _prepare(maps, masks, "top_k_precision")
    n = flat.shape[1]
    k = max(1, int(round(fraction * n)))
    kth = flat.topk(k, dim=1).values[:, -1:]
    above = flat > kth
    tied = flat == kth
    n_above = above.sum(1)
    n_tied = tied.sum(1)
    hits_above = (above & flat_masks).sum(1).double()
    hits_tied = (tied & flat_masks).sum(1).double()
    hits = hits_above + (k - n_above).double() * hits_tied / n_tied.clamp_min(1).double()
    scores = (hits / k).to(flat.dtype)
    return _nan_where_empty(scores, has_box)
