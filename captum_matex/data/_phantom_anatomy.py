r"""
Patient geometry of the chest phantom and its soft anatomical masks.

:class:`_Anatomy` draws one patient's size, position, lung shapes,
cardiothoracic ratio and diaphragm domes from a random generator, in
normalised image coordinates (``u``: columns, ``v``: rows, both in [0, 1]);
:func:`_lung_mask` and :func:`_draw_heart` render its lungs and cardiac
silhouette as soft masks.
"""

from __future__ import annotations

import functools
from typing import Dict, Tuple

import numpy as np

_PX = 1.0 / 224.0  # edge softness unit (one pixel at the default size)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    r"""Soft indicator ``x > 0`` with a unit-wide transition."""
    y = np.asarray(x, dtype=np.float32) + np.float32(0.5)
    np.maximum(y, 0.0, out=y)
    np.minimum(y, 1.0, out=y)
    return y


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""Pixel-centre coordinates in ``[0, 1]`` (u: columns, v: rows)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :].repeat(size, 0), c[:, None].repeat(size, 1)


class _Anatomy:
    r"""Geometry of one patient, in normalised image coordinates."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.size = size
        self.u, self.v = _grid(size)
        s = rng.uniform(0.86, 1.04)  # patient size
        self.s = s
        self.cx = 0.5 + rng.normal(0, 0.015)
        self.cy = 0.47 + rng.normal(0, 0.015)
        self.lung_dx = 0.185 * s
        self.lung_a = 0.145 * s * rng.uniform(0.95, 1.05)
        self.lung_b = 0.30 * s * rng.uniform(0.95, 1.05)
        self.ctr = rng.uniform(0.40, 0.47)  # cardiothoracic ratio
        self.dome = [self.cy + self.lung_b * rng.uniform(0.62, 0.72) for _ in (0, 1)]
        self.dome[1] += 0.02  # left hemidiaphragm sits lower
        self.heart_cy = self.cy + 0.10 * s
        self._radius: Dict[int, np.ndarray] = {}

    def lung_center(self, side: int) -> Tuple[float, float]:
        r"""Centre of the image-left (0, patient right) or image-right lung."""
        sign = -1.0 if side == 0 else 1.0
        return self.cx + sign * self.lung_dx, self.cy

    def lung_radius(self, side: int) -> np.ndarray:
        r"""Super-elliptic radius of the lung outline (1 on the pleura)."""
        if side not in self._radius:
            lx, ly = self.lung_center(side)
            rows, cols = _lung_window(self, side)
            du = np.abs((self.u[rows, cols] - lx) / self.lung_a)
            dv = (self.v[rows, cols] - ly) / self.lung_b
            r = np.full(self.u.shape, 9.0, np.float32)
            r[rows, cols] = np.sqrt(du * du * np.sqrt(du) + dv * dv)
            self._radius[side] = r
        return self._radius[side]

    def dome_y(self, side: int) -> np.ndarray:
        r"""Height of the diaphragm dome under a lung, per column."""
        key = side + 10
        if key not in self._radius:
            lx, _ = self.lung_center(side)
            t = (self.u[:1] - lx) / self.lung_a
            row = self.dome[side] - 0.05 * self.s * np.clip(1 - t * t, 0, 1)
            self._radius[key] = np.broadcast_to(row, self.u.shape)
        return self._radius[key]

    def heart_half_width(self) -> float:
        r"""Half width of the cardiac silhouette."""
        thorax = 2 * (self.lung_dx + self.lung_a)
        return 0.5 * self.ctr * thorax


def _lung_window(an: _Anatomy, side: int) -> Tuple[slice, slice]:
    r"""Row and column slices bounding one lung (with a small margin)."""
    lx, ly = an.lung_center(side)
    n = an.size
    x0 = max(0, int((lx - 1.05 * an.lung_a) * n))
    x1 = min(n, int((lx + 1.05 * an.lung_a) * n) + 2)
    y0 = max(0, int((ly - 1.05 * an.lung_b) * n))
    y1 = min(n, int((max(an.dome) + 0.02) * n) + 2)
    return slice(y0, y1), slice(x0, x1)


def _lung_mask(an: _Anatomy, side: int) -> np.ndarray:
    r"""Soft mask of the image-left (0, patient right) or image-right lung."""
    soft = 1.5 * _PX
    rows, cols = _lung_window(an, side)
    r = an.lung_radius(side)[rows, cols]
    inside = _smoothstep((1 - r) * an.lung_a / soft)
    above = _smoothstep((an.dome_y(side)[rows, cols] - an.v[rows, cols]) / soft)
    lung = np.zeros_like(an.u)
    lung[rows, cols] = inside * above
    return lung


def _draw_heart(an: _Anatomy) -> np.ndarray:
    r"""Soft mask of the cardiac silhouette for the patient's current CTR."""
    hw = an.heart_half_width()
    hcx = an.cx + 0.25 * hw
    hr = np.sqrt(((an.u - hcx) / hw) ** 2 + ((an.v - an.heart_cy) / (0.13 * an.s)) ** 2)
    below = an.v < max(an.dome) + 0.01
    return (_smoothstep((1 - hr) * hw / (1.5 * _PX)) * below).astype(np.float32)
