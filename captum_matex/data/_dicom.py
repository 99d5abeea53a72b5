r"""
The DICOM display pipeline behind :func:`~captum_matex.data.images.read_dicom`:
parse the file, decode the chosen frame (naming the decoder to install when
none handles a compressed transfer syntax), apply the modality LUT and the VOI
transform, convert colour to grey and invert ``MONOCHROME1``, in float32.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from captum_matex.data._dicom_header import _unknown_syntax
from captum_matex.data._dicom_voi import _first, _usable_window, _window
from captum_matex.data._radiograph import ImageReadError, Radiograph, _scale01

# Transfer syntax UID -> (short name, what to install to decode it).
_J2K = "pylibjpeg pylibjpeg-openjpeg, or python-gdcm, or pillow built with OpenJPEG"
_JLS = "pylibjpeg pylibjpeg-libjpeg, or pyjpegls, or python-gdcm"
_DECODERS: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "pillow or pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (12-bit)", "pylibjpeg pylibjpeg-libjpeg, or python-gdcm"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", "pylibjpeg pylibjpeg-libjpeg, or python-gdcm"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg pylibjpeg-libjpeg, or python-gdcm"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", _JLS),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", _JLS),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", _J2K),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", _J2K),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "nothing (pydicom decodes it), or pylibjpeg-rle for speed"),
}
_DEFAULT_DECODERS = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm"

# Rows per block when a VOI LUT is applied (bounds pydicom's temporaries).
_LUT_ROWS = 256

# Photometric interpretations DICOM defines (PS3.3 C.7.6.3.1.2).
_PHOTOMETRIC = {
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK",
    "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT",
}


class _NoDecoderError(ImageReadError):
    r"""No installed decoder handles the file's compressed pixel data (a damaged
    header, if any, is not why; the message names what to install)."""


def _photometric(path: Path, dataset: Any) -> str:
    r"""The file's photometric interpretation, normalised (and set so on ``dataset``).

    A missing or blank value on one-sample data is taken as ``MONOCHROME2``
    with a :class:`UserWarning`; case and padding are ignored.

    Raises:
        ImageReadError: the value is not one DICOM defines, or is missing on
            colour data.
    """
    raw = dataset.get("PhotometricInterpretation")
    value = str(raw or "").strip().upper()
    if not value:
        if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
            raise ImageReadError(
                f"{path}: colour DICOM file without a PhotometricInterpretation; "
                "set it (e.g. RGB) with pydicom before reading"
            )
        warnings.warn(
            f"{path}: DICOM file has no PhotometricInterpretation; assuming MONOCHROME2 "
            "(high values bright)",
            UserWarning,
            stacklevel=4,
        )
        value = "MONOCHROME2"
    if value not in _PHOTOMETRIC:
        raise ImageReadError(
            f"{path}: unknown PhotometricInterpretation {str(raw)!r}; DICOM defines "
            f"{', '.join(sorted(_PHOTOMETRIC))}. Fix the file's (0028,0004) element"
        )
    dataset.PhotometricInterpretation = value  # what pydicom's decoders read
    return value


def _decoder_missing(dataset: Any, exc: Exception) -> bool:
    r"""Whether decoding failed for want of an installed decoder, not on damaged data."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x: judge by the message
        text = str(exc)
        return "missing dependencies" in text or "plugin" in text
    try:
        return not get_decoder(dataset.file_meta.TransferSyntaxUID).is_available
    except NotImplementedError:  # pydicom has no decoder for this syntax at all
        return True
    except Exception:  # no or unreadable transfer syntax: not a decoder problem
        return False


def _decoder_message(path: Path, dataset: Any, exc: Exception) -> str:
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    uid = str(syntax or "unknown")
    syntax_name = getattr(syntax, "name", uid)
    name, install = _DECODERS.get(uid, (syntax_name, _DEFAULT_DECODERS))
    detail = " ".join(str(exc).split())
    return (
        f"{path}: cannot decode {name} compressed pixel data (transfer syntax {uid}); "
        f"no installed decoder handles it. Install one: pip install {install}. "
        f"(pydicom said: {detail})"
    )


def _luma(rgb: np.ndarray) -> np.ndarray:
    r"""ITU-R BT.601 luma of an ``(H, W, 3)`` array as float32 ``(H, W)``."""
    out = rgb[..., 0].astype(np.float32)
    out *= 0.299
    out += np.float32(0.587) * rgb[..., 1]
    out += np.float32(0.114) * rgb[..., 2]
    return out


def _pixel_api() -> tuple[Any, Any, Any, Any]:
    r"""``(pixel_array, apply_modality_lut, apply_voi, apply_color_lut)`` for pydicom 3 or 2."""
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import (  # type: ignore[no-redef]
            apply_color_lut,
            apply_modality_lut,
            apply_voi,
        )

        pixel_array = None
    return pixel_array, apply_modality_lut, apply_voi, apply_color_lut


def _read_dicom(path: Path, frame: int | None, voi: str | tuple[float, float]) -> Radiograph:
    r"""Parse and display ``path`` for :func:`read_dicom` (arguments already checked)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        try:  # no preamble / DICM prefix, as some exporters write
            dataset = pydicom.dcmread(path, force=True)
            if "PixelData" not in dataset and "SOPClassUID" not in dataset:
                raise InvalidDicomError("no DICOM header")
        except Exception as exc:
            raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from exc
    except Exception as exc:  # EOFError, OSError, struct errors on truncated headers, ...
        raise ImageReadError(f"{path}: not a readable DICOM file, truncated or damaged ({exc})") from exc
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    unknown = None if syntax is None else _unknown_syntax(str(syntax))
    if unknown is not None:
        raise ImageReadError(f"{path}: {unknown}")
    try:
        return _decode_and_display(path, dataset, frame, voi)
    except ImageReadError:
        raise
    except Exception as exc:  # a damaged data element, parsed lazily by pydicom
        detail = " ".join(str(exc).split())
        raise ImageReadError(
            f"{path}: damaged DICOM data element ({type(exc).__name__}: {detail})"
        ) from exc


def _decode_and_display(
    path: Path, dataset: Any, frame: int | None, voi: str | tuple[float, float]
) -> Radiograph:
    r"""The display pipeline of :func:`read_dicom` on a parsed ``dataset``.

    pydicom parses most data elements lazily, on first access, so a damaged
    element can raise here (``ValueError``, ``NotImplementedError``, ...);
    :func:`read_dicom` turns such errors into :class:`ImageReadError`.
    """
    pixel_array, apply_modality_lut, apply_voi, apply_color_lut = _pixel_api()
    pixel_keys = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(key in dataset for key in pixel_keys):
        raise ImageReadError(
            f"{path}: DICOM file has no pixel data (SOP class "
            f"{getattr(dataset.get('SOPClassUID'), 'name', dataset.get('SOPClassUID', 'unknown'))}); "
            "it is not an image"
        )

    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frame is None:
        if frames > 1:
            warnings.warn(
                f"{path}: DICOM file has {frames} frames; using the first. Pass frame=N to choose.",
                UserWarning,
                stacklevel=3,
            )
        index = 0
    else:
        index = int(frame)
        if not 0 <= index < frames:
            raise ImageReadError(f"{path}: frame {index} requested but the file has {frames} frame(s)")
    photometric = _photometric(path, dataset)
    try:
        if pixel_array is not None:
            array = pixel_array(dataset, index=index if frames > 1 else None)
        else:  # pydicom 2.x decodes every frame
            array = dataset.pixel_array
            if frames > 1:
                array = array[index]
    except (RuntimeError, NotImplementedError) as exc:
        if _decoder_missing(dataset, exc):
            raise _NoDecoderError(_decoder_message(path, dataset, exc)) from exc
        raise ImageReadError(f"{path}: damaged pixel data ({' '.join(str(exc).split())})") from exc
    except (ValueError, EOFError, OSError) as exc:
        raise ImageReadError(
            f"{path}: pixel data is truncated or damaged ({' '.join(str(exc).split())})"
        ) from exc
    except Exception as exc:  # pydicom raises assorted errors on damaged data
        raise ImageReadError(f"{path}: damaged pixel data ({exc})") from exc
    for key in pixel_keys:  # free the encoded bytes before the float32 copy
        if key in dataset:
            del dataset[key]

    bits_stored = int(dataset.get("BitsStored", 0) or 0)
    metadata: dict[str, Any] = {
        "format": "dicom",
        "photometric_interpretation": photometric,
        "bits_stored": bits_stored,
        "signed": bool(int(dataset.get("PixelRepresentation", 0) or 0)),
        "transfer_syntax": str(dataset.file_meta.get("TransferSyntaxUID", "")),
        "frames": frames,
        "frame": index,
        "view_position": str(dataset.get("ViewPosition", "")),
        "modality": str(dataset.get("Modality", "")),
        "pixel_spacing": [
            float(v) for v in dataset.get("PixelSpacing", dataset.get("ImagerPixelSpacing", [])) or []
        ],
        "window": None,
        "windowed": False,
        "voi": "none",
        "inverted": False,
    }

    if array.ndim == 3 and array.shape[-1] in (3, 4) or photometric == "PALETTE COLOR":
        if photometric == "PALETTE COLOR":
            array = apply_color_lut(array, dataset)
            scale = None
        else:
            scale = float(2 ** (bits_stored or 8) - 1)
        warnings.warn(f"{path}: colour DICOM ({photometric}) converted to grey", UserWarning, stacklevel=3)
        pixels = _luma(array)
        del array
        if scale is None:
            pixels = _scale01(pixels, copy=False)
        else:
            pixels *= 1.0 / scale
            np.clip(pixels, 0.0, 1.0, out=pixels)
        metadata.update(voi="colour-to-grey")
        return Radiograph(np.ascontiguousarray(pixels), str(path), metadata)
    if array.ndim != 2:
        raise ImageReadError(
            f"{path}: expected one grey frame, got pixel data of shape {array.shape} ({photometric})"
        )

    # Modality LUT, in float32.
    if "ModalityLUTSequence" in dataset:
        values = np.asarray(apply_modality_lut(array, dataset), dtype=np.float32)
    else:
        values = array.astype(np.float32)
        slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            if slope != 1.0:
                values *= slope
            if intercept != 0.0:
                values += intercept
    del array
    if not (math.isfinite(values.min()) and math.isfinite(values.max())):  # no mask copy
        raise ImageReadError(f"{path}: image holds NaN or Inf values")

    # VOI transform to [0, 1].
    if isinstance(voi, tuple):
        center, width = voi
        pixels = _window(values, center, width, "LINEAR")
        metadata.update(voi="explicit window", window=(center, width), windowed=True)
    elif voi == "auto" and "VOILUTSequence" in dataset:
        item = dataset.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        # the LUT is indexed by the (integer) modality values, PS3.3 C.11.2; it is
        # applied in place, a block of rows at a time, so temporaries stay small
        pixels = np.rint(values, out=values)
        for start in range(0, pixels.shape[0], _LUT_ROWS):
            block = pixels[start : start + _LUT_ROWS]
            block[...] = apply_voi(block.astype(np.int32), dataset, index=0)
        if float(pixels.max()) <= 2**bits - 1:
            pixels *= 1.0 / (2**bits - 1)
        else:
            pixels = _scale01(pixels, copy=False)
        metadata.update(voi="VOI LUT sequence", windowed=True)
    elif voi == "auto" and "WindowCenter" in dataset and "WindowWidth" in dataset:
        center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
        function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR")
        if not _usable_window(center, width, function):
            pixels = _scale01(values, copy=False)
            metadata.update(voi=f"min-max (ignored invalid window {center}/{width})")
        else:
            pixels = _window(values, center, width, function)
            metadata.update(voi=f"window ({function.strip().upper()})", window=(center, width), windowed=True)
    else:
        pixels = _scale01(values, copy=False)
        metadata.update(voi="min-max")
    if photometric == "MONOCHROME1":
        np.subtract(1.0, pixels, out=pixels)
        metadata["inverted"] = True
    return Radiograph(np.ascontiguousarray(pixels, dtype=np.float32), str(path), metadata)
