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

from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex import baselines
from captum_matex import MATEX
from captum_matex._maps import FLAT_ULPS, is_flat, normalize, normalize_max, normalize_minmax

METHODS = runnable_methods(HFCLIPAdapter)
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


pytestmark = pytest.mark.usefixtures("tiny_threads")


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
def test_constant_maps_normalise_to_zeros(dtype, value):
    # a constant map is flat: zeros by construction (torch.where), so exact equality holds
    maps = torch.full((2, 1, 4, 4), value).to(dtype)
    maps[1] = 0
    for out in (normalize_max(maps), normalize_minmax(maps)):
        assert out.dtype == dtype and torch.equal(out, torch.zeros_like(out))


@settings(max_examples=200, deadline=None, database=None)
@given(
    dtype=st.sampled_from(FLOATS),
    peak=st.sampled_from([0.0, 1e-38, 1e-8, 1e-3, 1.0, 1e3, 6e4]),
    pattern=st.lists(st.sampled_from([0.0, 0.0, 1e-6, 0.25, 0.5, 1.0]), min_size=8, max_size=8),
)
def test_normalised_maps_are_finite_in_unit_range_with_peak_one(dtype, peak, pattern):
    maps = (torch.tensor(pattern).view(2, 1, 2, 2) * peak).to(dtype)
    # distinct values of this pattern differ by >= half the map's magnitude, far above
    # FLAT_ULPS epsilons in every dtype: a map has signal exactly when it is not constant
    flat = maps.flatten(1)
    has_signal = flat.amax(1) != flat.amin(1)
    for out in (normalize_max(maps), normalize_minmax(maps)):
        assert torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
        assert torch.equal(out.flatten(1).amax(1) == 1, has_signal)
        assert torch.equal(out.flatten(1).amax(1) == 0, ~has_signal)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("how", ["max", "minmax"])
def test_rounding_noise_is_judged_against_the_score(dtype, how):
    # score differences of an occlusion that changes nothing: a few epsilons of the score
    eps, score = torch.finfo(dtype).eps, torch.tensor([0.3, 0.3])
    noise = torch.tensor([[1.0, -2.0, 4.0, 0.0], [0.0, 8.0, 3.0, -1.0]]) * eps * score[:, None]
    maps = noise.view(2, 1, 2, 2).to(dtype)
    assert normalize(maps, how, scale=score, dtype=dtype).abs().max() == 0
    # without the score, the same noise is a map of its own magnitude: kept
    assert normalize(maps.abs(), how).amax() == 1
    # a real difference above FLAT_ULPS epsilons of the score survives
    signal = maps.clone()
    signal[0, 0, 0, 0] = 4 * FLAT_ULPS * eps * 0.3
    out = normalize(signal, how, scale=score, dtype=dtype)
    assert out[0].amax() == 1 and out[1].abs().max() == 0


def test_flatness_uses_the_coarser_of_map_and_model_dtype():
    # a float32 map computed by a bfloat16 model carries bfloat16 noise
    maps = torch.tensor([[1.0, 1.0 + 4 * torch.finfo(torch.bfloat16).eps]])
    assert not is_flat(maps)
    assert is_flat(maps, dtype=torch.bfloat16)


def test_perturbation_maps_are_judged_against_channels_times_score(model):
    images = IMAGES[:2]
    for name in ("occlusion", "feature_ablation"):
        method = explainer(name, model)
        with torch.no_grad():
            score = method.forward_func(images, TEXT[:2])
        text = method._resolve(images, (TEXT[:2],))[1]
        scale = method.noise_scale(images, text)
        assert torch.allclose(scale, 3 * score.abs(), rtol=1e-6)
    assert explainer("saliency", model).noise_scale(images, None) is None


FLAT_IMAGE_METHODS = ["occlusion", "feature_ablation", "matex"]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("value", [0.0, 0.25, -1.5, 1.0])
@pytest.mark.parametrize("name", FLAT_IMAGE_METHODS)
def test_a_flat_image_gives_an_all_zero_map(model, name, value, dtype):
    # a constant image holds no evidence anywhere: its map is zero by construction
    # (masked_fill), whatever the model's rounding on this CPU
    images = torch.full((2, 3, 16, 16), value).to(dtype)
    method = MATEX(model.to(dtype), TOKENIZER) if name == "matex" else explainer(name, model.to(dtype))
    try:
        with pytest.warns(UserWarning, match="no spatial variation"):
            maps = method.attribute(images, (TEXT[:2],))
    finally:
        model.float()
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
    # The comparison means something only for maps well above float16's flatness
    # threshold (32 epsilons, 3.1% of the scale); at it, float16 may rightly return zeros.
    # Grid maps get a 4 x 4 grid: on 2 x 2, MATEX's smoothing (sigma = 1 cell) leaves a
    # map of these images with a spread of 3.07% of its scale. Perturbation maps (score
    # differences, judged against the score) keep 2 x 2 cells: occluding 1/16 of a random
    # image moves this random model's score by less than float16 resolves.
    size = 16 if baselines.get(name).score_difference_maps else 32
    reference_model = make_clip(layers=3, image_size=size, patch=8, width=16).to(device)
    half_model = copy.deepcopy(reference_model).half()
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(8)).to(device)
    reference = explainer(name, reference_model).attribute(images, (TEXT,))
    half = explainer(name, half_model).attribute(images.half(), (TEXT,))
    assert half.dtype == torch.float16 and half.device == images.device
    assert torch.isfinite(half).all() and (half >= 0).all() and (half <= 1).all()
    error = (half.float() - reference).abs().max().item()
    assert error <= HALF_TOLERANCE, f"{name} on {device}: max |float16 - float32| = {error:.4f}"
