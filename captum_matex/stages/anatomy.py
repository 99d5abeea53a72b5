r"""Stage 4b: anatomical spatial prior read from the phrase.

Location words in a phrase ("left basilar atelectasis", "right apical
pneumothorax") are mapped to soft regions of a generic frontal chest
radiograph. The stage has three parts:

- :func:`~captum_matex.phrases.parse_phrase` turns a phrase into a
  :class:`~captum_matex.phrases.PhraseAnatomy` (laterality, anatomical
  regions, finding); both live in :mod:`captum_matex.phrases` and are
  re-exported here;
- :class:`ChestAtlas` renders soft region masks at any resolution, from
  built-in shapes or from masks the user supplies (for example the output of a
  lung segmenter);
- :class:`AnatomicalPrior` is the pluggable MATEX stage: phrases in, one
  ``(B, h * w)`` prior over the patch grid out.

Scope of the parser: one laterality per phrase (a phrase naming both sides is
bilateral) and no negation handling: "no pneumothorax" is read like
"pneumothorax". Phrases without any anatomical word give a uniform prior, so
the stage never removes evidence it knows nothing about.

Radiology convention: on a PA/AP film the patient's left is on the image's
right. This is the default ``orientation="radiological"``; pass
``orientation="anatomical"`` for images shown with the patient's left on the
image's left.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.phrases import CENTRAL_REGIONS, SIDED_REGIONS, SIDES, PhraseAnatomy, parse_phrase

__all__ = [
    "ATLAS_REGIONS",
    "AnatomicalPrior",
    "ChestAtlas",
    "PhraseAnatomy",
    "parse_phrase",
]

_ORIENTATIONS = ("radiological", "anatomical")

ATLAS_REGIONS: tuple[str, ...] = (
    tuple(f"{side} {region}" for side in SIDES for region in SIDED_REGIONS) + CENTRAL_REGIONS
)
r"""Every region name :class:`ChestAtlas` renders (and accepts in ``masks``)."""


# ---------------------------------------------------------------------------
# Atlas geometry (normalised image coordinates, radiological orientation:
# x from image left (0) to image right (1), y from top (0) to bottom (1);
# the patient's right lung is on the image left).
# ---------------------------------------------------------------------------

_LUNG_X = {"right": (0.10, 0.46), "left": (0.54, 0.90)}
_LUNG_Y = (0.12, 0.82)
_LUNG_APEX_TAPER = 0.6  # lung half-width at the apex relative to mid-height
_LUNG_POWER = 2.5
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
_MASK_ALIASES = {"cardiac silhouette": "heart"}


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

    - lungs: tapered superellipses in the boxes ``x in [0.10, 0.46]``
      (patient right) and ``[0.54, 0.90]`` (patient left), ``y in [0.12,
      0.82]``, the apex 0.6 times as wide as the mid lung;
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
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        half_height = (y1 - y0) / 2
        # narrower towards the apex, full width from mid-height down
        rise = ((canvas.y - y0) / half_height).clamp(0, 1)
        half_width = (x1 - x0) / 2 * (_LUNG_APEX_TAPER + (1 - _LUNG_APEX_TAPER) * rise)
        return _superellipse(
            canvas.x_atlas, canvas.y, centre, (half_width, half_height), _LUNG_POWER, self.softness
        )

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


# ---------------------------------------------------------------------------
# The MATEX stage
# ---------------------------------------------------------------------------


def _split_masks(
    masks: Tensor | Sequence[Tensor | None] | None, batch: int
) -> list[Tensor | None]:
    r"""Per-sample user masks as a list of ``(H, W)`` tensors or ``None``."""
    if masks is None:
        return [None] * batch
    if isinstance(masks, Tensor):
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3:
            raise ValueError(
                f"masks must be (B, H, W) or (B, 1, H, W), got shape {tuple(masks.shape)}"
            )
        masks = list(masks.unbind(0))
    masks = list(masks)
    if len(masks) != batch:
        raise ValueError(f"masks has {len(masks)} rows but phrases has {batch}")
    return [None if mask is None else _check_sample_mask(mask) for mask in masks]


def _check_sample_mask(mask: Tensor) -> Tensor:
    r"""One per-sample mask as ``(H, W)``."""
    if mask.is_meta:
        raise ValueError(
            "anatomy masks are on the 'meta' device, which holds no data; compute real "
            "masks (e.g. with a lung segmenter) and move them with masks.to(images.device)"
        )
    if mask.is_sparse:
        raise TypeError("anatomy masks are sparse; pass dense masks (masks.to_dense())")
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"each mask must be (H, W) or (1, H, W), got shape {tuple(mask.shape)}")
    return mask


def _pool_mask(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    r"""Area-average one ``(H, W)`` mask to ``grid`` and flatten it row-major."""
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0:
        raise ValueError("masks must be finite and non-negative (probabilities or 0/1 labels)")
    return F.adaptive_avg_pool2d(mask[None, None], grid).flatten()


def _normalise_peak(values: Tensor) -> Tensor:
    r"""Scale to peak 1; an all-zero map becomes uniform ones."""
    peak = values.max()
    return values / peak if peak > 0 else torch.ones_like(values)


class AnatomicalPrior:
    r"""Anatomical spatial prior over the patch grid, read from each phrase.

    Each phrase is parsed with :func:`~captum_matex.phrases.parse_phrase`;
    its regions (union = pixelwise max; a side and a zone intersect, so
    "left upper lobe" is the left lung times the upper band) are rendered
    by a :class:`ChestAtlas`, area-averaged to the patch grid and scaled to
    peak 1. A phrase without anatomical words, or ``None``, gives a uniform
    prior of ones, so the fusion stage falls back to the model's own
    evidence. Per-sample user masks replace the atlas for their samples.

    Args:
        atlas (ChestAtlas, optional): region atlas; built from
            ``orientation`` and ``softness`` when omitted.
            Default: None
        orientation (str, optional): ``"radiological"`` (patient's left on the
            image right, PA/AP films) or ``"anatomical"``. Must match
            ``atlas.orientation`` when an atlas is given.
            Default: ``"radiological"``
        softness (float, optional): edge width of the built-in shapes in
            normalised image units; only when ``atlas`` is omitted.
            Default: None (the atlas default, 0.02)

    Examples::

        >>> prior = AnatomicalPrior()
        >>> p = prior(["left pleural effusion", "no anatomy here"], grid=(14, 14))
        >>> p.shape
        torch.Size([2, 196])
        >>> bool((p[1] == 1).all())
        True
        >>> prior.describe("left pleural effusion")  # doctest: +NORMALIZE_WHITESPACE
        "'left pleural effusion': laterality=left, finding=effusion ->
        left base | left costophrenic angle"
    """

    def __init__(
        self,
        atlas: ChestAtlas | None = None,
        orientation: str = "radiological",
        softness: float | None = None,
    ) -> None:
        _check_orientation(orientation)
        if atlas is None:
            atlas = ChestAtlas(
                orientation=orientation, softness=0.02 if softness is None else softness
            )
        elif softness is not None:
            raise ValueError("softness applies to the built-in atlas; set it on the ChestAtlas")
        elif atlas.orientation != orientation:
            raise ValueError(
                f"atlas was built with orientation={atlas.orientation!r} but "
                f"orientation={orientation!r}; pass the same value to both"
            )
        self.atlas = atlas

    @property
    def orientation(self) -> str:
        r"""Image orientation of the atlas (``"radiological"`` or ``"anatomical"``)."""
        return self.atlas.orientation

    def parse(self, phrase: str | None) -> PhraseAnatomy:
        r"""Parse one phrase (diagnostics).

        Args:
            phrase (str or None): the phrase; ``None`` parses as no anatomy.

        Returns:
            PhraseAnatomy: laterality, regions and finding of the phrase.
        """
        return parse_phrase(phrase) if phrase is not None else PhraseAnatomy(None, (), None)

    def describe(self, phrase: str | None) -> str:
        r"""One line saying what the prior reads from a phrase and renders.

        Args:
            phrase (str or None): the phrase.

        Returns:
            str: the parse and the atlas regions, or a note that the prior is
            uniform.
        """
        anatomy = self.parse(phrase)
        if not anatomy.regions:
            return f"{phrase!r}: no anatomical word -> uniform prior"
        return (
            f"{phrase!r}: laterality={anatomy.laterality}, finding={anatomy.finding} -> "
            + " | ".join(anatomy.atlas_keys())
        )

    def __call__(
        self,
        phrases: Sequence[str | None],
        grid: tuple[int, int],
        masks: Tensor | Sequence[Tensor | None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""
        Args:
            phrases (Sequence[str or None]): one phrase per sample.
            grid (tuple[int, int]): ``(h, w)`` patch grid.
            masks (Tensor or Sequence[Tensor or None], optional): per-sample
                region masks replacing the atlas, ``(B, H, W)`` or
                ``(B, 1, H, W)`` non-negative values, or a length-``B``
                sequence of ``(H, W)`` tensors and ``None`` (``None`` = use
                the atlas for that sample). Area-averaged to ``grid``.
                Default: None
            device (torch.device or str, optional): output device; defaults
                to the device of ``masks`` when it is a tensor, else the CPU.
            dtype (torch.dtype, optional): floating output dtype.
                Default: ``torch.float32``

        Returns:
            Tensor: ``(B, h * w)`` prior in [0, 1], peak 1 per sample,
            flattened row-major like ViT patch tokens. Samples whose phrase
            has no anatomical word, or whose mask is all zeros, get ones.

        Examples::

            >>> prior = AnatomicalPrior()
            >>> masks = torch.zeros(2, 224, 224)
            >>> masks[1, :112] = 1.0  # sample 1: a segmentation of the top half
            >>> p = prior(["right apical pneumothorax", None], (14, 14), masks=[None, masks[1]])
            >>> p.shape, float(p[1].view(14, 14)[:7].mean()), float(p[1].view(14, 14)[7:].sum())
            (torch.Size([2, 196]), 1.0, 0.0)
        """
        if isinstance(phrases, str):
            raise TypeError("phrases must be a sequence of phrases, one per sample, not a str")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
        grid = _check_size(grid, "grid")
        per_sample = _split_masks(masks, len(phrases))
        if device is None:
            device = masks.device if isinstance(masks, Tensor) else torch.device("cpu")
        rows = [
            self._sample_prior(phrase, mask, grid).to(device=device, dtype=dtype)
            for phrase, mask in zip(phrases, per_sample)
        ]
        if not rows:
            return torch.empty(0, grid[0] * grid[1], device=device, dtype=dtype)
        return torch.stack(rows)

    def _sample_prior(
        self, phrase: str | None, mask: Tensor | None, grid: tuple[int, int]
    ) -> Tensor:
        r"""Flat prior of one sample: its own mask if given, else the atlas."""
        if mask is not None:
            return _normalise_peak(_pool_mask(mask, grid))
        if phrase is not None and not isinstance(phrase, str):
            raise TypeError(f"each phrase must be a str or None, got {type(phrase).__name__}")
        keys = self.parse(phrase).atlas_keys()
        if not keys:
            return torch.ones(grid[0] * grid[1])
        return _normalise_peak(self.atlas.render(keys, grid).flatten())
