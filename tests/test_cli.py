"""The ``matex`` console script, run in-process through ``main``."""

import importlib.util
import io
import json
import sys

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from transformers import CLIPImageProcessor, CLIPProcessor

from captum_matex.cli import REAL_MODEL, main
from captum_matex.data import PhantomCXR
from captum_matex.data.images import read_image
from captum_matex.zoo import MODEL_DIR
from conftest import make_clip, make_tokenizer


@pytest.fixture
def chest_png(tmp_path):
    sample = PhantomCXR(split="test", seed=0)[0]
    path = tmp_path / "chest.png"
    Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def portrait_png(tmp_path):
    r"""A 224 x 160 (portrait) crop of a phantom radiograph."""
    sample = PhantomCXR(split="test", seed=0)[1]
    path = tmp_path / "portrait.png"
    Image.fromarray((sample.image[0, :, 32:192].numpy() * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip_dirs(tmp_path_factory):
    r"""Tiny CLIP directories: ``safe`` (safetensors), ``pickled`` (only pytorch_model.bin)."""
    model = make_clip(image_size=32, patch=8)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=make_tokenizer(),
    )
    safe, pickled = tmp_path_factory.mktemp("safe"), tmp_path_factory.mktemp("pickled")
    text_only = tmp_path_factory.mktemp("text_only")
    model.save_pretrained(safe, safe_serialization=True)
    processor.save_pretrained(safe)
    model.save_pretrained(text_only, safe_serialization=True)
    processor.tokenizer.save_pretrained(text_only)
    model.config.save_pretrained(pickled)
    processor.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    return {"safe": safe, "pickled": pickled, "text_only": text_only}


@pytest.fixture
def no_unpickling(monkeypatch):
    r"""Make any ``torch.load`` call fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_explain_png_with_a_model_directory(chest_png, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["explain", str(chest_png), "left pleural effusion", "--phrase",
                   "enlarged cardiac silhouette", "--model", str(MODEL_DIR), "--out", str(out)])
    assert status == 0
    summary = _summary(out)
    assert [p["phrase"] for p in summary["phrases"]] == ["left pleural effusion",
                                                         "enlarged cardiac silhouette"]
    for record in summary["phrases"]:
        assert -1 <= record["score"] <= 1
        assert abs(sum(record["layer_weights"]) - 1) < 1e-4
        assert [name.split("_")[0] for name in record["files"]] == ["overlay", "map", "stages"]
        for name in record["files"]:
            assert (out / name).stat().st_size > 1000
    assert summary["original_size"] == [224, 224] and summary["model_input_size"] == [112, 112]
    assert summary["geometry"]["mode"] == "letterbox" and summary["visible_fraction"] == 1.0
    assert np.load(out / "map_00_left-pleural-effusion.npy").shape == (224, 224)
    assert "wrote 2 explanation(s)" in capsys.readouterr().out


def test_explain_dicom_maps_back_to_the_original_grid(tmp_path, capsys):
    path = get_testdata_file("RG1_UNCI.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rows, cols = int(header.Rows), int(header.Columns)
    assert header.PhotometricInterpretation == "MONOCHROME1"
    out = tmp_path / "dcm"
    assert main(["explain", path, "right lower lobe opacity", "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["model"] == "embedded phantom_clip"
    _assert_one_real_film_warning(capsys.readouterr().err, summary, "is a DICOM file")
    assert summary["original_size"] == [rows, cols] == summary["geometry"]["original_size"]
    heat = np.load(out / "map_00_right-lower-lobe-opacity.npy")
    assert heat.shape == (rows, cols) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() > 0
    x, y = summary["phrases"][0]["peak_xy_original"]
    assert 0 <= x < cols and 0 <= y < rows
    assert heat[y, x] == heat.max()


def _assert_one_real_film_warning(err: str, summary: dict, why: str) -> None:
    r"""One warning line on stderr, the same in summary.json, naming a real checkpoint."""
    lines = [line for line in err.splitlines() if line.startswith("matex: warning:")]
    assert len(lines) == 1 and err.count("warning") == 1
    assert summary["warnings"] == [lines[0].removeprefix("matex: warning: ")]
    assert why in lines[0] and "synthetic phantom" in lines[0] and "mean nothing" in lines[0]
    assert f"--model {REAL_MODEL}" in lines[0]


def test_a_phantom_film_under_the_embedded_model_gets_no_warning(chest_png, tmp_path, capsys):
    out = tmp_path / "phantom"
    assert main(["explain", str(chest_png), "left lung mass", "--method", "patch_text",
                 "--out", str(out)]) == 0
    assert _summary(out)["warnings"] == []
    assert "warning" not in capsys.readouterr().err


@pytest.fixture
def real_chest_png(tmp_path):
    r"""The real chest radiograph RG1_UNCI (MONOCHROME1), as read for display, saved as PNG."""
    pixels = read_image(get_testdata_file("RG1_UNCI.dcm")).pixels
    path = tmp_path / "real.png"
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).resize((460, 488)).save(path)
    return path


def test_a_real_film_png_under_the_embedded_model_warns(real_chest_png, tmp_path, capsys):
    out = tmp_path / "real"
    assert main(["explain", str(real_chest_png), "left lung mass", "--method", "patch_text",
                 "--out", str(out)]) == 0
    _assert_one_real_film_warning(capsys.readouterr().err, _summary(out),
                                  "does not look like a phantom film")


def test_a_dicom_file_with_a_given_model_gets_no_warning(tiny_clip_dirs, tmp_path, capsys):
    out = tmp_path / "dcm"
    assert main(["explain", get_testdata_file("RG1_UNCI.dcm"), "effusion", "--method",
                 "patch_text", "--model", str(tiny_clip_dirs["safe"]), "--out", str(out)]) == 0
    assert _summary(out)["warnings"] == []
    assert "warning" not in capsys.readouterr().err


def test_processor_mode_crops_and_letterbox_keeps_the_whole_image(portrait_png, tmp_path):
    for mode in ("processor", "letterbox"):
        assert main(["explain", str(portrait_png), "left lung mass", "--mode", mode,
                     "--out", str(tmp_path / mode)]) == 0
    cropped, whole = _summary(tmp_path / "processor"), _summary(tmp_path / "letterbox")
    assert cropped["geometry"]["mode"] == "processor" and whole["geometry"]["mode"] == "letterbox"
    assert cropped["visible_fraction"] < 1 == whole["visible_fraction"]
    heat = np.load(tmp_path / "processor" / "map_00_left-lung-mass.npy")
    assert heat.shape == (224, 160)
    assert heat[:20].max() == 0 and heat[-20:].max() == 0  # the centre crop cut top and bottom
    assert np.load(tmp_path / "letterbox" / "map_00_left-lung-mass.npy").shape == (224, 160)


def test_explain_with_a_baseline_method(chest_png, tmp_path):
    out = tmp_path / "chefer"
    assert main(["explain", str(chest_png), "left lung mass", "--method", "chefer",
                 "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["method"] == "chefer"
    assert summary["phrases"][0]["files"] == ["overlay_00_left-lung-mass.png",
                                              "map_00_left-lung-mass.npy"]
    assert summary["phrases"][0]["layer_weights"] is None


def test_many_phrases_show_progress_and_batches_keep_phrase_order(chest_png, tmp_path,
                                                                  monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    phrases = ["left pleural effusion", "cardiomegaly", "left lung mass",
               "right upper lobe opacity"]
    args = ["explain", str(chest_png), *phrases, "--method", "patch_text"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(args + ["--batch-size", "3", "--out", str(tmp_path / "batched")]) == 0
    assert "4/4" in terminal.getvalue()
    monkeypatch.undo()
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    batched, whole = _summary(tmp_path / "batched"), _summary(tmp_path / "whole")
    assert [r["phrase"] for r in batched["phrases"]] == phrases
    assert [r["score"] for r in batched["phrases"]] == pytest.approx(
        [r["score"] for r in whole["phrases"]], abs=1e-5)
    for a, b in zip(batched["phrases"], whole["phrases"]):
        np.testing.assert_allclose(np.load(tmp_path / "batched" / a["files"][1]),
                                   np.load(tmp_path / "whole" / b["files"][1]), atol=1e-5)


def test_matex_explains_many_phrases_with_one_tower_pass_as_it_does_one_by_one(chest_png,
                                                                              tmp_path):
    phrases = ["left pleural effusion", "enlarged cardiac silhouette", "right upper lobe opacity"]
    assert main(["explain", str(chest_png), *phrases, "--out", str(tmp_path / "together")]) == 0
    together = _summary(tmp_path / "together")["phrases"]
    for phrase, record in zip(phrases, together):
        alone = tmp_path / phrase.replace(" ", "_")
        assert main(["explain", str(chest_png), phrase, "--out", str(alone)]) == 0
        (single,) = _summary(alone)["phrases"]
        assert record["score"] == pytest.approx(single["score"], abs=1e-5)
        assert record["layer_weights"] == pytest.approx(single["layer_weights"], abs=1e-5)
        np.testing.assert_allclose(np.load(tmp_path / "together" / record["files"][1]),
                                   np.load(alone / single["files"][1]), atol=1e-5)
        assert record["files"][2].startswith("stages_")


def test_phrases_cannot_write_outside_out(chest_png, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = set(tmp_path.rglob("*"))
    phrases = ["../../etc/passwd", "/etc/passwd", "..", "C:\\Windows\\evil", "~/.bashrc"]
    assert main(["explain", str(chest_png), *phrases, "--method", "patch_text",
                 "--out", "out"]) == 0
    out = (work / "out").resolve()
    written = {p.resolve() for p in tmp_path.rglob("*")} - {p.resolve() for p in before}
    assert written and all(p == out or out in p.parents for p in written)
    for record in _summary(out)["phrases"]:
        for name in record["files"]:
            assert "/" not in name and "\\" not in name and not name.startswith(".")


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, png: ["explain", str(d / "nope.png"), "effusion"], "no such file"),
        (lambda d, png: ["explain", str(d / "bad.png"), "effusion"], "not a readable image"),
        (lambda d, png: ["explain", str(d / "bad.dcm"), "effusion"], "truncated or damaged"),
        (lambda d, png: ["explain", str(png), "effusion", "--model", str(d)], "cannot load"),
        (lambda d, png: ["explain", str(png), "effusion", "--model", str(png)],
         "not a model directory"),
        (lambda d, png: ["explain", str(png), "effusion", "--model", str(d / "missing")],
         "no such model directory"),
        (lambda d, png: ["explain", str(png)], "at least one phrase"),
        (lambda d, png: ["explain", str(png), "  "], "phrase is empty"),
        (lambda d, png: ["explain", str(png), "effusion", "--method", "magic"],
         "available: chefer"),
        (lambda d, png: ["explain", str(png), "effusion", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_invocations_exit_2_with_one_line(tmp_path, chest_png, capsys, make_args, message):
    (tmp_path / "bad.png").write_text("this is not an image")
    with open(get_testdata_file("RG1_UNCI.dcm"), "rb") as dicom:
        (tmp_path / "bad.dcm").write_bytes(dicom.read(100_000))  # truncated pixel data
    status = main(make_args(tmp_path, chest_png) + ["--out", str(tmp_path / "o")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("matex: error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_file_without_read_permission_is_a_clear_error(chest_png, tmp_path, capsys,
                                                        monkeypatch):
    def denied(path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("captum_matex.data.images.read_image", denied)
    assert main(["explain", str(chest_png), "effusion", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the file (Permission denied)" in err and err.count("\n") == 1


def test_existing_outputs_are_not_overwritten_without_force(chest_png, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["explain", str(chest_png), "left lung mass", "--out", str(out)]
    assert main(args) == 0
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").write_text("{}")
    (out / "map_00_left-lung-mass.npy").write_bytes(b"mine")
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"
    assert (out / "map_00_left-lung-mass.npy").read_bytes() == b"mine"
    assert main(args + ["--force"]) == 0
    assert (out / "summary.json").read_bytes() == before
    assert main(args[:-1] + [str(chest_png)]) == 2
    assert "is a file; choose a directory" in capsys.readouterr().err


def test_a_safetensors_checkpoint_loads_without_unpickling(tiny_clip_dirs, chest_png, tmp_path,
                                                           no_unpickling):
    out = tmp_path / "tiny"
    assert main(["explain", str(chest_png), "left pleural effusion",
                 "--model", str(tiny_clip_dirs["safe"]), "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["model_input_size"] == [32, 32]
    assert np.load(out / "map_00_left-pleural-effusion.npy").shape == (224, 224)


def test_a_pickled_checkpoint_is_refused(tiny_clip_dirs, chest_png, tmp_path, capsys,
                                         no_unpickling):
    status = main(["explain", str(chest_png), "effusion", "--model",
                   str(tiny_clip_dirs["pickled"]), "--out", str(tmp_path / "o")])
    assert status == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "safetensors" in err and err.count("\n") == 1


def test_a_checkpoint_without_image_processor_is_refused(tiny_clip_dirs):
    from captum_matex.loading import ModelLoadError, load_clip

    with pytest.raises(ModelLoadError, match="(?i)image processor"):
        load_clip(tiny_clip_dirs["text_only"])


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None,
                    reason="open_clip is installed (its loading is tested in test_openclip.py)")
def test_an_open_clip_model_without_the_extra_names_the_install(tmp_path, capsys):
    chest = tmp_path / "chest.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(chest)
    name = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert main(["explain", str(chest), "effusion", "--model", name,
                 "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'captum_matex[openclip]'" in capsys.readouterr().err


def test_demo_writes_figures_and_a_pointing_game_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--cases", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert len(summary["cases"]) == 4
    for case in summary["cases"]:
        assert (out / case["figure"]).stat().st_size > 1000
    assert "| case | phrase | pointing game |" in capsys.readouterr().out


def test_method_kwargs_reach_the_method(chest_png, tmp_path):
    maps = {}
    for name, extra in (("default", []), ("bilinear", ["--method-kwargs", '{"upsample": "bilinear"}'])):
        out = tmp_path / name
        assert main(["explain", str(chest_png), "left lung mass", "--out", str(out), *extra]) == 0
        assert _summary(out)["method_kwargs"] == ({} if name == "default" else {"upsample": "bilinear"})
        maps[name] = np.load(out / "map_00_left-lung-mass.npy")
    # bilinear upsampling of the same patch map in place of MATEX's bicubic one (on a
    # phantom test film the maps differ by up to 0.09)
    assert np.abs(maps["default"] - maps["bilinear"]).max() > 0.01


def test_method_kwargs_the_method_does_not_take_are_refused(chest_png, tmp_path, capsys):
    assert main(["explain", str(chest_png), "left lung mass", "--method-kwargs", '{"nonsense": 1}',
                 "--out", str(tmp_path / "x")]) != 0
    assert "nonsense" in capsys.readouterr().err
    assert main(["explain", str(chest_png), "left lung mass", "--method-kwargs", "[1]",
                 "--out", str(tmp_path / "y")]) != 0
    assert "JSON object" in capsys.readouterr().err
