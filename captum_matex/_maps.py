"""Small per-sample operations on saliency maps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12


def normalize_max(maps: Tensor, start_dim: int = 1) -> Tensor:
    r"""Divide each map by its maximum over the dims from ``start_dim`` on.

    A map whose maximum is not positive (all zero) is left unchanged, so the
    result is finite for every finite input in every floating dtype (a fixed
    epsilon would underflow to zero in float16).
    """
    peak = maps.flatten(start_dim).amax(-1)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return maps / peak.view(*peak.shape, *([1] * (maps.ndim - start_dim)))


def normalize_minmax(maps: Tensor) -> Tensor:
    r"""Rescale each sample's map to [0, 1].

    A constant map becomes all ones if it is positive and all zeros
    otherwise, so the result is finite for every finite input, in every
    floating dtype.
    """
    flat = maps.flatten(1)
    low = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - low
    positive = span > 0
    scaled = torch.where(
        positive,
        (flat - low) / torch.where(positive, span, torch.ones_like(span)),
        (flat > 0).to(flat.dtype),
    )
    return scaled.view_as(maps)


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
