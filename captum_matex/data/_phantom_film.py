r"""
Rendering of the chest phantom's film: the normal anatomy as density layers
(body, lungs with vascular markings, mediastinum, trachea, ribs, clavicles)
and their exposure into a noisy radiograph in [0, 1].
"""

from __future__ import annotations

import functools
from typing import Dict

import numpy as np

from captum_matex.data._phantom_anatomy import _PX, _Anatomy, _lung_mask, _lung_window, _smoothstep


@functools.lru_cache(maxsize=8)
def _interp_matrix(size: int, n: int) -> np.ndarray:
    r"""Linear interpolation matrix from ``n`` control points to ``size``."""
    pos = np.linspace(0, n - 1, size, dtype=np.float32)
    lo = np.floor(pos).astype(int).clip(0, n - 2)
    frac = pos - lo
    m = np.zeros((size, n), np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _low_freq(rng: np.random.Generator, size: int, n: int = 6) -> np.ndarray:
    r"""Smooth random field with zero mean and unit-ish amplitude."""
    m = _interp_matrix(size, n)
    g = rng.standard_normal((n, n)).astype(np.float32)
    return m @ g @ m.T


def _markings(
    rng: np.random.Generator, an: _Anatomy, side: int, lung: np.ndarray
) -> np.ndarray:
    r"""Vascular markings radiating from the hilum, inside one lung only."""
    out = np.zeros_like(lung)
    rows, cols = _lung_window(an, side)
    u, v = an.u[rows, cols], an.v[rows, cols]
    hx = an.cx + (-1 if side == 0 else 1) * 0.08 * an.s
    hy = an.cy + 0.03
    theta = np.arctan2(v - hy, u - hx)
    rad = np.sqrt((u - hx) ** 2 + (v - hy) ** 2)
    p1, p2 = rng.uniform(0, 6.28, 2)
    stripes = (0.5 + 0.5 * np.cos(23 * theta + p1 + 9 * rad)) ** 4
    stripes *= 0.6 + 0.4 * np.cos(37 * theta + p2 - 11 * rad)
    out[rows, cols] = lung[rows, cols] * stripes * np.exp(-rad / 0.16)
    return out


def _draw_normal(rng: np.random.Generator, an: _Anatomy) -> Dict[str, np.ndarray]:
    r"""Draw the anatomy. Returns named float layers (density, lung, ...)."""
    u, v, s = an.u, an.v, an.s
    soft = 1.5 * _PX
    body_r = np.sqrt(((u - an.cx) / (0.44 * s)) ** 2 + ((v - an.cy - 0.1) / 0.75) ** 2)
    body = _smoothstep((1 - body_r) / (4 * _PX))
    density = 0.42 * body
    lungs, markings = np.zeros_like(u), np.zeros_like(u)
    for side in (0, 1):
        lung = _lung_mask(an, side)
        np.maximum(lungs, lung, out=lungs)
        markings += _markings(rng, an, side, lung)
    below = _smoothstep((v - np.minimum(an.dome_y(0), an.dome_y(1))) / soft)
    density += 0.25 * body * below * (1 - lungs)
    # mediastinum and trachea (separable: products of 1-D profiles)
    u1, v1 = u[0], v[:, 0]
    med_w = 0.055 * s
    med = np.outer(_smoothstep((v1 - 0.08) / soft), _smoothstep((med_w - np.abs(u1 - an.cx)) / soft))
    density = density + 0.22 * med * (1 - lungs)
    trachea_y = _smoothstep((an.cy - v1) / (4 * _PX)) * _smoothstep((v1 - 0.08) / soft)
    trachea = np.outer(trachea_y, _smoothstep((0.012 - np.abs(u1 - an.cx)) / soft))
    density = density - 0.10 * trachea
    # ribs: posterior arcs, periodic in a curved coordinate
    lung_soft = np.minimum(lungs * 1.2, 1.0)
    curve = (0.9 * (u1 - an.cx) ** 2 + an.cy - an.lung_b)[None, :]
    phase = (v - curve) * np.float32(2 * np.pi / (0.062 * s)) + np.float32(rng.uniform(0, 6.283))
    rib = np.clip(np.cos(phase) * 3 - 2.0, 0, 1)
    # clavicles
    clav_y = (an.cy - an.lung_b + 0.03 + 0.25 * np.abs(u1 - an.cx) ** 1.5)[None, :]
    clav = _smoothstep((0.012 * s - np.abs(v - clav_y)) / soft)
    clav *= _smoothstep((0.30 * s - np.abs(u1 - an.cx)) / soft)[None, :] * body
    not_lung = 1 - lungs
    return {
        "density": density,
        "lungs": lungs,
        "markings": markings,
        "rib": rib * (lung_soft + 0.5 * body * not_lung * (1 - med)),
        "clav": clav,
    }


def _render_film(
    rng: np.random.Generator,
    an: _Anatomy,
    layers: Dict[str, np.ndarray],
    heart: np.ndarray,
    size: int,
) -> np.ndarray:
    r"""Combine density layers into an exposed, noisy ``(size, size)`` radiograph."""
    lungs = layers["lungs"]
    mark = layers["markings"] * layers["markings_mask"]
    density = (
        layers["density"]
        - 0.30 * lungs
        + 0.16 * mark
        + 0.09 * layers["rib"]
        + 0.16 * layers["clav"]
    )
    density = density + layers["opacity"]
    # heart replaces the aerated lung where it overlaps
    density = density * (1 - heart) + heart * np.maximum(density, 0.50 + 0.05 * layers["rib"])
    density = density + 0.03 * _low_freq(rng, size)
    exposure = rng.uniform(0.85, 1.15)
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(density * exposure, 0, None) ** gamma
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.05)
    sigma = rng.uniform(0.01, 0.035) * np.sqrt(12.0)
    img = img + np.float32(sigma) * (rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
    return np.clip(img, 0.0, 1.0).astype(np.float32)

