"""MATEX end to end on small random-initialised CLIP models (no download)."""

import pytest
import torch
from captum.testing.helpers.basic import assertTensorAlmostEqual
from conftest import PHRASES, make_clip
from helpers import assert_valid_maps, model_state

from captum_matex import MATEX, MATEXDiagnostics
from captum_matex.explainer import upsample_grid
from captum_matex.stages import Fusion, PatchTextPrior


def test_name_and_captum_contract(clip_model, tokenizer):
    explainer = MATEX(clip_model, tokenizer)
    assert explainer.get_name() == "MATEX"
    assert hasattr(MATEX.attribute, "__wrapped__")  # captum's log_usage, used by NoiseTunnel
    assert explainer.has_convergence_delta() is False


def test_end_to_end_shapes_range_and_diagnostics(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer)
    maps, diag = explainer.attribute(images, additional_forward_args=(PHRASES,), return_diagnostics=True)
    assert_valid_maps(maps, images)
    assert maps.max() <= 1.0
    assert isinstance(diag, MATEXDiagnostics)
    assert diag.grid == (4, 4)
    assert diag.per_layer.shape == (4, 3, 4, 4)
    assertTensorAlmostEqual(None, diag.layer_weights.sum(1), torch.ones(4), delta=1e-5, mode="max")
    assert diag.rollouts.shape == (4, 3, 4, 4) and diag.rollout_depths == [1, 2, 3]
    assert set(diag.priors) == {"anatomy"}  # the text prior is opt-in
    assert diag.phrases == PHRASES
    # the map is the upsampled fused grid
    grid = explainer.attribute(images, additional_forward_args=(PHRASES,), output="grid")
    assert grid.shape == (4, 1, 4, 4)
    assertTensorAlmostEqual(None, grid[:, 0], diag.fused, delta=1e-6, mode="max")
    pixel = explainer.attribute(images, additional_forward_args=(PHRASES,), output="pixel")
    assert pixel.shape == (4, 1, 32, 32)
    assertTensorAlmostEqual(None, pixel.expand_as(maps), maps, delta=1e-6, mode="max")
    # upsampled bicubically by default (peaks between patch centres), bilinearly on request
    assert explainer.upsample == "bicubic"
    for mode in ("bicubic", "bilinear"):
        upsampled = MATEX(clip_model, tokenizer, upsample=mode).attribute(
            images, additional_forward_args=(PHRASES,), output="pixel")
        assertTensorAlmostEqual(None, upsampled, upsample_grid(diag.fused, (32, 32), mode),
                                delta=1e-6, mode="max")


def test_score_is_the_models_cosine_similarity(clip_model, tokenizer, images):
    ids = tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    _, diag = MATEX(clip_model, tokenizer).attribute(images, (ids,), return_diagnostics=True)
    with torch.no_grad():
        img = clip_model.get_image_features(pixel_values=images)
        txt = clip_model.get_text_features(input_ids=ids)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
    expected = torch.nn.functional.cosine_similarity(img, txt)
    assertTensorAlmostEqual(None, diag.score, expected, delta=1e-5, mode="max")


def test_batch_equals_single_calls_and_is_deterministic(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer)
    batch = explainer.attribute(images, (PHRASES,))
    singles = torch.cat([explainer.attribute(images[i : i + 1], ([PHRASES[i]],)) for i in range(4)])
    assertTensorAlmostEqual(None, batch, singles, delta=1e-5, mode="max")
    assert torch.equal(batch, explainer.attribute(images, (PHRASES,)))


def test_text_as_strings_ids_and_embeddings_agree(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer, anatomical_prior=None)
    ids = tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        emb = clip_model.get_text_features(input_ids=ids)
        emb = getattr(emb, "pooler_output", emb)
    from_strings = explainer.attribute(images, (PHRASES,))
    assertTensorAlmostEqual(None, explainer.attribute(images, (ids,)), from_strings, delta=1e-5, mode="max")
    assertTensorAlmostEqual(None, explainer.attribute(images, (emb,)), from_strings, delta=1e-5, mode="max")


def test_anatomical_prior_reads_phrases_decoded_from_ids(clip_model, tokenizer, images):
    ids = tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    explainer = MATEX(clip_model, tokenizer)
    _, from_ids = explainer.attribute(images, (ids,), return_diagnostics=True)
    _, from_strings = explainer.attribute(images, (PHRASES,), return_diagnostics=True)
    assert from_ids.phrases == PHRASES
    assert torch.equal(from_ids.priors["anatomy"], from_strings.priors["anatomy"])


def test_stages_are_pluggable(clip_model, tokenizer, images):
    # an ungated fusion of both evidence maps, so that every stage reaches the map
    # (the default reads the rollouts alone on CLIP and gates the priors)
    mixed = Fusion(alpha=0.5)
    full = MATEX(clip_model, tokenizer, fusion=mixed).attribute(images, (PHRASES,))
    for drop in ["rollout", "consistency", "anatomical_prior"]:
        ablated = MATEX(clip_model, tokenizer, fusion=mixed, **{drop: None}).attribute(images, (PHRASES,))
        assert_valid_maps(ablated, images)
        assert not torch.allclose(ablated, full), f"dropping {drop} changed nothing"
    added = MATEX(clip_model, tokenizer, fusion=mixed, text_prior=PatchTextPrior()).attribute(
        images, (PHRASES,))
    assert not torch.allclose(added, full), "adding the text prior changed nothing"
    with pytest.raises(ValueError, match="rollout stage, the consistency stage or both"):
        MATEX(clip_model, rollout=None, consistency=None)


def test_phrase_changes_the_map(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer, anatomical_prior=None)
    a = explainer.attribute(images, (PHRASES,))
    b = explainer.attribute(images, (PHRASES[::-1],))
    assert not torch.allclose(a, b)


def _inject_failure(model, block=1, exc=RuntimeError("injected")):
    def hook(*_):
        raise exc

    return model.vision_model.encoder.layers[block].mlp.register_forward_hook(hook)


@pytest.mark.parametrize("exc", [None, RuntimeError("boom"), KeyboardInterrupt()])
def test_model_state_restored_after_success_error_and_interrupt(tokenizer, images, exc):
    model = make_clip()
    model.train()
    model.text_projection.weight.requires_grad_(False)
    handle = _inject_failure(model, exc=exc) if exc is not None else None
    before = model_state(model)
    explainer = MATEX(model, tokenizer)
    if exc is None:
        explainer.attribute(images, (PHRASES,))
    else:
        with pytest.raises(type(exc)):
            explainer.attribute(images, (PHRASES,))
    after = model_state(model)
    assert after == before
    assert before["attn"] == "sdpa" and before["training"][""] is True
    if handle is not None:
        handle.remove()


def test_sdpa_model_is_switched_to_eager_for_the_call_only(tokenizer, images):
    model = make_clip()
    assert model.config.vision_config._attn_implementation == "sdpa"
    maps, diag = MATEX(model, tokenizer).attribute(images, (PHRASES,), return_diagnostics=True)
    assert_valid_maps(maps, images)
    assert diag.per_layer.flatten(2).amax(-1).gt(0).all(), "a block contributed nothing"
    assert model.config.vision_config._attn_implementation == "sdpa"


def test_attention_path_that_hides_probabilities_raises(tokenizer, images, monkeypatch):
    model = make_clip()
    explainer = MATEX(model, tokenizer)
    import contextlib

    monkeypatch.setattr(explainer.adapter, "attention_exposed", contextlib.nullcontext)
    with pytest.raises(RuntimeError, match="attn_implementation='eager'"):
        explainer.attribute(images, (PHRASES,))
    assert model_state(model)["hooks"] == 0


def test_eager_model_loaded_eager_stays_eager(tokenizer, images):
    model = make_clip()
    model.set_attn_implementation("eager")
    MATEX(model, tokenizer).attribute(images, (PHRASES,))
    assert model.config.vision_config._attn_implementation == "eager"


def test_larger_vit_runs(tokenizer):
    model = make_clip(layers=6, image_size=64, patch=8, width=64)
    images = torch.randn(2, 3, 64, 64)
    maps, diag = MATEX(model, tokenizer).attribute(images, (PHRASES[:2],), return_diagnostics=True)
    assert_valid_maps(maps, images)
    assert diag.grid == (8, 8) and diag.rollout_depths == [1, 2, 3, 6]


@pytest.mark.parametrize(
    "images_fn, text, error, match",
    [
        (lambda x: x, PHRASES[:3], ValueError, "text has 3 phrase\\(s\\) but images has 4"),
        (lambda x: x[0], PHRASES, ValueError, "unsqueeze\\(0\\)"),
        (lambda x: x[:, :1], PHRASES, ValueError, "1 channel\\(s\\) but the model expects 3"),
        (lambda x: x[..., :16, :16], PHRASES, ValueError, "expects \\(32, 32\\)"),
        (lambda x: x.index_put((torch.tensor([2]),), torch.tensor(float("nan"))), PHRASES, ValueError, "NaN or Inf pixels in sample\\(s\\) \\[2\\]"),
        (lambda x: x * float("inf"), PHRASES, ValueError, "NaN or Inf"),
        (lambda x: (x * 255).to(torch.uint8), PHRASES, TypeError, "float pixel values"),
        (lambda x: x.numpy(), PHRASES, TypeError, "torch.Tensor"),
        (lambda x: x, ["", "a", "b", "c"], ValueError, "phrase 0 is empty"),
        (lambda x: x, ["left", "  ", "b", "c"], ValueError, "phrase 1 is empty"),
        (lambda x: x, None, ValueError, "no text given"),
        (lambda x: x, torch.ones(3, 16), ValueError, "text has 3 rows but images has 4"),
        (lambda x: x, torch.ones(4, 2, 16), ValueError, "per-sample"),
        (lambda x: x, torch.full((4, 16), float("nan")), ValueError, "NaN or Inf"),
        (lambda x: x, torch.ones(4, 40, dtype=torch.long), ValueError, "context is 16"),
    ],
)
def test_bad_input_names_the_fix(clip_model, tokenizer, images, images_fn, text, error, match):
    with pytest.raises(error, match=match):
        MATEX(clip_model, tokenizer).attribute(images_fn(images), (text,))


def test_long_phrase_is_truncated_with_a_warning(clip_model, tokenizer, images):
    long_phrase = " ".join(["left pleural effusion"] * 10)
    explainer = MATEX(clip_model, tokenizer)
    with pytest.warns(UserWarning, match="truncated"):
        maps = explainer.attribute(images[:1], ([long_phrase],))
    assert_valid_maps(maps, images[:1])


def test_strings_without_tokenizer_name_the_fix(clip_model, images):
    with pytest.raises(ValueError, match="tokenizer="):
        MATEX(clip_model).attribute(images, (PHRASES,))


def test_unsupported_model_lists_families():
    with pytest.raises(TypeError, match="supported: transformers-clip.*VisionLanguageAdapter"):
        MATEX(torch.nn.Linear(3, 3))


def test_one_phrase_string_applies_to_every_image(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer)
    assert torch.equal(
        explainer.attribute(images, ("left pleural effusion",)),
        explainer.attribute(images, (["left pleural effusion"] * 4,)),
    )


def test_block_relevance_matches_a_direct_computation_from_the_model(tokenizer, images):
    model = make_clip()
    ids = tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    _, diag = MATEX(model, tokenizer).attribute(images, (ids,), return_diagnostics=True)
    model.set_attn_implementation("eager")
    out = model.vision_model(pixel_values=images, output_attentions=True)
    image_emb = model.visual_projection(out.pooler_output)
    with torch.no_grad():
        text_emb = model.get_text_features(input_ids=ids)
        text_emb = getattr(text_emb, "pooler_output", text_emb)
    score = torch.nn.functional.cosine_similarity(image_emb, text_emb)
    grads = torch.autograd.grad(score.sum(), out.attentions)
    rows = torch.stack([(g * a).clamp_min(0).mean(1)[:, 0, 1:] for a, g in zip(out.attentions, grads)], 1)
    rows = rows / rows.amax(-1, keepdim=True)
    assertTensorAlmostEqual(None, diag.per_layer.flatten(2), rows, delta=1e-5, mode="max")


def test_many_phrases_per_image_equal_separate_calls(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer, text_prior=PatchTextPrior())
    phrases = ["left pleural effusion", "cardiomegaly", "right upper lobe opacity"]
    before = model_state(clip_model)
    maps = explainer.attribute_phrases(images, phrases)
    assert maps.shape == (4, 3, *images.shape[1:])
    assert model_state(clip_model) == before
    repeated = images.repeat_interleave(3, dim=0)
    separate = explainer.attribute(repeated, (phrases * 4,)).view(4, 3, *images.shape[1:])
    assertTensorAlmostEqual(None, maps, separate, delta=1e-5, mode="max")
    _, diagnostics = explainer.attribute_phrases(images, phrases, return_diagnostics=True)
    _, expected = explainer.attribute(repeated, (phrases * 4,), return_diagnostics=True)
    assert diagnostics.phrases == expected.phrases == phrases * 4
    assert diagnostics.rollout_depths == expected.rollout_depths
    assert diagnostics.priors.keys() == expected.priors.keys() == {"anatomy", "text"}
    for name in ("score", "per_layer", "layer_weights", "rollouts", "consistency",
                 "evidence", "fused"):
        assertTensorAlmostEqual(None, getattr(diagnostics, name), getattr(expected, name),
                                delta=1e-5, mode="max")
    for name, prior in expected.priors.items():
        assertTensorAlmostEqual(None, diagnostics.priors[name], prior, delta=1e-5, mode="max")
    rows = [[PHRASES[i], "cardiomegaly"] for i in range(4)]
    per_image = explainer.attribute_phrases(images, rows, output="grid")
    assert per_image.shape == (4, 2, 1, 4, 4)
    single = explainer.attribute(images, (PHRASES,), output="grid")
    assertTensorAlmostEqual(None, per_image[:, 0], single, delta=1e-5, mode="max")
    with pytest.raises(ValueError, match="4 lists of the same K phrases"):
        explainer.attribute_phrases(images, [["a"], ["b", "c"], ["d"], ["e"]])
    with pytest.raises(ValueError, match="non-empty list"):
        explainer.attribute_phrases(images, "one phrase")


def test_many_phrases_as_embeddings(clip_model, tokenizer, images):
    explainer = MATEX(clip_model, tokenizer)
    text = torch.randn(3, clip_model.config.projection_dim, generator=torch.Generator().manual_seed(0))
    maps = explainer.attribute_phrases(images[:2], text, output="grid")
    separate = explainer.attribute(images[:2].repeat_interleave(3, 0), (text.repeat(2, 1),),
                                   output="grid")
    assertTensorAlmostEqual(None, maps.flatten(0, 1), separate, delta=1e-5, mode="max")
    with pytest.raises(ValueError, match=r"\(K, E\) or \(2, K, E\)"):
        explainer.attribute_phrases(images[:2], text[None].expand(3, -1, -1))
