r"""Tests of the embedded phantom report model (captum_matex.zoo.phantom_llava): it
loads offline from safetensors and JSON, is a LlavaForConditionalGeneration on the
phantom CLIP's 14 x 14 vision tower with 196 image tokens, its tokenizer and
processor build the documented sequence layout and round-trip reports, and greedy
generation names the right finding and side on phantom films of a seed it was
neither trained nor selected on, deterministically."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_matex.data import PhantomCXR
from captum_matex.zoo import PHANTOM_LLAVA_PROMPT, evaluate_generation, phantom_llava
from captum_matex.zoo.phantom_llava import (
    BOS_ID,
    EOS_ID,
    IMAGE_TOKEN_ID,
    MODEL_DIR,
    NORMAL_REPORT,
    NUM_IMAGE_TOKENS,
    PAD_ID,
    PROMPT_TOKEN_IDS,
    build_tokenizer,
    generate_reports,
    prompt_ids,
    read_report,
    report_text,
    training_ids,
)

#: trained on PhantomCXR("train", seed=0) and selected on ("val", seed=0); seed 1 is unseen
UNSEEN_SEED = 1
N_FILMS = 24


@pytest.fixture(scope="module")
def loaded() -> tuple:
    return phantom_llava()


@pytest.fixture(scope="module")
def films() -> list:
    ds = PhantomCXR(split="test", seed=UNSEEN_SEED, length=N_FILMS)
    return [ds[i] for i in range(N_FILMS)]


def test_loads_offline_without_network_or_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("phantom_llava tried to open a network connection")

    def no_pickle(*args, **kwargs):
        raise AssertionError("phantom_llava tried to unpickle")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model, _ = phantom_llava()
    assert type(model).__name__ == "LlavaForConditionalGeneration" and not model.training
    assert model.config._attn_implementation == "eager"
    assert model.config.text_config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "eager"


def test_shipped_files_are_safe_and_small() -> None:
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
            "generation_config.json", "TRAINING.md", "metrics.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 25 * 2**20


def test_config_is_the_phantom_clip_tower_with_196_image_tokens(loaded: tuple) -> None:
    from transformers import CLIPVisionModel

    from captum_matex.zoo import phantom_clip

    model, _ = loaded
    cfg, vc = model.config, model.config.vision_config
    assert isinstance(model.model.vision_tower, CLIPVisionModel)
    assert vc.image_size // vc.patch_size == 14 and vc.image_size % vc.patch_size == 0
    assert (cfg.vision_feature_select_strategy, cfg.vision_feature_layer) == ("default", -1)
    assert cfg.image_token_id == IMAGE_TOKEN_ID and cfg.image_seq_length == NUM_IMAGE_TOKENS == 196
    clip_vc = phantom_clip()[0].config.vision_config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "image_size", "patch_size", "hidden_act"):
        assert getattr(vc, key) == getattr(clip_vc, key), key
    pixels = torch.zeros(1, 3, 112, 112)
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pixels).pooler_output
    assert feats[0].shape == (196, cfg.text_config.hidden_size)


def test_tokenizer_ids_and_report_round_trip(loaded: tuple) -> None:
    _, processor = loaded
    tok = processor.tokenizer
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert tok.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    assert tok(PHANTOM_LLAVA_PROMPT, add_special_tokens=False)["input_ids"] == list(PROMPT_TOKEN_IDS)
    # the shipped tokenizer is the one build_tokenizer makes (phantom CLIP vocabulary extended)
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    ds = PhantomCXR(split="train", seed=0, length=300)
    reports = {report_text(ds[i]) for i in range(300)} | {NORMAL_REPORT, "band-like opacity at the left base."}
    for report in reports:
        ids = tok(report, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, report
        assert tok.decode(ids, skip_special_tokens=True) == report


def test_processor_builds_the_trained_layout(loaded: tuple) -> None:
    model, processor = loaded
    sample = PhantomCXR(split="test", seed=UNSEEN_SEED, length=1)[0]
    batch = processor(images=[sample.image[0].numpy()], text=PHANTOM_LLAVA_PROMPT, return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    assert ids == prompt_ids() == [BOS_ID] + [IMAGE_TOKEN_ID] * 196 + list(PROMPT_TOKEN_IDS)
    assert batch["pixel_values"].shape == (1, 3, 112, 112)
    # the same pixels as the phantom CLIP's processor
    from captum_matex.zoo import phantom_clip

    clip_pixels = phantom_clip()[1](images=[sample.image[0].numpy()], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], clip_pixels)
    seq, labels = training_ids(processor.tokenizer, "left pleural effusion.")
    assert seq[: len(ids)] == ids and seq[-1] == EOS_ID
    assert labels[: len(ids)] == [-100] * len(ids) and labels[len(ids):] == seq[len(ids):]


def test_generative_adapter_builds_the_same_prefix(loaded: tuple) -> None:
    r"""The LLaVA adapter's default prompt ("Findings:") gives the trained layout."""
    from captum_matex.adapters import get_adapter

    model, processor = loaded
    adapter = get_adapter(model, processor)
    assert adapter.prefix_ids() == prompt_ids()
    assert adapter.image_grid == (14, 14) and adapter.num_image_tokens == NUM_IMAGE_TOKENS


def test_read_report_uses_the_phrase_language() -> None:
    assert read_report("fluid at the left base. enlarged cardiac silhouette.") == [
        ("effusion", "left"), ("cardiomegaly", None)]
    assert read_report(NORMAL_REPORT) == [("normal", None)]
    assert read_report("right lung effusion.") == [("effusion", "right")]  # not a phantom phrase
    assert read_report("no pneumothorax.") == [(None, None)]


def test_greedy_reports_name_finding_and_side_on_an_unseen_seed(loaded: tuple, films: list) -> None:
    r"""Greedy reports of the first 24 unseen-seed films name the primary finding
    and its side on >= 0.8 of the films with a finding, and report normal films
    without one.

    Measured with the shipped model: 20 of the 20 films with a finding (1.0) and 4
    of 4 normal films. On 600 films of the same seed (TRAINING.md, and the slow test
    below) it is 0.969 of 523, so the 0.8 bar leaves room for a retrained model's
    few misses on these films but fails a model that does not read the image."""
    model, processor = loaded
    res = evaluate_generation(model, processor, dataset=films, n=N_FILMS)
    assert res["n_finding"] >= 15
    assert res["finding_side_acc"] >= 0.8, res
    assert res["normal_acc"] >= 0.75, res


def test_randomised_model_fails_the_bar(loaded: tuple, films: list) -> None:
    r"""The evaluation is not trivially passed: an untrained model of the same
    configuration names no finding."""
    from transformers import LlavaForConditionalGeneration

    model, processor = loaded
    torch.manual_seed(0)
    rand = LlavaForConditionalGeneration(model.config).eval()
    res = evaluate_generation(rand, processor, dataset=films[:12], n=12)
    assert res["finding_side_acc"] < 0.3, res


def test_generation_is_deterministic(loaded: tuple, films: list) -> None:
    model, processor = loaded
    images = [s.image for s in films[:6]]
    first = generate_reports(model, processor, images)
    assert first == generate_reports(model, processor, images)
    # one film alone gives the same report as in the batch
    assert generate_reports(model, processor, images[:1]) == first[:1]
    assert all(r.endswith(".") for r in first)


@pytest.mark.slow
def test_unseen_seed_accuracy_over_600_films(loaded: tuple) -> None:
    r"""The TRAINING.md numbers: greedy reports of the first 600 test films of the
    unseen seed name the primary finding and its side at >= 0.90 of the films
    with a finding (n > 300), and normal films are reported without a finding."""
    model, processor = loaded
    res = evaluate_generation(model, processor, split="test", seed=UNSEEN_SEED, n=600)
    assert res["n_finding"] >= 300
    assert res["finding_side_acc"] >= 0.90, res
    assert res["normal_acc"] >= 0.90, res
    shipped = json.loads((MODEL_DIR / "metrics.json").read_text())["test_unseen"]
    # the shipped record, up to a few films whose greedy token could flip on other hardware
    assert res["finding_side_acc"] == pytest.approx(shipped["finding_side_acc"], abs=0.01)


@pytest.mark.slow
def test_training_tool_still_trains_and_saves_a_loadable_model(tmp_path: Path) -> None:
    r"""``tools/train_phantom_llava.py`` (outside the package) runs against the
    library: a two-step run with a tiny decoder writes a model that
    :func:`phantom_llava` loads."""
    script = Path(__file__).resolve().parents[1] / "tools" / "train_phantom_llava.py"
    out = tmp_path / "run"
    args = ["--out", str(out), "--steps", "2", "--bank", "16", "--val", "8", "--test", "8",
            "--eval-every", "2", "--text-width", "32", "--text-layers", "1"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"model.safetensors", "metrics.json", "TRAINING.md"} <= {p.name for p in out.iterdir()}
    assert "`python tools/train_phantom_llava.py --out" in (out / "TRAINING.md").read_text()
    model, _ = phantom_llava(out)
    assert model.config.text_config.hidden_size == 32
