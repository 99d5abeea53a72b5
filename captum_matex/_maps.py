"""Small per-sample operations on saliency maps, and the one noise-safe normalisation."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12

#: A map whose spread (max - min) is at most ``FLAT_ULPS`` machine epsilons
#: of its magnitude is rounding noise, not a map. Measured: re-scoring one
#: image in batches of 1, 5 and 16 with 1, 2 and 4 threads moves the CLIP
#: cosine by at most 7.7 float32 epsilons of the score (0 in float16 and
#: bfloat16, whose last rounding hides the accumulation order), so 32 leaves a
#: 4x margin while a float32 map keeps any structure above ~4e-6 of its scale
#: (``python benchmarks/rounding_noise.py`` prints these figures).
FLAT_ULPS = 32

Normalization = Literal["minmax", "max"] | None


def machine_epsilon(*dtypes: torch.dtype | None) -> float:
    r"""The largest machine epsilon among the floating ``dtypes`` (``None`` and
    non-floating dtypes are skipped; float32's if none is left)."""
    found = [torch.finfo(d).eps for d in dtypes if d is not None and d.is_floating_point]
    return max(found, default=torch.finfo(torch.float32).eps)


def is_flat(
    maps: Tensor,
    start_dim: int = 1,
    scale: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Which maps are flat: spread within rounding noise of their magnitude.

    A map over the dims from ``start_dim`` on is flat when

    .. math:: \max M - \min M \le
        \mathrm{FLAT\_ULPS} \cdot \varepsilon \cdot \max(\max |M|, |s|),

    with :math:`\varepsilon` the machine epsilon of ``maps``' dtype or of
    ``dtype`` (the dtype the map was computed in), whichever is larger, and
    :math:`s` the optional ``scale`` (for maps of score differences, the
    score itself: their noise is relative to the score, not to the map).
    An all-zero map is flat; a map with NaN is not.

    Args:
        maps: maps, batch dims first.
        start_dim: first dim of one map.
        scale: optional magnitude per map, shape ``maps.shape[:start_dim]``.
        dtype: the dtype the map was computed in (e.g. the model's).

    Returns:
        Bool tensor of shape ``maps.shape[:start_dim]``.
    """
    flat = maps.flatten(start_dim)
    spread = flat.amax(-1) - flat.amin(-1)
    magnitude = flat.abs().amax(-1)
    if scale is not None:
        magnitude = torch.maximum(magnitude, scale.abs().to(magnitude))
    wide = torch.promote_types(maps.dtype, torch.float32)
    tolerance = FLAT_ULPS * machine_epsilon(maps.dtype, dtype) * magnitude.to(wide)
    return spread.to(wide) <= tolerance


def _per_map(values: Tensor, maps: Tensor, start_dim: int) -> Tensor:
    return values.view(*values.shape, *([1] * (maps.ndim - start_dim)))


def normalize_max(
    maps: Tensor,
    start_dim: int = 1,
    *,
    scale: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Divide each map by its maximum over the dims from ``start_dim`` on.

    A flat map (:func:`is_flat`: an all-zero map, a constant map, or one whose
    spread is rounding noise) becomes all zeros, so noise is never blown up
    into a confident map; a map whose maximum is not positive is left
    unchanged. The result is finite for every finite input in every floating
    dtype. ``scale`` and ``dtype`` are passed to :func:`is_flat`.
    """
    peak = maps.flatten(start_dim).amax(-1)
    flat = _per_map(is_flat(maps, start_dim, scale, dtype), maps, start_dim)
    positive = peak > 0
    out = maps / _per_map(torch.where(positive, peak, torch.ones_like(peak)), maps, start_dim)
    return torch.where(flat, torch.zeros_like(out), out)


def normalize_minmax(
    maps: Tensor,
    start_dim: int = 1,
    *,
    scale: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Rescale each map (the dims from ``start_dim`` on) to [0, 1].

    A flat map (:func:`is_flat`) becomes all zeros instead of amplified
    noise; the result is finite for every finite input in every floating
    dtype. ``scale`` and ``dtype`` are passed to :func:`is_flat`.
    """
    flat = maps.flatten(start_dim)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    keep = ~is_flat(maps, start_dim, scale, dtype)[..., None] & (span > 0)
    scaled = (flat - low) / torch.where(keep, span, torch.ones_like(span))
    return torch.where(keep, scaled, torch.zeros_like(scaled)).view_as(maps)


def normalize(
    maps: Tensor,
    how: Normalization,
    *,
    scale: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Per-sample normalisation of ``(B, ...)`` maps; the one every method uses.

    Args:
        maps: maps, batch first.
        how: ``"minmax"`` (rescale to [0, 1]), ``"max"`` (divide by the peak,
            zero stays zero) or ``None`` (unchanged). Either way flat maps
            become zeros (:func:`is_flat`).
        scale: optional ``(B,)`` magnitude the map's noise is relative to.
        dtype: the dtype the maps were computed in.
    """
    if how is None:
        return maps
    if how == "minmax":
        return normalize_minmax(maps, scale=scale, dtype=dtype)
    if how == "max":
        return normalize_max(maps, scale=scale, dtype=dtype)
    raise ValueError(f"normalize must be 'minmax', 'max' or None, got {how!r}")


def squared_cell_distances(grid: tuple[int, int]) -> Tensor:
    r"""``(h * w, h * w)`` squared distances between the cells of an ``(h, w)``
    grid (row-major), as integers: exact on every device."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    cells = torch.stack([rows.flatten(), cols.flatten()], 1)
    return (cells[:, None] - cells[None]).square().sum(-1)


def gaussian_smooth(grid_maps: Tensor, sigma: float) -> Tensor:
    r"""Smooth ``(B, h, w)`` maps with a Gaussian of ``sigma`` cells (0: no-op).

    Borders are handled by reflection so edge cells keep their mass.
    """
    if sigma <= 0:
        return grid_maps
    radius = max(1, int(math.ceil(2 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=grid_maps.device, dtype=grid_maps.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = grid_maps[:, None]
    pad_h = min(radius, x.shape[-2] - 1)
    pad_w = min(radius, x.shape[-1] - 1)
    kh = kernel[radius - pad_h : radius + pad_h + 1]
    kw = kernel[radius - pad_w : radius + pad_w + 1]
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h or pad_w else x
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1))
    x = F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1))
    return x[:, 0]
