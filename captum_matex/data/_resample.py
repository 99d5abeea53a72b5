r"""
Separable resampling of maps between two pixel grids related by an axis-aligned affine map.

The numerical kernel behind :meth:`captum_matex.data.geometry.Geometry.map_to_original`
and :meth:`~captum_matex.data.geometry.Geometry.map_to_input`: along each axis a
``(n_out, n_src)`` matrix (bilinear or area weights), applied as one pair of
matrix products.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def inside(n: int, scale: float, offset: float, extent: int, device: Any) -> Tensor:
    r"""``(n,)`` bool: which of ``n`` pixel centres ``scale * (i + 0.5) + offset`` lie in ``[0, extent)``."""
    centres = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) * scale + offset
    return (centres >= 0) & (centres < extent)


def _axis_weights(n_out: int, n_src: int, extent: float, scale: float, offset: float,
                  interpolation: str, device: Any, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    r"""
    ``(n_out, n_src)`` resampling matrix along one axis, and the validity of each output.

    Output pixel ``t`` (centre ``t + 0.5``) sits at source-canvas coordinate
    ``u = scale * (t + 0.5) + offset``; the source map has ``n_src`` cells
    spanning ``[0, extent)``.
    """
    cell = extent / n_src  # canvas units per map cell
    t = torch.arange(n_out, device=device, dtype=torch.float64)
    centre = (t + 0.5) * scale + offset
    valid = (centre >= 0) & (centre < extent)
    footprint = abs(scale) / cell  # output pixel size in map cells
    if interpolation == "auto":
        interpolation = "area" if footprint > 1.0 else "bilinear"
    if interpolation == "bilinear":
        q = (centre / cell - 0.5).clamp(0, n_src - 1)
        i0 = q.floor().long().clamp(0, n_src - 1)
        i1 = (i0 + 1).clamp(max=n_src - 1)
        frac = q - i0.double()
        weights = torch.zeros(n_out, n_src, device=device, dtype=torch.float64)
        weights.scatter_add_(1, i0[:, None], (1 - frac)[:, None])
        weights.scatter_add_(1, i1[:, None], frac[:, None])
    elif interpolation == "area":
        lo = (t * scale + offset) / cell
        hi = ((t + 1) * scale + offset) / cell
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        k = torch.arange(n_src, device=device, dtype=torch.float64)
        weights = (torch.minimum(hi[:, None], k + 1) - torch.maximum(lo[:, None], k)).clamp(min=0)
        total = weights.sum(1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp(min=1e-12), weights)
    else:
        raise ValueError(f"interpolation must be 'auto', 'bilinear' or 'area'; got {interpolation!r}")
    weights = weights * valid[:, None]
    return weights.to(dtype), valid


def resample(maps: Tensor, out_size: tuple[int, int], src_extent: tuple[int, int],
              scale: tuple[float, float], offset: tuple[float, float],
              fill: float, interpolation: str) -> Tensor:
    r"""Resample ``maps`` (on the source canvas) onto ``out_size``; ``scale, offset`` map out to source."""
    if not isinstance(maps, Tensor):
        maps = torch.as_tensor(np.asarray(maps))
    if maps.ndim < 2:
        raise ValueError(f"maps must be (h, w), (C, h, w) or (B, C, h, w); got shape {tuple(maps.shape)}")
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    maps = maps.to(dtype)
    h_src, w_src = maps.shape[-2:]
    wy, vy = _axis_weights(out_size[0], h_src, src_extent[0], scale[0], offset[0], interpolation,
                           maps.device, dtype)
    wx, vx = _axis_weights(out_size[1], w_src, src_extent[1], scale[1], offset[1], interpolation,
                           maps.device, dtype)
    out = wy @ (maps @ wx.T)
    if fill != 0.0:
        invalid = ~(vy[:, None] & vx[None, :])
        if bool(invalid.any()):
            out = out.masked_fill(invalid, fill)
    return out.contiguous()
