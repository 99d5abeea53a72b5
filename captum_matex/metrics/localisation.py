"""Localisation metrics: how well a map agrees with ground-truth boxes."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Box = Sequence[float]


def boxes_to_mask(
    boxes: Sequence[Sequence[Box]], size: tuple[int, int], device: torch.device | None = None
) -> Tensor:
    r"""Union of each sample's ``(x, y, w, h)`` pixel boxes as a ``(B, H, W)`` bool mask.

    A pixel ``(row, col)`` is inside a box when its centre lies inside,
    i.e. ``x <= col + 0.5 <= x + w`` and likewise for rows.
    """
    height, width = size
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    for i, sample_boxes in enumerate(boxes):
        for x, y, w, h in sample_boxes:
            masks[i] |= (cols >= x) & (cols <= x + w) & (rows >= y) & (rows <= y + h)
    return masks


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    r"""Pointing game (Zhang et al., 2018): is the map's maximum inside the boxes?

    Higher is better. Ties take the first maximum in row-major order. A
    constant map has no maximum to point with and scores 0; an empty mask
    scores 0; a map with NaN scores 0.

    Args:
        maps: ``(B, H, W)`` or ``(B, 1, H, W)`` / ``(B, C, H, W)`` (channels
            summed).
        masks: ``(B, H, W)`` bool ground truth.
        tolerance: pixels by which the boxes are grown before the test.

    Returns:
        ``(B,)`` float tensor of hits (1.0) and misses (0.0).
    """
    if maps.ndim == 4:
        maps = maps.sum(1)
    if tolerance > 0:
        kernel = 2 * tolerance + 1
        masks = torch.nn.functional.max_pool2d(
            masks[:, None].float(), kernel, stride=1, padding=tolerance
        )[:, 0].bool()
    flat = maps.flatten(1)
    peak = flat.argmax(1)
    hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    informative = (flat.amax(1) > flat.amin(1)) & torch.isfinite(flat).all(1)
    return (hit & informative).float()
