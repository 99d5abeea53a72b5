r"""
Shapes of the chest atlas: where the built-in regions of a generic frontal
chest radiograph sit, and the soft drawing primitives (superellipses, bands
of a lung's height or width) on a supersampled :class:`_Canvas`.

Coordinates are normalised, radiological orientation: ``x`` from the image
left (0) to the image right (1), ``y`` from top (0) to bottom (1); the
patient's right lung is on the image left.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LUNG_X = {"right": (0.10, 0.46), "left": (0.54, 0.90)}
_LUNG_Y = (0.12, 0.82)
# A lung is the quarter of a superellipse (power _LUNG_POWER) between its apex,
# _LUNG_APEX_INSET of its width from the medial edge, and the costophrenic
# angle at its lateral base, cut below by a diaphragm dome that rises
# _DOME_RISE of its height towards the midline, (1 - m)^_DOME_POWER with m the
# medial-to-lateral fraction. Fitted to the median outline of 434 pairs of lung
# masks of clinical frontal films (benchmarks/atlas_lungs.py).
_LUNG_POWER = 2.25
_LUNG_APEX_INSET = 0.10
_DOME_RISE = 0.12
_DOME_POWER = 0.4
_HILUM_X = {"right": 0.38, "left": 0.62}
_HILUM_Y = 0.475
_HILUM_RADII = (0.05, 0.075)  # (x, y)
_PERIHILAR_RADII = (0.12, 0.16)
_HEART_CENTRE = (0.55, 0.64)  # (x, y): shifted towards the patient's left
_HEART_RADII = (0.16, 0.13)
_MEDIASTINUM_CENTRE = (0.50, 0.30)
_MEDIASTINUM_RADII = (0.07, 0.22)
_MEDIASTINUM_POWER = 4.0
# region -> (top, bottom) as fractions of the lung's height, apex = 0
_VERTICAL_BANDS = {
    "upper zone": (0.0, 1 / 3),
    "mid zone": (1 / 3, 2 / 3),
    "lower zone": (2 / 3, 1.0),
    "apex": (0.0, 0.2),
    "base": (0.8, 1.0),
    "costophrenic angle": (0.8, 1.0),
}
# region -> start of the band as a fraction of the lung's width, medial = 0
_LATERAL_BANDS = {"costophrenic angle": 0.5, "lateral periphery": 2 / 3}


class _Canvas:
    r"""Sample coordinates of one supersampled render plus its region memo."""

    def __init__(self, size: tuple[int, int], orientation: str) -> None:
        height, width = size
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        self.size = size
        self.y, self.x = torch.meshgrid(ys, xs, indexing="ij")
        # built-in shapes are drawn radiologically; mirror x for the other view
        self.x_atlas = self.x if orientation == "radiological" else 1.0 - self.x
        self.memo: dict[str, Tensor] = {}


def _soft_step(value: Tensor, softness: float) -> Tensor:
    r"""Smooth 0 -> 1 transition at ``value = 0`` over about ``softness``."""
    return torch.sigmoid(value / softness)


def _superellipse(
    x: Tensor,
    y: Tensor,
    centre: tuple[float, float],
    radii: tuple[float | Tensor, float],
    power: float,
    softness: float,
) -> Tensor:
    r"""Soft superellipse ``|dx / rx|^p + |dy / ry|^p <= 1`` (0.5 on its edge).

    The edge profile is a sigmoid of the first-order distance to the boundary,
    ``(1 - r) / |grad r|``, so ``softness`` is a width in image units along
    every direction of a stretched shape.
    """
    u = (x - centre[0]).abs() / radii[0]
    v = (y - centre[1]).abs() / radii[1]
    radius = (u**power + v**power).clamp_min(1e-12) ** (1.0 / power)
    slope = radius ** (1.0 - power) * torch.hypot(
        u ** (power - 1) / radii[0], v ** (power - 1) / radii[1]
    )
    return _soft_step((1.0 - radius) / slope.clamp_min(1e-6), softness)


def _extent(mask: Tensor, coords: Tensor, dim: int) -> tuple[float, float]:
    r"""First and last coordinate along ``dim`` where ``mask`` reaches half its peak."""
    profile = mask.amax(dim=dim)
    line = coords.select(dim, 0)
    inside = torch.nonzero(profile >= 0.5 * profile.max()).flatten()
    return float(line[inside[0]]), float(line[inside[-1]])


def _vertical_band(
    lung: Tensor, canvas: _Canvas, band: tuple[float, float], softness: float
) -> Tensor:
    r"""Soft horizontal band between two fractions of the lung's height."""
    top, bottom = _extent(lung, canvas.y, dim=1)
    height = bottom - top
    weight = torch.ones_like(lung)
    if band[0] > 0:
        weight = weight * _soft_step(canvas.y - (top + band[0] * height), softness)
    if band[1] < 1:
        weight = weight * _soft_step(top + band[1] * height - canvas.y, softness)
    return weight


def _lateral_band(lung: Tensor, canvas: _Canvas, start: float, softness: float) -> Tensor:
    r"""Soft vertical band from ``start`` (fraction of the lung's width) to its lateral edge."""
    left, right = _extent(lung, canvas.x, dim=0)
    centroid = float((lung * canvas.x).sum() / lung.sum())
    if centroid > 0.5:  # lung on the image right: lateral is towards x = 1
        return _soft_step(canvas.x - (left + start * (right - left)), softness)
    return _soft_step(right - start * (right - left) - canvas.x, softness)


def _centroid(mask: Tensor, canvas: _Canvas) -> tuple[float, float]:
    r"""Mass centre ``(x, y)`` of ``mask``."""
    total = mask.sum()
    return float((mask * canvas.x).sum() / total), float((mask * canvas.y).sum() / total)
