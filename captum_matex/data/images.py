"""Reading radiographs (PNG, JPEG, DICOM) into grey images in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class ImageReadError(ValueError):
    r"""A file is missing, unreadable or not an image; the message says why."""


@dataclass
class Radiograph:
    r"""A grey radiograph as displayed: bright means dense (bone is white).

    Attributes:
        pixels: ``(H, W)`` float32 array in [0, 1].
        path: where it was read from.
        metadata: format-specific facts (DICOM photometric interpretation,
            window, view position, ...).
    """

    pixels: np.ndarray
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the original pixel grid."""
        return self.pixels.shape[0], self.pixels.shape[1]

    def to_pil(self) -> Image.Image:
        """An 8-bit RGB PIL image, the input model processors expect."""
        grey = np.round(self.pixels * 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")


def _scale01(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if not np.isfinite([low, high]).all():
        raise ImageReadError("image holds NaN or Inf values")
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def read_dicom(path: str | Path) -> Radiograph:
    r"""Read a single-frame grey DICOM radiograph.

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or
    window centre/width when the file has one, and inverts MONOCHROME1 so
    that dense structures are bright.

    Raises:
        ImageReadError: unreadable file, no pixel data, colour or multi-frame
            data, or a compressed transfer syntax whose decoder is missing
            (the message names the package to install).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in dataset:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    try:
        array = dataset.pixel_array
    except (RuntimeError, NotImplementedError) as exc:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        raise ImageReadError(
            f"{path}: cannot decode pixel data with transfer syntax {syntax} "
            f"({exc}); install a decoder, e.g. pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg, or python-gdcm"
        ) from exc
    except Exception as exc:  # pydicom raises assorted errors on damaged data
        raise ImageReadError(f"{path}: damaged pixel data ({exc})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if array.ndim != 2:
        raise ImageReadError(
            f"{path}: expected one grey frame, got pixel data of shape {array.shape} "
            f"({photometric}, {int(dataset.get('NumberOfFrames', 1))} frame(s))"
        )
    values = apply_modality_lut(array, dataset)
    has_window = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    if has_window:
        values = apply_voi_lut(values, dataset, index=0)
    pixels = _scale01(values)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
    metadata = {
        "format": "dicom",
        "photometric_interpretation": photometric,
        "bits_stored": int(dataset.get("BitsStored", 0)),
        "windowed": has_window,
        "view_position": str(dataset.get("ViewPosition", "")),
    }
    return Radiograph(pixels, str(path), metadata)


def read_image(path: str | Path) -> Radiograph:
    r"""Read a radiograph from a PNG, JPEG (or other PIL format) or DICOM file.

    Colour images are converted to grey; 16-bit PNGs keep their precision.

    Args:
        path: the file.

    Returns:
        A :class:`Radiograph`.

    Raises:
        ImageReadError: the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if _is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I", "F"):
                pixels = _scale01(np.asarray(image, dtype=np.float32))
            else:
                pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return Radiograph(pixels, str(path), {"format": "pil", "mode": mode})
