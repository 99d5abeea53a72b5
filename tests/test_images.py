"""Reading radiographs: DICOM display pipeline, compressed syntaxes, damaged files, PIL formats."""

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from helpers import write_dicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from captum_matex.data import ImageReadError, Radiograph, image_size, read_dicom, read_image


@pytest.fixture(scope="module")
def chest():
    return read_image(get_testdata_file("RG1_UNCI.dcm"))


def test_real_chest_radiograph_is_inverted_so_lungs_are_dark(chest):
    assert chest.size == (1955, 1841)
    assert chest.pixels.dtype == np.float32 and chest.pixels.flags["C_CONTIGUOUS"]
    assert 0 <= chest.pixels.min() and chest.pixels.max() <= 1
    meta = chest.metadata
    assert meta["photometric_interpretation"] == "MONOCHROME1" and meta["inverted"]
    assert meta["bits_stored"] == 15 and meta["window"] == (15000.0, 30000.0)
    p, (h, w) = chest.pixels, chest.size
    mediastinum = p[int(0.3 * h):int(0.6 * h), int(0.45 * w):int(0.55 * w)].mean()
    right_lung = p[int(0.3 * h):int(0.6 * h), int(0.2 * w):int(0.35 * w)].mean()
    left_lung = p[int(0.3 * h):int(0.6 * h), int(0.65 * w):int(0.8 * w)].mean()
    assert right_lung < mediastinum - 0.15 and left_lung < mediastinum - 0.15


def test_jpeg2000_copy_of_the_chest_decodes_like_the_uncompressed_one(chest):
    try:
        compressed = read_dicom(get_testdata_file("RG1_J2KI.dcm"))
    except ImageReadError as exc:  # no JPEG 2000 decoder here: the message must say what to install
        assert "pylibjpeg-openjpeg" in str(exc) and "JPEG 2000" in str(exc)
        return
    assert compressed.size == chest.size
    assert np.abs(compressed.pixels - chest.pixels).mean() < 0.01  # lossy (J2KI), close


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_compressed_syntaxes_decode_or_name_the_missing_decoder(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # colour-to-grey note
        try:
            radiograph = read_dicom(get_testdata_file(name))
        except ImageReadError as exc:
            assert "pip install" in str(exc) and name in str(exc)
            return
    assert radiograph.pixels.ndim == 2 and 0 <= radiograph.pixels.min() <= radiograph.pixels.max() <= 1
    assert radiograph.pixels.max() > radiograph.pixels.min()


def test_rle_matches_its_uncompressed_twin():
    rle = read_dicom(get_testdata_file("MR_small_RLE.dcm"))
    plain = read_dicom(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(rle.pixels, plain.pixels)
    assert rle.metadata["signed"] and rle.metadata["voi"] == "window (LINEAR)"


def test_missing_decoder_names_the_package(tmp_path):
    # JPEG Lossless needs pylibjpeg-libjpeg or python-gdcm, neither a dependency
    path = get_testdata_file("JPEG-LL.dcm")
    try:
        radiograph = read_dicom(path)
    except ImageReadError as exc:
        message = str(exc)
        assert "JPEG Lossless" in message and "1.2.840.10008.1.2.4.70" in message
        assert "pip install pylibjpeg pylibjpeg-libjpeg" in message and "python-gdcm" in message
    else:  # a decoder is installed in this environment
        assert radiograph.pixels.ndim == 2


def test_colour_secondary_capture_becomes_grey_with_a_warning():
    with pytest.warns(UserWarning, match="converted to grey"):
        radiograph = read_dicom(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert radiograph.pixels.shape == (100, 100) and radiograph.metadata["voi"] == "colour-to-grey"


def test_multi_frame_takes_the_first_frame_with_a_warning_or_the_one_asked_for():
    path = get_testdata_file("emri_small.dcm")
    with pytest.warns(UserWarning, match="10 frames; using the first"):
        first = read_dicom(path)
    assert first.pixels.shape == (64, 64) and first.metadata["frame"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = read_dicom(path, frame=2)
    assert third.metadata["frame"] == 2 and not np.array_equal(first.pixels, third.pixels)
    with pytest.raises(ImageReadError, match="frame 10 requested but the file has 10"):
        read_dicom(path, frame=10)


def test_no_pixel_data_is_refused_clearly():
    with pytest.raises(ImageReadError, match="has no pixel data"):
        read_image(get_testdata_file("rtplan.dcm"))


def test_truncated_files_are_refused_clearly(tmp_path):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    cut_pixels = tmp_path / "cut_pixels.dcm"
    cut_pixels.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ImageReadError, match="cut_pixels.dcm: .*(truncated|damaged)"):
        read_image(cut_pixels)
    cut_header = tmp_path / "cut_header.dcm"
    cut_header.write_bytes(data[:300])
    with pytest.raises(ImageReadError, match="cut_header.dcm"):
        read_image(cut_header)
    not_dicom = tmp_path / "note.dcm"
    not_dicom.write_text("hello")
    with pytest.raises(ImageReadError, match="not a readable DICOM"):
        read_image(not_dicom)


def test_signed_data_with_rescale_and_window(tmp_path):
    # 12-bit signed CT-like data, rescale to HU, lung window
    stored = np.array([[-2000, -1000], [0, 2000]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", stored, bits_stored=12, RescaleSlope=0.5,
                      RescaleIntercept=-24.0, WindowCenter=-524, WindowWidth=1001)
    radiograph = read_dicom(path)
    hu = stored * 0.5 - 24  # -1024, -524, -24, 976
    expected = np.clip((hu - (-524 - 0.5)) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-6)
    assert radiograph.metadata["signed"] and radiograph.metadata["windowed"]
    explicit = read_dicom(path, voi=(-24, 3))  # (x - (c - 0.5)) / (w - 1) + 0.5
    np.testing.assert_allclose(explicit.pixels, [[0, 0], [0.75, 1]], atol=1e-6)
    minmax = read_dicom(path, voi="minmax")
    np.testing.assert_allclose(minmax.pixels, (hu - hu.min()) / np.ptp(hu), atol=1e-6)


def test_eight_and_sixteen_bit_monochrome1_and_sigmoid(tmp_path):
    ramp8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    plain = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp8))
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp8, photometric="MONOCHROME1"))
    np.testing.assert_allclose(plain.pixels, ramp8 / 255, atol=1e-6)
    np.testing.assert_allclose(inverted.pixels, 1 - ramp8 / 255, atol=1e-6)
    ramp16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    sigmoid = read_dicom(write_dicom(tmp_path / "s.dcm", ramp16, WindowCenter=32768,
                                    WindowWidth=20000, VOILUTFunction="SIGMOID"))
    assert sigmoid.pixels[8, 0] == pytest.approx(0.5, abs=0.01)
    assert np.all(np.diff(sigmoid.pixels.ravel()) >= 0)


def test_voi_lut_sequence_applies_after_the_rescale(tmp_path):
    from pydicom.sequence import Sequence

    lut = Dataset()
    lut.LUTDescriptor = [4, 10, 8]  # 4 entries, first input value 10, 8 bits
    lut.LUTData = [0, 51, 102, 255]
    stored = np.array([[0, 1], [2, 9]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, RescaleIntercept=10, RescaleSlope=1)
    ds = pydicom.dcmread(path)
    ds.VOILUTSequence = Sequence([lut])
    ds["VOILUTSequence"][0]["LUTDescriptor"].VR = "US"
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    ds.save_as(path)
    radiograph = read_dicom(path)
    np.testing.assert_allclose(radiograph.pixels, [[0, 0.2], [0.4, 1.0]], atol=1e-6)
    assert radiograph.metadata["voi"] == "VOI LUT sequence"


def test_flat_image_is_zero(tmp_path):
    flat = read_dicom(write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 7, np.uint16)))
    assert np.all(flat.pixels == 0)


def test_dicom_without_suffix_is_found_by_its_magic(tmp_path):
    path = tmp_path / "image"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    assert read_image(path).metadata["format"] == "dicom"
    assert image_size(path) == (128, 128)


def test_pil_formats(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(64, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    deep = read_image(tmp_path / "deep.png")
    assert deep.size == (64, 32) and deep.pixels.max() == pytest.approx(1.0)
    assert len(np.unique(deep.pixels)) > 256  # 16-bit precision kept
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.jpg", quality=95)
    red = read_image(tmp_path / "red.jpg")
    assert red.size == (20, 30) and red.pixels.dtype == np.float32
    assert red.pixels.mean() == pytest.approx(0.299, abs=0.02)
    assert image_size(tmp_path / "red.jpg") == (20, 30)
    assert isinstance(red, Radiograph) and red.to_tensor().shape == (1, 20, 30)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="no such file"):
        image_size(tmp_path / "missing.png")


def test_large_images_stay_float32(chest):
    # the decoded 16-bit array plus one float32 image: no float64 copies
    assert chest.pixels.nbytes == 1955 * 1841 * 4
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    assert ds.Rows == 1955


def test_directories_and_decompression_bombs_are_refused_clearly(tmp_path, monkeypatch):
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px is over twice the limit
    with pytest.raises(ImageReadError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "big.png")
