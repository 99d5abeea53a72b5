"""A new metric: mean map value inside the boxes over the mean of the whole map."""

import torch
from torch import Tensor

from captum_matex.registry import MetricInfo, metrics


def mass_ratio(maps: Tensor, masks: Tensor) -> Tensor:
    """``(B, [C,] H, W)`` maps and ``(B, H, W)`` boxes -> ``(B,)``; NaN without a box."""
    maps = maps.sum(1) if maps.dim() == 4 else maps
    maps, masks = maps.flatten(1).float(), masks.flatten(1)
    inside = (maps * masks).sum(1) / masks.sum(1).clamp_min(1)
    ratio = inside / maps.mean(1).clamp_min(torch.finfo(maps.dtype).tiny)
    return torch.where(masks.any(1), ratio, torch.nan)


MASS_RATIO = MetricInfo(
    mass_ratio, True, "localisation", (0.0, float("inf")), "mean in boxes / mean overall"
)
metrics.register("mass_ratio", MASS_RATIO)
