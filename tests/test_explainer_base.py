"""The public explainer base: what every method inherits."""

from __future__ import annotations

import pytest
import torch
from conftest import PHRASES

from captum_matex.baselines import CheferGradRollout, Occlusion
from captum_matex.explainer import Explainer
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
