r"""
Building the model input from radiographs: :func:`prepare` resamples the pixels
(with ``torch`` or through the processor itself) and returns each image's
:class:`~captum_matex.data.geometry.Geometry`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.data._affine import Geometry, compute_geometry
from captum_matex.data._input_spec import InputSpec, input_spec
from captum_matex.data.images import Radiograph

ImageLike = Union[Radiograph, np.ndarray, Tensor]


def _as_tensor(image: ImageLike) -> Tensor:
    if isinstance(image, Radiograph):
        return image.to_tensor()
    t = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(
            f"images must be Radiographs or grey (H, W) arrays in [0, 1]; got shape {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        t = t.float() / (255.0 if t.dtype == torch.uint8 else float(t.max().clamp(min=1)))
    return t.float()[None]


def _paste(image: Tensor, size: tuple[int, int], offset: tuple[float, float], fill: float) -> Tensor:
    r"""Place ``image`` (C, h', w') at integer ``offset`` on a ``size`` canvas, cropping what falls off."""
    c, nh, nw = image.shape
    th, tw = size
    oy, ox = int(offset[0]), int(offset[1])
    canvas = image.new_full((c, th, tw), fill)
    y0, x0 = max(0, oy), max(0, ox)
    y1, x1 = min(th, oy + nh), min(tw, ox + nw)
    if y1 > y0 and x1 > x0:
        canvas[:, y0:y1, x0:x1] = image[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return canvas


def prepare(
    images: ImageLike | Sequence[ImageLike],
    processor_or_size: Any,
    mode: str = "letterbox",
    *,
    engine: str = "torch",
    quantize: bool = True,
    fill: float = 0.0,
    device: torch.device | str | None = None,
    channels: int | None = None,
) -> tuple[Tensor, list[Geometry]]:
    r"""
    Build the model input from radiographs and record each one's geometry.

    Args:

        images (Radiograph, array or Tensor, or a sequence of them): Grey
            images, ``(H, W)`` in [0, 1] (uint8 arrays are divided by 255,
            other integer arrays by their maximum); sizes may differ. A
            ``(B, H, W)`` array is a batch.
        processor_or_size: A transformers CLIP processor or image processor
            (resize, crop, resampling and normalisation are read from it),
            an :class:`InputSpec`, an ``int`` or ``(height, width)`` (no
            normalisation).
        mode (str, optional): ``"letterbox"``: fit the whole image and pad
            with ``fill`` (centred), nothing lost; ``"processor"``: the
            processor's own resize and centre crop. Default: ``"letterbox"``
        engine (str, optional): ``"torch"``: resample with
            ``torch.nn.functional.interpolate`` (antialiased, on ``device``);
            ``"processor"``: run the processor itself on 8-bit PIL images
            (bit-exact ``pixel_values``; needs a processor; letterbox pads
            the PIL image to the input's aspect first). Default: ``"torch"``
        quantize (bool, optional): Round to 8 bits before and after the
            resize, as the PIL pipeline does (``engine="torch"`` only);
            False keeps the full precision of 16-bit DICOM. Default: True
        fill (float, optional): Grey level in [0, 1] of letterbox padding
            (before normalisation). Default: 0.0 (black)
        device (torch.device, optional): Where to build the input.
            Default: CPU.
        channels (int, optional): Output channels (grey replicated).
            Default: 3

    Returns:
        tuple: ``(pixel_values, geometries)``: a ``(B, C, h, w)`` float32
        tensor ready for the model and a list of ``B`` :class:`Geometry`.

    Raises:
        ValueError: unknown ``mode`` or ``engine``, ``engine="processor"``
            without a processor, or images that are not grey 2-D arrays.

    Examples::

        >>> pixels, geometries = prepare([radiograph], processor, mode="letterbox")
        >>> maps = MATEX(model, processor).attribute(pixels, (["left effusion"],))
        >>> heat = geometries[0].map_to_original(maps[0])   # (1, H, W)
        >>> box_on_input = geometries[0].boxes_to_input(sample.boxes)
    """
    if isinstance(images, (Radiograph, np.ndarray, Tensor)) and not (
        isinstance(images, (np.ndarray, Tensor)) and images.ndim == 3 and images.shape[0] > 1
    ):
        images = [images]
    if engine not in ("torch", "processor"):
        raise ValueError(f"engine must be 'torch' or 'processor'; got {engine!r}")
    spec = input_spec(processor_or_size, channels=channels)
    tensors = [_as_tensor(im) for im in images]
    geometries = [compute_geometry(tuple(t.shape[-2:]), spec, mode) for t in tensors]
    if engine == "processor":
        return _prepare_with_processor(tensors, processor_or_size, spec, mode, geometries, fill, device)
    out = []
    for t, g in zip(tensors, geometries):
        x = t.to(device)[None]  # (1, 1, H, W)
        if quantize:
            x = torch.round(x * 255) / 255
        if g.resized_size != g.original_size:
            antialias = spec.resample in ("bilinear", "bicubic")
            x = F.interpolate(x, size=g.resized_size, mode=spec.resample,
                              antialias=antialias, **({"align_corners": False} if antialias else {}))
            x = x.clamp_(0, 1)
            if quantize:
                x = torch.round(x * 255) / 255
        x = _paste(x[0], g.input_size, (g.offset[0], g.offset[1]), fill)
        out.append(x)
    pixels = torch.stack(out)
    return _normalise(pixels, spec), geometries


def _normalise(pixels: Tensor, spec: InputSpec) -> Tensor:
    pixels = pixels.expand(-1, spec.channels, -1, -1)
    if spec.rescale != 1.0:
        pixels = pixels * spec.rescale
    if spec.mean is not None and spec.std is not None:
        mean = torch.as_tensor(spec.mean, dtype=pixels.dtype, device=pixels.device)[:, None, None]
        std = torch.as_tensor(spec.std, dtype=pixels.dtype, device=pixels.device)[:, None, None]
        pixels = (pixels - mean) / std
    return pixels.contiguous()


def _prepare_with_processor(tensors: list[Tensor], processor: Any, spec: InputSpec, mode: str,
                            geometries: list[Geometry], fill: float, device: Any
                            ) -> tuple[Tensor, list[Geometry]]:
    from PIL import Image

    if not (hasattr(processor, "image_processor") or callable(processor)) or isinstance(
        processor, (int, tuple, list, InputSpec)
    ):
        raise ValueError("engine='processor' needs a transformers processor, not a size")
    pil_images = []
    final: list[Geometry] = []
    for t, g in zip(tensors, geometries):
        grey = np.round(t[0].numpy() * 255).astype(np.uint8)
        if mode == "letterbox":
            H, W = grey.shape
            th, tw = spec.input_size
            ph, pw = max(H, math.ceil(W * th / tw)), max(W, math.ceil(H * tw / th))
            pad = ((ph - H) // 2, (pw - W) // 2)
            canvas = np.full((ph, pw), int(round(fill * 255)), dtype=np.uint8)
            canvas[pad[0]:pad[0] + H, pad[1]:pad[1] + W] = grey
            grey = canvas
            inner = compute_geometry((ph, pw), spec, "processor")
            g = Geometry((H, W), inner.input_size, inner.scale,
                         (inner.scale[0] * pad[0] + inner.offset[0],
                          inner.scale[1] * pad[1] + inner.offset[1]),
                         (round(H * inner.scale[0]), round(W * inner.scale[1])), "letterbox")
        pil_images.append(Image.fromarray(grey, mode="L").convert("RGB"))
        final.append(g)
    pixels = processor(images=pil_images, return_tensors="pt")["pixel_values"]
    if tuple(pixels.shape[-2:]) != tuple(spec.input_size):
        raise ValueError(
            f"processor returned inputs of size {tuple(pixels.shape[-2:])}, expected {spec.input_size}; "
            "its geometry cannot be reproduced"
        )
    return pixels.to(device), final
