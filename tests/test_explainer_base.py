"""The public explainer base: what every method inherits."""

from __future__ import annotations

import pytest
import torch
from conftest import PHRASES

from captum_matex.baselines import CheferGradRollout, Occlusion
from captum_matex.explainer import Explainer, upsample_grid
from captum_matex.targets import ClassToken, CosineSimilarity


def test_attribute_phrases_explains_every_phrase_of_every_image(clip_model, tokenizer, images):
    explainer = CheferGradRollout(clip_model, tokenizer)
    maps = explainer.attribute_phrases(images[:2], PHRASES[:3], output="grid")
    assert maps.shape == (2, 3, 1, 4, 4)
    for k, phrase in enumerate(PHRASES[:3]):
        alone = explainer.attribute(images[:2], ([phrase] * 2,), output="grid")
        # the same images and phrase in a batch of 6 instead of 2: float32 batching noise only
        torch.testing.assert_close(maps[:, k], alone, atol=1e-5, rtol=0)


def test_a_method_without_patch_map_says_what_to_override(clip_model, tokenizer, images):
    class Nothing(Explainer):
        pass

    with pytest.raises(NotImplementedError, match="override patch_map"):
        Nothing(clip_model, tokenizer).attribute(images, (PHRASES,))


def test_base_arguments_are_checked_for_every_method(clip_model, tokenizer):
    with pytest.raises(ValueError, match="sign must be"):
        CheferGradRollout(clip_model, tokenizer, sign="negative")
    with pytest.raises(ValueError, match="normalize must be"):
        Occlusion(clip_model, tokenizer, normalize="zscore")


def test_the_adapter_pairs_the_cosine_target_with_the_class_token(clip_model, tokenizer, images):
    explainer = CheferGradRollout(clip_model, tokenizer)
    adapter = explainer.adapter
    assert isinstance(adapter.target, CosineSimilarity) and isinstance(adapter.readout, ClassToken)
    ids = adapter.tokenize(PHRASES, images.device)
    with torch.no_grad():
        features = clip_model.get_image_features(pixel_values=images)  # 5.x: a ModelOutput
        image = getattr(features, "pooler_output", features)
        expected = torch.nn.functional.cosine_similarity(image, adapter.encode_text(ids), dim=-1)
        score = explainer.forward_func(images, ids)
    torch.testing.assert_close(score, expected, atol=1e-5, rtol=0)


def _two_cells(right: float) -> torch.Tensor:
    r"""A 4 x 4 grid with its peak at cell (1, 1) and ``right`` in cell (1, 2)."""
    grid = torch.zeros(1, 4, 4)
    grid[0, 1, 1], grid[0, 1, 2] = 1.0, right
    return grid


def test_bilinear_upsampling_keeps_the_peak_on_the_cell_centre():
    maps = upsample_grid(_two_cells(0.8), (64, 64), "bilinear")
    row, col = divmod(int(maps.flatten().argmax()), 64)
    # cell 1 covers pixels 16..31: with half-pixel centres its centre lies between 23 and 24
    assert (row, col) in {(23, 23), (23, 24), (24, 23), (24, 24)}


def test_bicubic_upsampling_moves_the_peak_towards_the_stronger_neighbour():
    columns = []
    for right in (0.0, 0.5, 0.8, 0.95):
        maps = upsample_grid(_two_cells(right), (64, 64), "bicubic")
        columns.append(int(maps.flatten().argmax()) % 64)
        # non-negative, and the peak keeps the grid's peak value (a rescaling: float rounding only)
        assert maps.min() >= 0 and abs(float(maps.max()) - 1.0) < 1e-6
    # a lone cell peaks at its centre; the stronger the right neighbour, the further right
    assert columns[0] in (23, 24) and columns == sorted(columns) and columns[-1] > 26
    # the peak never leaves the span between the two cells' centres
    assert columns[-1] < 40


def test_upsampling_a_zero_map_gives_zeros_and_unknown_modes_are_refused(clip_model, tokenizer):
    for mode in ("bilinear", "bicubic"):
        assert upsample_grid(torch.zeros(2, 4, 4), (16, 16), mode).eq(0).all()
    with pytest.raises(ValueError, match="upsample must be"):
        upsample_grid(torch.zeros(1, 4, 4), (16, 16), "nearest")
    with pytest.raises(ValueError, match="upsample must be"):
        CheferGradRollout(clip_model, tokenizer, upsample="nearest")


def test_pixel_maps_are_the_grid_maps_upsampled_by_the_chosen_mode(clip_model, tokenizer, images):
    for mode in ("bilinear", "bicubic"):
        explainer = CheferGradRollout(clip_model, tokenizer, upsample=mode, normalize=None)
        grid = explainer.attribute(images, (PHRASES,), output="grid")
        pixel = explainer.attribute(images, (PHRASES,), output="pixel")
        expected = upsample_grid(grid[:, 0], tuple(images.shape[-2:]), mode)
        # the same grid maps from two identical passes (float32 batching noise at most),
        # then the same resampling
        torch.testing.assert_close(pixel, expected, atol=1e-5, rtol=1e-5)
