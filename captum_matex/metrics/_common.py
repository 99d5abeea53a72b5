"""Shared helpers of the metrics: map/mask checks, tie-averaged ranks, seeding."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import Tensor


def flatten_maps(maps: Tensor, name: str = "maps") -> Tensor:
    r"""``(B, H, W)`` or ``(B, C, H, W)`` (channels summed) maps as ``(B, H, W)`` floats."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim == 4:
        maps = maps.sum(1)
    elif maps.ndim != 3:
        raise ValueError(
            f"{name} must be (B, H, W) or (B, C, H, W), got shape {tuple(maps.shape)}"
        )
    if not maps.is_floating_point():
        maps = maps.float()
    return maps


def check_masks(masks: Tensor, shape: torch.Size) -> Tensor:
    r"""``masks`` as a bool tensor of ``shape`` ``(B, H, W)``, or a ``ValueError``."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(
            f"masks have shape {tuple(masks.shape)} but the maps are {tuple(shape)}; "
            "build masks at the maps' resolution (boxes_to_mask(boxes, size=maps.shape[-2:])) "
            "or resize the maps to the image size first"
        )
    return masks.bool()


def sanitise(flat: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    r"""Replace maps holding NaN/inf by zeros (a constant map) and say which ones were.

    Returns:
        ``(flat, finite)``: the cleaned ``(B, N)`` maps and a ``(B,)`` bool
        tensor, ``False`` where the map had a non-finite value.
    """
    finite = torch.isfinite(flat).all(1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        warnings.warn(
            f"{metric}: {bad} map(s) contain NaN or inf; each is scored as a constant "
            "(uninformative) map, i.e. at chance level. Fix the explainer rather than "
            "averaging these in.",
            RuntimeWarning,
            stacklevel=3,
        )
        flat = torch.where(finite[:, None], flat, torch.zeros_like(flat))
    return flat, finite


def informative(flat: Tensor) -> Tensor:
    r"""``(B,)`` bool: the map is not constant (its maximum exceeds its minimum)."""
    return flat.amax(1) > flat.amin(1)


def average_ranks(values: Tensor) -> Tensor:
    r"""1-based ranks along the last dimension, ties given their average rank.

    For ``(B, N)`` values the rank of an element ``v`` is
    ``(#{u < v} + 1 + #{u <= v}) / 2``, exactly the "average" tie rule of
    ``scipy.stats.rankdata``. Returned as float64 so that rank sums stay exact
    for images with millions of pixels.
    """
    ordered = values.sort(dim=-1).values.contiguous()
    values = values.contiguous()
    below = torch.searchsorted(ordered, values, side="left")
    upto = torch.searchsorted(ordered, values, side="right")
    return (below + upto + 1).double() / 2


def pearson(a: Tensor, b: Tensor) -> Tensor:
    r"""Row-wise Pearson correlation of ``(B, N)`` tensors; NaN where a row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    num = (a * b).sum(1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.nan)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    r"""Run the block with torch's RNG seeded to ``seed`` (no-op for ``None``);
    the global RNG state is restored afterwards."""
    if seed is None:
        yield
        return
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
