"""Metrics pinned to their reference formulas on hand-computed toys, plus edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from captum_matex import metrics
from captum_matex.metrics import (
    METRICS,
    boxes_to_mask,
    cnr,
    confidence_drop,
    confidence_drop_increase,
    confidence_increase,
    deletion_auc,
    energy_pointing_game,
    gaussian_blur,
    infidelity,
    insertion_auc,
    miou,
    minmax_normalize,
    perturbation_curve,
    pixel_auroc,
    pointing_game,
    prompt_sensitivity,
    randomisation_spearman,
    randomized_model,
    sensitivity_max,
    spearman,
    swap_laterality,
    top_k_precision,
)

LOCALISATION = [pointing_game, energy_pointing_game, miou, cnr, pixel_auroc, top_k_precision]


@pytest.fixture
def toy():
    """A 4x4 map whose box is the top-left 2x2 square (values worked out by hand below)."""
    m = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0],
         [1.0, 3.0, 0.0, 0.0],
         [0.0, 0.0, 0.0, 0.0],
         [0.0, 0.0, 0.0, 2.0]]
    )[None]
    mask = boxes_to_mask([[(0, 0, 2, 2)]], (4, 4))
    return m, mask


def close(value, expected, tol=1e-6):
    assert abs(float(value.flatten()[0]) - expected) < tol, (float(value.flatten()[0]), expected)


# --- localisation: hand-computed values -----------------------------------------------------


def test_boxes_to_mask_unites_boxes_and_keeps_empty_samples_empty():
    masks = boxes_to_mask([[(0, 0, 2, 2), (2, 2, 2, 2)], []], (4, 4))
    assert masks.shape == (2, 4, 4) and masks.dtype == torch.bool
    assert masks[0].sum() == 8 and masks[0, 3, 3] and not masks[0, 0, 3]
    assert not masks[1].any()


def test_cnr_by_hand(toy):
    m, mask = toy
    # inside {1,1,1,3}: mean 1.5, var 0.75; outside {2, 11 zeros}: mean 1/6, var 1/3 - 1/36
    expected = (1.5 - 1 / 6) / math.sqrt(0.75 + 11 / 36)  # = 8 / sqrt(38)
    close(cnr(m, mask), expected)
    close(cnr(3 * m - 7, mask), expected)  # affine invariance: normalisation does not matter
    close(cnr(m[:, None].expand(1, 3, 4, 4), mask), expected)  # channels summed


def test_energy_pointing_game_by_hand(toy):
    m, mask = toy
    close(energy_pointing_game(m, mask), 6 / 8)
    neg = m.clone()
    neg[0, 2, 2] = -5.0  # negative values are clipped to zero
    close(energy_pointing_game(neg, mask), 6 / 8)


def test_miou_by_hand(toy):
    m, mask = toy
    # min-max: inside 1/3,1/3,1/3,1; outside one pixel at 2/3.
    # t = .1,.2,.3 -> predicted 5 pixels, IoU 4/5; t = .4,.5 -> 2 pixels, IoU 1/5
    close(miou(m, mask), (3 * 0.8 + 2 * 0.2) / 5)
    close(miou(m, mask, thresholds=[0.5]), 0.2)


def test_pixel_auroc_matches_brute_force_pairwise_count():
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 4, (3, 6, 5), generator=g).float()  # many ties
    masks = torch.rand(3, 6, 5, generator=g) > 0.6
    got = pixel_auroc(maps, masks)
    for i in range(3):
        pos = maps[i][masks[i]]
        neg = maps[i][~masks[i]]
        diff = pos[:, None] - neg[None, :]
        expected = ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()
        assert abs(float(got[i]) - float(expected)) < 1e-6


def test_top_k_precision_by_hand_with_ties(toy):
    m, mask = toy
    # k = 4: above the 4th value (1): {3 in, 2 out}; 2 places left for three tied 1s, all inside
    close(top_k_precision(m, mask, fraction=0.25), 3 / 4)
    close(top_k_precision(m, mask, fraction=1 / 16), 1.0)  # k = 1: the 3 is inside
    tied = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    one_in = torch.tensor([[[True, False], [False, False]]])
    close(top_k_precision(tied, one_in, fraction=0.5), 1 / 3)  # 2 of 3 tied pixels, 1/3 inside


def test_pointing_game_hit_miss_and_tolerance(toy):
    m, mask = toy
    close(pointing_game(m, mask), 1.0)
    far = torch.zeros(1, 4, 4)
    far[0, 3, 3] = 1.0
    close(pointing_game(far, mask), 0.0)
    close(pointing_game(far, mask, tolerance=2), 1.0)


def test_metrics_are_batched_and_per_sample(toy):
    m, mask = toy
    maps = torch.cat([m, m.flip(-1)])
    masks = torch.cat([mask, mask])
    for fn in LOCALISATION:
        out = fn(maps, masks)
        assert out.shape == (2,)
        assert abs(float(out[0]) - float(fn(m, mask)[0])) < 1e-6


# --- localisation: edge cases -----------------------------------------------------------------


def test_empty_mask_gives_nan_for_every_localisation_metric(toy):
    m, _ = toy
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    for fn in LOCALISATION:
        assert torch.isnan(fn(m, empty)).all(), fn.__name__
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert torch.isnan(cnr(m, full)).all() and torch.isnan(pixel_auroc(m, full)).all()


CHANCE = {  # constant map, box of 4 of 16 pixels
    "pointing_game": 0.0, "energy_pointing_game": 0.25, "miou": 0.0, "cnr": 0.0,
    "pixel_auroc": 0.5, "top_k_precision": 0.25,
}


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_constant_map_scores_chance_level(toy, value):
    _, mask = toy
    constant = torch.full((1, 4, 4), value)
    for fn in LOCALISATION:
        close(fn(constant, mask), CHANCE[fn.__name__])


def test_nan_map_scores_as_constant_with_a_warning(toy):
    m, mask = toy
    bad = m.clone()
    bad[0, 1, 1] = float("nan")  # the NaN sits on the true maximum: must not be a hit
    for fn in LOCALISATION:
        with pytest.warns(RuntimeWarning, match="NaN or inf"):
            out = fn(torch.cat([bad, m]), torch.cat([mask, mask]))
        close(out[:1], CHANCE[fn.__name__])
        assert abs(float(out[1]) - float(fn(m, mask)[0])) < 1e-6  # other samples unaffected


def test_shape_mismatch_names_the_fix(toy):
    m, _ = toy
    with pytest.raises(ValueError, match="boxes_to_mask"):
        cnr(m, torch.zeros(1, 8, 8, dtype=torch.bool))


def test_minmax_normalize():
    x = torch.tensor([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]])
    assert torch.equal(minmax_normalize(x), torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))


# --- faithfulness ---------------------------------------------------------------------------


def scaled_mean(images, scale):
    """Toy score: a per-sample scale times the image mean."""
    return scale * images.mean((1, 2, 3))


def test_confidence_drop_and_increase_as_m2ib_reports_them():
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4), torch.ones(1, 4, 4)])
    maps = torch.stack([torch.full((4, 4), 0.5), torch.full((4, 4), 0.5), torch.ones(4, 4)])
    scale = torch.tensor([1.0, 1.0, 2.0])
    # s(x) = 1, -1, 2;  s(x * M) = 0.5, -0.5, 2
    drop, incr = confidence_drop_increase(scaled_mean, images, maps, (scale,))
    assert torch.allclose(drop, torch.tensor([50.0, 0.0, 0.0]))
    assert torch.equal(incr, torch.tensor([0.0, 100.0, 0.0]))
    assert torch.equal(confidence_drop(scaled_mean, images, maps, (scale,)), drop)
    assert torch.equal(confidence_increase(scaled_mean, images, maps, (scale,)), incr)
    # mean over the data set = the reported numbers
    assert abs(float(drop.mean()) - 50 / 3) < 1e-5 and abs(float(incr.mean()) - 100 / 3) < 1e-5


def test_confidence_drop_rejects_unnormalised_maps_and_flags_nan_maps():
    images = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match="minmax_normalize"):
        confidence_drop(scaled_mean, images, torch.full((2, 4, 4), 2.0), (torch.ones(2),))
    maps = torch.full((2, 4, 4), 0.5)
    maps[1, 0, 0] = float("nan")
    drop = confidence_drop(scaled_mean, images, maps, (torch.ones(2),))
    assert float(drop[0]) == pytest.approx(50.0) and torch.isnan(drop[1])


def region_score(images, scale):
    """Toy score: scale times the mean of the top-left 2x2 region (what the map should find)."""
    return scale * images[:, :, :2, :2].mean((1, 2, 3))


def test_deletion_and_insertion_auc_on_a_toy_with_a_known_answer():
    images = torch.ones(2, 1, 4, 4)
    region = torch.zeros(4, 4)
    region[:2, :2] = 1.0
    good = torch.stack([region, region])
    scale = torch.tensor([1.0, 2.0])
    # 16 pixels, 4 per step: deletion curve s * [1, 0, 0, 0, 0] -> AUC s * 0.125
    fractions, curves = perturbation_curve(
        region_score, images, good, (scale,), "deletion", patch_size=2, max_batch_size=3
    )
    assert torch.allclose(fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert torch.allclose(curves, scale[:, None] * torch.tensor([1.0, 0, 0, 0, 0]))
    assert torch.allclose(deletion_auc(region_score, images, good, (scale,), patch_size=2),
                          scale * 0.125)
    # insertion on a zero baseline: s * [0, 1, 1, 1, 1] -> s * 0.875
    assert torch.allclose(
        insertion_auc(region_score, images, good, (scale,), patch_size=2, baseline="zeros"),
        scale * 0.875,
    )
    # the worst map removes the region last: s * [1, 1, 1, 1, 0] -> s * 0.875
    bad = 1 - good
    assert torch.allclose(deletion_auc(region_score, images, bad, (scale,), patch_size=2),
                          scale * 0.875)
    # normalised by s(x): independent of the scale
    assert torch.allclose(
        deletion_auc(region_score, images, good, (scale,), patch_size=2, normalize=True),
        torch.tensor([0.125, 0.125]),
    )


def test_deletion_partial_last_step_nan_map_and_blur_baseline():
    images = torch.ones(1, 1, 5, 5)
    maps = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(0))
    fractions, curves = perturbation_curve(region_score, images, maps, (torch.ones(1),),
                                           patch_size=2)
    assert fractions.shape == (8,) and float(fractions[-1]) == 1.0  # 25 px, 4 per step
    maps[0, 0, 0] = float("nan")
    assert torch.isnan(deletion_auc(region_score, images, maps, (torch.ones(1),), patch_size=2)).all()
    flat = torch.full((1, 3, 6, 6), 0.3)
    assert torch.allclose(gaussian_blur(flat), flat)


def test_infidelity_wrapper_is_zero_for_the_exact_gradient_of_a_linear_score():
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(1, 3, 4, 4, generator=g)
    images = torch.randn(2, 3, 4, 4, generator=g)

    def linear(x):
        return (x * weights).sum((1, 2, 3))

    state = torch.get_rng_state()
    exact = infidelity(linear, images, weights.expand(2, -1, -1, -1), normalize=False)
    assert torch.equal(torch.get_rng_state(), state)  # seeded without touching the global RNG
    assert exact.shape == (2,) and float(exact.abs().max()) < 1e-8
    wrong = infidelity(linear, images, torch.rand(2, 4, 4, generator=g), normalize=False)
    assert (wrong > 1e-3).all()


def test_sensitivity_max_wrapper():
    images = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5

    def constant(x, additional_forward_args=None):
        return torch.ones_like(x)

    def squared(x, additional_forward_args=None):
        (scale,) = additional_forward_args
        return x**2 * scale[:, None, None, None]

    assert torch.allclose(sensitivity_max(constant, images, n_perturb_samples=3), torch.zeros(2))
    sens = sensitivity_max(squared, images, n_perturb_samples=3,
                           additional_forward_args=(torch.ones(2),))
    assert sens.shape == (2,) and (sens > 0).all()


def test_faithfulness_metrics_run_on_a_real_clip_through_similarity_forward(
    clip_model, tokenizer, images
):
    from captum_matex import MATEX, SimilarityForward

    ids = tokenizer(["left pleural effusion", "right upper lobe opacity"], padding="max_length",
                    max_length=16, return_tensors="pt")["input_ids"]
    images = images[:2]
    forward = SimilarityForward(clip_model)
    explainer = MATEX(clip_model, tokenizer)
    maps = explainer.attribute(images, (ids,))
    unit = minmax_normalize(maps)
    drop, incr = confidence_drop_increase(forward, images, unit, (ids,))
    assert drop.shape == incr.shape == (2,) and torch.isfinite(drop).all()
    dele = deletion_auc(forward, images, maps, (ids,), patch_size=8)
    _, curves = perturbation_curve(forward, images, maps, (ids,), patch_size=8)
    assert torch.allclose(curves[:, 0], forward(images, ids), atol=1e-5)  # step 0 = s(x)
    assert torch.allclose(dele, torch.trapezoid(curves, dx=1 / (curves.shape[1] - 1), dim=1))
    ins = insertion_auc(forward, images, maps, (ids,), patch_size=8)
    assert torch.isfinite(ins).all()
    infid = infidelity(forward, images, maps, (ids,), n_perturb_samples=2)
    sens = sensitivity_max(explainer.attribute, images, n_perturb_samples=2,
                           additional_forward_args=(ids,))
    assert infid.shape == sens.shape == (2,) and (infid >= 0).all() and (sens >= 0).all()


# --- sanity ---------------------------------------------------------------------------------


def test_spearman_with_ties_by_hand():
    a = torch.tensor([[[1.0, 2.0, 2.0, 3.0]]])
    b = torch.tensor([[[1.0, 3.0, 2.0, 2.0]]])
    # ranks a = [1, 2.5, 2.5, 4], b = [1, 4, 2.5, 2.5]: centred [-1.5,0,0,1.5], [-1.5,1.5,0,0]
    # Pearson = 2.25 / sqrt(4.5 * 4.5) = 0.5
    close(spearman(a, b), 0.5)
    close(randomisation_spearman(a, 10 * a + 1), 1.0)
    close(spearman(a, -a), -1.0)
    constant = torch.ones(1, 1, 4)
    assert torch.isnan(spearman(a, constant)).all()  # undefined, as in scipy
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    assert torch.isnan(spearman(nan, a)).all()


def test_prompt_sensitivity_measures():
    a = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    close(prompt_sensitivity(a, a), 0.0)
    close(prompt_sensitivity(a, -a), 2.0)
    left = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    close(prompt_sensitivity(left, left.flip(-1), measure="l1"), 1.0)
    close(prompt_sensitivity(left, 5 * left, measure="l1"), 0.0)
    assert torch.isnan(prompt_sensitivity(left, torch.zeros_like(left), measure="l1")).all()


def test_swap_laterality():
    assert swap_laterality("Left lower lobe opacity, right effusion") == (
        "Right lower lobe opacity, left effusion"
    )
    assert swap_laterality("RIGHT apex") == "LEFT apex"
    assert swap_laterality("bilateral effusions, upright film") == "bilateral effusions, upright film"


def _params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_randomized_model_top_blocks_changes_only_those_and_leaves_original(clip_model):
    with torch.no_grad():  # trained-looking norms, so a reset to 1/0 is visible
        for p in clip_model.vision_model.encoder.layers[2].layer_norm1.parameters():
            p.fill_(2.0)
    before = _params(clip_model)
    state = torch.get_rng_state()
    copy = randomized_model(clip_model, num_blocks=1, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    after = _params(copy)
    for name, value in _params(clip_model).items():  # original untouched
        assert torch.equal(value, before[name]), name
    for name, value in after.items():
        changed = not torch.equal(value, before[name])
        if name.startswith("vision_model.encoder.layers.2."):
            if "layer_norm2" not in name:  # already at its init (1, 0) in the fixture
                assert changed, name
        else:
            assert not changed, name
    ln = copy.vision_model.encoder.layers[2].layer_norm1
    assert torch.equal(ln.weight, torch.ones_like(ln.weight))
    again = _params(randomized_model(clip_model, num_blocks=1, seed=0))
    assert all(torch.equal(again[k], after[k]) for k in after)  # seeded
    with pytest.raises(ValueError, match="num_blocks"):
        randomized_model(clip_model, num_blocks=4)


def test_randomized_model_full_cascade_spares_the_text_tower(clip_model, tokenizer, images):
    from captum_matex import SimilarityForward

    before = _params(clip_model)
    copy = randomized_model(clip_model, seed=1)
    after = _params(copy)
    for name in ("vision_model.embeddings.patch_embedding.weight",
                 "vision_model.embeddings.class_embedding",
                 "vision_model.embeddings.position_embedding.weight",
                 "vision_model.encoder.layers.0.self_attn.q_proj.weight",
                 "vision_model.encoder.layers.0.mlp.fc1.weight",
                 "visual_projection.weight"):
        assert not torch.equal(after[name], before[name]), name
    for name, value in after.items():
        if name.startswith(("text_model.", "text_projection", "logit_scale")):
            assert torch.equal(value, before[name]), name
    ids = tokenizer(["left pleural effusion"] * 4, padding="max_length", max_length=16,
                    return_tensors="pt")["input_ids"]
    trained = SimilarityForward(clip_model)(images, ids)
    random = SimilarityForward(copy)(images, ids)
    assert not torch.allclose(trained, random)


# --- registry -------------------------------------------------------------------------------


def test_registry_declares_direction_and_category_for_every_metric():
    expected_direction = {
        "pointing_game": True, "energy_pointing_game": True, "miou": True, "cnr": True,
        "pixel_auroc": True, "top_k_precision": True, "confidence_drop": False,
        "confidence_increase": True, "deletion_auc": False, "insertion_auc": True,
        "infidelity": False, "sensitivity_max": False, "randomisation_spearman": False,
        "prompt_sensitivity": True, "empty_side_peak": False, "discrimination": True,
    }
    assert {k: v.higher_is_better for k, v in METRICS.items()} == expected_direction
    for name, info in METRICS.items():
        assert info.category in ("localisation", "faithfulness", "sanity")
        assert info.fn is getattr(metrics, name)
        assert "better" in info.fn.__doc__.lower(), name
