"""Stage protocols: a user's own stage, written without subclassing, plugs into MATEX."""

from __future__ import annotations

import pytest
import torch
from conftest import PHRASES

from captum_matex import MATEX
from captum_matex.stages import (
    AnatomicalPrior,
    AnatomicalPriorStage,
    AttentionStage,
    ConsistencyStage,
    Fusion,
    FusionStage,
    GradWeightedAttention,
    LayerConsistency,
    MultiScaleRollout,
    PatchTextPrior,
    RolloutStage,
    TextPriorStage,
)


class LastBlockOnly:
    """A rollout variant: only the last block's CLS row (one window)."""

    def __call__(self, block_relevance, num_prefix_tokens):
        return block_relevance[:, -1:, 0, num_prefix_tokens:]

    def depths(self, num_layers):
        return [1]


class ImageHalfPrior:
    """An anatomical prior that keeps the image's left half, whatever the words."""

    def __call__(self, phrases, grid, masks=None, device=None):
        prior = torch.zeros(len(phrases), *grid, device=device)
        prior[..., : grid[1] // 2] = 1
        return prior.flatten(1)


@pytest.mark.parametrize(
    "stage, protocol",
    [
        (GradWeightedAttention(), AttentionStage),
        (MultiScaleRollout(), RolloutStage),
        (LayerConsistency(), ConsistencyStage),
        (PatchTextPrior(), TextPriorStage),
        (AnatomicalPrior(), AnatomicalPriorStage),
        (Fusion(), FusionStage),
        (LastBlockOnly(), RolloutStage),
        (ImageHalfPrior(), AnatomicalPriorStage),
    ],
)
def test_built_in_and_user_stages_follow_their_protocol(stage, protocol):
    assert isinstance(stage, protocol)


def test_a_user_stage_without_subclassing_runs_in_matex(clip_model, tokenizer, images):
    maps, diag = MATEX(
        clip_model, tokenizer, rollout=LastBlockOnly(), consistency=None,
        anatomical_prior=ImageHalfPrior(),
    ).attribute(images, (PHRASES,), output="grid", return_diagnostics=True)
    assert diag.rollout_depths == [1] and diag.rollouts.shape[1] == 1
    # the prior keeps the evidence of the left half and re-weights the right half by the floor
    assert torch.isfinite(maps).all() and maps.amax() > 0
    expected_prior = torch.zeros(4, 4)
    expected_prior[:, :2] = 1
    assert torch.equal(diag.priors["anatomy"][0], expected_prior)


@pytest.mark.parametrize("name", ["attention", "rollout", "consistency", "text_prior", "fusion"])
def test_an_object_without_the_stage_methods_is_refused_by_name(clip_model, tokenizer, name):
    with pytest.raises(TypeError, match=f"{name}=object is not a .*Stage"):
        MATEX(clip_model, tokenizer, **{name: object()})
