"""A damaged DICOM header is named: a bad element length, a truncated header or an unknown transfer syntax."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import element_at, with_length, write_dicom
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, register_transfer_syntax

from captum_matex.data import ImageReadError, image_size, read_dicom, read_image
from captum_matex.data.images import _header_problem

RAMP = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian}
ROWS, ICC_PROFILE, PIXEL_DATA = 0x00280010, 0x00282000, 0x7FE00010  # US, OB, OW
SOP_INSTANCE, TRANSFER_SYNTAX, PHOTOMETRIC = 0x00080018, 0x00020010, 0x00280004  # UI, UI, CS
UNKNOWN = "1.2.840.99999.9.9.9"


def dicom_bytes(tmp_path: Path, encoding: str) -> bytes:
    """A valid 8 x 8 file with an ICC profile (an OB element, 4-byte length) in the header."""
    path = write_dicom(tmp_path / "source.dcm", RAMP, syntax=SYNTAXES[encoding], ICCProfile=bytes(16))
    assert read_dicom(path).pixels.shape == (8, 8)
    return path.read_bytes()


def error(path: Path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "no pixel data" not in message
    return message


# --------------------------------------------------------------------------
# a bad element length
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "encoding, tag, length",
    [
        ("implicit", ROWS, 2147483647),  # implicit VR: every length field is 4 bytes
        ("implicit", ICC_PROFILE, 2147483647),
        ("explicit", ICC_PROFILE, 2147483647),  # OB: a 4-byte length field
        ("explicit", ROWS, 65535),  # US: a 2-byte length field
        ("implicit", ROWS, 4096),  # even, but a US value of multiplicity 1 is 2 bytes
    ],
    ids=["implicit-rows", "implicit-icc", "explicit-icc", "explicit-rows-2-byte", "implicit-rows-even"],
)
def test_a_length_past_the_end_of_the_file_is_named_with_its_tag(tmp_path, encoding, tag, length):
    data = dicom_bytes(tmp_path, encoding)
    path = tmp_path / "bad_length.dcm"
    path.write_bytes(with_length(data, tag, length, implicit=encoding == "implicit"))
    tag_name = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    message = error(path)
    assert f"DICOM header is damaged: element {tag_name} has length {length}, but only" in message
    assert "re-export the file or fetch an intact copy" in message


@pytest.mark.parametrize("encoding", sorted(SYNTAXES))
def test_a_pixel_data_length_past_the_end_is_named_when_pixels_are_missing(tmp_path, encoding):
    data = with_length(dicom_bytes(tmp_path, encoding), PIXEL_DATA, 2147483647, implicit=encoding == "implicit")
    whole = tmp_path / "whole.dcm"  # every pixel is there: read as pydicom reads it, to the end
    whole.write_bytes(data)
    np.testing.assert_array_equal(read_dicom(whole).pixels, read_dicom(tmp_path / "source.dcm").pixels)
    short = tmp_path / "short.dcm"
    short.write_bytes(data[:-10])
    message = error(short)
    assert "DICOM header is damaged: element (7FE0,0010) has length 2147483647, but only 118 bytes" in message
    cut_pixels = tmp_path / "cut_pixels.dcm"  # a plausible length: the pixel data's own message
    cut_pixels.write_bytes((tmp_path / "source.dcm").read_bytes()[:-10])
    with pytest.raises(ImageReadError, match="cut_pixels.dcm: pixel data is truncated"):
        read_dicom(cut_pixels)


@pytest.mark.parametrize("encoding", sorted(SYNTAXES))
def test_a_length_that_ends_inside_the_file_but_mid_element_is_blamed(tmp_path, encoding):
    # Rows declares 8 bytes instead of 2: reading goes on from inside the next element
    path = tmp_path / "long_rows.dcm"
    path.write_bytes(with_length(dicom_bytes(tmp_path, encoding), ROWS, 8, implicit=encoding == "implicit"))
    for message in (error(path), pytest.raises(ImageReadError, image_size, path).value.args[0]):
        assert "DICOM header is damaged: element" in message
        assert "the length 8 that (0028,0010) declares" in message


# --------------------------------------------------------------------------
# a truncated header
# --------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", sorted(SYNTAXES))
def test_a_header_cut_inside_an_element_is_called_truncated_and_names_it(tmp_path, encoding):
    data = dicom_bytes(tmp_path, encoding)
    implicit = encoding == "implicit"
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # (0002,0000) holds the group's length
    syntax_at, _ = element_at(data, TRANSFER_SYNTAX)  # the meta group is always explicit VR
    sop_at, sop_length = element_at(data, SOP_INSTANCE, implicit)
    rows_at, _ = element_at(data, ROWS, implicit)
    uid_length = len(SYNTAXES[encoding]) + len(SYNTAXES[encoding]) % 2
    cuts = {
        syntax_at + 8 + 3: f"inside element (0002,0010), which declares {uid_length} bytes of which only 3",
        meta_end: "after its element (0002,0013), inside the file meta group (0002,xxxx), before the data set",
        sop_at + 8 + 5: f"inside element (0008,0018), which declares "
                        f"{int.from_bytes(data[sop_length], 'little')} bytes of which only 5",
        rows_at + 3: "inside the tag and length of the element after (0028,0004) (3 of 8 bytes)",
        rows_at + 9: "inside element (0028,0010), which declares 2 bytes of which only 1",
    }
    for cut, where in cuts.items():
        path = tmp_path / f"cut_{cut}.dcm"
        path.write_bytes(data[:cut])
        assert f"DICOM header is truncated: the file ends {where}" in error(path), cut
        assert "fetch it again" in error(path)


def test_a_cut_inside_the_long_length_field_of_an_explicit_element_is_truncated(tmp_path):
    data = dicom_bytes(tmp_path, "explicit")
    at, field = element_at(data, ICC_PROFILE)
    assert field == slice(at + 8, at + 12)  # tag, "OB", 2 reserved bytes, 4-byte length
    path = tmp_path / "cut_length.dcm"
    path.write_bytes(data[:at + 10])
    assert "DICOM header is truncated: the file ends inside element (0028,2000)" in error(path)


def test_a_big_endian_header_is_walked_in_its_byte_order(tmp_path):
    data = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    rows_at, _ = element_at(data, ROWS, little=False)
    path = tmp_path / "big_endian_cut.dcm"
    path.write_bytes(data[:rows_at + 9])
    message = error(path)
    assert "DICOM header is truncated: the file ends inside element (0028,0010)" in message
    assert "declares 2 bytes of which only 1" in message


def test_a_real_truncated_file_is_called_truncated():
    message = error(Path(get_testdata_file("rtplan_truncated.dcm")))
    assert "DICOM header is truncated: the file ends inside element (300A,00B0), which declares 976" in message


def test_a_cut_at_an_element_boundary_still_reads_as_a_header_without_pixel_data(tmp_path):
    # indistinguishable from an intact header-only file: the existing message stands
    data = dicom_bytes(tmp_path, "explicit")
    rows_at, _ = element_at(data, ROWS)
    path = tmp_path / "boundary.dcm"
    path.write_bytes(data[:rows_at])
    with pytest.raises(ImageReadError, match="boundary.dcm: DICOM file has no pixel data"):
        read_dicom(path)


# --------------------------------------------------------------------------
# an unknown transfer syntax
# --------------------------------------------------------------------------
def with_syntax(tmp_path: Path, encoding: str, uid: str, name: str) -> Path:
    ds = pydicom.dcmread(write_dicom(tmp_path / "source.dcm", RAMP, syntax=SYNTAXES[encoding]))
    ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(tmp_path / name, implicit_vr=encoding == "implicit", little_endian=True)
    return tmp_path / name


@pytest.mark.parametrize("encoding", sorted(SYNTAXES))
def test_an_unknown_transfer_syntax_is_named(tmp_path, encoding):
    path = with_syntax(tmp_path, encoding, UNKNOWN, "unknown.dcm")
    without_preamble = tmp_path / "no_preamble.dcm"  # read by pydicom's force path, not walked
    without_preamble.write_bytes(path.read_bytes()[132:])
    for file in (path, without_preamble):
        message = error(file)
        assert f"unknown transfer syntax {UNKNOWN} in the file meta element (0002,0010)" in message


def test_a_garbled_transfer_syntax_is_shown_escaped(tmp_path):
    data = dicom_bytes(tmp_path, "explicit")
    garbled = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10\x1908.1.2.1\x00", 1)
    assert garbled != data
    path = tmp_path / "garbled.dcm"
    path.write_bytes(garbled)
    assert "unknown transfer syntax '1.2.840.10\\x1908.1.2.1' in" in error(path)


def test_a_registered_private_syntax_is_not_unknown(tmp_path, monkeypatch):
    path = with_syntax(tmp_path, "explicit", "1.2.826.0.1.3680043.9.9999.1", "private.dcm")
    assert "unknown transfer syntax 1.2.826.0.1.3680043.9.9999.1" in error(path)
    monkeypatch.setattr(pydicom.uid, "PrivateTransferSyntaxes", [])
    register_transfer_syntax("1.2.826.0.1.3680043.9.9999.1", implicit_vr=False, little_endian=True)
    with pytest.raises(ImageReadError) as info:  # no decoder knows it, but the header is sound
        read_dicom(path)
    assert "unknown transfer syntax" not in str(info.value) and "DICOM header" not in str(info.value)


# --------------------------------------------------------------------------
# what stays as it was
# --------------------------------------------------------------------------
def test_intact_pydicom_test_files_have_no_header_problem():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = {Path(f).name: _header_problem(Path(f)) for f in get_testdata_files("*") if Path(f).is_file()}
    assert len(problems) > 100
    assert {name: p for name, p in problems.items() if p} == {
        "rtplan_truncated.dcm": problems["rtplan_truncated.dcm"]
    }


def test_a_missing_decoder_is_named_even_when_the_header_is_also_damaged(tmp_path):
    from pydicom.pixels import get_decoder

    if get_decoder("1.2.840.10008.1.2.4.70").is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    data = Path(get_testdata_file("JPEG-LL.dcm")).read_bytes()
    photometric_at, _ = element_at(data, PHOTOMETRIC)
    damaged = bytearray(data)
    damaged[photometric_at + 2] = 0x00  # (0028,0004) -> (0028,0000): out of ascending order
    path = tmp_path / "jpeg_ll.dcm"
    path.write_bytes(bytes(damaged))
    assert "DICOM header is damaged" in _header_problem(path)
    with pytest.raises(ImageReadError, match="cannot decode JPEG Lossless.*pip install"):
        read_dicom(path)
