"""Each MATEX stage on tiny hand-computed tensors."""

import math

import pytest
import torch
from captum.testing.helpers.basic import assertTensorAlmostEqual

from captum_matex._maps import gaussian_smooth, normalize_max, normalize_minmax
from captum_matex.stages.attention import GradWeightedAttention
from captum_matex.stages.consistency import LayerConsistency, pearson_matrix
from captum_matex.stages.fusion import Fusion
from captum_matex.stages.gate import PriorGate
from captum_matex.stages.rollout import MultiScaleRollout, rollout
from captum_matex.stages.rollout import rollout as rollout_product
from captum_matex.stages.text_prior import PatchTextPrior


def test_grad_weighted_attention_is_mean_over_heads_of_positive_part():
    attn = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.2, 0.8], [0.6, 0.4]]]])
    grad = torch.tensor([[[[2.0, -1.0], [1.0, 3.0]], [[-5.0, 1.0], [0.5, 1.0]]]])
    out = GradWeightedAttention()([attn], [grad])
    # head 0: relu([[1, -0.5], [1, 0]]) ; head 1: relu([[-1, 0.8], [0.3, 0.4]])
    expected = torch.tensor([[[[1.0 / 2, 0.8 / 2], [1.3 / 2, 0.4 / 2]]]])
    assertTensorAlmostEqual(None, out, expected, delta=1e-6, mode="max")
    out_max = GradWeightedAttention("max")([attn], [grad])
    assertTensorAlmostEqual(None, out_max, torch.tensor([[[[1.0, 0.8], [1.0, 0.4]]]]), delta=1e-6, mode="max")


def test_rollout_of_known_attention():
    # block 0: CLS fully attends to patch 1; block 1: patch 1 attends to patch 2
    a0 = torch.zeros(3, 3)
    a0[0, 1] = 1.0
    a1 = torch.zeros(3, 3)
    a1[1, 2] = 1.0
    rel = torch.stack([a0, a1])[None]
    m0 = torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    m1 = torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0, 1]])
    assertTensorAlmostEqual(None, rollout(rel)[0], m1 @ m0, delta=1e-6, mode="max")
    maps = MultiScaleRollout(windows=(1, 2))(rel, num_prefix_tokens=1)
    assert maps.shape == (1, 2, 2)
    # last block only: CLS row of m1 -> patches [0, 0]; both blocks: CLS row of m1 @ m0
    assertTensorAlmostEqual(None, maps[0, 0], torch.tensor([0.0, 0.0]), delta=1e-6, mode="max")
    assertTensorAlmostEqual(None, maps[0, 1], (m1 @ m0)[0, 1:], delta=1e-6, mode="max")


@pytest.mark.parametrize("num_layers,expected", [
    (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 4]), (6, [1, 2, 3, 6]), (12, [1, 3, 6, 12]),
])
def test_default_windows_cover_every_block_and_no_window_twice(num_layers, expected):
    rollout = MultiScaleRollout()
    depths = rollout.depths(num_layers)
    assert depths == expected
    # every block is in the deepest window; no two windows cover the same blocks
    assert max(depths) == num_layers and len(set(depths)) == len(depths)
    # each window's map is the rollout of exactly its blocks, read at the CLS row
    gen = torch.Generator().manual_seed(num_layers)
    relevance = torch.rand(1, num_layers, 6, 6, generator=gen)
    maps = rollout(relevance, 1)
    assert maps.shape == (1, len(expected), 5)
    for k, depth in enumerate(depths):
        direct = rollout_product(relevance[:, num_layers - depth:])[:, 0, 1:]
        assertTensorAlmostEqual(None, maps[:, k], direct, delta=1e-6, mode="max")


def test_rollout_window_depths():
    assert MultiScaleRollout((1, 0.25, 0.5, 1.0)).depths(12) == [1, 3, 6, 12]
    assert MultiScaleRollout((1, 0.25, 0.5, 1.0)).depths(4) == [1, 2, 4]
    assert MultiScaleRollout((20,)).depths(4) == [4]
    assert MultiScaleRollout((1.0, 1)).depths(5) == [1, 5]  # shallowest first
    for bad in [(), (0,), (1.5,), (True,)]:
        with pytest.raises(ValueError):
            MultiScaleRollout(bad)


def _relevance_from_cls_rows(rows: torch.Tensor) -> torch.Tensor:
    """(L, N) CLS rows -> (1, L, 1 + N, 1 + N) relevance with those rows."""
    num_layers, n = rows.shape
    rel = torch.zeros(1, num_layers, n + 1, n + 1)
    rel[0, :, 0, 1:] = rows
    return rel


def test_consistency_identical_layers_get_equal_weights():
    rows = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    result = LayerConsistency(temperature=0.1)(_relevance_from_cls_rows(rows), 1)
    assertTensorAlmostEqual(None, result.weights, torch.full((1, 4), 0.25), delta=1e-6, mode="max")
    assertTensorAlmostEqual(None, result.map, rows[:1], delta=1e-6, mode="max")


def test_consistency_down_weights_a_disagreeing_layer():
    rows = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    tau = 0.5
    result = LayerConsistency(temperature=tau)(_relevance_from_cls_rows(rows), 1)
    # corr(l0, l1) = 1, corr(l0, l2) = corr(l1, l2) = -1/3 (hand computed)
    agreement = torch.tensor([1 / 3, 1 / 3, -1 / 3])
    assertTensorAlmostEqual(None, result.agreement[0], agreement, delta=1e-5, mode="max")
    weights = torch.softmax(agreement / tau, 0)
    assertTensorAlmostEqual(None, result.weights[0], weights, delta=1e-5, mode="max")
    expected = weights[0] * torch.tensor([1.0, 0, 0, 0]) * 2 + weights[2] * torch.tensor([0, 0, 0, 1.0])
    assertTensorAlmostEqual(None, result.map[0], expected, delta=1e-5, mode="max")


def test_pearson_matrix_constant_row_is_uncorrelated():
    corr = pearson_matrix(torch.tensor([[[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]]))
    assertTensorAlmostEqual(None, corr[0], torch.eye(2), delta=1e-6, mode="max")


def test_patch_text_prior_peaks_where_patch_matches_text():
    text = torch.tensor([[1.0, 0.0]])
    patches = torch.tensor([[[0.0, 1.0]] * 9])
    patches[0, 4] = torch.tensor([1.0, 0.0])  # centre of a 3x3 grid
    prior = PatchTextPrior(sigma=0)(patches, text, (3, 3))
    assertTensorAlmostEqual(None, prior[0], torch.eye(9)[4], delta=1e-6, mode="max")
    smooth = PatchTextPrior(sigma=1.0)(patches, text, (3, 3))
    assert smooth[0].argmax() == 4 and smooth[0].max() == 1.0 and smooth[0].min() > 0


def test_patch_text_prior_without_positive_similarity_is_uniform():
    prior = PatchTextPrior()(-torch.ones(1, 4, 2), torch.ones(1, 2), (2, 2))
    assertTensorAlmostEqual(None, prior, torch.ones(1, 4), delta=0, mode="max")


def test_fusion_formula():
    rollouts = torch.tensor([[[1.0, 0.0, 0.5], [2.0, 2.0, 0.0]]])  # max-normalised: [1,0,.5], [1,1,0]
    consistency = torch.tensor([[0.0, 4.0, 4.0]])  # -> [0, 1, 1]
    prior = torch.tensor([[1.0, 0.0, 1.0]])
    fusion = Fusion(alpha=0.5, floors={"anatomy": 0.25}, sigma=0, gate=None)
    evidence = 0.5 * torch.tensor([1.0, 0.5, 0.25]) + 0.5 * torch.tensor([0.0, 1.0, 1.0])
    assertTensorAlmostEqual(None, fusion.evidence(rollouts, consistency)[0], evidence, delta=1e-6, mode="max")
    raw = evidence * torch.tensor([1.0, 0.25, 1.0])
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    out = fusion(rollouts, consistency, {"anatomy": prior})
    assertTensorAlmostEqual(None, out[0], expected, delta=1e-6, mode="max")


def test_fusion_reweight_with_a_box_prior_raises_the_cnr_of_any_evidence_it_is_opened_on():
    from captum_matex.metrics import cnr

    # inside the box the map is unchanged, outside it is scaled by the floor: the contrast
    # (mu_in - f mu_out) grows and the outside spread shrinks, so CNR cannot fall; the
    # same formula at pixels as on the patch grid
    torch.manual_seed(0)
    evidence = torch.rand(16, 12, 12)
    box = torch.zeros(16, 12, 12)
    box[:, 3:7, 2:8] = 1
    masks = box.bool()
    opened = Fusion().reweight(evidence, {"anatomy": box}, {"anatomy": torch.ones(16, 1)})
    assert (cnr(opened, masks) > cnr(evidence, masks)).all()
    torch.testing.assert_close(opened, normalize_minmax(evidence * (0.5 + 0.5 * box)))


def test_fusion_reweight_with_a_closed_gate_leaves_the_evidence_as_it_is():
    torch.manual_seed(1)
    evidence, prior = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
    fusion = Fusion(floors={"anatomy": 0.25})
    closed = fusion.reweight(evidence, {"anatomy": prior}, {"anatomy": torch.zeros(3, 1)})
    torch.testing.assert_close(closed, normalize_minmax(evidence))


def test_fusion_prior_cannot_create_evidence():
    evidence = torch.tensor([[[0.0, 0.0, 1.0, 0.5]]])
    prior = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # prior points where there is no evidence
    out = Fusion(alpha=1.0, sigma=0, gate=None)(evidence, None, {"anatomy": prior})
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 2] == 1.0
    for bad in [dict(alpha=1.5), dict(default_floor=0.0), dict(floors={"text": 1.2})]:
        with pytest.raises(ValueError):
            Fusion(**bad)


def test_fusion_smoothing_spreads_evidence_before_the_priors():
    evidence = torch.zeros(1, 1, 25)
    evidence[0, 0, 12] = 1.0  # one hot cell in the middle of a 5 x 5 grid
    sharp = Fusion(alpha=1.0, sigma=0)(evidence, None, {}, grid=(5, 5))
    smooth = Fusion(alpha=1.0, sigma=1.0)(evidence, None, {}, grid=(5, 5))
    assert (sharp > 0).sum() == 1 and (smooth > 0).sum() == 21  # all but the 4 corners (min)
    assert smooth.view(5, 5).argmax() == 12
    w0, w1, w2 = (torch.exp(torch.tensor(-0.5 * k * k)).item() for k in (0, 1, 2))
    # separable Gaussian (radius 2, reflected borders): centre w0^2, its
    # neighbour w0 w1, a corner (2 w2)^2 (the centre is 2 cells away on both sides)
    neighbour = (w0 * w1 - 4 * w2 * w2) / (w0 * w0 - 4 * w2 * w2)
    assert smooth.view(5, 5)[2, 1].item() == pytest.approx(neighbour, abs=1e-5)
    with pytest.raises(ValueError, match="needs the patch grid"):
        Fusion(sigma=1.0)(evidence, None, {})
    with pytest.raises(ValueError, match="sigma"):
        Fusion(sigma=-1.0)


def test_fusion_background_removes_evidence_up_to_the_quantile():
    evidence = torch.arange(16.0).view(1, 1, 16)  # the median of 0..15 is 7.5 (linear interpolation)
    plain = Fusion(alpha=1.0, sigma=0)(evidence, None, {}, grid=(4, 4))
    out = Fusion(alpha=1.0, sigma=0, background=0.5)(evidence, None, {}, grid=(4, 4))
    # relu(e - 7.5) / 7.5: small integers and halves, exact in float32 up to one rounding of the division
    expected = (torch.arange(16.0) - 7.5).clamp_min(0) / 7.5
    assertTensorAlmostEqual(None, out[0], expected, delta=1e-6, mode="max")
    assert (out[0, :8] == 0).all() and (plain[0, :8] > 0).sum() == 7  # min-max alone keeps 1..7
    # per sample: a second map, scaled and shifted, loses its own lower half
    two = torch.cat([evidence, 3 * evidence + 5], 0)
    both = Fusion(alpha=1.0, sigma=0, background=0.5)(two, None, {}, grid=(4, 4))
    assertTensorAlmostEqual(None, both[1], expected, delta=1e-6, mode="max")
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="background"):
            Fusion(background=bad)


def test_fusion_gate_reads_the_evidence_above_its_background():
    # a brightness ramp across the columns (background) plus a bump in the prior's region
    grid = (4, 4)
    evidence = torch.arange(4.0).repeat(4) * 0.2
    evidence[[5, 6]] += 1.0
    prior = torch.zeros(1, 16)
    prior[0, [5, 6, 9, 10]] = 1.0  # centred: no side to check
    gate = PriorGate()
    whole = float(gate(evidence[None], prior, grid))
    above = float(gate((evidence - evidence.quantile(0.5)).clamp_min(0)[None], prior, grid))
    assert above > whole + 0.3  # measured 0.88 against 0.44: the ramp no longer dilutes the lift

    def fused(background):
        fusion = Fusion(alpha=1.0, sigma=0, background=background, gate=gate, floors={"anatomy": 0.25})
        return fusion(evidence.view(1, 1, 16), None, {"anatomy": prior}, grid)[0]

    # the prior acts further with the background removed: cells outside it keep less
    outside = prior[0] == 0
    kept = fused(0.5)[outside & (fused(0.5) > 0)]
    assert fused(None)[outside].amax() > kept.amax()


def test_normalisations_are_finite_on_degenerate_maps():
    # (x - min) / (max - min) on these values is exact in float32, hence delta=0
    maps = torch.tensor([[0.0, 0.0], [3.0, 3.0], [1.0, 3.0]])
    assertTensorAlmostEqual(None, normalize_minmax(maps), torch.tensor([[0.0, 0], [0, 0], [0, 1]]), delta=0, mode="max")
    assertTensorAlmostEqual(None, normalize_max(maps), torch.tensor([[0.0, 0], [0, 0], [1 / 3, 1]]), delta=1e-6, mode="max")


def test_gaussian_smooth_keeps_mass_in_the_interior_and_sigma_zero_is_identity():
    grid = torch.zeros(1, 9, 9)
    grid[0, 4, 4] = 1.0
    smooth = gaussian_smooth(grid, 1.0)
    assert math.isclose(smooth.sum().item(), 1.0, rel_tol=1e-5)
    assert smooth[0, 4, 4] < 1 and smooth[0, 4, 4] == smooth.max()
    assert torch.equal(gaussian_smooth(grid, 0), grid)


def test_region_smoothing_formula_on_a_small_grid():
    from captum_matex.stages import RegionSmoothing

    torch.manual_seed(2)
    grid = (2, 3)
    evidence, prior = torch.rand(1, 6), torch.rand(1, 6)
    features = torch.randn(1, 6, 4)
    smoothing = RegionSmoothing(weight=0.6, level=0.5, sigma=1.5, temperature=0.7)
    out = smoothing(evidence, prior, torch.tensor([[0.5]]), grid, features)
    region = (prior[0] / 0.5).clamp(max=1)
    unit = features[0] / features[0].norm(dim=-1, keepdim=True)
    cells = [(i // 3, i % 3) for i in range(6)]
    expected = []
    for i in range(6):
        k = torch.stack([
            torch.exp(torch.tensor(-((cells[i][0] - cells[j][0]) ** 2 + (cells[i][1] - cells[j][1]) ** 2)
                                   / (2 * 1.5**2)) + unit[i] @ unit[j] / 0.7) * region[j]
            for j in range(6)])
        mean = (k * evidence[0]).sum() / k.sum()
        share = 0.6 * 0.5  # weight times the gate
        expected.append((1 - share) * evidence[0, i] + share * region[i] * mean)
    assertTensorAlmostEqual(None, out[0], torch.stack(expected), delta=1e-6, mode="max")


def test_region_smoothing_moves_evidence_only_inside_the_region_and_creates_none():
    from captum_matex.stages import RegionSmoothing

    grid = (6, 6)
    prior = torch.zeros(1, 6, 6)
    prior[:, 1:5, 1:4] = 1.0  # the region: rows 1-4, columns 1-3
    evidence = torch.zeros(1, 6, 6)
    evidence[0, 2, 2] = 1.0  # one decisive patch inside it
    evidence[0, 0, 5] = 0.4  # and some evidence outside it
    out = RegionSmoothing(weight=0.5, temperature=None)(
        evidence.flatten(1), prior.flatten(1), None, grid).view(6, 6)
    inside = prior[0] > 0
    assert (out[inside] > 0).all()  # the whole region now carries evidence
    assert out.max() <= 1.0 and out[2, 2] == out.max()  # never above the evidence's peak
    outside = ~inside
    assertTensorAlmostEqual(None, out[outside], 0.5 * evidence[0][outside], delta=1e-7, mode="max")
    # a zero map stays zero; a closed gate leaves the evidence as it is
    zero = RegionSmoothing()(torch.zeros(1, 36), prior.flatten(1), None, grid)
    assert (zero == 0).all()
    closed = RegionSmoothing()(evidence.flatten(1), prior.flatten(1), torch.zeros(1, 1), grid)
    assertTensorAlmostEqual(None, closed, evidence.flatten(1), delta=0, mode="max")
    for bad in (dict(weight=1.5), dict(level=0.0), dict(sigma=0.0), dict(temperature=0.0)):
        with pytest.raises(ValueError):
            RegionSmoothing(**bad)


def test_region_smoothing_spreads_evidence_to_the_patches_the_model_represents_alike():
    from captum_matex.stages import RegionSmoothing

    # a row of five patches, all in the region, evidence on the middle one; the patches
    # two cells to its left and right are equally far, but only the left one shares its features
    grid = (1, 5)
    evidence = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    out = RegionSmoothing(temperature=0.5)(evidence, torch.ones(1, 5), None, grid, features)
    assert out[0, 0] > 3 * out[0, 4]  # exp(1 / 0.5) against exp(0) per step: measured about 10x
    spatial = RegionSmoothing(temperature=None)(evidence, torch.ones(1, 5), None, grid, features)
    torch.testing.assert_close(spatial[0, 0], spatial[0, 4], atol=1e-7, rtol=0)


def test_region_smoothing_flattens_the_evidence_inside_a_box_and_raises_its_cnr():
    from captum_matex.metrics import cnr
    from captum_matex.stages import RegionSmoothing

    # evidence that is higher inside the box but noisy there: averaging within the box lowers
    # the spread inside, scaling the outside lowers its mean and spread, so CNR rises
    torch.manual_seed(3)
    box = torch.zeros(16, 12, 12)
    box[:, 3:8, 2:9] = 1
    evidence = torch.rand(16, 12, 12) * (0.3 + 0.7 * box)
    out = RegionSmoothing()(evidence.flatten(1), box.flatten(1), None, (12, 12)).view(16, 12, 12)
    # measured: every map gains at least 3.9 (from 1.24 on average)
    assert (cnr(out, box.bool()) > cnr(evidence, box.bool()) + 1.0).all()


def test_fusion_applies_region_smoothing_to_the_anatomical_prior_only():
    from captum_matex.stages import RegionSmoothing

    torch.manual_seed(4)
    evidence, prior = torch.rand(2, 1, 16), torch.rand(2, 16)
    smoothing = RegionSmoothing()
    features = torch.randn(2, 16, 3)
    plain = Fusion(alpha=1.0, sigma=0, gate=None)
    smoothed = Fusion(alpha=1.0, sigma=0, gate=None, region_smoothing=smoothing)
    # without an anatomical prior there is no region: the fusion is unchanged
    assertTensorAlmostEqual(None, smoothed(evidence, None, {"text": prior}, (4, 4)),
                            plain(evidence, None, {"text": prior}, (4, 4)), delta=0, mode="max")
    out = smoothed(evidence, None, {"anatomy": prior}, (4, 4), features=features)
    expected = plain.reweight(smoothing(evidence[:, 0], prior, None, (4, 4), features),
                              {"anatomy": prior})
    assertTensorAlmostEqual(None, out, expected, delta=1e-6, mode="max")
    with pytest.raises(ValueError, match="needs the patch grid"):
        smoothed(evidence, None, {"anatomy": prior})
