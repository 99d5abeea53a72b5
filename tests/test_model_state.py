"""Every method leaves the model as it found it: after success, an error or KeyboardInterrupt
raised anywhere in the forward or backward pass, in sequence with other explainers, and it
refuses to share one model between threads at the same time."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.modules.module as module_globals
from conftest import PHRASES, make_clip, make_siglip, make_tokenizer

from captum_matex import SimilarityForward, baselines
from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex.adapters import base as adapter_base

METHODS = runnable_methods(HFCLIPAdapter)  # the others refuse CLIP by name (test_siglip)
CHEAP = {
    "integrated_gradients": dict(n_steps=4, internal_batch_size=16),
    "smoothgrad": dict(nt_samples=2),
    "m2ib": dict(steps=2, num_samples=2),
}
#: methods that run no backward pass (an exception injected into it never fires)
NO_BACKWARD = {"rollout", "patch_text", "prior_only", "occlusion", "feature_ablation"}
IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
TEXT = PHRASES[:2]
TOKENIZER = make_tokenizer()


pytestmark = pytest.mark.usefixtures("tiny_threads")


def tiny_model():
    """A 3-block CLIP left in an awkward state an explainer must restore exactly."""
    model = make_clip(layers=3, image_size=16, patch=8, width=16)
    model.train()
    model.vision_model.encoder.layers[0].eval()  # mixed training flags
    model.text_projection.weight.requires_grad_(False)
    model.logit_scale.grad = torch.full((), 0.5)  # a stale gradient that must survive
    return model


def explainer(name, model):
    return baselines.get(name)(model, TOKENIZER, **CHEAP.get(name, {}))


def hooks_of(obj, names) -> dict:
    return {n: list(getattr(obj, n, None) or {}) for n in names}


MODULE_HOOKS = [n for n in vars(torch.nn.Linear(1, 1)) if "hook" in n and n != "_is_full_backward_hook"]
GLOBAL_HOOKS = [n for n in dir(module_globals) if n.startswith("_global") and n.endswith("hooks")]


def full_state(model) -> dict:
    """Everything about the model and torch's global state an explainer could leave changed."""
    config = model.config
    return {
        "module hooks": {name: hooks_of(m, MODULE_HOOKS) for name, m in model.named_modules()},
        "global hooks": hooks_of(module_globals, GLOBAL_HOOKS),
        "tensor hooks": {
            name: (list(p._backward_hooks or {}), list(getattr(p, "_post_accumulate_grad_hooks", None) or {}))
            for name, p in model.named_parameters()
        },
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "attention": [getattr(c, "_attn_implementation", None)
                      for c in (config, config.vision_config, config.text_config)],
        "grad mode": torch.is_grad_enabled(),
        "claimed": model in adapter_base._IN_USE,
    }


def assert_same_state(after: dict, before: dict) -> None:
    grads_after, grads_before = after.pop("grads"), before.pop("grads")
    assert after == before
    assert grads_after.keys() == grads_before.keys()
    for name, grad in grads_before.items():
        if grad is None:
            assert grads_after[name] is None, f"{name} got a gradient"
        else:
            assert torch.equal(grads_after[name], grad), f"{name}'s gradient changed"


class Injected(RuntimeError):
    pass


def inject(model, site: str, exc: BaseException):
    """Register a hook that raises ``exc`` at ``site``; returns (handle, calls)."""
    calls = []

    def raise_now(*_):
        calls.append(1)
        raise exc

    if site == "text forward":
        return model.text_model.encoder.layers[0].register_forward_hook(raise_now), calls
    if site == "vision forward":
        return model.vision_model.encoder.layers[1].mlp.register_forward_hook(raise_now), calls

    def arm_backward(_module, _inputs, output):  # "vision backward": every score's path
        if output.requires_grad:
            output.register_hook(raise_now)

    return model.vision_model.encoder.layers[-1].mlp.register_forward_hook(arm_backward), calls


def fires(name: str, site: str) -> bool:
    """Whether ``name`` reaches the injection ``site``."""
    if site == "text forward":  # phrases are encoded inside every attribute call
        return True
    if name == "prior_only":  # reads only the phrases
        return False
    return site == "vision forward" or name not in NO_BACKWARD


# --------------------------------------------------------------------------
# success, error and interrupt, for every registered method
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_model_state_is_restored_after_success(name):
    model = tiny_model()
    before = full_state(model)
    maps = explainer(name, model).attribute(IMAGES, (TEXT,))
    assert maps.shape == IMAGES.shape and torch.isfinite(maps).all()
    assert_same_state(full_state(model), before)
    assert before["attention"][1] == "sdpa" and before["training"][""] is True


@pytest.mark.parametrize("exc", [Injected("injected"), KeyboardInterrupt()], ids=["error", "interrupt"])
@pytest.mark.parametrize("site", ["text forward", "vision forward", "vision backward"])
@pytest.mark.parametrize("name", METHODS)
def test_model_state_is_restored_after_an_exception_mid_pass(name, site, exc):
    model = tiny_model()
    attribution = explainer(name, model)
    before = full_state(model)
    handle, calls = inject(model, site, exc)
    try:
        try:
            attribution.attribute(IMAGES, (TEXT,))
        except type(exc) as caught:
            raised = caught
        else:
            raised = None
    finally:
        handle.remove()
    assert bool(calls) == fires(name, site), "the injection fired unexpectedly or missed"
    # the exception is never swallowed nor replaced: it propagates iff it fired
    assert (raised is not None) == bool(calls), (name, site, raised)
    assert_same_state(full_state(model), before)
    # the model is usable again, also from another thread (no claim left behind)
    result = {}

    def again():
        result["maps"] = attribution.attribute(IMAGES, (TEXT,))

    worker = threading.Thread(target=again)
    worker.start()
    worker.join(60)
    assert torch.isfinite(result["maps"]).all()


# --------------------------------------------------------------------------
# explainers in sequence on one model
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alone() -> dict:
    """Each method's maps on a fresh model of its own."""
    return {name: explainer(name, tiny_model()).attribute(IMAGES, (TEXT,)) for name in METHODS}


@pytest.mark.parametrize("name", METHODS)
def test_explainers_in_sequence_give_the_maps_each_gives_alone(alone, name):
    model = tiny_model()
    before = full_state(model)
    # MATEX switches to eager attention, saliency runs on SDPA: a leak would show in the bits
    for other in [name, "matex", name, "saliency", name]:
        maps = explainer(other, model).attribute(IMAGES, (TEXT,))
        assert torch.equal(maps, alone[other]), f"{other} after another explainer differs"
    assert_same_state(full_state(model), before)


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_one_model_in_two_threads_at_once_is_refused_clearly(alone, name):
    model = tiny_model()
    before = full_state(model)
    attribution = explainer(name, model)
    inside, release = threading.Event(), threading.Event()
    result: dict = {}

    def block_in_worker(*_):
        if threading.current_thread() is worker:
            inside.set()
            assert release.wait(60)

    def work():
        try:
            result["maps"] = attribution.attribute(IMAGES, (TEXT,))
        except BaseException as exc:  # reported below
            result["error"] = exc

    handle = model.text_model.encoder.layers[0].register_forward_hook(block_in_worker)
    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert inside.wait(60), "the worker never reached the model"
        message = "being explained in another thread.*copy.deepcopy\\(model\\)"
        with pytest.raises(RuntimeError, match=message):
            attribution.attribute(IMAGES, (TEXT,))
        with pytest.raises(RuntimeError, match=message):  # another explainer, same model
            explainer("saliency", model).attribute(IMAGES, (TEXT,))
        with pytest.raises(RuntimeError, match=message):
            SimilarityForward(model, TOKENIZER)(IMAGES, TEXT)
        # a copy of the model serves this thread meanwhile
        twin = explainer(name, copy.deepcopy(tiny_model())).attribute(IMAGES, (TEXT,))
        assert torch.equal(twin, alone[name])
    finally:
        release.set()
        worker.join(60)
        handle.remove()
    assert "error" not in result, result.get("error")
    assert torch.equal(result["maps"], alone[name])  # the refused calls changed nothing
    assert_same_state(full_state(model), before)


def test_nested_use_in_test_threads_is_allowed_and_releases_the_model():
    # Captum-based methods call SimilarityForward inside attribute: one thread claims twice
    model = tiny_model()
    forward = SimilarityForward(model, TOKENIZER)
    with forward.adapter.explaining(exposes_attention=False):  # SDPA, as forward uses
        score = forward(IMAGES, TEXT)
        assert model in adapter_base._IN_USE  # the outer claim outlives the inner one
    assert score.shape == (2,) and model not in adapter_base._IN_USE
    result = {}
    worker = threading.Thread(target=lambda: result.update(score=forward(IMAGES, TEXT)))
    worker.start()
    worker.join(60)
    assert torch.equal(result["score"], score)


def test_hooked_hands_inputs_and_outputs_and_removes_its_hooks_also_on_error():
    layer = torch.nn.Linear(3, 2)
    seen: dict[str, torch.Tensor] = {}
    x = torch.randn(4, 3)
    with adapter_base.hooked([
        (layer, "input", lambda t: seen.__setitem__("input", t)),
        (layer, "output", lambda t: seen.__setitem__("output", t)),
    ]):
        y = layer(x)
    assert seen["input"] is x and seen["output"] is y
    with pytest.raises(ZeroDivisionError):
        with adapter_base.hooked([(layer, "output", lambda t: 1 / 0)]):
            layer(x)
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    with pytest.raises(ValueError, match="'input' or the 'output'"):
        with adapter_base.hooked([(layer, "gradient", seen.setdefault)]):
            pass
    assert not layer._forward_hooks


# --------------------------------------------------------------------------
# the same guarantees on a SigLIP model (no class token, a map head, a sigmoid logit)
# --------------------------------------------------------------------------
def tiny_siglip():
    """A 3-block SigLIP left in an awkward state, warmed up once (transformers adds its
    own output-capturing hooks on a model's first forward pass)."""
    model = make_siglip(1, layers=3, image_size=16, patch=8, width=16)
    SimilarityForward(model, TOKENIZER)(IMAGES, TEXT)
    model.train()
    model.vision_model.head.eval()  # mixed training flags
    model.text_model.head.weight.requires_grad_(False)
    model.logit_bias.grad = torch.full((1,), 0.5)  # a stale gradient that must survive
    return model


SIGLIP_METHODS = [n for n in METHODS if "class token" not in baselines.get(n).requires]


@pytest.mark.parametrize("name", SIGLIP_METHODS)
def test_siglip_model_state_is_restored_after_success_and_after_an_error(name):
    model = tiny_siglip()
    before = full_state(model)
    maps = explainer(name, model).attribute(IMAGES, (TEXT,))
    assert maps.shape == IMAGES.shape and torch.isfinite(maps).all()
    assert_same_state(full_state(model), before)
    assert before["attention"][1] == "sdpa" and before["training"][""] is True
    if not fires(name, "vision forward"):
        return
    before = full_state(model)
    handle, calls = inject(model, "vision forward", Injected("injected"))
    try:
        with pytest.raises(Injected):
            explainer(name, model).attribute(IMAGES, (TEXT,))
    finally:
        handle.remove()
    assert calls
    assert_same_state(full_state(model), before)
