"""Determinism and numerics: bit-identical repeats, no division by zero in normalisation,
half precision against float32 (CPU always, CUDA when present)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import PHRASES, make_clip, make_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_matex import baselines
from captum_matex._maps import normalize_max, normalize_minmax
from captum_matex.baselines import Occlusion

METHODS = baselines.available()
CHEAP = {
    "integrated_gradients": dict(n_steps=4, internal_batch_size=16),
    "smoothgrad": dict(nt_samples=2, seed=3),
    "m2ib": dict(steps=2, num_samples=2, seed=3),
}
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
IMAGES = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(8))
TEXT = PHRASES[:3]
TOKENIZER = make_tokenizer()
#: max |half - float32| on maps in [0, 1] (CPU float16 emulation measures <= 0.02)
HALF_TOLERANCE = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return make_clip(layers=3, image_size=16, patch=8, width=16)


def explainer(name, model):
    return baselines.get(name)(model, TOKENIZER, **CHEAP.get(name, {}))


# --------------------------------------------------------------------------
# bit-identical repeats
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_repeats_are_bit_identical_and_leave_the_global_rng_alone(model, name):
    first = explainer(name, model)
    rng = torch.get_rng_state()
    maps = first.attribute(IMAGES, (TEXT,))
    assert torch.equal(torch.get_rng_state(), rng), "the global random state was consumed"
    assert torch.equal(first.attribute(IMAGES, (TEXT,)), maps)
    torch.manual_seed(1234)  # a different global state changes nothing
    assert torch.equal(explainer(name, copy.deepcopy(model)).attribute(IMAGES, (TEXT,)), maps)


@pytest.mark.parametrize("name", ["smoothgrad", "m2ib"])
def test_unseeded_stochastic_methods_follow_the_global_seed(model, name):
    unseeded = baselines.get(name)(model, TOKENIZER, **{**CHEAP[name], "seed": None})
    torch.manual_seed(5)
    a = unseeded.attribute(IMAGES, (TEXT,))
    torch.manual_seed(5)
    assert torch.equal(unseeded.attribute(IMAGES, (TEXT,)), a)
    torch.manual_seed(6)
    assert not torch.equal(unseeded.attribute(IMAGES, (TEXT,)), a)


# --------------------------------------------------------------------------
# normalisation never divides by zero
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("value", [0.0, 1e-30, 1e-7, 1.0, 6e4])
def test_constant_maps_normalise_to_finite_values(dtype, value):
    maps = torch.full((2, 1, 4, 4), value).to(dtype)
    maps[1] = 0
    positive = bool(maps[0].max() > 0)  # the value may underflow to 0 in the dtype
    by_max, by_range = normalize_max(maps), normalize_minmax(maps)
    for out in (by_max, by_range):
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert torch.equal(out[1], torch.zeros_like(out[1]))  # zero stays zero
        assert torch.equal(out[0], torch.full_like(out[0], float(positive)))


@settings(max_examples=200, deadline=None, database=None)
@given(
    dtype=st.sampled_from(FLOATS),
    peak=st.sampled_from([0.0, 1e-38, 1e-8, 1e-3, 1.0, 1e3, 6e4]),
    pattern=st.lists(st.sampled_from([0.0, 0.0, 1e-6, 0.25, 0.5, 1.0]), min_size=8, max_size=8),
)
def test_normalised_maps_are_finite_in_unit_range_with_peak_one(dtype, peak, pattern):
    maps = (torch.tensor(pattern).view(2, 1, 2, 2) * peak).to(dtype)
    for out in (normalize_max(maps), normalize_minmax(maps)):
        assert torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
        has_signal = maps.flatten(1).amax(1) > 0
        assert torch.equal(out.flatten(1).amax(1) == 1, has_signal)


@pytest.mark.parametrize("dtype", FLOATS)
def test_an_all_zero_attribution_stays_finite_in_every_dtype(model, dtype):
    # occluding a constant image with its own value changes nothing: every attribution is 0
    images = torch.full((2, 3, 16, 16), 0.25).to(dtype)
    maps = Occlusion(model, TOKENIZER, baseline=0.25).attribute(images, (TEXT[:2],))
    assert maps.dtype == dtype and torch.equal(maps, torch.zeros_like(maps))


@pytest.mark.parametrize("name", METHODS)
def test_constant_and_zero_images_give_finite_maps_in_half_precision(model, name):
    for images in (torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), -1.5)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            maps = explainer(name, model).attribute(images.half(), (TEXT[:2],))
        assert maps.dtype == torch.float16 and torch.isfinite(maps).all()
        assert (maps >= 0).all() and (maps <= 1).all()


# --------------------------------------------------------------------------
# half precision against float32
# --------------------------------------------------------------------------
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", METHODS)
def test_float16_model_matches_float32_within_tolerance(name, device):
    reference_model = make_clip(layers=3, image_size=16, patch=8, width=16).to(device)
    half_model = copy.deepcopy(reference_model).half()
    images = IMAGES.to(device)
    reference = explainer(name, reference_model).attribute(images, (TEXT,))
    half = explainer(name, half_model).attribute(images.half(), (TEXT,))
    assert half.dtype == torch.float16 and half.device == images.device
    assert torch.isfinite(half).all() and (half >= 0).all() and (half <= 1).all()
    error = (half.float() - reference).abs().max().item()
    assert error <= HALF_TOLERANCE, f"{name} on {device}: max |float16 - float32| = {error:.4f}"
