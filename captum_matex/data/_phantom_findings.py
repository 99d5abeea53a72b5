r"""
Findings of the chest phantom: where each one sits and how it changes the film.

Each ``_add_<finding>(rng, an, layers, side, zone)`` draws one finding on one
lung (``side``: 0 for the image left, the patient's right) by changing the
density layers in place, and returns its pixel mask (or None), its size word
and the lung zone it was drawn in (the phrase names that zone).
:data:`_ADDERS` and :data:`_ZONES` list them and their lung zones.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from captum_matex.data._phantom_anatomy import _PX, _Anatomy, _smoothstep


_ZONE_NAMES = ("upper", "mid", "lower")


def _lung_height(an: _Anatomy) -> Tuple[float, float]:
    r"""Top and height of the span the three lung zones divide in thirds."""
    top = an.cy - 0.75 * an.lung_b
    return top, an.dome[0] - 0.04 - top


def _zone_y(an: _Anatomy, zone: str, rng: np.random.Generator) -> float:
    r"""A vertical position inside the given lung zone."""
    top, span = _lung_height(an)
    return top + span * (_ZONE_NAMES.index(zone) + rng.uniform(0.25, 0.75)) / 3.0


def _zone_of(an: _Anatomy, y: float) -> str:
    r"""The lung zone (as :func:`_zone_y` divides the lung) holding height ``y``."""
    top, span = _lung_height(an)
    return _ZONE_NAMES[int(np.clip(3 * (y - top) // span, 0, 2))]


def _side_index(laterality: str) -> int:
    r"""Image half of a patient side (patient right -> image left = 0)."""
    return 0 if laterality == "right" else 1


def _lung_point(
    rng: np.random.Generator, an: _Anatomy, side: int, zone: str, margin: float
) -> Tuple[float, float, str]:
    r"""A point well inside one lung, in the given zone where 20 draws find
    one, else the lung's centre, and the zone the point lies in."""
    lx, _ = an.lung_center(side)
    for _ in range(20):
        y = _zone_y(an, zone, rng)
        x = lx + rng.uniform(-0.55, 0.55) * an.lung_a
        ix = min(an.size - 1, int(x * an.size))
        iy = min(an.size - 1, int(y * an.size))
        r = an.lung_radius(side)[iy, ix]
        hw = an.heart_half_width()
        hd = ((x - an.cx - 0.25 * hw) / (hw + margin)) ** 2
        hd += ((y - an.heart_cy) / (0.13 * an.s + margin)) ** 2
        if r < 1 - margin / an.lung_a and y < an.dome_y(side)[iy, ix] - margin and hd > 1:
            return x, y, zone
    return lx, an.cy, _zone_of(an, an.cy)


def _blob(
    rng: np.random.Generator, an: _Anatomy, x: float, y: float, radius: float, lobes: int
) -> np.ndarray:
    r"""Irregular soft blob (maximum of a few Gaussians), peak 1."""
    out = np.zeros_like(an.u)
    for k in range(lobes):
        ox, oy = (rng.normal(0, 0.35 * radius, 2) if k else (0.0, 0.0))
        rx = radius * rng.uniform(0.7, 1.0)
        ry = radius * rng.uniform(0.7, 1.0)
        g = np.exp(-(((an.u - x - ox) / rx) ** 2 + ((an.v - y - oy) / ry) ** 2))
        out = np.maximum(out, g)
    return out


def _add_consolidation(rng, an, layers, side, zone):
    r"""Airspace opacity: irregular soft blob confined to the lung."""
    radius = rng.uniform(0.07, 0.10) * an.s
    x, y, zone = _lung_point(rng, an, side, zone, 0.5 * radius)
    blob = _blob(rng, an, x, y, radius, 3)
    shape = np.clip((blob - 0.35) / 0.3, 0, 1) * layers["lungs"]
    layers["opacity"] += 0.30 * shape
    layers["markings_mask"] *= 1 - 0.7 * shape
    return shape > 0.05, "moderate", zone


def _add_nodule(rng, an, layers, side, zone):
    r"""Nodule or mass: round, sharply marginated, dense."""
    size = "large" if rng.random() < 0.35 else "small"
    # at least ~1.5 patches of a 14 x 14 grid across, even for small patients
    radius = (rng.uniform(0.078, 0.092) if size == "large" else rng.uniform(0.063, 0.074)) * an.s
    x, y, zone = _lung_point(rng, an, side, zone, radius)
    d = np.sqrt(((an.u - x) / radius) ** 2 + ((an.v - y) / (radius * rng.uniform(0.85, 1.0))) ** 2)
    shape = _smoothstep((1 - d) * radius / (1.5 * _PX)) * (1 - 0.3 * d.clip(0, 1) ** 2)
    layers["opacity"] += 0.40 * shape
    return shape > 0.05, size, zone


def _add_effusion(rng, an, layers, side, zone):
    r"""Pleural effusion: dependent fluid with a lateral meniscus."""
    size = ["small", "moderate", "large"][int(rng.integers(0, 3))]
    height = {"small": 0.10, "moderate": 0.16, "large": 0.24}[size] * an.lung_b * 2
    height *= rng.uniform(0.9, 1.1)
    lx, _ = an.lung_center(side)
    lateral = (an.u - lx) * (-1 if side == 0 else 1) / an.lung_a  # -1 medial .. 1 lateral
    level = an.dome[side] - height + 0.06 * an.s * (1 - np.clip(lateral + 0.2, 0, 1.2) ** 2)
    half = (an.u < an.cx) if side == 0 else (an.u >= an.cx)
    inside = _smoothstep((1.04 - an.lung_radius(side)) * an.lung_a / (1.5 * _PX))
    low = _smoothstep((an.v - level) / (2 * _PX))
    floor = _smoothstep((an.dome[side] + 0.01 - an.v) / (1.5 * _PX))
    shape = inside * low * floor * half * np.clip(layers["lungs"] * 1.5, 0, 1)
    layers["opacity"] += 0.36 * shape
    layers["markings_mask"] *= 1 - shape
    return shape > 0.05, size, zone


def _add_pneumothorax(rng, an, layers, side, zone):
    r"""Pneumothorax: apical-lateral lucent rim, no markings, pleural line."""
    size = ["small", "moderate", "large"][int(rng.integers(0, 3))]
    width = {"small": 0.16, "moderate": 0.24, "large": 0.34}[size] * rng.uniform(0.9, 1.1)
    r = an.lung_radius(side)
    lx, ly = an.lung_center(side)
    lateral = (an.u - lx) * (-1 if side == 0 else 1)
    upper = an.v < ly + 0.35 * an.lung_b
    region = (r > 1 - width) & upper & (lateral > -0.45 * an.lung_a)
    shape = region.astype(np.float32) * layers["lungs"]
    layers["markings_mask"] *= 1 - shape
    layers["opacity"] -= 0.06 * shape
    line = np.exp(-(((r - (1 - width)) * an.lung_a / (1.2 * _PX)) ** 2))
    line *= upper & (lateral > -0.45 * an.lung_a)
    layers["opacity"] += 0.22 * line * layers["lungs"]
    return (shape > 0.05) | (line * layers["lungs"] > 0.3), size, zone


def _add_cardiomegaly(rng, an, layers, side, zone):
    r"""Cardiomegaly: enlarge the cardiac silhouette (CTR 0.58-0.68)."""
    size = "mild" if rng.random() < 0.4 else "moderate"
    an.ctr = rng.uniform(0.57, 0.62) if size == "mild" else rng.uniform(0.62, 0.68)
    return None, size, zone


def _add_atelectasis(rng, an, layers, side, zone):
    r"""Plate-like (band) atelectasis in the lower zone."""
    lx, _ = an.lung_center(side)
    x = lx + (-1 if side == 0 else 1) * rng.uniform(0.0, 0.25) * an.lung_a
    y = an.dome[side] - rng.uniform(0.07, 0.12) * an.s
    ang = np.deg2rad(rng.uniform(-18, 18))
    half_len = rng.uniform(0.07, 0.10) * an.s
    thick = rng.uniform(0.014, 0.02) * an.s
    du, dv = an.u - x, an.v - y
    along = du * np.cos(ang) + dv * np.sin(ang)
    across = -du * np.sin(ang) + dv * np.cos(ang)
    shape = _smoothstep((thick - np.abs(across)) / (1.2 * _PX))
    shape *= _smoothstep((half_len - np.abs(along)) / (3 * _PX)) * layers["lungs"]
    layers["opacity"] += 0.32 * shape
    return shape > 0.05, "small", zone


def _add_edema(rng, an, layers, side, zone):
    r"""Pulmonary edema: bilateral perihilar (bat-wing) haze."""
    size = "mild" if rng.random() < 0.5 else "moderate"
    haze = np.zeros_like(an.u)
    for s in (0, 1):
        lx, _ = an.lung_center(s)
        hx = an.cx + (lx - an.cx) * 0.75
        g = np.exp(-(((an.u - hx) / (0.11 * an.s)) ** 2 + ((an.v - an.cy - 0.04) / (0.17 * an.s)) ** 2))
        haze = np.maximum(haze, g)
    shape = np.clip((haze - 0.25) / 0.5, 0, 1) * layers["lungs"]
    layers["opacity"] += (0.20 if size == "mild" else 0.26) * shape
    layers["markings_mask"] *= 1 - 0.5 * shape
    return shape > 0.08, size, zone


_ADDERS = {
    "consolidation": _add_consolidation,
    "nodule": _add_nodule,
    "effusion": _add_effusion,
    "pneumothorax": _add_pneumothorax,
    "cardiomegaly": _add_cardiomegaly,
    "atelectasis": _add_atelectasis,
    "edema": _add_edema,
}
_ZONES = {
    "consolidation": ("upper", "mid", "lower"),
    "nodule": ("upper", "mid", "lower"),
    "effusion": ("lower",),
    "pneumothorax": ("upper",),
    "atelectasis": ("lower",),
}
