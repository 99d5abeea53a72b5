r"""
Preprocessing that remembers its geometry.

A model sees a resized, cropped or padded copy of a radiograph; a map made on
that input grid must go back to the original pixel grid to be compared with
expert boxes, and boxes must go the other way to be drawn on the model
input. :func:`prepare` builds the model input from radiographs **and**
returns one :class:`Geometry` per image recording exactly what happened.

Every geometry here is an axis-aligned affine map between two continuous
pixel-edge coordinate systems (pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``, the convention of ``(x, y, w, h)``
boxes and of :func:`captum_matex.metrics.boxes_to_mask`)::

    x_input = scale_x * x_original + offset_x
    y_input = scale_y * y_original + offset_y

A resize to ``(h', w')`` contributes ``scale = (h'/H, w'/W)`` (exact for
PIL and for ``torch.nn.functional.interpolate`` with
``align_corners=False``); a crop starting at ``(top, left)`` contributes
``offset = (-top, -left)``; padding by ``(pad_top, pad_left)`` contributes
``offset = (pad_top, pad_left)``.

Two modes:

- ``"letterbox"`` (default): scale the whole image to fit the model's input
  and pad the short side with black, centred. Nothing is lost. This is the
  better default for chest radiographs: centre cropping a portrait film cuts
  the apices and the costophrenic angles, exactly where pneumothorax and
  pleural effusion sit, and MS-CXR boxes there would fall outside the model
  input. A model trained only on centre crops sees black bars it never saw
  in training; compare both modes on a validation split when in doubt.
- ``"processor"``: reproduce a transformers CLIP image processor exactly
  (``size`` as ``{"shortest_edge"}`` or ``{"height", "width"}``,
  ``do_center_crop`` / ``crop_size``, the backend's crop rounding, its
  resampling filter, rescale and normalisation). Regions cropped away have
  no value in the model's map; :meth:`Geometry.map_to_original` gives them
  ``fill`` (0 by default) and :meth:`Geometry.visible_mask` tells which
  original pixels the model saw.

Pixels are resampled with ``torch`` (antialiased bicubic, as PIL does, on
any device); with ``quantize=True`` (default) they are rounded to 8 bits
before and after the resize as the PIL pipeline does, and match the
processor's own ``pixel_values`` to within one grey level.
``engine="processor"`` calls the processor itself instead, for bit-exact
inputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.data.images import Radiograph

__all__ = [
    "Geometry",
    "InputSpec",
    "compute_geometry",
    "input_spec",
    "maps_to_original",
    "prepare",
]

Box = Sequence[float]
ImageLike = Union[Radiograph, np.ndarray, Tensor]
SizeLike = Union[int, Sequence[int]]

_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}  # PIL ids; others -> bicubic


@dataclass(frozen=True)
class Geometry:
    r"""
    How one original image was mapped onto the model's input grid.

    ``x_input = scale[1] * x_original + offset[1]`` and
    ``y_input = scale[0] * y_original + offset[0]`` in continuous pixel-edge
    coordinates (see the module docstring).

    Attributes:

        original_size (tuple): ``(H, W)`` of the original image.
        input_size (tuple): ``(h, w)`` of the model input.
        scale (tuple): ``(scale_y, scale_x)``: input pixels per original pixel.
        offset (tuple): ``(offset_y, offset_x)``: input coordinate of the
            original image's top-left corner (negative: cropped; positive:
            padded).
        resized_size (tuple): ``(h', w')`` the image was resized to before
            cropping or padding.
        mode (str): ``"letterbox"`` or ``"processor"``.

    Examples::

        >>> g = compute_geometry((200, 100), 112, mode="letterbox")
        >>> g.scale, g.offset
        ((0.56, 0.56), (0.0, 28.0))
        >>> g.boxes_to_input([(0, 0, 100, 200)])
        [(28.0, 0.0, 56.0, 112.0)]
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    resized_size: tuple[int, int]
    mode: str = "letterbox"

    # ------------------------------------------------------------------ boxes
    def boxes_to_input(self, boxes: Sequence[Box] | Tensor, clip: bool = True) -> Any:
        r"""
        Move ``(x, y, w, h)`` boxes from original pixels to model-input pixels.

        Args:

            boxes (sequence of 4 numbers, or Tensor ``(..., 4)``): Boxes in
                original pixel coordinates.
            clip (bool, optional): Intersect with the input canvas. A box
                wholly cropped away becomes a zero-size box on the canvas
                edge (kept, so indices line up; it covers no pixel centre).
                Default: True

        Returns:
            list of tuples, or Tensor: Boxes in input pixels, in the type given.
        """
        return self._move(boxes, self.scale, self.offset, self.input_size, clip)

    def boxes_to_original(self, boxes: Sequence[Box] | Tensor, clip: bool = True) -> Any:
        r"""
        Move ``(x, y, w, h)`` boxes from model-input pixels to original pixels.

        Args:

            boxes (sequence of 4 numbers, or Tensor ``(..., 4)``): Boxes in
                input pixel coordinates.
            clip (bool, optional): Intersect with the original image (drops
                letterbox padding). Default: True

        Returns:
            list of tuples, or Tensor: Boxes in original pixels, in the type given.
        """
        inv_scale = (1.0 / self.scale[0], 1.0 / self.scale[1])
        inv_offset = (-self.offset[0] / self.scale[0], -self.offset[1] / self.scale[1])
        return self._move(boxes, inv_scale, inv_offset, self.original_size, clip)

    @staticmethod
    def _move(boxes: Any, scale: tuple[float, float], offset: tuple[float, float],
              size: tuple[int, int], clip: bool) -> Any:
        as_tensor = isinstance(boxes, Tensor)
        b = boxes if as_tensor else torch.as_tensor(
            [list(map(float, box)) for box in boxes], dtype=torch.float64
        ).reshape(-1, 4)
        if b.shape[-1] != 4:
            raise ValueError(f"boxes must be (x, y, w, h); got shape {tuple(b.shape)}")
        b = b.to(torch.float64) if not b.is_floating_point() else b
        x0 = b[..., 0] * scale[1] + offset[1]
        y0 = b[..., 1] * scale[0] + offset[0]
        x1 = x0 + b[..., 2] * scale[1]
        y1 = y0 + b[..., 3] * scale[0]
        if clip:
            x0, x1 = x0.clamp(0, size[1]), x1.clamp(0, size[1])
            y0, y1 = y0.clamp(0, size[0]), y1.clamp(0, size[0])
        out = torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)
        if as_tensor:
            return out.to(boxes.dtype if boxes.is_floating_point() else torch.float32)
        return [tuple(float(v) for v in row) for row in out.tolist()]

    # ------------------------------------------------------------------- maps
    def map_to_original(self, maps: Tensor, fill: float = 0.0, interpolation: str = "auto") -> Tensor:
        r"""
        Put a map made on the model's input grid back on the original pixel grid.

        The map may have the input's resolution or any other (a patch grid
        such as ``14 x 14`` is fine): it is taken to cover the input canvas
        exactly. Each original pixel centre is mapped to the input and the
        map is sampled there, bilinearly (edge values replicated, like
        ``F.interpolate(..., align_corners=False)``) when upsampling, with
        an area average when a map cell is smaller than an original pixel.
        One separable pair of matrix products: fast, batched, differentiable,
        on the map's device and dtype.

        Original pixels the model never saw (cropped away in ``"processor"``
        mode) get ``fill``: 0 by default, so metrics treat them as "no
        attribution"; pass ``float("nan")`` to mark them instead.
        Letterbox padding in the map is dropped.

        Args:

            maps (Tensor): ``(h, w)``, ``(C, h, w)`` or ``(B, C, h, w)``.
            fill (float, optional): Value for original pixels outside the
                model input. Default: 0.0
            interpolation (str, optional): ``"auto"``, ``"bilinear"`` or
                ``"area"``. Default: ``"auto"``

        Returns:
            Tensor: The same leading dimensions, last two ``original_size``.
        """
        return _resample(
            maps, self.original_size, src_extent=self.input_size,
            # source (input) coordinate of a target (original) coordinate
            scale=self.scale, offset=self.offset, fill=fill,
            interpolation=interpolation,
        )

    def map_to_input(self, maps: Tensor, fill: float = 0.0, interpolation: str = "auto") -> Tensor:
        r"""
        Put a map or mask on the original pixel grid onto the model's input grid.

        The reverse of :meth:`map_to_original`, e.g. for a lung mask from a
        segmenter. Downsampling averages areas (a binary mask becomes the
        fraction of each input pixel it covers); letterbox padding gets
        ``fill``.

        Args:

            maps (Tensor): ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` on
                the original grid (any resolution covering the whole image).
            fill (float, optional): Value for input pixels outside the
                original image. Default: 0.0
            interpolation (str, optional): ``"auto"``, ``"bilinear"`` or
                ``"area"``. Default: ``"auto"``

        Returns:
            Tensor: The same leading dimensions, last two ``input_size``.
        """
        scale = (1.0 / self.scale[0], 1.0 / self.scale[1])
        offset = (-self.offset[0] / self.scale[0], -self.offset[1] / self.scale[1])
        return _resample(
            maps, self.input_size, src_extent=self.original_size,
            scale=scale, offset=offset, fill=fill,
            interpolation=interpolation,
        )

    def visible_mask(self, device: torch.device | str | None = None) -> Tensor:
        r"""
        ``(H, W)`` bool mask of the original pixels whose centre lies inside the model input.

        All True in ``"letterbox"`` mode; in ``"processor"`` mode False where
        the centre crop cut the image.

        Args:

            device (torch.device, optional): Device of the mask. Default: CPU.

        Returns:
            Tensor: ``(H, W)`` bool.
        """
        rows = _inside(self.original_size[0], self.scale[0], self.offset[0], self.input_size[0], device)
        cols = _inside(self.original_size[1], self.scale[1], self.offset[1], self.input_size[1], device)
        return rows[:, None] & cols[None, :]

    @property
    def visible_fraction(self) -> float:
        r"""Share of the original pixels inside the model input (1.0 for letterbox)."""
        rows = _inside(self.original_size[0], self.scale[0], self.offset[0], self.input_size[0], None)
        cols = _inside(self.original_size[1], self.scale[1], self.offset[1], self.input_size[1], None)
        return float(rows.float().mean() * cols.float().mean())

    def as_dict(self) -> dict[str, Any]:
        r"""
        A JSON-ready description (for ``summary.json`` files).

        Returns:
            dict: The attributes, tuples as lists.
        """
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        r"""
        Rebuild a geometry from :meth:`as_dict` output.

        Args:

            data (dict): As written by :meth:`as_dict`.

        Returns:
            Geometry: The geometry.
        """
        return cls(
            original_size=tuple(int(v) for v in data["original_size"]),  # type: ignore[arg-type]
            input_size=tuple(int(v) for v in data["input_size"]),  # type: ignore[arg-type]
            scale=tuple(float(v) for v in data["scale"]),  # type: ignore[arg-type]
            offset=tuple(float(v) for v in data["offset"]),  # type: ignore[arg-type]
            resized_size=tuple(int(v) for v in data["resized_size"]),  # type: ignore[arg-type]
            mode=str(data.get("mode", "letterbox")),
        )


def _inside(n: int, scale: float, offset: float, extent: int, device: Any) -> Tensor:
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


def _resample(maps: Tensor, out_size: tuple[int, int], src_extent: tuple[int, int],
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


# ---------------------------------------------------------------- processor
@dataclass(frozen=True)
class InputSpec:
    r"""
    What a model's preprocessing does, read from a processor or given by hand.

    Attributes:

        size (dict): ``{"shortest_edge": S}`` or ``{"height": h, "width": w}``
            (resize target), or ``None`` for no resize.
        crop_size (tuple): ``(h, w)`` of the centre crop, or ``None``.
        input_size (tuple): ``(h, w)`` of the model input (letterbox target).
        resample (str): ``torch.nn.functional.interpolate`` mode.
        pad_rounding (str): ``"ceil"`` (PIL / numpy backend) or ``"floor"``
            (torchvision backend): where the odd pixel goes when the crop
            is larger than the image.
        rescale (float): Factor from [0, 1] pixels to the processor's
            rescaled values (``255 * rescale_factor``, 1.0 for the usual
            ``1/255``).
        mean (tuple): Per-channel mean, or ``None`` for no normalisation.
        std (tuple): Per-channel standard deviation, or ``None``.
        channels (int): Output channels (grey replicated).
    """

    size: dict[str, int] | None
    crop_size: tuple[int, int] | None
    input_size: tuple[int, int]
    resample: str = "bicubic"
    pad_rounding: str = "ceil"
    rescale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _pair(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(v) for v in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width); got {size}")
    return size  # type: ignore[return-value]


def input_spec(processor_or_size: Any, channels: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> InputSpec:
    r"""
    Read the preprocessing of a transformers CLIP processor, or describe a plain size.

    Args:

        processor_or_size: A transformers processor (its
            ``image_processor`` is used), an image processor, an
            :class:`InputSpec` (returned as is), an object whose
            ``image_processor`` is one (such as
            :class:`~captum_matex.loading.OpenCLIPProcessor`), an ``int``
            (square input) or ``(height, width)``.
        channels (int, optional): Output channels. Default: 3
        mean (sequence of float, optional): Normalisation mean (overrides
            the processor's). Default: the processor's, or none for a size.
        std (sequence of float, optional): Normalisation std. Default: as ``mean``.

    Returns:
        InputSpec: The preprocessing.

    Raises:
        ValueError: the processor's ``size`` has keys this module cannot
            reproduce, or it pads (``do_pad``).

    Examples::

        >>> spec = input_spec(processor)
        >>> spec.size, spec.crop_size
        ({'shortest_edge': 112}, (112, 112))
    """
    if isinstance(processor_or_size, InputSpec):
        return processor_or_size
    if isinstance(processor_or_size, (int, tuple, list)):
        size = _pair(processor_or_size)
        return InputSpec(
            size={"height": size[0], "width": size[1]}, crop_size=None, input_size=size,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None, channels=channels or 3,
        )
    ip = getattr(processor_or_size, "image_processor", processor_or_size)
    if isinstance(ip, InputSpec):  # e.g. an OpenCLIPProcessor's
        return ip
    if _get(ip, "do_pad"):
        raise ValueError(
            f"{type(ip).__name__} pads (do_pad=True); only resize and centre crop are reproduced"
        )
    size_cfg = _get(ip, "size")
    do_resize = _get(ip, "do_resize")
    size: dict[str, int] | None = None
    if do_resize is None or do_resize:
        shortest, longest = _get(size_cfg, "shortest_edge"), _get(size_cfg, "longest_edge")
        height, width = _get(size_cfg, "height"), _get(size_cfg, "width")
        if shortest and not longest:
            size = {"shortest_edge": int(shortest)}
        elif height and width:
            size = {"height": int(height), "width": int(width)}
        else:
            raise ValueError(
                f"cannot reproduce image processor size {size_cfg!r}: expected "
                "{'shortest_edge': S} or {'height': h, 'width': w}"
            )
    crop_cfg = _get(ip, "crop_size")
    do_crop = _get(ip, "do_center_crop")
    crop = None
    if do_crop:
        crop = (int(_get(crop_cfg, "height")), int(_get(crop_cfg, "width")))
    if crop is not None:
        target = crop
    elif size is not None and "height" in size:
        target = (size["height"], size["width"])
    elif size is not None:
        target = (size["shortest_edge"], size["shortest_edge"])
    else:
        raise ValueError(f"{type(ip).__name__} neither resizes nor crops; the input size is undefined")
    backend = str(_get(ip, "backend") or "")
    fast = backend == "torchvision" or type(ip).__name__.endswith("Fast")
    resample = _get(ip, "resample")
    resample_id = int(getattr(resample, "value", resample)) if resample is not None else 3
    rescale = 1.0
    if _get(ip, "do_rescale") is not False:
        rescale = 255.0 * float(_get(ip, "rescale_factor") or 1 / 255)
    else:
        rescale = 255.0
    do_norm = _get(ip, "do_normalize") is not False
    proc_mean = _get(ip, "image_mean") if do_norm else None
    proc_std = _get(ip, "image_std") if do_norm else None
    mean = mean if mean is not None else proc_mean
    std = std if std is not None else proc_std
    n = channels or 3
    if isinstance(mean, (int, float)):
        mean = [float(mean)] * n
    if isinstance(std, (int, float)):
        std = [float(std)] * n
    return InputSpec(
        size=size, crop_size=crop, input_size=target,
        resample=_RESAMPLE.get(resample_id, "bicubic"),
        pad_rounding="floor" if fast else "ceil", rescale=rescale,
        mean=tuple(float(v) for v in mean) if mean is not None else None,
        std=tuple(float(v) for v in std) if std is not None else None,
        channels=n,
    )


def compute_geometry(original_size: Sequence[int], processor_or_size: Any,
                     mode: str = "letterbox") -> Geometry:
    r"""
    The :class:`Geometry` of one image, without touching pixels.

    Args:

        original_size (sequence of int): ``(H, W)`` of the original image.
        processor_or_size: A transformers (image) processor, an
            :class:`InputSpec`, an ``int`` or ``(height, width)``.
        mode (str, optional): ``"letterbox"`` (fit and pad, nothing lost) or
            ``"processor"`` (the processor's resize and centre crop; with a
            plain size: stretch to it). Default: ``"letterbox"``

    Returns:
        Geometry: The mapping between the original and the model input.

    Raises:
        ValueError: unknown ``mode`` or an empty image.

    Examples::

        >>> compute_geometry((2544, 3056), processor, mode="processor").visible_fraction
        0.83...
    """
    spec = input_spec(processor_or_size)
    H, W = int(original_size[0]), int(original_size[1])
    if H < 1 or W < 1:
        raise ValueError(f"image size must be positive; got {(H, W)}")
    th, tw = spec.input_size
    if mode == "letterbox":
        s = min(th / H, tw / W)
        nh, nw = max(1, min(th, round(H * s))), max(1, min(tw, round(W * s)))
        return Geometry((H, W), (th, tw), (nh / H, nw / W), (float((th - nh) // 2), float((tw - nw) // 2)),
                        (nh, nw), "letterbox")
    if mode != "processor":
        raise ValueError(f"mode must be 'letterbox' or 'processor'; got {mode!r}")
    if spec.size is None:
        nh, nw = H, W
    elif "shortest_edge" in spec.size:
        short = spec.size["shortest_edge"]
        if H <= W:
            nh, nw = short, int(short * W / H)
        else:
            nh, nw = int(short * H / W), short
    else:
        nh, nw = spec.size["height"], spec.size["width"]
    oy = ox = 0.0
    if spec.crop_size is not None:
        ch, cw = spec.crop_size
        oy, ox = _crop_offset(nh, ch, spec.pad_rounding), _crop_offset(nw, cw, spec.pad_rounding)
    return Geometry((H, W), spec.input_size, (nh / H, nw / W), (oy, ox), (nh, nw), "processor")


def _crop_offset(n: int, crop: int, rounding: str) -> float:
    r"""Where a length-``n`` image lands in a centred length-``crop`` window."""
    if n >= crop:
        return -float((n - crop) // 2)
    pad = crop - n
    return float(math.ceil(pad / 2) if rounding == "ceil" else pad // 2)


# -------------------------------------------------------------------- prepare
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


def maps_to_original(maps: Tensor, geometries: Sequence[Geometry], fill: float = 0.0) -> list[Tensor]:
    r"""
    Put a batch of input-grid maps back on each image's original grid.

    Args:

        maps (Tensor): ``(B, C, h, w)`` maps on the model input grid (or any
            grid covering it, e.g. the patch grid).
        geometries (sequence of Geometry): One per map, from :func:`prepare`.
        fill (float, optional): Value for original pixels the model did not
            see. Default: 0.0

    Returns:
        list of Tensor: ``B`` tensors ``(C, H_i, W_i)`` (sizes may differ).

    Raises:
        ValueError: ``maps`` and ``geometries`` differ in length.

    Examples::

        >>> heat = maps_to_original(maps, geometries)[0][0]   # (H, W)
    """
    if len(maps) != len(geometries):
        raise ValueError(f"maps has {len(maps)} rows but geometries has {len(geometries)}")
    return [g.map_to_original(m, fill=fill) for m, g in zip(maps, geometries)]
