"""PriorGate: a prior acts only as far as the model's evidence leans towards it."""

import pytest
import torch

from captum_matex.stages import Fusion, PriorGate


def _left_half(grid=(4, 4)):
    prior = torch.zeros(1, *grid)
    prior[..., : grid[1] // 2] = 1.0
    return prior.flatten(1)


def test_evidence_that_does_not_lean_towards_the_prior_gets_none():
    # near-flat evidence (flat maps are zeroed before the fusion): one dimmer cell inside the prior
    evidence = torch.ones(1, 4, 4)
    evidence[0, 1, 1] = 0.5
    evidence = evidence.flatten(1)
    prior = _left_half()
    # min-max evidence holds 7 of its 15 units in a prior of mean 1/2: lift 14/15 < 1
    assert PriorGate()(evidence, prior, (4, 4)).item() == 0.0
    gated = Fusion(alpha=1.0, sigma=0, gate=PriorGate())(evidence[:, None], None, {"anatomy": prior}, grid=(4, 4))
    ungated = Fusion(alpha=1.0, sigma=0, gate=None)(evidence[:, None], None, {"anatomy": prior},
                                                     grid=(4, 4))
    # gated: the evidence's own map, peak 1 on both halves; ungated: the prior's half wins
    assert gated.view(4, 4)[:, 2:].min().item() == 1.0 and gated.view(4, 4)[0, 0].item() == 1.0
    assert ungated.view(4, 4)[:, 2:].max().item() < 0.5 and ungated.view(4, 4)[0, 0].item() == 1.0


def test_lift_ramps_from_one_to_full_lift():
    # symmetric prior on a 1 x 4 grid (no side to check), mean 0.5
    prior = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    # evidence (already min-max normalised) with 1.5 of its 2 units inside: lift 1.5 / 2 / 0.5 = 1.5
    evidence = torch.tensor([[0.0, 1.0, 0.5, 0.5]])
    assert PriorGate(full_lift=3.0)(evidence, prior, (1, 4)).item() == pytest.approx(0.25, abs=1e-6)
    assert PriorGate(full_lift=1.5)(evidence, prior, (1, 4)).item() == pytest.approx(1.0, abs=1e-6)
    inside = torch.tensor([[0.0, 1.0, 1.0, 0.0]])  # lift 2
    assert PriorGate(full_lift=2.0)(inside, prior, (1, 4)).item() == pytest.approx(1.0, abs=1e-6)


def test_evidence_on_the_other_side_closes_a_sided_prior():
    prior = _left_half()
    right = torch.zeros(1, 4, 4)
    right[0, 1:3, 3] = 1.0  # evidence in the mirror image of the prior's region
    left = right.flip(-1)
    gate = PriorGate(full_lift=1.5)
    assert gate(right.flatten(1), prior, (4, 4)).item() == 0.0
    assert gate(left.flatten(1), prior, (4, 4)).item() == pytest.approx(1.0, abs=1e-6)
    # with the gate the map keeps the evidence's own peak; ungated, the prior moves it
    evidence = right.flatten(1) + 0.6 * left.flatten(1)
    gated = Fusion(alpha=1.0, sigma=0, gate=gate)(evidence[:, None], None, {"anatomy": prior}, (4, 4))
    ungated = Fusion(alpha=1.0, sigma=0, gate=None, floors={"anatomy": 0.5})(
        evidence[:, None], None, {"anatomy": prior}, (4, 4))
    assert gated.view(4, 4)[1, 3].item() == 1.0 and ungated.view(4, 4)[1, 0].item() == 1.0


def test_evidence_peaking_on_the_other_side_closes_a_sided_prior_despite_its_mass():
    # most of the evidence's mass lies on the prior's (left) side, but its peak is on the right
    prior = _left_half()
    evidence = torch.zeros(1, 4, 4)
    evidence[0, :, :2] = 0.6  # 8 cells x 0.6 on the left
    evidence[0, 1, 3] = 1.0  # one brighter cell on the right
    gate = PriorGate(full_lift=1.5, full_side=1.5)
    # lift 4.8 / 5.8 / 0.5 = 1.66 and side ratio 4.8 would open it fully: only the peak closes it
    assert gate(evidence.flatten(1), prior, (4, 4)).item() == 0.0
    fused = Fusion(alpha=1.0, sigma=0, gate=gate)(evidence.flatten(1)[:, None], None, {"anatomy": prior}, (4, 4))
    assert fused.view(4, 4)[1, 3].item() == 1.0  # the evidence's own peak stays
    # two equal peaks, one on each side: the prior does not pick the side
    evidence[0, 2, 0] = 1.0
    assert gate(evidence.flatten(1), prior, (4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    evidence[0, 2, 0] = 0.6
    # the bright cell moved to the left: lift 2, no mirrored evidence, so the prior opens fully
    evidence[0, 1, 3], evidence[0, 1, 0] = 0.0, 1.0
    assert gate(evidence.flatten(1), prior, (4, 4)).item() == pytest.approx(1.0, abs=1e-6)


def test_gate_is_per_sample():
    prior = _left_half().expand(2, -1)
    evidence = torch.zeros(2, 4, 4)
    evidence[0, :, 0] = 1.0  # inside the prior
    evidence[1, :, 3] = 1.0  # outside, mirrored
    out = PriorGate()(evidence.flatten(1), prior, (4, 4))
    assert out.shape == (2, 1)
    assert out[0].item() == pytest.approx(0.5, abs=1e-6)  # lift 2 of full 3
    assert out[1].item() == 0.0


@pytest.mark.parametrize("bad", [dict(full_lift=1.0), dict(full_side=0.5), dict(asymmetry=-0.1)])
def test_gate_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        PriorGate(**bad)


def test_fusion_with_a_gate_needs_the_grid():
    with pytest.raises(ValueError, match="patch grid"):
        Fusion(sigma=0, gate=PriorGate())(torch.ones(1, 1, 4), None, {"anatomy": torch.ones(1, 4)})
    # without priors the gate has nothing to do and the grid is not needed
    assert Fusion(sigma=0, gate=PriorGate())(torch.ones(1, 1, 4), None, {}).shape == (1, 4)
