r"""
The :class:`Radiograph` record every reader returns, the :class:`ImageReadError`
every reader raises, and the min-max scaling of pixel values to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


class ImageReadError(ValueError):
    r"""A file is missing, unreadable or not an image; the message says why and names the file."""


@dataclass
class Radiograph:
    r"""
    A grey radiograph as displayed: bright means dense (bone is white).

    Attributes:

        pixels (numpy.ndarray): ``(H, W)`` float32 array in [0, 1] on the
            original pixel grid.
        path (str): Where it was read from.
        metadata (dict): Format-specific facts (DICOM photometric
            interpretation, window, frames, view position, ...).

    Examples::

        >>> radiograph = read_image("chest.dcm")
        >>> radiograph.size
        (1955, 1841)
        >>> image = radiograph.to_pil()  # 8-bit RGB, for a transformers processor
    """

    pixels: np.ndarray
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        r"""``(H, W)`` of the original pixel grid."""
        return self.pixels.shape[0], self.pixels.shape[1]

    def to_pil(self) -> Image.Image:
        r"""
        An 8-bit RGB PIL image, the input model processors expect.

        Returns:
            PIL.Image.Image: ``round(pixels * 255)`` replicated to three channels.
        """
        grey = np.round(self.pixels * 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")

    def to_tensor(self) -> Any:
        r"""
        The pixels as a ``(1, H, W)`` float32 torch tensor sharing memory with ``pixels``.

        Returns:
            torch.Tensor: A view of :attr:`pixels` (no copy).
        """
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.pixels, dtype=np.float32))[None]


def _scale01(array: np.ndarray, copy: bool = True) -> np.ndarray:
    r"""Min-max scale to float32 [0, 1]; in place when ``array`` is float32 and ``copy`` is False."""
    if array.dtype != np.float32 or copy:
        array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if not np.isfinite([low, high]).all():
        raise ImageReadError("image holds NaN or Inf values")
    if high <= low:
        array[...] = 0.0
        return array
    array -= low
    array *= 1.0 / (high - low)
    np.clip(array, 0.0, 1.0, out=array)
    return array
