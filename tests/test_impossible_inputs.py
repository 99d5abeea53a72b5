"""Impossible inputs: images, text or a model on the ``meta`` device (no data) and images
on another device than the model are refused by every method with a ValueError that names
the device and the fix, never a raw torch error, and the model is left as it was found."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from conftest import PHRASES, make_tokenizer
from test_model_state import CHEAP, assert_same_state, full_state, tiny_model
from torch import nn

import captum_matex._inputs as inputs_module
from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex import MATEX, SimilarityForward, baselines
from captum_matex.adapters import get_adapter
from captum_matex.adapters.base import check_materialised, meta_tensors, model_device

METHODS = [*runnable_methods(HFCLIPAdapter), "similarity_forward"]
IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
TEXT = PHRASES[:2]
TOKENIZER = make_tokenizer()
IDS = TOKENIZER(TEXT, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
EMBEDDING_DIM = 16  # projection_dim of conftest.make_clip

pytestmark = pytest.mark.usefixtures("tiny_threads")


def run(name: str, model: nn.Module, images, text) -> torch.Tensor:
    """One call of method ``name`` (a registered one, or ``similarity_forward``)."""
    if name == "similarity_forward":
        return SimilarityForward(model, TOKENIZER)(images, text)
    explainer = baselines.get(name)(model, TOKENIZER, **CHEAP.get(name, {}))
    return explainer.attribute(images, additional_forward_args=(text,))


def on_meta(model: nn.Module) -> nn.Module:
    """The whole model on ``meta`` (gradients dropped: meta tensors cannot be compared)."""
    model.to("meta")
    for p in model.parameters():
        p.grad = None
    return model


def one_parameter_on_meta(model: nn.Module) -> nn.Module:
    """One weight of one vision block on ``meta``, the rest real."""
    mlp = model.vision_model.encoder.layers[1].mlp
    weight = mlp.fc1.weight
    mlp.fc1.weight = nn.Parameter(torch.empty_like(weight, device="meta"), weight.requires_grad)
    return model


def one_buffer_on_meta(model: nn.Module) -> nn.Module:
    """The vision tower's position-id buffer on ``meta``, every parameter real."""
    embeddings = model.vision_model.embeddings
    embeddings.position_ids = embeddings.position_ids.to("meta")
    return model


#: case -> (make the model from tiny_model(), images, text, words the message must name)
CASES: dict[str, tuple[Callable[[nn.Module], nn.Module], object, object, tuple[str, ...]]] = {
    "images on meta": (lambda m: m, IMAGES.to("meta"), TEXT, ("images", "images.to(")),
    "model on meta": (on_meta, IMAGES, TEXT, ("model's parameters", "load its weights")),
    "one parameter on meta": (
        one_parameter_on_meta, IMAGES, TEXT, ("1 of the model's", "fc1.weight", "load its weights")
    ),
    "one buffer on meta": (
        one_buffer_on_meta, IMAGES, TEXT, ("position_ids", "load its weights")
    ),
    "token ids on meta": (lambda m: m, IMAGES, IDS.to("meta"), ("token ids", "text.to(")),
    "text embeddings on meta": (
        lambda m: m, IMAGES, torch.randn(2, EMBEDDING_DIM, device="meta"),
        ("text embeddings", "text.to("),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", METHODS)
def test_meta_inputs_and_models_are_refused_by_name_and_leave_the_model_alone(name, case):
    prepare, images, text, words = CASES[case]
    model = prepare(tiny_model())
    before = full_state(model)
    with pytest.raises(ValueError, match="'meta' device") as refusal:
        run(name, model, images, text)
    for word in words:
        assert word in str(refusal.value)
    assert_same_state(full_state(model), before)


SPARSE = {
    "sparse images": (IMAGES.to_sparse(), TEXT, "images.to_dense()"),
    "sparse token ids": (IMAGES, IDS.to_sparse(), "text.to_dense()"),
    "sparse text embeddings": (IMAGES, torch.randn(2, EMBEDDING_DIM).to_sparse(), "text.to_dense()"),
}


@pytest.mark.parametrize("case", list(SPARSE))
@pytest.mark.parametrize("name", METHODS)
def test_sparse_inputs_are_refused_by_name_and_leave_the_model_alone(name, case):
    images, text, fix = SPARSE[case]
    model = tiny_model()
    before = full_state(model)
    with pytest.raises(TypeError, match="dense") as refusal:
        run(name, model, images, text)
    assert fix in str(refusal.value)
    assert_same_state(full_state(model), before)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("name", ["similarity_forward", "saliency", "matex"])
def test_token_ids_of_any_integer_width_explain_like_long_ids(name, dtype):
    model = tiny_model()
    expected = run(name, model, IMAGES, IDS)
    torch.testing.assert_close(run(name, model, IMAGES, IDS.to(dtype)), expected)


@pytest.mark.parametrize(
    "images, text, prepare",
    [
        (IMAGES.to("meta"), TEXT, lambda m: m),
        (IMAGES, TEXT, on_meta),
        (IMAGES, TEXT, one_parameter_on_meta),
    ],
    ids=["images on meta", "model on meta", "one parameter on meta"],
)
def test_attribute_phrases_refuses_meta_images_and_models(images, text, prepare):
    model = prepare(tiny_model())
    before = full_state(model)
    with pytest.raises(ValueError, match="'meta' device"):
        MATEX(model, TOKENIZER).attribute_phrases(images, text)
    assert_same_state(full_state(model), before)


def test_attribute_phrases_refuses_meta_phrase_embeddings():
    model = tiny_model()
    with pytest.raises(ValueError, match="'meta' device"):
        MATEX(model, TOKENIZER).attribute_phrases(
            IMAGES, torch.randn(3, EMBEDDING_DIM, device="meta")
        )


def test_the_fix_the_message_names_makes_the_model_explainable_again():
    model = tiny_model()
    expected = SimilarityForward(model, TOKENIZER)(IMAGES, TEXT)
    state = model.state_dict()
    # non-persistent buffers (CLIP's position ids) are not in the state dict:
    # to_empty leaves them uninitialised, so they are re-created as well
    buffers = {name: b.clone() for name, b in model.named_buffers() if name not in state}
    model.to("meta")
    forward = SimilarityForward(model, TOKENIZER)
    with pytest.raises(ValueError, match="load its weights"):
        forward(IMAGES, TEXT)
    model.to_empty(device="cpu")
    model.load_state_dict(state)
    for name, buffer in buffers.items():
        model.get_buffer(name).copy_(buffer)
    torch.testing.assert_close(forward(IMAGES, TEXT), expected)


def test_weights_an_accelerate_hook_loads_on_the_fly_are_not_refused():
    model = one_parameter_on_meta(tiny_model())
    assert meta_tensors(model) == ["vision_model.encoder.layers.1.mlp.fc1.weight"]
    model.vision_model.encoder.layers[1]._hf_hook = object()  # as accelerate's offload sets it
    assert meta_tensors(model) == []
    check_materialised(model)
    assert model_device(model) is None  # accelerate moves inputs itself


def test_model_device_is_the_one_device_or_none():
    model = tiny_model()
    assert model_device(model) == torch.device("cpu")
    assert model_device(one_parameter_on_meta(model)) is None
    assert model_device(nn.Sequential()) is None


def test_images_on_another_device_than_the_model_are_refused(monkeypatch):
    adapter = get_adapter(tiny_model(), TOKENIZER)
    monkeypatch.setattr(inputs_module, "model_device", lambda _model: torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"images are on 'cpu' but the model is on 'cuda:0'; "
                                         r"move them with images.to\('cuda:0'\)"):
        inputs_module.check_images(IMAGES, adapter)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_on", ["cpu", "cuda"])
def test_images_and_model_on_different_real_devices_are_refused(model_on):
    images_on = "cuda" if model_on == "cpu" else "cpu"
    forward = SimilarityForward(tiny_model().to(model_on), TOKENIZER)
    with pytest.raises(ValueError, match="images.to"):
        forward(IMAGES.to(images_on), TEXT)


@pytest.mark.parametrize("masks", [torch.ones(2, 16, 16, device="meta"), torch.ones(2, 16, 16).to_sparse()])
def test_anatomy_masks_on_meta_or_sparse_are_refused_by_name(masks):
    model = tiny_model()
    before = full_state(model)
    error = ValueError if masks.is_meta else TypeError
    with pytest.raises(error, match="'meta' device|to_dense"):
        MATEX(model, TOKENIZER).attribute(IMAGES[:2], (TEXT[:2],), anatomy_masks=masks)
    with pytest.raises(error, match="'meta' device|to_dense"):
        MATEX(model, TOKENIZER).attribute_phrases(IMAGES[:2], TEXT[:2], anatomy_masks=masks)
    assert_same_state(full_state(model), before)
