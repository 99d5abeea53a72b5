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

import math
import numbers
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from pydicom.uid import UID

__all__ = ["DICOM_SUFFIXES", "ImageReadError", "Radiograph", "image_size", "read_dicom", "read_image"]

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}

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

# VRs whose value is a run of fixed-size numbers, and that size in bytes (PS3.5 6.2).
_NUMBER_BYTES = {"AT": 4, "FD": 8, "FL": 4, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2,
                 "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}  # (Float/Double Float) Pixel Data
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DAMAGED_FIX = "re-export the file or fetch an intact copy"
_TRUNCATED_FIX = "the file was cut short (an interrupted copy or download?); fetch it again"


class ImageReadError(ValueError):
    r"""A file is missing, unreadable or not an image; the message says why and names the file."""


class _NoDecoderError(ImageReadError):
    r"""No installed decoder handles the file's compressed pixel data (a damaged
    header, if any, is not why; the message names what to install)."""


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


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _first(value: Any) -> float:
    r"""First entry of a possibly multi-valued DICOM number."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        value = value[0]
    return float(value)


def _usable_window(center: float, width: float, function: str = "LINEAR") -> bool:
    r"""Whether a VOI window can be applied in float32: finite, representable and
    wide enough for ``function`` (width >= 1 for ``LINEAR``, > 0 otherwise)."""
    limit = float(np.finfo(np.float32).max)
    if not (math.isfinite(center) and math.isfinite(width) and abs(center) < limit and width < limit):
        return False
    if function.strip().upper() in ("LINEAR_EXACT", "SIGMOID"):
        return width > 0
    return width >= 1


def _check_voi(voi: Any) -> str | tuple[float, float]:
    r"""``voi`` as ``"auto"``, ``"minmax"`` or a float ``(center, width)`` window.

    Raises:
        ImageReadError: anything else, or a window that is not finite or has
            a width below 1 (the ``LINEAR`` function's minimum).
    """
    if isinstance(voi, str) and voi in ("auto", "minmax"):
        return voi
    if isinstance(voi, (tuple, list)) and len(voi) == 2:
        try:
            center, width = float(voi[0]), float(voi[1])
        except (TypeError, ValueError):
            center, width = math.nan, math.nan
        if _usable_window(center, width):
            return center, width
    raise ImageReadError(
        f"voi must be 'auto', 'minmax' or (center, width) with finite numbers and "
        f"width >= 1; got {voi!r}"
    )


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


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    r"""
    Apply a VOI window in place (float32), mapping it to [0, 1] (DICOM PS3.3 C.11.2.1.2).

    Args:

        values (numpy.ndarray): float32 modality values, overwritten.
        center (float): Window centre.
        width (float): Window width (>= 1 for ``LINEAR``, > 0 otherwise).
        function (str): ``"LINEAR"``, ``"LINEAR_EXACT"`` or ``"SIGMOID"``.

    Returns:
        numpy.ndarray: ``values``, now in [0, 1].
    """
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ImageReadError(f"SIGMOID window width must be > 0, got {width}")
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
        return values
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageReadError(f"LINEAR_EXACT window width must be > 0, got {width}")
        values -= center
        values *= 1.0 / width
    else:
        if width < 1:
            raise ImageReadError(f"LINEAR window width must be >= 1, got {width}")
        if width == 1:  # a threshold at the centre
            np.greater(values, center - 0.5, out=values, casting="unsafe")
            return values
        values -= center - 0.5
        values *= 1.0 / (width - 1)
    values += 0.5
    np.clip(values, 0.0, 1.0, out=values)
    return values


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


class _Element(NamedTuple):
    r"""Where a data element sits in a file, as its tag, VR and length declare."""

    tag: int
    vr: str | None  # None: implicit VR
    length: int
    value_at: int  # file offset of the value
    value: bytes | None  # None: not read (long values are skipped)


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _as_syntax(uid: str) -> UID:
    r"""``uid`` as a pydicom UID, with its encoding when it is a private transfer
    syntax registered with :func:`pydicom.uid.register_transfer_syntax`."""
    import pydicom.uid

    registered = getattr(pydicom.uid, "PrivateTransferSyntaxes", [])  # pydicom >= 3
    return next((syntax for syntax in registered if syntax == uid), pydicom.uid.UID(uid))


def _unknown_syntax(uid: str) -> str | None:
    r"""Why transfer syntax ``uid`` cannot be read, or None when pydicom knows it
    (a standard syntax, or a registered private one)."""
    try:
        known = _as_syntax(uid).is_transfer_syntax
    except ValueError:  # pydicom 2.x: private UIDs cannot be classified
        known = False
    if known:
        return None
    shown = "(empty)" if not uid else uid if uid.isprintable() else ascii(uid)
    return (
        f"unknown transfer syntax {shown} in the file meta element (0002,0010); "
        "the file is damaged, or it uses a private syntax that pydicom cannot read: "
        "convert it to a standard one with the software that wrote it"
    )


def _impossible_length(element: _Element) -> str | None:
    r"""Why ``element``'s declared length cannot be right, or None when it could be.

    DICOM value lengths are even (PS3.5 7.1.1); a numeric VR holds whole
    numbers, and a fixed value multiplicity bounds how many.
    """
    from pydicom.datadict import dictionary_VM, dictionary_VR

    if element.length % 2:
        return "DICOM value lengths are even"
    try:
        vr = element.vr or dictionary_VR(element.tag)
        multiplicity = dictionary_VM(element.tag)
    except KeyError:  # a private or unknown tag: nothing more is known
        return None
    size = _NUMBER_BYTES.get(vr)
    if size is None:
        return None
    if element.length % size:
        return f"a {vr} value is a multiple of {size} bytes"
    if not vr.startswith("O") and multiplicity.isdigit() and element.length > size * int(multiplicity):
        return f"a {vr} value of multiplicity {multiplicity} is {size * int(multiplicity)} bytes"
    return None


def _overrun(element: _Element, size: int) -> str | None:
    r"""Whether ``element``'s value runs past the end of a file of ``size`` bytes: a
    damaged length when the length is impossible, else a truncated file."""
    if element.length == _UNDEFINED_LENGTH or element.value_at + element.length <= size:
        return None
    name, remaining = _tag_name(element.tag), max(size - element.value_at, 0)
    reason = _impossible_length(element)
    if reason is not None:
        return (
            f"DICOM header is damaged: element {name} has length {element.length}, but only "
            f"{remaining} bytes follow it in the file and {reason}; {_DAMAGED_FIX}"
        )
    return (
        f"DICOM header is truncated: the file ends inside element {name}, which declares "
        f"{element.length} bytes of which only {remaining} are there; {_TRUNCATED_FIX}"
    )


def _next(elements: list[_Element]) -> str:
    r"""The element that follows ``elements``, in words."""
    return f"the element after {_tag_name(elements[-1].tag)}" if elements else "the first element"


def _out_of_order(element: _Element, elements: list[_Element]) -> str | None:
    r"""A damaged header when ``element``'s tag does not ascend (PS3.5 7.1): one of
    the two tags, or the previous element's length, is corrupt."""
    if not elements or element.tag > elements[-1].tag:
        return None
    previous, name = elements[-1], _tag_name(elements[-1].tag)
    return (
        f"DICOM header is damaged: element {name} is followed by tag {_tag_name(element.tag)}, "
        f"out of ascending order; one of these tags, or the length {previous.length} that "
        f"{name} declares, is corrupt; {_DAMAGED_FIX}"
    )


def _bad_vr(element: _Element, elements: list[_Element], implicit: bool) -> str | None:
    r"""A damaged header when an explicit VR element's VR is not one DICOM defines:
    this element, or the length of the one before (so this is no element), is corrupt."""
    from pydicom.valuerep import VR

    if implicit or element.vr in VR.__members__:
        return None
    what = "no VR (two letters)" if element.vr is None else f"VR {element.vr!r}, which DICOM does not define"
    blame = ""
    if elements:
        blame = f", or the length {elements[-1].length} that {_tag_name(elements[-1].tag)} declares,"
    return (
        f"DICOM header is damaged: element {_tag_name(element.tag)} has {what}; this element{blame} "
        f"is corrupt; {_DAMAGED_FIX}"
    )


def _tag_at(fp: BinaryIO, offset: int, little: bool) -> int | None:
    r"""The tag at byte ``offset`` of ``fp``, or None when fewer than 4 bytes are left."""
    fp.seek(offset)
    raw = fp.read(4)
    if len(raw) < 4:
        return None
    group, number = struct.unpack("<HH" if little else ">HH", raw)
    return group << 16 | number


def _unreadable(fp: BinaryIO, size: int, start: int, little: bool, elements: list[_Element],
                exc: Exception) -> str:
    r"""What it means that pydicom failed on the element at byte ``start``: a
    truncated file when it read up to the end, else a damaged element."""
    at_end = fp.tell() >= size
    tag = _tag_at(fp, start, little)
    name = f"element {_tag_name(tag)}" if tag is not None else _next(elements)
    detail = " ".join(str(exc).split())
    if at_end:
        return f"DICOM header is truncated: the file ends inside {name} ({detail}); {_TRUNCATED_FIX}"
    return (
        f"DICOM header is damaged: {name} at byte {start} cannot be read "
        f"({type(exc).__name__}: {detail}); {_DAMAGED_FIX}"
    )


def _ended(size: int, start: int, elements: list[_Element]) -> str | None:
    r"""Why pydicom's element reader stopped at byte ``start`` short of a stop tag:
    nothing wrong at the end of the file; a truncated file when fewer bytes than
    a tag and length are left; else an item delimiter where none belongs."""
    left = size - start
    if left == 0:
        return None
    if left < 8:
        return (
            f"DICOM header is truncated: the file ends inside the tag and length of "
            f"{_next(elements)} ({left} of 8 bytes); {_TRUNCATED_FIX}"
        )
    return (
        f"DICOM header is damaged: an item delimitation tag (FFFE,E00D) stands at byte {start} "
        f"where {_next(elements)} belongs; {_DAMAGED_FIX}"
    )


def _walk(fp: BinaryIO, size: int, implicit: bool, little: bool,
          stop: Callable[[int], bool]) -> tuple[list[_Element], _Element | None, str | None]:
    r"""
    Read data elements from ``fp``'s position, checking each against the file.

    Values longer than 256 bytes are skipped, not read; an element of
    undefined length is read to its delimiter by pydicom.

    Args:

        fp (BinaryIO): The open file, at the first element.
        size (int): The file's size in bytes.
        implicit (bool): Implicit VR encoding.
        little (bool): Little endian encoding.
        stop (Callable): Takes a tag; True ends the walk before that element.

    Returns:
        tuple: ``(elements, stopped_at, problem)``: the elements read, the one
        ``stop`` accepted (None when the walk ran to the end or failed) and
        what is wrong (None when nothing is).
    """
    from pydicom.dataelem import RawDataElement
    from pydicom.filereader import data_element_generator

    stopped: list[_Element] = []

    def stop_when(tag: Any, vr: str | None, length: int) -> bool:
        if not stop(int(tag)):
            return False
        stopped.append(_Element(int(tag), vr, length, fp.tell(), None))
        return True

    elements: list[_Element] = []
    start = fp.tell()
    reader = data_element_generator(fp, implicit, little, stop_when=stop_when, defer_size=256)
    while True:
        try:
            raw = next(reader, None)
        except Exception as exc:  # pydicom fails in assorted ways on damaged bytes
            return elements, None, _unreadable(fp, size, start, little, elements, exc)
        if raw is None:
            break
        if isinstance(raw, RawDataElement):
            element = _Element(int(raw.tag), raw.VR, raw.length, raw.value_tell, raw.value)
        else:  # a sequence of undefined length, parsed by pydicom
            element = _Element(int(raw.tag), raw.VR, _UNDEFINED_LENGTH, raw.file_tell, None)
        problem = (
            _bad_vr(element, elements, implicit) or _out_of_order(element, elements) or _overrun(element, size)
        )
        if problem is not None:
            return elements, None, problem
        elements.append(element)
        start = fp.tell()
    if stopped:
        return elements, stopped[0], None
    return elements, None, _ended(size, start, elements)


def _meta_syntax(meta: list[_Element]) -> UID:
    r"""The transfer syntax UID in the file meta group ``meta``; pydicom's guess,
    explicit VR little endian, when it holds none."""
    from pydicom.uid import ExplicitVRLittleEndian

    value = next((element.value for element in meta if element.tag == 0x00020010), None)
    if value is None:
        return ExplicitVRLittleEndian
    return _as_syntax(value.decode("ascii", "replace").strip("\0 "))


def _looks_implicit(fp: BinaryIO) -> bool:
    r"""Whether the element at ``fp``'s position is implicit VR: no VR letters
    follow its tag. pydicom decides so, whatever the transfer syntax claims."""
    start = fp.tell()
    vr = fp.read(6)[4:]
    fp.seek(start)
    return not (len(vr) == 2 and all(0x40 < byte < 0x5B for byte in vr))


def _header_problem(path: Path) -> str | None:
    r"""
    What is wrong with the header of the DICOM file at ``path``, if anything.

    Walks the file meta group and the data set up to the pixel data without
    reading long values, and checks the transfer syntax, that every declared
    length ends inside the file, that tags ascend and that the file does not
    end inside an element. Files without the ``DICM`` prefix and deflated data
    sets are not walked.

    Args:

        path (Path): A DICOM file.

    Returns:
        str or None: The problem, naming the element (``(gggg,eeee)``) and its
        declared length where one is at fault; None when none is found.
    """
    size = path.stat().st_size
    with path.open("rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on odd values
        if fp.read(132)[128:] != b"DICM":
            return None
        meta, body, problem = _walk(fp, size, implicit=False, little=True, stop=lambda tag: tag >> 16 != 2)
        if problem is not None:
            return problem
        if body is None:
            last = f"its element {_tag_name(meta[-1].tag)}" if meta else "the DICM prefix"
            return (
                f"DICOM header is truncated: the file ends after {last}, inside the file meta "
                f"group (0002,xxxx), before the data set; {_TRUNCATED_FIX}"
            )
        if not meta:
            return (
                f"DICOM header is damaged: the DICM prefix is followed by tag {_tag_name(body.tag)}, "
                f"not by the file meta group (0002,xxxx); {_DAMAGED_FIX}"
            )
        syntax = _meta_syntax(meta)
        problem = _unknown_syntax(syntax)
        if problem is not None or syntax.is_deflated:
            return problem
        # pydicom left fp at the data set's first element
        _, pixels, problem = _walk(
            fp, size, _looks_implicit(fp), syntax.is_little_endian, stop=_PIXEL_TAGS.__contains__
        )
    if problem is None and pixels is not None and _impossible_length(pixels):
        return _overrun(pixels, size)  # plausible: the pixel data's own error stands
    return problem


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
