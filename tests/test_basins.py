"""EvidenceBasins: a prior that weighs whole regions of the model's evidence."""

import pytest
import torch

from captum_matex.stages import EvidenceBasins, Fusion, evidence_basins

GRID = (9, 11)


def bumps(*centres: tuple[int, int], heights=None, width: float = 1.5) -> torch.Tensor:
    r"""``(1, h * w)`` sum of Gaussian bumps on ``GRID`` (distinct values, no ties)."""
    ys, xs = torch.meshgrid(torch.arange(GRID[0]), torch.arange(GRID[1]), indexing="ij")
    total = torch.zeros(GRID, dtype=torch.float64)
    for (y, x), height in zip(centres, heights or [1.0] * len(centres)):
        total += height * torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * width**2))
    return total.flatten()[None]


def test_each_patch_climbs_to_the_peak_of_its_bump():
    evidence = bumps((2, 2), (6, 8), heights=[1.0, 0.6])
    basins = evidence_basins(evidence, GRID)[0]
    peaks = {2 * GRID[1] + 2, 6 * GRID[1] + 8}
    assert set(basins.tolist()) == peaks  # two bumps, two basins
    assert basins[2 * GRID[1] + 2] == 2 * GRID[1] + 2 and basins[6 * GRID[1] + 8] == 6 * GRID[1] + 8
    assert basins[0] == 2 * GRID[1] + 2 and basins[-1] == 6 * GRID[1] + 8  # the far corners
    assert (evidence[0, basins] >= evidence[0]).all()  # an ascent never goes down
    # only the order of the evidence counts: a monotone map of it has the same basins
    assert torch.equal(evidence_basins(evidence.sqrt() * 3 + 1, GRID)[0], basins)


def test_ties_are_broken_by_position_so_a_plateau_is_one_basin():
    flat = torch.zeros(2, GRID[0] * GRID[1])
    assert (evidence_basins(flat, GRID) == GRID[0] * GRID[1] - 1).all()  # all climb to the last
    ramp = torch.arange(12.0)[None]  # a strict ramp along a row: one basin at its top
    assert evidence_basins(ramp, (1, 12)).tolist() == [[11] * 12]
    assert evidence_basins(ramp.flip(1), (3, 4)).tolist() == [[0] * 12]


def test_the_prior_is_each_basins_evidence_weighted_mean_scaled_to_peak_one():
    evidence = bumps((2, 2), (6, 8), heights=[1.0, 0.6])
    prior = torch.zeros(GRID, dtype=torch.float64)
    prior[:, 6:] = 1.0  # the right of the film: holds all of the second bump, none of the first
    spread = EvidenceBasins()(evidence, prior.flatten()[None], GRID)[0]
    basins = evidence_basins(evidence, GRID)[0]
    e, p = evidence[0], prior.flatten()
    means = {int(q): float((e * p)[basins == q].sum() / e[basins == q].sum()) for q in basins.unique()}
    for peak, mean in means.items():
        assert torch.allclose(spread[basins == peak], torch.tensor(mean / max(means.values())).double())
    assert spread.max() == pytest.approx(1.0)
    first, second = spread[2 * GRID[1] + 2], spread[6 * GRID[1] + 8]
    assert second == pytest.approx(1.0) and 0.0 < first < 0.2  # the first bump's tail crosses x = 6


def test_reweighting_scales_whole_basins_and_keeps_their_shape():
    # zero somewhere, as the evidence is after its background is removed: the min-max
    # normalisation of the fused map then only divides
    evidence = (bumps((2, 2), (6, 8), heights=[1.0, 0.8]) - 0.05).clamp_min(0).float()
    prior = torch.zeros(GRID)
    prior[4:, 9:] = 1.0  # an atlas region across the second bump, its edge beside the peak
    prior = prior.flatten()[None]
    fusion = Fusion(sigma=0, basins=EvidenceBasins())
    fused = fusion(None, evidence, {"anatomy": prior}, grid=GRID)[0]
    basins = evidence_basins(evidence, GRID)[0]
    for peak in basins.unique():
        members = (basins == peak) & (evidence[0] > 0)
        ratio = fused[members] / evidence[0, members]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)  # the model's shape
    assert int(fused.argmax()) == 6 * GRID[1] + 8  # the prior chose the second bump ...
    # ... whose peak stays where the model put it; patch by patch the prior moves it
    by_patch = Fusion(sigma=0)(None, evidence, {"anatomy": prior}, grid=GRID)[0]
    assert int(by_patch.argmax()) != 6 * GRID[1] + 8


def test_without_evidence_the_prior_is_kept_and_the_grid_is_required():
    prior = torch.rand(2, GRID[0] * GRID[1])
    assert torch.equal(EvidenceBasins()(torch.zeros_like(prior), prior, GRID), prior)
    with pytest.raises(ValueError, match="evidence basins needs the patch grid"):
        Fusion(sigma=0, basins=EvidenceBasins())(None, torch.rand(2, 4), {"anatomy": torch.rand(2, 4)})


def test_rows_of_a_batch_are_independent():
    evidence = torch.cat([bumps((2, 2), (6, 8)), bumps((4, 5))])
    prior = torch.rand(2, GRID[0] * GRID[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    together = EvidenceBasins()(evidence, prior, GRID)
    alone = torch.cat([EvidenceBasins()(evidence[i : i + 1], prior[i : i + 1], GRID) for i in range(2)])
    assert torch.allclose(together, alone, rtol=1e-12)


@pytest.mark.parametrize("readout", ["class token", "attention probe", "decoder"])
def test_matex_weighs_basins_on_a_drawn_atlas_and_patches_on_a_fitted_one(readout):
    from types import SimpleNamespace

    from captum_matex.matex import REGION_SMOOTHING, default_fusion
    from captum_matex.stages import AnatomicalPrior, ChestAtlas

    lung = torch.zeros(32, 32)
    lung[8:24, 4:14] = 1.0
    one_lung = ChestAtlas(masks={"right lung": lung})
    fitted = ChestAtlas(masks={"right lung": lung, "Left Lung": lung, "heart": lung})
    assert not ChestAtlas().fitted and not one_lung.fitted and fitted.fitted
    adapter = SimpleNamespace(capabilities=frozenset({readout}))
    drawn = default_fusion(adapter, AnatomicalPrior())
    assert isinstance(drawn.basins, EvidenceBasins) and drawn.region_smoothing is None
    for prior in (AnatomicalPrior(atlas=fitted), None, object()):  # fitted, none, a custom stage
        fusion = default_fusion(adapter, prior)
        assert fusion.basins is None
        assert (fusion.region_smoothing is not None) == REGION_SMOOTHING[readout]


def test_several_priors_share_one_set_of_basins():
    evidence = torch.cat([bumps((2, 2), (6, 8)), bumps((4, 5), (1, 9), heights=[0.7, 1.0])])
    generator = torch.Generator().manual_seed(1)
    priors = {name: torch.rand(2, GRID[0] * GRID[1], dtype=torch.float64, generator=generator)
              for name in ("anatomy", "text")}
    spread = EvidenceBasins().spread(evidence, priors, GRID)
    assert list(spread) == ["anatomy", "text"]
    for name, prior in priors.items():  # the same as spreading each prior on its own
        assert torch.equal(spread[name], EvidenceBasins()(evidence, prior, GRID))
