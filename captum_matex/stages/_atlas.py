r"""
The chest atlas: :class:`ChestAtlas` renders soft region masks of a generic
frontal chest radiograph at any resolution, from the built-in shapes of
:mod:`captum_matex.stages._atlas_shapes` or from masks the user supplies
(for example the output of a lung segmenter).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.phrases import CENTRAL_REGIONS, SIDED_REGIONS, SIDES
from captum_matex.stages._atlas_shapes import (
    _DOME_POWER,
    _DOME_RISE,
    _HEART_CENTRE,
    _HEART_RADII,
    _HILUM_RADII,
    _HILUM_X,
    _HILUM_Y,
    _LATERAL_BANDS,
    _LUNG_APEX_INSET,
    _LUNG_POWER,
    _LUNG_X,
    _LUNG_Y,
    _MEDIASTINUM_CENTRE,
    _MEDIASTINUM_POWER,
    _MEDIASTINUM_RADII,
    _PERIHILAR_RADII,
    _VERTICAL_BANDS,
    _Canvas,
    _centroid,
    _lateral_band,
    _soft_step,
    _superellipse,
    _vertical_band,
)

_ORIENTATIONS = ("radiological", "anatomical")

ATLAS_REGIONS: tuple[str, ...] = (
    tuple(f"{side} {region}" for side in SIDES for region in SIDED_REGIONS) + CENTRAL_REGIONS
)
r"""Every region name :class:`ChestAtlas` renders (and accepts in ``masks``)."""

_MASK_ALIASES = {"cardiac silhouette": "heart"}


def _check_orientation(orientation: str) -> str:
    r"""Return ``orientation`` if it is a known orientation, else raise."""
    if orientation not in _ORIENTATIONS:
        raise ValueError(
            f"orientation must be one of {_ORIENTATIONS}, got {orientation!r}; use "
            "'radiological' when the patient's left is on the image right (PA/AP films)"
        )
    return orientation


def _check_size(size: Sequence[int], name: str) -> tuple[int, int]:
    r"""``size`` as two positive ints, else a ``ValueError`` naming ``name``."""
    if len(size) != 2 or any(int(n) != n or n < 1 for n in size):
        raise ValueError(f"{name} must be two positive integers (h, w), got {tuple(size)}")
    return int(size[0]), int(size[1])


def _region_key(name: str) -> str:
    r"""Canonical region name (case and spacing folded, aliases resolved)."""
    key = " ".join(name.casefold().split())
    key = _MASK_ALIASES.get(key, key)
    if key not in ATLAS_REGIONS:
        raise ValueError(f"unknown atlas region {name!r}; valid names: {', '.join(ATLAS_REGIONS)}")
    return key


def _as_region_mask(name: str, mask: Tensor) -> Tensor:
    r"""Validate one user region mask and store it as a float32 CPU ``(H, W)`` tensor."""
    mask = torch.as_tensor(mask).detach()
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"mask for {name!r} must be (H, W), got shape {tuple(mask.shape)}")
    mask = mask.to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"mask for {name!r} must hold values in [0, 1] (probabilities)")
    if mask.max() <= 0:
        raise ValueError(f"mask for {name!r} is empty (all zeros); leave the region out instead")
    return mask


class ChestAtlas:
    r"""Soft region masks of a generic frontal (PA/AP) chest radiograph.

    Shapes live in normalised image coordinates, ``x`` from the image's left
    (0) to its right (1) and ``y`` from top (0) to bottom (1). In the
    radiological orientation (patient's left on the image right):

    - lungs: in the boxes ``x in [0.10, 0.46]`` (patient right) and
      ``[0.54, 0.90]`` (patient left), ``y in [0.12, 0.82]``, with the
      outline of a clinical film's lung: the apex a tenth of the lung's
      width from its medial edge, the lateral border a superellipse arc
      (power 2.25) down to the costophrenic angle at the lateral base, the
      diaphragm a dome rising 12 % of the lung's height towards the midline
      (fitted to the median outline of 434 pairs of lung masks of clinical
      frontal films: Dice 0.92 and 0.94, ``benchmarks/atlas_lungs.py``);
    - upper / mid / lower zones: the lung cut into thirds of its own height;
      apex: its top 20 %; base: its bottom 20 %; costophrenic angle: the base
      band in the lateral half; lateral periphery: the lateral third of the
      lung's width;
    - hila: ellipses at ``x = 0.38`` / ``0.62``, ``y = 0.475``, radii
      ``(0.05, 0.075)``, i.e. ``y in [0.40, 0.55]``; perihilar: the hilum
      plus the lung within radii ``(0.12, 0.16)`` of the hilum's centre;
    - heart (cardiac silhouette): ellipse centred at ``(0.55, 0.64)``,
      radii ``(0.16, 0.13)``, shifted towards the patient's left;
    - mediastinum: rounded box centred at ``(0.50, 0.30)``, half-sizes
      ``(0.07, 0.22)``;
    - retrocardiac: the heart intersected with the left lung.

    Zones, apex, base, costophrenic angle, lateral periphery, perihilar and
    retrocardiac are derived from the lung, hilum and heart masks, so a
    user's lung segmentation refines all of them. Edges are sigmoids of width
    ``softness``; regions are rendered on a supersampled canvas and
    area-averaged to the requested size, so a cell holds the fraction of it a
    region covers and renders at different sizes agree.

    Args:
        masks (Mapping[str, Tensor], optional): user region masks replacing
            built-in shapes, keyed by names from :data:`ATLAS_REGIONS`
            (case-insensitive; ``"cardiac silhouette"`` is an alias of
            ``"heart"``). The usual keys are ``"right lung"``, ``"left
            lung"``, ``"heart"``, ``"mediastinum"``, ``"right hilum"`` and
            ``"left hilum"``. Each is an ``(H, W)`` (or ``(1, H, W)``) tensor
            of values in [0, 1] in the image's own orientation (never
            mirrored), resized to the requested size.
            Default: None
        orientation (str, optional): ``"radiological"`` (patient's left on the
            image right) or ``"anatomical"`` (patient's left on the image
            left); mirrors the built-in shapes only.
            Default: ``"radiological"``
        softness (float, optional): edge width in normalised image units.
            Default: 0.02
        resolution (int, optional): minimum long side of the supersampled
            canvas a render is area-averaged from.
            Default: 256

    Examples::

        >>> atlas = ChestAtlas()
        >>> atlas.render("left lung", (14, 14)).shape
        torch.Size([14, 14])
        >>> # patient-left structures sit on the image right
        >>> heart = atlas.render("heart", (14, 14))
        >>> bool(heart[:, 7:].sum() > heart[:, :7].sum())
        True
    """

    def __init__(
        self,
        masks: Mapping[str, Tensor] | None = None,
        orientation: str = "radiological",
        softness: float = 0.02,
        resolution: int = 256,
    ) -> None:
        if softness <= 0:
            raise ValueError(f"softness must be positive, got {softness}")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution}")
        self.orientation = _check_orientation(orientation)
        self.softness = float(softness)
        self.resolution = int(resolution)
        self._masks = {
            _region_key(name): _as_region_mask(name, mask) for name, mask in (masks or {}).items()
        }
        self._cache: OrderedDict[tuple[tuple[str, ...], tuple[int, int]], Tensor] = OrderedDict()

    @property
    def regions(self) -> tuple[str, ...]:
        r"""All region names this atlas renders (:data:`ATLAS_REGIONS`)."""
        return ATLAS_REGIONS

    @property
    def custom_regions(self) -> tuple[str, ...]:
        r"""Region names whose built-in shape is replaced by a user mask."""
        return tuple(self._masks)

    @property
    def fitted(self) -> bool:
        r"""Whether both lungs come from masks (fitted to a data set's anatomy
        or to a film, e.g. by a lung segmenter) rather than the built-in
        drawing; every zone, base and angle is derived from the lungs."""
        return {"right lung", "left lung"} <= set(self._masks)

    def render(self, regions: str | Sequence[str], size: tuple[int, int]) -> Tensor:
        r"""Render one region, or the union (pixelwise max) of several.

        Args:
            regions (str or Sequence[str]): names from :data:`ATLAS_REGIONS`.
            size (tuple[int, int]): ``(h, w)`` output size, for example the
                ``(14, 14)`` patch grid or ``(224, 224)`` pixels.

        Returns:
            Tensor: float32 CPU ``(h, w)`` map in [0, 1]; each cell is the
            area average of the region's soft mask over the cell.

        Examples::

            >>> ChestAtlas().render(["left base", "left costophrenic angle"], (14, 14)).shape
            torch.Size([14, 14])
        """
        names = (regions,) if isinstance(regions, str) else tuple(regions)
        if not names:
            raise ValueError("render needs at least one region name")
        names = tuple(_region_key(name) for name in names)
        size = _check_size(size, "size")
        key = (names, size)
        if key not in self._cache:
            self._cache[key] = self._render(names, size)
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key].clone()

    def _render(self, names: tuple[str, ...], size: tuple[int, int]) -> Tensor:
        r"""Union of ``names`` on a supersampled canvas, area-averaged to ``size``."""
        factor = max(1, math.ceil(self.resolution / max(size)))
        canvas = _Canvas((size[0] * factor, size[1] * factor), self.orientation)
        union = torch.stack([self._region(name, canvas) for name in names]).amax(0)
        return F.avg_pool2d(union[None, None], factor)[0, 0]

    def _region(self, name: str, canvas: _Canvas) -> Tensor:
        r"""Full-resolution soft mask of ``name`` on ``canvas`` (memoised per canvas)."""
        if name not in canvas.memo:
            if name in self._masks:
                canvas.memo[name] = self._user_mask(name, canvas.size)
            else:
                canvas.memo[name] = self._builder(name)(name, canvas)
        return canvas.memo[name]

    def _user_mask(self, name: str, size: tuple[int, int]) -> Tensor:
        r"""The user's mask for ``name``, area-resized to ``size``."""
        resized = F.adaptive_avg_pool2d(self._masks[name][None, None], size)[0, 0]
        if resized.max() <= 0:
            raise ValueError(f"mask for {name!r} vanishes when resized to {size}")
        return resized

    def _builder(self, name: str) -> Callable[[str, _Canvas], Tensor]:
        r"""The function drawing the built-in shape of ``name``."""
        first, _, rest = name.partition(" ")
        region = rest if first in SIDES else name
        builders: dict[str, Callable[[str, _Canvas], Tensor]] = {
            "lung": self._lung,
            "hilum": self._hilum,
            "perihilar": self._perihilar,
            "heart": self._heart,
            "mediastinum": self._mediastinum,
            "retrocardiac": self._retrocardiac,
        }
        return builders.get(region, self._lung_part)

    def _lung(self, name: str, canvas: _Canvas) -> Tensor:
        side = name.split()[0]
        (x0, x1), (y0, y1) = _LUNG_X[side], _LUNG_Y
        width, height = x1 - x0, y1 - y0
        # m: 0 on the medial edge (towards x = 0.5), 1 on the lateral edge
        lateral = -1.0 if side == "right" else 1.0
        medial = x1 if side == "right" else x0
        m = lateral * (canvas.x_atlas - medial) / width
        inset = _LUNG_APEX_INSET
        apex_x = medial + lateral * inset * width
        radius_x = torch.where(m > inset, (1 - inset) * width, inset * width)
        outline = _superellipse(
            canvas.x_atlas, canvas.y, (apex_x, y1), (radius_x, height), _LUNG_POWER, self.softness
        )
        dome = y1 - _DOME_RISE * height * (1 - m).clamp(0, 1) ** _DOME_POWER
        # the first-order edge distance overshoots at the narrow medial corner:
        # nothing of the lung lies more than one edge width above its apex
        below_apex = _soft_step(canvas.y - y0 + self.softness, self.softness)
        return outline * below_apex * _soft_step(dome - canvas.y, self.softness)

    def _hilum(self, name: str, canvas: _Canvas) -> Tensor:
        centre = (_HILUM_X[name.split()[0]], _HILUM_Y)
        return _superellipse(canvas.x_atlas, canvas.y, centre, _HILUM_RADII, 2.0, self.softness)

    def _perihilar(self, name: str, canvas: _Canvas) -> Tensor:
        side = name.split()[0]
        hilum = self._region(f"{side} hilum", canvas)
        field = _superellipse(
            canvas.x, canvas.y, _centroid(hilum, canvas), _PERIHILAR_RADII, 2.0, self.softness
        )
        return torch.maximum(hilum, self._region(f"{side} lung", canvas) * field)

    def _heart(self, name: str, canvas: _Canvas) -> Tensor:
        return _superellipse(
            canvas.x_atlas, canvas.y, _HEART_CENTRE, _HEART_RADII, 2.0, self.softness
        )

    def _mediastinum(self, name: str, canvas: _Canvas) -> Tensor:
        return _superellipse(
            canvas.x_atlas,
            canvas.y,
            _MEDIASTINUM_CENTRE,
            _MEDIASTINUM_RADII,
            _MEDIASTINUM_POWER,
            self.softness,
        )

    def _retrocardiac(self, name: str, canvas: _Canvas) -> Tensor:
        return self._region("heart", canvas) * self._region("left lung", canvas)

    def _lung_part(self, name: str, canvas: _Canvas) -> Tensor:
        side, region = name.split(" ", 1)
        lung = self._region(f"{side} lung", canvas)
        part = lung
        if region in _VERTICAL_BANDS:
            part = part * _vertical_band(lung, canvas, _VERTICAL_BANDS[region], self.softness)
        if region in _LATERAL_BANDS:
            part = part * _lateral_band(lung, canvas, _LATERAL_BANDS[region], self.softness)
        return part
