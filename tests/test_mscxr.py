"""The MS-CXR loader on a miniature, synthetic copy in the real layout (no patient data)."""

import csv
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from captum_matex.data import MSCXR, MSCXRError, Radiograph, compute_geometry

HEADER = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
          "image_width", "image_height"]

# (dicom_id, subject, study, finding, phrase, box, (width, height), split)
ROWS = [
    ("d1", "p10000032", "s50414267", "Pleural Effusion", "left pleural effusion", (60, 100, 30, 40), (120, 160), "train"),
    ("d1", "p10000032", "s50414267", "Pleural Effusion", "left pleural effusion", (10, 110, 20, 30), (120, 160), "train"),
    ("d1", "p10000032", "s50414267", "Cardiomegaly", "enlarged heart", (40, 70, 40, 50), (120, 160), "train"),
    ("d2", "p10000764", "s57375967", "Pneumothorax", "small right apical pneumothorax", (10, 5, 30, 25), (160, 120), "val"),
    ("d3", "p10000898", "s50771383", "Edema", "mild pulmonary edema", (5, 20, 100, 100), (120, 160), "test"),
    ("d3", "p10000898", "s50771383", "Edema", "mild pulmonary edema", (7, 22, 90, 90), (120, 160), "test"),
]


def rel_path(dicom_id, subject, study, suffix=".jpg"):
    return f"files/{subject[:3]}/{subject}/{study}/{dicom_id}{suffix}"


def write_csv(path, rows, split=True, header=None):
    header = header or HEADER + (["split"] if split else [])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for dicom_id, subject, study, finding, phrase, box, (w, h), part in rows:
            row = [dicom_id, finding, phrase, rel_path(dicom_id, subject, study), *box, w, h]
            writer.writerow(row + ([part] if split else []))


def write_images(root, rows, scale=1.0):
    seen = set()
    for dicom_id, subject, study, *_, (w, h), _ in rows:
        if dicom_id in seen:
            continue
        seen.add(dicom_id)
        path = root / rel_path(dicom_id, subject, study)
        path.parent.mkdir(parents=True, exist_ok=True)
        grey = (np.random.default_rng(len(seen)).random((int(h * scale), int(w * scale))) * 255)
        Image.fromarray(grey.astype(np.uint8)).save(path, quality=90)


@pytest.fixture
def root(tmp_path):
    write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv", ROWS)
    write_images(tmp_path, ROWS)
    return tmp_path


def test_rows_are_grouped_into_phrases_with_their_boxes(root):
    data = MSCXR(root)
    assert len(data) == 4 and data.version == "1.1.0"
    assert data.phrases == ["left pleural effusion", "enlarged heart",
                            "small right apical pneumothorax", "mild pulmonary edema"]
    first = data[0]
    assert first.boxes == [(60.0, 100.0, 30.0, 40.0), (10.0, 110.0, 20.0, 30.0)]
    assert first.finding == "Pleural Effusion" and first.dicom_id == "d1" and first.split == "train"
    assert first.path == "files/p10/p10000032/s50414267/d1.jpg"
    assert first.original_size == first.csv_size == (160, 120)
    assert data[-1].boxes == [(5.0, 20.0, 100.0, 100.0), (7.0, 22.0, 90.0, 90.0)]
    assert data.findings == {"Pleural Effusion": 1, "Cardiomegaly": 1, "Pneumothorax": 1, "Edema": 1}
    assert [s.phrase for s in data] == data.phrases


def test_images_are_read_lazily_on_the_original_grid(root):
    sample = MSCXR(root)[1]
    assert sample._image is None
    image = sample.image
    assert isinstance(image, Radiograph) and image.size == (160, 120)
    assert sample.image is image  # read once
    g = compute_geometry(image.size, 112)
    assert g.boxes_to_input(sample.boxes)[0] == pytest.approx((40 * 0.7 + 14, 70 * 0.7, 28, 35))


@pytest.mark.parametrize("split, phrases", [("train", 2), ("val", 1), ("validation", 1), ("test", 1)])
def test_split_filtering(root, split, phrases):
    data = MSCXR(root, split=split)
    assert len(data) == phrases and all(s.split == data.split for s in data)


def test_finding_filter(root):
    assert MSCXR(root, findings=["pneumothorax"]).phrases == ["small right apical pneumothorax"]


def test_downsampled_images_get_scaled_boxes_and_a_warning(tmp_path):
    write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv", ROWS)
    write_images(tmp_path, ROWS, scale=0.5)
    with pytest.warns(UserWarning, match="image is 60x80 but MS-CXR says 120x160"):
        sample = MSCXR(tmp_path)[0]
    assert sample.original_size == (80, 60) and sample.csv_size == (160, 120)
    assert sample.boxes == [(30.0, 50.0, 15.0, 20.0), (5.0, 55.0, 10.0, 15.0)]
    assert sample.csv_boxes[0] == (60.0, 100.0, 30.0, 40.0)
    assert sample.image.size == (80, 60)


def test_a_dicom_copy_is_accepted(tmp_path):
    rows = [("d9", "p10000032", "s50414267", "Lung Opacity", "right lower opacity",
             (100, 900, 400, 500), (1841, 1955), "test")]
    write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv", rows)
    dicom = tmp_path / rel_path("d9", "p10000032", "s50414267", ".dcm")
    dicom.parent.mkdir(parents=True)
    shutil.copy(get_testdata_file("RG1_UNCI.dcm"), dicom)
    sample = MSCXR(tmp_path)[0]
    assert sample.file == dicom and sample.original_size == (1955, 1841)
    assert sample.boxes == [(100.0, 900.0, 400.0, 500.0)]


def test_v1_0_has_no_split(tmp_path):
    write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv", ROWS, split=False)
    write_images(tmp_path, ROWS)
    data = MSCXR(tmp_path)
    assert data.version == "1.0.0" and len(data) == 4 and data[0].split is None
    with pytest.raises(MSCXRError, match="no 'split' column .*v1.0.0.*v1.1.0"):
        MSCXR(tmp_path, split="test")


def test_missing_csv_names_the_files_looked_for(tmp_path):
    looked_for = "MS_CXR_Local_Alignment_v1.1.0.csv and MS_CXR_Local_Alignment_v1.0.0.csv"
    with pytest.raises(MSCXRError, match=looked_for):
        MSCXR(tmp_path)
    with pytest.raises(MSCXRError, match="elsewhere.csv not found"):
        MSCXR(tmp_path, csv="elsewhere.csv")
    with pytest.raises(MSCXRError, match="not a directory"):
        MSCXR(tmp_path / "nowhere")


def test_missing_columns_are_named(tmp_path):
    header = [c for c in HEADER if c not in ("w", "image_height")] + ["split"]
    (tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv").write_text(",".join(header) + "\n")
    with pytest.raises(MSCXRError, match=r"lacks column\(s\) w, image_height"):
        MSCXR(tmp_path)


def test_missing_image_names_the_file_and_the_root(root):
    missing = root / rel_path("d2", "p10000764", "s57375967")
    missing.unlink()
    with pytest.raises(MSCXRError, match=f"files/p10/p10000764/s57375967/d2.jpg not found under root {root}"):
        MSCXR(root)
    data = MSCXR(root, check_files=False)
    assert len(data) == 4
    with pytest.raises(MSCXRError, match="d2.jpg not found"):
        data[2]


def test_bad_values_and_splits(root):
    with pytest.raises(MSCXRError, match="split 'holdout' not in .* it has test, train, val"):
        MSCXR(root, split="holdout")
    with pytest.raises(IndexError):
        MSCXR(root)[4]
    rows = list(ROWS)
    rows[1] = rows[1][:5] + (("sixty", 100, 30, 40),) + rows[1][6:]
    write_csv(root / "MS_CXR_Local_Alignment_v1.1.0.csv", rows)
    with pytest.raises(MSCXRError, match="line 3: not a number"):
        MSCXR(root)


def test_repr_and_describe(root):
    data = MSCXR(root, split="train")
    assert "samples=2" in repr(data) and data.describe()["version"] == "1.1.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(data)  # sizes match: no warning
