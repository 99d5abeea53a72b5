r"""
Reading radiographs (PNG, JPEG, DICOM) into grey images in [0, 1].

:func:`read_image` dispatches on the file: DICOM (by suffix or the ``DICM``
magic bytes) goes to :func:`read_dicom`, everything else to PIL. The result
is a :class:`Radiograph` whose ``pixels`` are a float32 ``(H, W)`` array in
[0, 1] on the original pixel grid, displayed the radiological way: dense
structures (bone, mediastinum) are bright, aerated lung is dark.

DICOM display pipeline (DICOM PS3.3 C.11), in order:

1. decode the stored values (8 to 16 bits, unsigned or signed; native or
   compressed transfer syntaxes through pydicom's decoder plugins);
2. modality LUT: Modality LUT Sequence, else rescale slope and intercept;
3. VOI LUT: the VOI LUT Sequence, else the first window centre / width
   (``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``), else the min-max range of
   the image; the window maps to [0, 1] with clipping (no stretching after
   it);
4. ``MONOCHROME1`` (low values bright) is inverted so that bright always
   means dense.

All arithmetic is float32 and in place where possible, and the encoded
bytes are released once decoded: a 3000 x 3000 radiograph costs one 36 MB
float32 array beyond the decoded integers.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# The readers, and the public face of four modules, one job each, each importing
# only those named before it: _radiograph holds the Radiograph record and
# ImageReadError, _dicom_header diagnoses damaged DICOM headers, _dicom_voi
# applies VOI windows, _dicom runs the DICOM display pipeline.
from captum_matex.data._dicom import _NoDecoderError, _read_dicom
from captum_matex.data._dicom_header import _header_problem
from captum_matex.data._dicom_voi import _check_voi
from captum_matex.data._radiograph import ImageReadError, Radiograph, _scale01

__all__ = ["DICOM_SUFFIXES", "ImageReadError", "Radiograph", "image_size", "read_dicom", "read_image"]

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"



def read_dicom(
    path: str | Path,
    *,
    frame: int | None = None,
    voi: str | tuple[float, float] = "auto",
) -> Radiograph:
    r"""
    Read a grey DICOM radiograph into a :class:`Radiograph`.

    Applies the modality LUT (Modality LUT Sequence or rescale slope and
    intercept), then the VOI transform, and inverts ``MONOCHROME1`` so that
    dense structures are bright. Works in float32 throughout.

    Compressed transfer syntaxes are decoded by pydicom's plugins (Pillow
    handles JPEG baseline and, when built with OpenJPEG, JPEG 2000;
    pylibjpeg or python-gdcm cover the rest); when none is installed the
    error names the package to install.

    Multi-frame files: the first frame is used with a :class:`UserWarning`
    unless ``frame`` says which one (chest radiographs are single-frame; a
    multi-frame file is usually a tomosynthesis or cine series, where no frame
    is "the" radiograph). Only the chosen frame is decoded where pydicom
    supports it.

    Colour files (RGB, YBR, palette colour, e.g. secondary captures) are
    converted to grey (BT.601 luma) with a :class:`UserWarning`. A missing
    Photometric Interpretation on one-sample data is taken as
    ``MONOCHROME2``, also with a warning.

    Args:

        path (str or Path): The DICOM file.
        frame (int, optional): Frame to read from a multi-frame file.
            Default: the first, with a warning when there are several.
        voi (str or tuple, optional): VOI transform. ``"auto"``: the file's
            VOI LUT Sequence, else its first window, else min-max;
            ``"minmax"``: ignore the file's VOI and scale the modality values'
            range to [0, 1]; ``(center, width)``: this linear window.
            Default: ``"auto"``

    Returns:
        Radiograph: ``pixels`` float32 ``(H, W)`` in [0, 1]; ``metadata``
        with ``format``, ``photometric_interpretation``, ``bits_stored``,
        ``signed``, ``transfer_syntax``, ``voi`` (what was applied),
        ``window`` (``(center, width)`` or None), ``windowed``,
        ``frames``, ``frame``, ``view_position``, ``modality``,
        ``pixel_spacing`` and ``inverted``.

    Raises:
        ImageReadError: the file is not a readable DICOM file, is truncated,
            has no pixel data, has a damaged data element or an unknown
            Photometric Interpretation, has a compressed transfer syntax
            whose decoder is missing (the message names the package to
            install), ``frame`` is not an int or out of range, or ``voi`` is
            invalid. No other exception type escapes for a bad file. A
            damaged header is named as such: ``DICOM header is damaged``
            (an element, ``(gggg,eeee)``, whose declared length cannot be
            right), ``DICOM header is truncated`` (the file ends inside an
            element before the pixel data) or ``unknown transfer syntax``.

    Examples::

        >>> from pydicom.data import get_testdata_file
        >>> radiograph = read_dicom(get_testdata_file("RG1_UNCI.dcm"))
        >>> radiograph.metadata["photometric_interpretation"], radiograph.metadata["inverted"]
        ('MONOCHROME1', True)
    """
    voi = _check_voi(voi)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, numbers.Integral)):
        raise ImageReadError(f"frame must be an int (a frame index), got {frame!r}")
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        return _read_dicom(path, frame, voi)
    except _NoDecoderError:
        raise
    except ImageReadError as exc:  # name the header's damage rather than its consequence
        problem = _header_problem(path)
        if problem is None:
            raise
        raise ImageReadError(f"{path}: {problem}") from exc

def read_image(path: str | Path, **dicom_options: Any) -> Radiograph:
    r"""
    Read a radiograph from a PNG, JPEG (or other PIL format) or DICOM file.

    Colour images are converted to grey; 16-bit PNGs keep their precision
    (min-max scaled). DICOM files (suffix ``.dcm``/``.dicom``/``.dic`` or the
    ``DICM`` magic bytes) go to :func:`read_dicom`.

    Args:

        path (str or Path): The file.
        **dicom_options: Keyword arguments for :func:`read_dicom`
            (``frame``, ``voi``); ignored for other formats.

    Returns:
        Radiograph: ``pixels`` float32 ``(H, W)`` in [0, 1].

    Raises:
        ImageReadError: the file is missing or not a readable image.

    Examples::

        >>> radiograph = read_image("files/p10/p10000032/s50414267/abc.jpg")
        >>> radiograph.pixels.dtype, radiograph.pixels.min() >= 0
        (dtype('float32'), True)
    """
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path} is a directory; give an image file")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if _is_dicom(path):
        return read_dicom(path, **dicom_options)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels = _scale01(np.asarray(image, dtype=np.float32), copy=False)
            else:
                grey = image if mode == "L" else image.convert("L")
                pixels = np.asarray(grey, dtype=np.float32)
                if not pixels.flags.writeable:
                    pixels = pixels.copy()
                pixels *= 1.0 / 255.0
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: refused as a possible decompression bomb ({exc}); if you trust the "
            "file, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return Radiograph(np.ascontiguousarray(pixels), str(path), {"format": "pil", "mode": mode})


def image_size(path: str | Path) -> tuple[int, int]:
    r"""
    ``(H, W)`` of an image file, read from its header without decoding pixels.

    Args:

        path (str or Path): A PNG, JPEG, other PIL-readable or DICOM file.

    Returns:
        tuple: ``(height, width)``.

    Raises:
        ImageReadError: the file is missing or its header is unreadable.

    Examples::

        >>> image_size(get_testdata_file("RG1_UNCI.dcm"))
        (1955, 1841)
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if _is_dicom(path):
        import pydicom

        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return int(dataset.Rows), int(dataset.Columns)
        except Exception as exc:
            problem = _header_problem(path) or f"not a readable DICOM header ({exc})"
            raise ImageReadError(f"{path}: {problem}") from exc
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return int(height), int(width)
