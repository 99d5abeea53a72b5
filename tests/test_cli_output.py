"""The ``matex`` commands print their own output only: no third-party loading chatter
unless ``--verbose``, and the user's logging settings are restored afterwards."""

import logging
import warnings

import numpy as np
import pytest
from huggingface_hub.utils import are_progress_bars_disabled
from huggingface_hub.utils import logging as hub_logging
from PIL import Image
from transformers import CLIPImageProcessor, CLIPProcessor
from transformers.utils import logging as hf_logging

from captum_matex._quiet import quiet_third_party
from captum_matex.cli import main
from captum_matex.data import PhantomCXR
from conftest import make_clip, make_tokenizer

#: What transformers 5 prints while loading a checkpoint (a tqdm bar on stderr).
LOADING = "Loading weights"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    r"""A tiny CLIP directory (safetensors and processor) loaded through ``from_pretrained``."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    make_clip(image_size=32, patch=8).save_pretrained(folder, safe_serialization=True)
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=make_tokenizer(),
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chest_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("film") / "chest.png"
    sample = PhantomCXR(split="test", seed=0)[0]
    Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(path)
    return path


def _settings() -> dict:
    return {
        "transformers verbosity": hf_logging.get_verbosity(),
        "transformers progress bars": hf_logging.is_progress_bar_enabled(),
        "hub verbosity": hub_logging.get_verbosity(),
        "hub progress bars disabled": are_progress_bars_disabled(),
        "warning filters": list(warnings.filters),
    }


@pytest.fixture
def user_settings():
    r"""Put transformers' and the hub's logging back to what they were after the test."""
    before = _settings()
    yield
    hf_logging.set_verbosity(before["transformers verbosity"])
    hub_logging.set_verbosity(before["hub verbosity"])
    (hf_logging.enable_progress_bar if before["transformers progress bars"]
     else hf_logging.disable_progress_bar)()


def _explain(chest_png, model, out, *extra):
    return main(["explain", str(chest_png), "left pleural effusion", "--method", "patch_text",
                 "--model", str(model), "--out", str(out), "--force", *extra])


def test_transformers_prints_loading_output_for_this_model(tiny_clip, capfd, user_settings):
    from captum_matex.loading import load_clip

    hf_logging.enable_progress_bar()
    load_clip(tiny_clip)
    assert LOADING in capfd.readouterr().err  # else the tests below prove nothing


@pytest.mark.parametrize("bars", [True, False])
def test_explain_hides_third_party_output_and_restores_the_settings(
        tiny_clip, chest_png, tmp_path, capfd, user_settings, bars):
    hf_logging.set_verbosity_info()  # not the default: INFO would log every file loaded
    hub_logging.set_verbosity(logging.DEBUG)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    before = _settings()
    assert _explain(chest_png, tiny_clip, tmp_path) == 0
    captured = capfd.readouterr()
    assert LOADING not in captured.err + captured.out
    assert "loading" not in captured.err.lower()  # INFO lines such as "loading file ..."
    assert captured.out == f"wrote 1 explanation(s) to {tmp_path}\n"
    assert captured.err == ""
    assert _settings() == before


def test_verbose_shows_third_party_output(tiny_clip, chest_png, tmp_path, capfd, user_settings):
    hf_logging.enable_progress_bar()
    assert _explain(chest_png, tiny_clip, tmp_path, "--verbose") == 0
    assert LOADING in capfd.readouterr().err


def test_settings_are_restored_when_the_command_fails(tiny_clip, chest_png, tmp_path, capfd,
                                                      user_settings):
    hf_logging.set_verbosity_debug()
    before = _settings()
    (tmp_path / "summary.json").write_text("{}")
    status = main(["explain", str(chest_png), "effusion", "--model", str(tiny_clip),
                   "--out", str(tmp_path)])
    assert status == 2 and "--force" in capfd.readouterr().err
    assert _settings() == before


def test_demo_hides_the_embedded_model_loading(tmp_path, capfd, user_settings):
    hf_logging.enable_progress_bar()
    assert main(["demo", "--cases", "1", "--out", str(tmp_path)]) == 0
    captured = capfd.readouterr()
    assert LOADING not in captured.err + captured.out
    assert "| case | phrase | pointing game |" in captured.out


def test_benchmark_hides_model_loading_and_keeps_its_table(tiny_clip, tmp_path, capfd,
                                                           user_settings):
    hf_logging.enable_progress_bar()
    before = _settings()
    assert main(["benchmark", "--limit", "2", "--methods", "patch_text", "--no-sanity",
                 "--no-faithfulness", "--no-progress", "--model", str(tiny_clip),
                 "--out", str(tmp_path)]) == 0
    captured = capfd.readouterr()
    assert LOADING not in captured.err + captured.out
    assert "| patch_text |" in captured.out
    assert _settings() == before


def test_benchmark_verbose_shows_model_loading(tiny_clip, tmp_path, capfd, user_settings):
    hf_logging.enable_progress_bar()
    assert main(["benchmark", "--limit", "2", "--methods", "patch_text", "--no-sanity",
                 "--no-faithfulness", "--no-progress", "--model", str(tiny_clip),
                 "--out", str(tmp_path), "--verbose"]) == 0
    assert LOADING in capfd.readouterr().err


def _warn(module: str) -> None:
    warnings.warn_explicit("chatter", UserWarning, filename=f"{module}.py", lineno=1,
                           module=module)


@pytest.mark.parametrize("module", ["transformers.modeling_utils", "huggingface_hub.file_download",
                                    "tokenizers"])
def test_third_party_python_warnings_are_hidden_ours_are_not(module):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_third_party():
            _warn(module)
            _warn("captum_matex.data.images")
        _warn(module)  # the filters are back
    assert [w.filename for w in caught] == ["captum_matex.data.images.py", f"{module}.py"]


def test_verbose_changes_nothing(user_settings):
    hf_logging.set_verbosity_info()
    with quiet_third_party(verbose=True):
        assert hf_logging.get_verbosity() == logging.INFO
        assert hf_logging.is_progress_bar_enabled()
    with quiet_third_party():
        assert hf_logging.get_verbosity() == logging.ERROR
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    assert hf_logging.get_verbosity() == logging.INFO and hf_logging.is_progress_bar_enabled()
    assert not are_progress_bars_disabled()


def test_settings_are_restored_after_an_exception(user_settings):
    hub_logging.set_verbosity(logging.INFO)
    hf_logging.disable_progress_bar()
    before = _settings()
    with pytest.raises(RuntimeError, match="boom"):
        with quiet_third_party():
            raise RuntimeError("boom")
    assert _settings() == before
