r"""
Diagnosis of a damaged or truncated DICOM header.

:func:`_header_problem` walks the file meta group and the data set up to the
pixel data without reading long values, and says in words what is wrong: an
unknown transfer syntax, an element whose declared length cannot be right, a
VR DICOM does not define, tags out of order, or a file that ends inside an
element. :func:`~captum_matex.data.images.read_dicom` and
:func:`~captum_matex.data.images.image_size` name this problem rather than
its consequence.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, NamedTuple

if TYPE_CHECKING:
    from pydicom.uid import UID

# VRs whose value is a run of fixed-size numbers, and that size in bytes (PS3.5 6.2).
_NUMBER_BYTES = {"AT": 4, "FD": 8, "FL": 4, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2,
                 "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}  # (Float/Double Float) Pixel Data
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DAMAGED_FIX = "re-export the file or fetch an intact copy"
_TRUNCATED_FIX = "the file was cut short (an interrupted copy or download?); fetch it again"


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
            _bad_vr(element, elements, implicit)
            or _out_of_order(element, elements)
            or _overrun(element, size)
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
