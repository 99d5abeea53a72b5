"""FeatureAffinity: evidence spread over the explained model's own patch affinities."""

from __future__ import annotations

import pytest
import torch
from conftest import PHRASES, make_generative

from captum_matex import MATEX
from captum_matex import baselines
from captum_matex.matex import default_propagation
from captum_matex.stages import FeatureAffinity, PropagationStage


def _two_groups() -> torch.Tensor:
    r"""``(1, 6, 2)`` embeddings: patches 0-2 all along e1, patches 3-5 all along e2."""
    return torch.tensor([[[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3])


def test_evidence_spreads_within_its_group_only():
    evidence = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    stage = FeatureAffinity(temperature=0.05, steps=1, radius=None)
    spread = stage(evidence, _two_groups(), (2, 3))
    # a patch's affinity to its own group is 1 / (3 + 3 exp(-1 / 0.05)), to the other group
    # exp(-20) (2e-9) times that: the group shares the evidence equally, the other gets ~nothing
    assert spread[0, :3] == pytest.approx(torch.ones(3), abs=1e-6)
    assert spread[0, 3:].max().item() < 1e-6


def test_temperature_sets_how_far_evidence_spreads():
    evidence = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    other = [FeatureAffinity(temperature=t, steps=1, radius=None)(
        evidence, _two_groups(), (2, 3))[0, 3].item() for t in (0.1, 0.5, 2.0)]
    # the other group's share is exp(-1 / t) of its own group's: 4.5e-5, 0.135, 0.607
    assert other == pytest.approx([torch.tensor(-1 / t).exp().item() for t in (0.1, 0.5, 2.0)],
                                  rel=1e-4)


def test_steps_apply_the_affinity_repeatedly():
    torch.manual_seed(0)
    embeddings, maps = torch.randn(2, 9, 4), torch.rand(2, 3, 9)
    stage = FeatureAffinity(temperature=0.5, steps=3)
    weights = stage.affinity(embeddings, (3, 3))
    assert weights.sum(-1) == pytest.approx(torch.ones(2, 9), abs=1e-6)  # row-stochastic
    by_hand = maps / maps.amax(-1, keepdim=True)
    for _ in range(3):
        by_hand = by_hand @ weights.transpose(1, 2)
    by_hand = by_hand / by_hand.amax(-1, keepdim=True)
    assert stage(maps, embeddings, (3, 3)) == pytest.approx(by_hand, abs=1e-6)


def test_radius_keeps_evidence_near_where_it_was():
    # a 1 x 8 strip: cells 0-3 alike, cells 4-7 alike; evidence at cell 0 only
    embeddings = torch.tensor([[[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4])
    evidence = torch.zeros(1, 8)
    evidence[0, 0] = 1
    everywhere = FeatureAffinity(steps=1, radius=None)(evidence, embeddings, (1, 8))
    assert everywhere[0, :4] == pytest.approx(torch.ones(4), abs=1e-6)
    # radius 0.3 of 8 cells (2.4): cell 0 gets 1/3 of its own evidence (3 cells in reach),
    # cells 1 and 2 a quarter (4 alike cells in reach; cell 2's fifth, cell 4, is unlike:
    # weight exp(-20)), cell 3 and beyond nothing: exp(-inf) is exactly 0
    near = FeatureAffinity(steps=1, radius=0.3)(evidence, embeddings, (1, 8))
    assert near[0, :3] == pytest.approx(torch.tensor([1, 3 / 4, 3 / 4]), abs=1e-6)
    assert torch.equal(near[0, 3:], torch.zeros(5))


def test_shape_dtype_and_zero_maps_are_kept():
    torch.manual_seed(0)
    embeddings = torch.randn(2, 9, 4, dtype=torch.float64)
    maps = torch.rand(2, 3, 9, dtype=torch.float64)
    maps[1] = 0  # no evidence: propagation creates none
    out = FeatureAffinity()(maps, embeddings, (3, 3))
    assert out.shape == maps.shape and out.dtype == torch.float64
    assert torch.equal(out[1], torch.zeros(3, 9, dtype=torch.float64))
    assert out[0].amax(-1) == pytest.approx(torch.ones(3, dtype=torch.float64))
    half = FeatureAffinity()(maps[:, 0].half(), embeddings.half(), (3, 3))
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        FeatureAffinity(temperature=0)
    with pytest.raises(ValueError, match="steps"):
        FeatureAffinity(steps=0)
    with pytest.raises(ValueError, match="do not match"):
        FeatureAffinity()(torch.rand(2, 9), torch.rand(2, 8, 4), (3, 3))
    with pytest.raises(ValueError, match="do not match"):
        FeatureAffinity()(torch.rand(2, 9), torch.rand(2, 9, 4), (2, 4))
    with pytest.raises(ValueError, match="radius"):
        FeatureAffinity(radius=-1)
    assert isinstance(FeatureAffinity(), PropagationStage)


class _Recording(FeatureAffinity):
    """FeatureAffinity that keeps what MATEX passes it."""

    def __init__(self) -> None:
        super().__init__(radius=None)  # the default reaches no neighbour on a 4 x 4 grid
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, maps, patch_embeddings, grid):
        self.calls.append((maps.clone(), patch_embeddings.clone()))
        return super().__call__(maps, patch_embeddings, grid)


def test_matex_propagates_its_rollouts_and_consistency_map(clip_model, tokenizer, images):
    recording = _Recording()
    _, with_it = MATEX(clip_model, tokenizer, propagation=recording).attribute(
        images, (PHRASES,), output="grid", return_diagnostics=True)
    _, without = MATEX(clip_model, tokenizer, propagation=None).attribute(
        images, (PHRASES,), output="grid", return_diagnostics=True)
    # one call per image batch (one affinity): the rollouts, then the consistency map
    ((maps, embeddings),) = recording.calls
    rollouts, consistency = maps[:, :-1], maps[:, -1]
    assert embeddings.shape == (4, 16, clip_model.projection_dim)
    # the stage gets the maps MATEX has without it, and its output is what MATEX fuses
    assert rollouts == pytest.approx(without.rollouts.flatten(2), abs=1e-6)
    assert consistency == pytest.approx(without.consistency.flatten(1), abs=1e-6)
    assert with_it.rollouts.flatten(2) == pytest.approx(
        FeatureAffinity(radius=None)(rollouts, embeddings, (4, 4)), abs=1e-6)
    assert with_it.consistency.flatten(1) == pytest.approx(
        FeatureAffinity(radius=None)(consistency, embeddings, (4, 4)), abs=1e-6)
    assert not torch.allclose(with_it.fused, without.fused, atol=1e-3)


def test_default_propagation_by_readout(clip_model, tokenizer):
    assert isinstance(MATEX(clip_model, tokenizer).propagation, FeatureAffinity)
    assert default_propagation(MATEX(make_generative("llava")).adapter) is None
    ablation = baselines.get("matex_no_propagation")
    assert ablation(clip_model, tokenizer).propagation is None
    assert "contrastive embedding" in ablation.requires
