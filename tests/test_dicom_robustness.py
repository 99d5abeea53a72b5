"""Reading damaged, odd and very large DICOM files: a finite image in [0, 1] or ImageReadError."""

from __future__ import annotations

import random
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import write_dicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from captum_matex.data import ImageReadError, image_size, read_dicom, read_image

PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) Pixel Data, little endian


def edit(path: Path, change) -> Path:
    """Rewrite ``path`` after ``change(dataset)``."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    return path


def assert_image(radiograph, shape=None) -> np.ndarray:
    pixels = radiograph.pixels
    assert pixels.ndim == 2 and pixels.dtype == np.float32 and pixels.flags["C_CONTIGUOUS"]
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
    if shape is not None:
        assert pixels.shape == shape
    return pixels


RAMP = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)


# --------------------------------------------------------------------------
# truncated files and missing pixel data
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "CT_small.dcm", "emri_small.dcm"])
def test_a_file_cut_anywhere_is_an_image_read_error(tmp_path, name):
    source = get_testdata_file(name)
    data = Path(source).read_bytes()
    tag_at = data.rfind(PIXEL_TAG)
    start = tag_at + (12 if data[tag_at + 4:tag_at + 6] in (b"OB", b"OW") else 8)
    end = start + len(pydicom.dcmread(source).PixelData)  # the pixel values
    cuts = {0, 1, 64, 128, 132, 140, 300, start - 13, start - 8, start - 1, start,
            (start + end) // 2, end - 2, end - 1}
    for cut in sorted(cuts):
        path = tmp_path / f"cut_{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(ImageReadError, match=rf"cut_{cut}\.dcm: "):
            read_dicom(path, frame=0 if name == "emri_small.dcm" else None)


def test_missing_or_empty_pixel_data_is_refused_clearly(tmp_path):
    path = write_dicom(tmp_path / "header_only.dcm", None, Rows=8, Columns=8)
    with pytest.raises(ImageReadError, match="has no pixel data .*it is not an image"):
        read_dicom(path)
    empty = edit(write_dicom(tmp_path / "empty.dcm", RAMP), lambda ds: setattr(ds, "PixelData", b""))
    with pytest.raises(ImageReadError, match="empty.dcm: .*pixel data"):
        read_dicom(empty)
    short = edit(write_dicom(tmp_path / "short.dcm", RAMP), lambda ds: setattr(ds, "PixelData", ds.PixelData[:10]))
    with pytest.raises(ImageReadError, match="short.dcm: pixel data is truncated"):
        read_dicom(short)
    (tmp_path / "zero.dcm").write_bytes(b"")
    with pytest.raises(ImageReadError, match="not a readable DICOM file"):
        read_image(tmp_path / "zero.dcm")
    with pytest.raises(ImageReadError, match="not a readable DICOM header"):
        image_size(tmp_path / "zero.dcm")


# --------------------------------------------------------------------------
# photometric interpretation
# --------------------------------------------------------------------------
def test_missing_photometric_interpretation_is_monochrome2_with_a_warning(tmp_path):
    reference = read_dicom(write_dicom(tmp_path / "m2.dcm", RAMP)).pixels
    for blank in (None, ""):
        def change(ds, blank=blank):
            if blank is None:
                del ds.PhotometricInterpretation
            else:
                ds.PhotometricInterpretation = blank

        path = edit(write_dicom(tmp_path / "nopi.dcm", RAMP), change)
        with pytest.warns(UserWarning, match="no PhotometricInterpretation; assuming MONOCHROME2"):
            radiograph = read_dicom(path)
        np.testing.assert_array_equal(radiograph.pixels, reference)
        assert radiograph.metadata["photometric_interpretation"] == "MONOCHROME2"


def test_odd_photometric_interpretations(tmp_path):
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1")).pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: invalid CS value
        sloppy = edit(write_dicom(tmp_path / "lower.dcm", RAMP),
                      lambda ds: setattr(ds, "PhotometricInterpretation", " monochrome1"))
        radiograph = read_dicom(sloppy)
    np.testing.assert_array_equal(radiograph.pixels, inverted)
    assert radiograph.metadata["inverted"]
    unknown = edit(write_dicom(tmp_path / "m3.dcm", RAMP),
                   lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME3"))
    message = r"unknown PhotometricInterpretation 'MONOCHROME3'.*\(0028,0004\)"
    with pytest.raises(ImageReadError, match=message):
        read_dicom(unknown)
    palette = edit(write_dicom(tmp_path / "pal.dcm", RAMP),
                   lambda ds: setattr(ds, "PhotometricInterpretation", "PALETTE COLOR"))
    with pytest.raises(ImageReadError, match="pal.dcm: .*Palette Color Lookup Table"):
        read_dicom(palette)


# --------------------------------------------------------------------------
# signed, 16-bit, multi-frame
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "array, bits",
    [
        (np.array([[-32768, -1], [0, 32767]], np.int16), 16),
        (np.array([[0, 1], [65534, 65535]], np.uint16), 16),
        (np.array([[-2048, -1], [0, 2047]], np.int16), 12),
        (np.array([[0, 1], [4094, 4095]], np.uint16), 12),
    ],
)
def test_signed_and_sixteen_bit_extremes_scale_exactly(tmp_path, array, bits):
    radiograph = read_dicom(write_dicom(tmp_path / "x.dcm", array, bits_stored=bits))
    values = array.astype(np.float64)
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(assert_image(radiograph), expected, atol=1e-6)
    assert radiograph.metadata["signed"] == (array.dtype == np.int16)


def test_stored_bits_beyond_bits_stored_still_give_an_image(tmp_path):
    path = write_dicom(tmp_path / "garbage_bits.dcm", np.array([[0, 4095], [1, 2]], np.uint16), bits_stored=12)
    edit(path, lambda ds: setattr(ds, "PixelData", np.array([[0, 65535], [1, 2]], np.uint16).tobytes()))
    assert_image(read_dicom(path), (2, 2))


def test_multi_frame_selection_and_inconsistent_frame_counts(tmp_path):
    ramp = np.arange(16, dtype=np.uint16) * 100
    frames = np.stack([np.roll(ramp, 5 * k).reshape(4, 4) for k in range(3)])  # all distinct
    path = write_dicom(tmp_path / "frames.dcm", frames)
    with pytest.warns(UserWarning, match="3 frames; using the first"):
        first = read_dicom(path)
    for k in range(3):
        frame = frames[k].astype(np.float64)
        expected = (frame - frame.min()) / (frame.max() - frame.min())
        np.testing.assert_allclose(read_dicom(path, frame=k).pixels, expected, atol=1e-6)
    np.testing.assert_array_equal(first.pixels, read_dicom(path, frame=0).pixels)
    for bad in (3, -1):
        with pytest.raises(ImageReadError, match=f"frame {bad} requested but the file has 3"):
            read_dicom(path, frame=bad)
    for bad in ("1", 1.5, True):
        with pytest.raises(ImageReadError, match="frame must be an int"):
            read_dicom(path, frame=bad)
    assert read_dicom(path, frame=np.int64(2)).metadata["frame"] == 2
    claims_more = edit(path, lambda ds: setattr(ds, "NumberOfFrames", 5))
    with pytest.raises(ImageReadError, match="truncated or damaged"):
        read_dicom(claims_more, frame=4)


def test_voi_arguments_and_windows_that_cannot_apply(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", RAMP)
    for bad in ["bogus", (float("nan"), 5), ("a", "b"), (0, 0.5), (1e300, 10), (0, 1, 2)]:
        with pytest.raises(ImageReadError, match="voi must be 'auto', 'minmax' or \\(center, width\\)"):
            read_dicom(path, voi=bad)
    for center, width in [(1e300, 1e300), (5, 0), (5, -3), (5, 0.5)]:
        odd = write_dicom(tmp_path / "odd.dcm", RAMP, WindowCenter=center, WindowWidth=width)
        radiograph = read_dicom(odd)
        assert radiograph.metadata["voi"].startswith("min-max (ignored invalid window")
        assert_image(radiograph)
    huge_slope = write_dicom(tmp_path / "slope.dcm", RAMP, RescaleSlope=1e38)
    with pytest.raises(ImageReadError, match="NaN or Inf"):
        read_dicom(huge_slope)


# --------------------------------------------------------------------------
# memory: a 4000 x 4000 16-bit radiograph
# --------------------------------------------------------------------------
def _peak_bytes(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_4000_square_16_bit_radiograph_loads_with_bounded_memory(tmp_path):
    array = np.random.default_rng(0).integers(0, 4096, (4000, 4000), dtype=np.uint16)
    array[0, :2] = 0, 4095  # the full 12-bit range
    buffer = array.nbytes  # 32 MB
    windowed = write_dicom(tmp_path / "big.dcm", array, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.LUTData = np.arange(0, 65536, 16, dtype=np.uint16).tobytes()  # entry v holds 16 v

    def add_lut(ds):
        ds.VOILUTSequence = Sequence([lut])
        ds.VOILUTSequence[0]["LUTDescriptor"].VR = "US"
        ds.VOILUTSequence[0]["LUTData"].VR = "OW"

    looked_up = edit(write_dicom(tmp_path / "lut.dcm", array, bits_stored=12), add_lut)
    top = array[:300].astype(np.float64)  # more than one block of rows for the LUT
    del array
    expected = {
        "window": np.clip((top - 2047.5) / 4095 + 0.5, 0, 1),
        "VOI LUT sequence": 16 * top / 65535,
    }
    # decoded integers (1x) + the float32 image (2x); the file's bytes are released
    for path, voi in [(windowed, "window"), (looked_up, "VOI LUT sequence")]:
        radiograph, peak = _peak_bytes(lambda path=path: read_dicom(path))
        assert radiograph.metadata["voi"].startswith(voi)
        pixels = assert_image(radiograph, (4000, 4000))
        assert peak <= 3.5 * buffer, f"{voi}: peak {peak / buffer:.2f}x the 16-bit pixel buffer"
        np.testing.assert_allclose(pixels[:300], expected[voi], atol=1e-5)


# --------------------------------------------------------------------------
# compressed transfer syntaxes without a decoder, or with damaged data
# --------------------------------------------------------------------------
SYNTAXES = {
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "pillow"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "pylibjpeg-rle"),
}


@pytest.mark.parametrize("uid", sorted(SYNTAXES))
def test_compressed_data_names_the_missing_decoder_or_is_called_damaged(tmp_path, uid):
    from pydicom.pixels import get_decoder

    path = write_dicom(tmp_path / "c.dcm", None, syntax=uid, Rows=8, Columns=8, SamplesPerPixel=1,
                 PhotometricInterpretation="MONOCHROME2", BitsAllocated=16, BitsStored=12,
                 HighBit=11, PixelRepresentation=0)
    def add_frame(ds):
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(64)) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"

    edit(path, add_frame)
    name, package = SYNTAXES[uid]
    with pytest.raises(ImageReadError) as info:
        read_dicom(path)
    message = str(info.value)
    if get_decoder(uid).is_available:  # a decoder ran and failed: the data is at fault
        assert "damaged pixel data" in message and "pip install" not in message
    else:
        assert f"cannot decode {name}" in message and uid in message
        assert "pip install" in message and package in message


# --------------------------------------------------------------------------
# fuzzing real files
# --------------------------------------------------------------------------
#: real files (grey, colour, multi-frame, RLE, big endian, JPEG 2000, JPEG lossless) and
#: how many mutations each gets (fewer for the 7 MB chest radiograph: each read decodes it)
FUZZ_FILES = {"RG1_UNCI.dcm": 20, "CT_small.dcm": 60, "MR_small.dcm": 60, "emri_small.dcm": 60,
              "MR_small_RLE.dcm": 60, "SC_rgb.dcm": 60, "MR_small_bigendian.dcm": 60,
              "JPEG2000.dcm": 60, "JPEG-LL.dcm": 60}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation, mostly in the header (where the structure is)."""
    buf = bytearray(data)
    header_end = data.find(PIXEL_TAG) + 12
    header_end = header_end if 12 < header_end <= len(data) else len(data)
    pos = rng.randrange(header_end) if rng.random() < 0.85 else rng.randrange(len(buf))
    op = rng.choice(["flip", "byte", "word", "insert", "delete", "truncate", "scatter", "number"])
    if op == "number":  # garble a digit of a numeric string (DS, IS, UI values)
        digits = [i for i in range(header_end) if buf[i] in b"0123456789."]
        buf[rng.choice(digits)] = rng.randrange(256)
    elif op == "flip":
        buf[pos] ^= 1 << rng.randrange(8)
    elif op == "byte":
        buf[pos] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    elif op == "word":  # often a length or a VR
        buf[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", rng.randbytes(4)])
    elif op == "insert":
        buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
    elif op == "delete":
        del buf[pos:pos + rng.randrange(1, 9)]
    elif op == "truncate":
        del buf[pos:]
    else:
        for _ in range(rng.randrange(2, 20)):
            buf[rng.randrange(header_end)] = rng.randrange(256)
    return bytes(buf)


def test_mutated_real_files_give_an_image_or_image_read_error(tmp_path):
    rng = random.Random(20240611)
    outcomes = {"image": 0, "ImageReadError": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, mutations in FUZZ_FILES.items():
            data = Path(get_testdata_file(name)).read_bytes()
            for i in range(mutations):
                path = tmp_path / f"{Path(name).stem}_{i}.dcm"
                path.write_bytes(mutate(data, rng))
                try:
                    assert_image(read_dicom(path))
                    outcomes["image"] += 1
                except ImageReadError as exc:
                    assert path.name in str(exc)  # the message names the file
                    outcomes["ImageReadError"] += 1
                try:
                    height, width = image_size(path)
                    assert height > 0 and width > 0
                except ImageReadError:
                    pass
                path.unlink()
    # both outcomes occur, so the mutations neither all miss nor all destroy
    assert sum(outcomes.values()) == sum(FUZZ_FILES.values())
    assert min(outcomes.values()) > 0.1 * sum(outcomes.values()), outcomes
