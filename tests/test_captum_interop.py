"""MATEX inside Captum's own machinery: visualisation, metrics, NoiseTunnel, built-ins."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from conftest import PHRASES
from helpers import assert_valid_maps

from captum_matex import MATEX, SimilarityForward


@pytest.fixture
def ids(tokenizer):
    return tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]


def test_visualize_image_attr_accepts_matex_output(clip_model, tokenizer, images):
    maps = MATEX(clip_model, tokenizer).attribute(images, (PHRASES,))
    original = images[0].permute(1, 2, 0).numpy()
    original = (original - original.min()) / (original.max() - original.min())
    fig, _ = viz.visualize_image_attr(
        maps[0].permute(1, 2, 0).numpy(), original, method="blended_heat_map",
        sign="positive", use_pyplot=False,
    )
    assert fig is not None


def test_infidelity_and_sensitivity_run_on_matex(clip_model, tokenizer, images, ids):
    explainer = MATEX(clip_model, tokenizer)
    maps = explainer.attribute(images, (ids,))

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.05
        return noise, inputs - noise

    torch.manual_seed(0)
    infid = infidelity(explainer.forward_func, perturb, images, maps, additional_forward_args=(ids,),
                       n_perturb_samples=4, normalize=True)
    assert infid.shape == (4,) and torch.isfinite(infid).all() and (infid >= 0).all()
    sens = sensitivity_max(explainer.attribute, images, additional_forward_args=(ids,),
                           n_perturb_samples=2, perturb_radius=0.02)
    assert sens.shape == (4,) and torch.isfinite(sens).all() and (sens >= 0).all()


def test_noise_tunnel_over_matex(clip_model, tokenizer, images, ids):
    explainer = MATEX(clip_model, tokenizer)
    plain = explainer.attribute(images, (ids,))
    torch.manual_seed(0)
    smooth = NoiseTunnel(explainer).attribute(images, nt_type="smoothgrad", nt_samples=3,
                                              stdevs=0.1, additional_forward_args=(ids,))
    assert_valid_maps(smooth, images)
    assert not torch.allclose(smooth, plain)
    torch.manual_seed(0)
    tiny = NoiseTunnel(explainer).attribute(images, nt_type="smoothgrad", nt_samples=2,
                                            stdevs=1e-6, additional_forward_args=(ids,))
    torch.testing.assert_close(tiny, plain, atol=1e-3, rtol=0)


def test_similarity_forward_is_the_score_matex_explains(clip_model, tokenizer, images, ids):
    forward = SimilarityForward(clip_model, tokenizer)
    _, diag = MATEX(clip_model, tokenizer).attribute(images, (ids,), return_diagnostics=True)
    torch.testing.assert_close(forward(images, ids).detach(), diag.score, atol=1e-5, rtol=0)
    torch.testing.assert_close(forward(images, PHRASES).detach(), diag.score, atol=1e-5, rtol=0)


def test_captum_builtins_run_on_the_same_score_and_inputs(clip_model, tokenizer, images, ids):
    forward = SimilarityForward(clip_model, tokenizer)
    sal = Saliency(forward).attribute(images, additional_forward_args=(ids,))
    ig = IntegratedGradients(forward).attribute(images, additional_forward_args=(ids,), n_steps=8,
                                                internal_batch_size=8)
    occ = Occlusion(forward).attribute(images, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8),
                                       additional_forward_args=(ids,))
    for attr in (sal, ig, occ):
        assert attr.shape == images.shape and torch.isfinite(attr).all()
        assert attr.abs().sum() > 0
    # occlusion on the patch grid: each 8x8 window carries one value
    assert occ[0, 0, :8, :8].unique().numel() == 1
    # integrated gradients' completeness: sum of attributions ~ s(x) - s(0)
    baseline_score = forward(torch.zeros_like(images), ids)
    delta = ig.flatten(1).sum(1) - (forward(images, ids) - baseline_score)
    assert delta.abs().max() < 0.05
