"""Machinery shared by the baselines: output formatting and normalisation."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, VisionLanguageAttribution, format_maps
from captum_matex._maps import Normalization, normalize
from captum_matex.adapters import VisionLanguageAdapter

Sign = Literal["positive", "absolute_value"] | None

_DEFAULT: Any = object()


def apply_sign(maps: Tensor, sign: Sign) -> Tensor:
    r"""Captum's visualisation convention for signed attributions.

    ``"positive"`` keeps the evidence for the score (relu), ``"absolute_value"``
    its magnitude, ``None`` leaves the sign (the map may then be negative).
    """
    if sign is None:
        return maps
    if sign == "positive":
        return maps.clamp_min(0)
    if sign == "absolute_value":
        return maps.abs()
    raise ValueError(f"sign must be 'positive', 'absolute_value' or None, got {sign!r}")


def format_pixel_maps(
    pixel_maps: Tensor, images: Tensor, output: OutputKind, grid: tuple[int, int]
) -> Tensor:
    r"""Shape ``(B, H, W)`` pixel-level maps as an attribution for ``images``.

    ``"image"`` repeats the map over channels, ``"pixel"`` adds a channel
    axis, ``"grid"`` area-averages it to the ``(h, w)`` patch grid.
    """
    if output == "image":
        maps = pixel_maps[:, None].expand(-1, images.shape[1], -1, -1)
    elif output == "pixel":
        maps = pixel_maps[:, None]
    elif output == "grid":
        maps = F.adaptive_avg_pool2d(pixel_maps[:, None].float(), grid)
    else:
        raise ValueError(f"output must be 'image', 'pixel' or 'grid', got {output!r}")
    return maps.to(device=images.device, dtype=images.dtype).contiguous()


class BaselineAttribution(VisionLanguageAttribution):
    r"""Base class of the comparison methods in :mod:`captum_matex.baselines`.

    Subclasses compute a non-negative map per sample, on the patch grid
    (:meth:`_finish_grid`) or on pixels (:meth:`_finish_pixels`); this class
    shapes it like ``images`` and normalises it per sample.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        normalize: ``"minmax"``, ``"max"`` or ``None``; default: the
            method's own convention (:attr:`default_normalize`).
        eval_mode: run the model in eval mode (restored afterwards).
    """

    #: normalisation the method's reference implementation uses
    default_normalize: Normalization = "minmax"

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        normalize: Normalization = _DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, eval_mode)
        self.normalize = self.default_normalize if normalize is _DEFAULT else normalize
        if self.normalize not in ("minmax", "max", None):
            raise ValueError(f"normalize must be 'minmax', 'max' or None, got {normalize!r}")

    def _finish_grid(
        self, grid_maps: Tensor, images: Tensor, output: OutputKind, scale: Tensor | None = None
    ) -> Tensor:
        r"""``(B, h, w)`` non-negative grid maps -> upsampled, normalised attribution.

        ``scale`` (``(B,)``) is the magnitude the maps' rounding noise is
        relative to (:func:`~captum_matex._maps.is_flat`); by default the maps' own.
        """
        grid_maps = torch.nan_to_num(grid_maps.detach().float(), nan=0.0).clamp_min(0)
        grid_maps = self._zero_flat_images(grid_maps, images)
        maps = format_maps(grid_maps, images, output)
        return normalize(maps, self.normalize, scale=scale, dtype=images.dtype).contiguous()

    def _finish_pixels(
        self, pixel_maps: Tensor, images: Tensor, output: OutputKind, scale: Tensor | None = None
    ) -> Tensor:
        r"""``(B, H, W)`` pixel maps -> shaped, normalised attribution (``scale``
        as in :meth:`_finish_grid`)."""
        grid = self.adapter.grid_size(images)
        pixel_maps = self._zero_flat_images(pixel_maps.detach(), images)
        maps = format_pixel_maps(pixel_maps, images, output, grid)
        return normalize(maps, self.normalize, scale=scale, dtype=images.dtype).contiguous()


def resolve_block(index: int, num_layers: int, what: str = "layer") -> int:
    r"""A block index in ``[0, num_layers)`` from a possibly negative ``index``."""
    resolved = index + num_layers if index < 0 else index
    if not 0 <= resolved < num_layers:
        raise ValueError(
            f"{what}={index} is out of range for a vision tower with {num_layers} blocks "
            f"(valid: {-num_layers}..{num_layers - 1})"
        )
    return resolved
