r"""
Synthetic frontal chest-radiograph phantom with ground-truth findings.

The phantom draws a PA chest film from a handful of smooth analytic shapes
(body, lungs with vascular markings, ribs, clavicles, mediastinum, heart,
diaphragm domes with costophrenic angles) and adds findings at anatomically
plausible places. Every sample carries the pixel mask and the boxes of each
finding, plus a radiology phrase describing it, so that explanation maps can
be scored without any credentialed data.

Radiology convention: the film is viewed as if facing the patient, so the
patient's *left* is on the *image right* (large ``x``).

Samples are a pure function of ``(seed, split, index)``: the splits use
disjoint ranges of per-sample seeds, so ``train``, ``val`` and ``test`` never
share an image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from captum_matex.phrases import SIDES, swap_laterality

__all__ = [
    "PhantomCXR",
    "PhantomSample",
    "FindingRecord",
    "candidate_phrases",
    "swap_laterality",
    "all_phrases",
]

Box = Tuple[int, int, int, int]

FINDINGS: Tuple[str, ...] = (
    "normal",
    "consolidation",
    "nodule",
    "effusion",
    "pneumothorax",
    "cardiomegaly",
    "atelectasis",
    "edema",
)
LATERALISED: Tuple[str, ...] = (
    "consolidation",
    "nodule",
    "effusion",
    "pneumothorax",
    "atelectasis",
)
SPLIT_OFFSETS: Dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
MAX_LENGTH = 10_000_000
GENERATOR_VERSION = 1  # bump when the drawing changes (training banks are cached by it)

# Phrase templates. {side}: patient side word, {zone}: upper/mid/lower,
# {lobe}: upper/lower, {size}: small/moderate/large. Every lateralised
# template names the side, so the side can only be answered by looking at
# the finding itself.
TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "normal": (
        "no acute cardiopulmonary process",
        "no acute cardiopulmonary abnormality",
        "the lungs are clear",
        "clear lungs without focal consolidation",
        "normal chest radiograph",
    ),
    "consolidation": (
        "{side} lung opacity",
        "{side} {lobe} lobe opacity",
        "opacity in the {side} {zone} lung",
        "airspace opacity in the {side} {zone} zone",
        "{side} {zone} lung consolidation",
        "focal consolidation in the {side} lung",
    ),
    "nodule": (
        "{side} lung nodule",
        "{side} lung mass",
        "nodule in the {side} {zone} lung",
        "rounded mass in the {side} {zone} zone",
        "{side} {lobe} lobe nodule",
        "{size} nodular opacity in the {side} lung",
    ),
    "effusion": (
        "{side} pleural effusion",
        "{size} {side} pleural effusion",
        "blunting of the {side} costophrenic angle",
        "{side} effusion with meniscus",
        "fluid at the {side} base",
    ),
    "pneumothorax": (
        "{side} pneumothorax",
        "{size} {side} pneumothorax",
        "{side} apical pneumothorax",
        "visible {side} pleural line with pneumothorax",
    ),
    "cardiomegaly": (
        "enlarged cardiac silhouette",
        "cardiomegaly",
        "the heart is enlarged",
        "{size} cardiomegaly",
        "enlarged heart size",
    ),
    "atelectasis": (
        "{side} basilar atelectasis",
        "plate-like atelectasis at the {side} base",
        "{side} lower lobe atelectasis",
        "band-like opacity at the {side} base",
        "linear atelectasis in the {side} lower zone",
    ),
    "edema": (
        "pulmonary edema",
        "bilateral perihilar haze",
        "interstitial pulmonary edema",
        "mild pulmonary edema",
        "bilateral perihilar opacities",
    ),
}
BILATERAL_TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "effusion": (
        "bilateral pleural effusions",
        "{size} bilateral pleural effusions",
        "blunting of both costophrenic angles",
    ),
}
CANONICAL: Dict[str, str] = {
    "normal": "no acute cardiopulmonary process",
    "consolidation": "{side} lung opacity",
    "nodule": "{side} lung nodule",
    "effusion": "{side} pleural effusion",
    "pneumothorax": "{side} pneumothorax",
    "cardiomegaly": "enlarged cardiac silhouette",
    "atelectasis": "{side} basilar atelectasis",
    "edema": "pulmonary edema",
}
CANONICAL_BILATERAL: Dict[str, str] = {"effusion": "bilateral pleural effusions"}


def _fill(template: str, side: Optional[str], zone: str, size: str) -> str:
    r"""Fill the placeholders of a phrase template."""
    lobe = "upper" if zone == "upper" else "lower"
    return template.format(side=side or "", zone=zone, lobe=lobe, size=size)


def candidate_phrases(laterality: Optional[str] = "right") -> Dict[str, str]:
    r"""
    One canonical phrase per finding, used for zero-shot finding selection.

    Args:

        laterality (str or None, optional): Side word (``"left"``,
            ``"right"`` or ``"bilateral"``) put into the phrases of
            lateralised findings. ``None`` uses ``"right"``.
            Default: ``"right"``

    Returns:
        dict: Maps each entry of :attr:`PhantomCXR.FINDINGS` to a phrase.
    """
    out = {}
    for name in FINDINGS:
        if laterality == "bilateral" and name in CANONICAL_BILATERAL:
            out[name] = CANONICAL_BILATERAL[name]
        else:
            side = laterality if laterality in SIDES else "right"
            out[name] = CANONICAL[name].format(side=side)
    return out


def all_phrases() -> List[str]:
    r"""
    Every phrase the phantom can produce (all templates, sides, zones, sizes).

    Returns:
        list of str: Sorted, unique phrases. Useful to build a vocabulary or a
        bank of candidate texts.
    """
    out = set()
    tables = list(TEMPLATES.items()) + list(BILATERAL_TEMPLATES.items())
    for _, templates in tables:
        for t in templates:
            for side in SIDES:
                for zone in ("upper", "mid", "lower"):
                    for size in ("small", "moderate", "large", "mild"):
                        out.add(_fill(t, side, zone, size))
    return sorted(out)


@dataclass
class FindingRecord:
    r"""
    Ground truth of one finding in a phantom image.

    Attributes:
        finding (str): Entry of :attr:`PhantomCXR.FINDINGS`.
        laterality (str or None): ``"left"``, ``"right"``, ``"bilateral"``
            (patient side) or ``None``.
        phrase (str): Radiology phrase describing the finding.
        boxes (list of tuple): ``(x, y, w, h)`` pixel boxes covering the mask.
        mask (torch.Tensor): Boolean ``(H, W)`` pixel mask of the finding.
        zone (str): ``"upper"``, ``"mid"`` or ``"lower"`` lung zone.
        size (str): Size or severity word.
    """

    finding: str
    laterality: Optional[str]
    phrase: str
    boxes: List[Box]
    mask: torch.Tensor
    zone: str = "mid"
    size: str = "moderate"


@dataclass
class PhantomSample:
    r"""
    One phantom radiograph with its ground truth.

    The sample-level fields describe the primary finding
    (``findings[0]``).

    Attributes:
        image (torch.Tensor): Float ``(1, H, W)`` image in ``[0, 1]``.
        phrase (str): Phrase of the primary finding.
        finding (str): Primary finding name.
        laterality (str or None): Side of the primary finding.
        boxes (list of tuple): ``(x, y, w, h)`` boxes of the primary finding
            (empty for normal studies).
        mask (torch.Tensor): Boolean ``(H, W)`` mask of the primary finding.
        findings (list of FindingRecord): All findings, primary first.
        index (int): Index in the split.
        seed (int): Per-sample random seed.
    """

    image: torch.Tensor
    phrase: str
    finding: str
    laterality: Optional[str]
    boxes: List[Box]
    mask: torch.Tensor
    findings: List[FindingRecord] = field(default_factory=list)
    index: int = 0
    seed: int = 0


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


def _boxes_from_mask(mask: np.ndarray, split_x: Optional[int] = None) -> List[Box]:
    r"""
    Tight ``(x, y, w, h)`` boxes of a mask, optionally one per image half.
    """
    parts = [mask]
    if split_x is not None:
        left, right = mask.copy(), mask.copy()
        left[:, split_x:] = False
        right[:, :split_x] = False
        parts = [left, right]
    boxes = []
    for part in parts:
        rows = np.flatnonzero(part.any(1))
        cols = np.flatnonzero(part.any(0))
        if rows.size == 0:
            continue
        x0, x1, y0, y1 = cols[0], cols[-1], rows[0], rows[-1]
        boxes.append((int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)))
    return boxes


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


def _lung_window(an: "_Anatomy", side: int) -> Tuple[slice, slice]:
    r"""Row and column slices bounding one lung (with a small margin)."""
    lx, ly = an.lung_center(side)
    n = an.size
    x0 = max(0, int((lx - 1.05 * an.lung_a) * n))
    x1 = min(n, int((lx + 1.05 * an.lung_a) * n) + 2)
    y0 = max(0, int((ly - 1.05 * an.lung_b) * n))
    y1 = min(n, int((max(an.dome) + 0.02) * n) + 2)
    return slice(y0, y1), slice(x0, x1)


def _markings(
    rng: np.random.Generator, an: "_Anatomy", side: int, lung: np.ndarray
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


_PX = 1.0 / 224.0  # edge softness unit (one pixel at the default size)


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


def _zone_y(an: _Anatomy, zone: str, rng: np.random.Generator) -> float:
    r"""A vertical position inside the given lung zone."""
    top = an.cy - 0.75 * an.lung_b
    span = an.dome[0] - 0.04 - top
    k = {"upper": 0, "mid": 1, "lower": 2}[zone]
    return top + span * (k + rng.uniform(0.25, 0.75)) / 3.0


def _side_index(laterality: str) -> int:
    r"""Image half of a patient side (patient right -> image left = 0)."""
    return 0 if laterality == "right" else 1


def _lung_point(
    rng: np.random.Generator, an: _Anatomy, side: int, zone: str, margin: float
) -> Tuple[float, float]:
    r"""A point well inside one lung, in the given zone."""
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
            return x, y
    return lx, an.cy


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
    x, y = _lung_point(rng, an, side, zone, 0.5 * radius)
    blob = _blob(rng, an, x, y, radius, 3)
    shape = np.clip((blob - 0.35) / 0.3, 0, 1) * layers["lungs"]
    layers["opacity"] += 0.30 * shape
    layers["markings_mask"] *= 1 - 0.7 * shape
    return shape > 0.05, "moderate"


def _add_nodule(rng, an, layers, side, zone):
    r"""Nodule or mass: round, sharply marginated, dense."""
    size = "large" if rng.random() < 0.35 else "small"
    # at least ~1.5 patches of a 14 x 14 grid across, even for small patients
    radius = (rng.uniform(0.078, 0.092) if size == "large" else rng.uniform(0.063, 0.074)) * an.s
    x, y = _lung_point(rng, an, side, zone, radius)
    d = np.sqrt(((an.u - x) / radius) ** 2 + ((an.v - y) / (radius * rng.uniform(0.85, 1.0))) ** 2)
    shape = _smoothstep((1 - d) * radius / (1.5 * _PX)) * (1 - 0.3 * d.clip(0, 1) ** 2)
    layers["opacity"] += 0.40 * shape
    return shape > 0.05, size


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
    return shape > 0.05, size


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
    return (shape > 0.05) | (line * layers["lungs"] > 0.3), size


def _add_cardiomegaly(rng, an, layers, side, zone):
    r"""Cardiomegaly: enlarge the cardiac silhouette (CTR 0.58-0.68)."""
    size = "mild" if rng.random() < 0.4 else "moderate"
    an.ctr = rng.uniform(0.57, 0.62) if size == "mild" else rng.uniform(0.62, 0.68)
    return None, size


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
    return shape > 0.05, "small"


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
    return shape > 0.08, size


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


class PhantomCXR(torch.utils.data.Dataset):
    r"""
    Deterministic synthetic PA chest radiographs with grounded findings.

    ``PhantomCXR(split="test", seed=0)[i]`` is always the same image. The
    ``train``, ``val`` and ``test`` splits draw per-sample seeds from disjoint
    ranges, so they share no image.

    Args:

        split (str, optional): ``"train"``, ``"val"`` or ``"test"``.
            Default: ``"test"``
        seed (int, optional): Global seed; different seeds give different
            datasets. Default: 0
        length (int, optional): Number of samples. Default: 1000
        size (int, optional): Image side in pixels. Default: 224
        p_normal (float, optional): Probability of a normal study.
            Default: 1 / len(FINDINGS)
        p_second (float, optional): Probability of a second (non-primary)
            finding in an abnormal study. Default: 0.15
        findings (sequence of str, optional): Restrict primary findings to
            these names. Default: all of :attr:`FINDINGS`

    Examples::

        >>> ds = PhantomCXR(split="test", seed=0)
        >>> s = ds[0]
        >>> s.image.shape, s.phrase, s.boxes
    """

    FINDINGS: Tuple[str, ...] = FINDINGS
    LATERALISED: Tuple[str, ...] = LATERALISED
    TEMPLATES: Dict[str, Tuple[str, ...]] = TEMPLATES

    def __init__(
        self,
        split: str = "test",
        seed: int = 0,
        length: int = 1000,
        size: int = 224,
        p_normal: Optional[float] = None,
        p_second: float = 0.15,
        findings: Optional[Sequence[str]] = None,
    ) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
        if not 0 < length <= MAX_LENGTH:
            raise ValueError(f"length must be in [1, {MAX_LENGTH}], got {length}")
        if size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size}")
        names = tuple(findings) if findings is not None else FINDINGS
        unknown = [f for f in names if f not in FINDINGS]
        if unknown:
            raise ValueError(f"unknown findings {unknown}; choose from {FINDINGS}")
        self.split, self.seed, self.length, self.size = split, seed, length, size
        self.p_second = p_second
        self.primary = names
        self.p_normal = (1.0 / len(FINDINGS)) if p_normal is None else p_normal

    def __len__(self) -> int:
        r"""Number of samples in the split."""
        return self.length

    def sample_seed(self, index: int) -> int:
        r"""
        Per-sample seed of ``index`` (unique across splits for one ``seed``).

        Args:

            index (int): Sample index.

        Returns:
            int: The seed fed to the sample's random generator.
        """
        return SPLIT_OFFSETS[self.split] + index

    def mean_anatomy(self, count: int = 256) -> Dict[str, torch.Tensor]:
        r"""
        The population anatomy of this split: mean soft masks of the patient's
        right lung (image left), left lung and cardiac silhouette over the
        first ``count`` samples' patients (before any finding is drawn).

        Pass it to :class:`~captum_matex.stages.anatomy.ChestAtlas` as
        ``masks`` to fit the anatomical prior to phantom films, as one would
        fit an atlas to a data set's average anatomy (no labels are used).

        Args:

            count (int, optional): Patients averaged. Default: 256

        Returns:
            dict: ``"right lung"``, ``"left lung"`` and ``"heart"`` to
            ``(size, size)`` float tensors in [0, 1].
        """
        total = {"right lung": 0.0, "left lung": 0.0, "heart": 0.0}
        count = min(count, len(self))
        for index in range(count):
            an = _Anatomy(np.random.default_rng([self.seed, self.sample_seed(index)]), self.size)
            total["right lung"] = total["right lung"] + _lung_mask(an, 0)
            total["left lung"] = total["left lung"] + _lung_mask(an, 1)
            total["heart"] = total["heart"] + _draw_heart(an)
        return {name: torch.from_numpy((mask / count).astype(np.float32))
                for name, mask in total.items()}

    def __getitem__(self, index: int) -> PhantomSample:
        r"""
        Generate sample ``index``.

        Args:

            index (int): Index in ``[0, len(self))`` (negative indices wrap).

        Returns:
            PhantomSample: The image and its ground truth.
        """
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        sseed = self.sample_seed(index)
        rng = np.random.default_rng([self.seed, sseed])
        image, records = self._generate(rng)
        p = records[0]
        return PhantomSample(
            image=torch.from_numpy(image)[None],
            phrase=p.phrase,
            finding=p.finding,
            laterality=p.laterality,
            boxes=list(p.boxes),
            mask=p.mask,
            findings=records,
            index=index,
            seed=sseed,
        )

    def _choose_findings(self, rng: np.random.Generator) -> List[str]:
        r"""Primary finding and an optional compatible second finding."""
        abnormal = [f for f in self.primary if f != "normal"]
        if "normal" in self.primary and (not abnormal or rng.random() < self.p_normal):
            return ["normal"]
        first = abnormal[int(rng.integers(0, len(abnormal)))]
        names = [first]
        if rng.random() < self.p_second:
            others = [f for f in FINDINGS if f not in ("normal", first)]
            names.append(others[int(rng.integers(0, len(others)))])
        return names

    def _generate(self, rng: np.random.Generator) -> Tuple[np.ndarray, List[FindingRecord]]:
        r"""Draw one image and its finding records."""
        an = _Anatomy(rng, self.size)
        names = self._choose_findings(rng)
        layers = _draw_normal(rng, an)
        layers["opacity"] = np.zeros_like(an.u)
        layers["markings_mask"] = np.ones_like(an.u)
        raw = []
        for name in names:
            if name == "normal":
                raw.append((name, None, "mid", "", None))
                continue
            lat: Optional[str] = None
            if name in LATERALISED:
                lat = "left" if rng.random() < 0.5 else "right"
                if name == "effusion" and rng.random() < 0.2:
                    lat = "bilateral"
            elif name == "edema":
                lat = "bilateral"
            zones = _ZONES.get(name, ("mid",))
            zone = zones[int(rng.integers(0, len(zones)))]
            sides = [0, 1] if lat == "bilateral" else ([_side_index(lat)] if lat else [])
            mask, size = None, "moderate"
            for s in sides or [None]:
                m, size = _ADDERS[name](rng, an, layers, s, zone)
                if m is not None:
                    mask = m if mask is None else (mask | m)
            raw.append((name, lat, zone, size, mask))
        # the heart is drawn after cardiomegaly may have changed the CTR
        heart_layers = _draw_heart(an)
        records = []
        for name, lat, zone, size, mask in raw:
            if name == "cardiomegaly":
                mask = heart_layers > 0.5
            if mask is None:
                mask = np.zeros((self.size, self.size), bool)
            split_x = int(round(an.cx * self.size)) if lat == "bilateral" else None
            boxes = _boxes_from_mask(mask, split_x)
            phrase = self._phrase(rng, name, lat, zone, size)
            records.append(
                FindingRecord(name, lat, phrase, boxes, torch.from_numpy(mask), zone, size)
            )
        image = self._render(rng, an, layers, heart_layers)
        return image, records

    def _phrase(
        self, rng: np.random.Generator, name: str, lat: Optional[str], zone: str, size: str
    ) -> str:
        r"""Pick and fill a phrase template."""
        if lat == "bilateral" and name in BILATERAL_TEMPLATES:
            table = BILATERAL_TEMPLATES[name]
        else:
            table = TEMPLATES[name]
        t = table[int(rng.integers(0, len(table)))]
        return _fill(t, lat, zone, size or "small")

    def _render(
        self,
        rng: np.random.Generator,
        an: _Anatomy,
        layers: Dict[str, np.ndarray],
        heart: np.ndarray,
    ) -> np.ndarray:
        r"""Combine density layers into an exposed, noisy radiograph."""
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
        density = density + 0.03 * _low_freq(rng, self.size)
        exposure = rng.uniform(0.85, 1.15)
        gamma = rng.uniform(0.85, 1.15)
        img = np.clip(density * exposure, 0, None) ** gamma
        img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.05)
        sigma = rng.uniform(0.01, 0.035) * np.sqrt(12.0)
        img = img + np.float32(sigma) * (rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
        return np.clip(img, 0.0, 1.0).astype(np.float32)


def _draw_heart(an: _Anatomy) -> np.ndarray:
    r"""Soft mask of the cardiac silhouette for the patient's current CTR."""
    hw = an.heart_half_width()
    hcx = an.cx + 0.25 * hw
    hr = np.sqrt(((an.u - hcx) / hw) ** 2 + ((an.v - an.heart_cy) / (0.13 * an.s)) ** 2)
    below = an.v < max(an.dome) + 0.01
    return (_smoothstep((1 - hr) * hw / (1.5 * _PX)) * below).astype(np.float32)
