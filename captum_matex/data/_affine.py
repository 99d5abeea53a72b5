r"""
The :class:`Geometry` record: where an original image lands on the model's input
grid (:func:`compute_geometry`) and how boxes and maps move between the two grids.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from captum_matex.data._input_spec import input_spec
from captum_matex.data._resample import inside, resample

Box = Sequence[float]


@dataclass(frozen=True)
class Geometry:
    r"""
    How one original image was mapped onto the model's input grid.

    ``x_input = scale[1] * x_original + offset[1]`` and
    ``y_input = scale[0] * y_original + offset[0]`` in continuous pixel-edge
    coordinates (see :mod:`captum_matex.data.geometry`).

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
        inv_scale, inv_offset = self._inverse()
        return self._move(boxes, inv_scale, inv_offset, self.original_size, clip)

    def _inverse(self) -> tuple[tuple[float, float], tuple[float, float]]:
        r"""``(scale, offset)`` of the map from input back to original coordinates."""
        return ((1.0 / self.scale[0], 1.0 / self.scale[1]),
                (-self.offset[0] / self.scale[0], -self.offset[1] / self.scale[1]))

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
        return resample(
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
        scale, offset = self._inverse()
        return resample(
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
        rows = inside(self.original_size[0], self.scale[0], self.offset[0], self.input_size[0], device)
        cols = inside(self.original_size[1], self.scale[1], self.offset[1], self.input_size[1], device)
        return rows[:, None] & cols[None, :]

    @property
    def visible_fraction(self) -> float:
        r"""Share of the original pixels inside the model input (1.0 for letterbox)."""
        rows = inside(self.original_size[0], self.scale[0], self.offset[0], self.input_size[0], None)
        cols = inside(self.original_size[1], self.scale[1], self.offset[1], self.input_size[1], None)
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
