"""The ``matex`` console script, run in-process through ``main``."""

import json

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from captum_matex.cli import main
from captum_matex.data import PhantomCXR
from captum_matex.zoo import MODEL_DIR


@pytest.fixture
def chest_png(tmp_path):
    sample = PhantomCXR(split="test", seed=0)[0]
    path = tmp_path / "chest.png"
    Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(path)
    return path


def test_explain_png_with_a_model_directory(chest_png, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["explain", str(chest_png), "left pleural effusion", "--phrase",
                   "enlarged cardiac silhouette", "--model", str(MODEL_DIR), "--out", str(out)])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [p["phrase"] for p in summary["phrases"]] == ["left pleural effusion",
                                                         "enlarged cardiac silhouette"]
    for record in summary["phrases"]:
        assert -1 <= record["score"] <= 1
        assert abs(sum(record["layer_weights"]) - 1) < 1e-4
        for name in record["files"]:
            assert (out / name).stat().st_size > 1000
    assert summary["image_size"] == [224, 224]
    assert "wrote 2 explanation(s)" in capsys.readouterr().out


def test_explain_dicom_on_the_embedded_default(tmp_path):
    out = tmp_path / "dcm"
    status = main(["explain", get_testdata_file("RG1_UNCI.dcm"), "right lower lobe opacity",
                   "--out", str(out)])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_size"] == [1955, 1841]
    assert summary["model"] == "embedded phantom_clip"


def test_explain_with_a_baseline_method(chest_png, tmp_path):
    out = tmp_path / "chefer"
    assert main(["explain", str(chest_png), "left lung mass", "--method", "chefer",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "chefer" and summary["phrases"][0]["files"] == [
        "overlay_00_left-lung-mass.png"]


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, png: ["explain", str(d / "nope.png"), "effusion"], "no such file"),
        (lambda d, png: ["explain", str(d / "bad.png"), "effusion"], "not a readable image"),
        (lambda d, png: ["explain", str(png), "effusion", "--model", str(d)], "cannot load"),
        (lambda d, png: ["explain", str(png), "effusion", "--model", str(png)], "not a model directory"),
        (lambda d, png: ["explain", str(png)], "at least one phrase"),
        (lambda d, png: ["explain", str(png), "  "], "phrase is empty"),
        (lambda d, png: ["explain", str(png), "effusion", "--method", "magic"], "magic"),
    ],
)
def test_bad_invocations_exit_2_with_a_message(tmp_path, chest_png, capsys, make_args, message):
    (tmp_path / "bad.png").write_text("this is not an image")
    status = main(make_args(tmp_path, chest_png) + ["--out", str(tmp_path / "o")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("matex: error:") and message in err


def test_existing_outputs_are_not_overwritten_without_force(chest_png, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["explain", str(chest_png), "left lung mass", "--out", str(out)]
    assert main(args) == 0
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").write_text("{}")
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"
    assert main(args + ["--force"]) == 0
    assert (out / "summary.json").read_bytes() == before


def test_demo_writes_figures_and_a_pointing_game_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--cases", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert len(summary["cases"]) == 4
    for case in summary["cases"]:
        assert (out / case["figure"]).stat().st_size > 1000
    assert "| case | phrase | pointing game |" in capsys.readouterr().out
