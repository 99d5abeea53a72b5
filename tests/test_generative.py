"""Generative image-to-text models (LLaVA, PaliGemma, Gemma 3) on tiny random models
built from configs: the explained log-likelihood is the model's own, MATEX's maps are
valid and phrase-dependent, the model is restored, and every method runs or refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from conftest import IMAGE_TOKEN_ID, make_generative, make_tokenizer
from helpers import assert_valid_maps

from captum_matex import MATEX, SimilarityForward, baselines
from captum_matex.adapters import GenerativeAdapter, get_adapter
from captum_matex.matex import EVIDENCE_BACKGROUND, FUSION_ALPHA, PRIOR_GATE, readout_kind
from captum_matex.stages import DecoderAttentionPrior, PriorGate

pytestmark = pytest.mark.usefixtures("tiny_threads")

FAMILIES = ["llava", "llava-full", "llava-siglip", "paligemma", "gemma3"]
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
#: two phrases as token ids of the tiny vocabulary, the second one token shorter (padded with 0)
PHRASE_IDS = torch.tensor([[17, 4, 14, 15], [5, 10, 13, 0]])
#: the same two phrases swapped between the images
SWAPPED_IDS = PHRASE_IDS.flip(0)
TOKENIZER = make_tokenizer()
CHEAP = {"llm_attribution": dict(cells=2), "integrated_gradients": dict(n_steps=4, internal_batch_size=16),
         "smoothgrad": dict(nt_samples=2), "feature_ablation": dict(cell=2)}


def own_log_likelihood(model, adapter: GenerativeAdapter, images, phrase_ids) -> torch.Tensor:
    r"""The phrase's summed log-probability from the model's own forward pass with
    ``pixel_values`` and its own loss (mean cross-entropy over the labelled tokens),
    one sample at a time."""
    seq = adapter.sequences(phrase_ids)
    prefix = seq.input_ids.shape[1] - phrase_ids.shape[1]
    labels = seq.input_ids.masked_fill(seq.attention_mask == 0, -100)
    labels[:, :prefix] = -100
    scores = []
    for b in range(images.shape[0]):
        extra = {} if seq.token_type_ids is None else {"token_type_ids": seq.token_type_ids[b:b + 1]}
        with torch.no_grad():
            out = model(input_ids=seq.input_ids[b:b + 1], pixel_values=images[b:b + 1],
                        attention_mask=seq.attention_mask[b:b + 1], labels=labels[b:b + 1], **extra)
        scores.append(-out.loss * seq.phrase_mask[b].sum())
    return torch.stack(scores)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_target_is_the_models_own_log_likelihood_of_the_phrase(family):
    model = make_generative(family)
    adapter = get_adapter(model)
    score = SimilarityForward(model)(IMAGES, PHRASE_IDS)
    expected = own_log_likelihood(model, adapter, IMAGES, PHRASE_IDS)
    # float32 sums of a handful of log-probabilities of size ~3: 1e-5 relative is ~20 ulps
    torch.testing.assert_close(score, expected, atol=1e-5, rtol=1e-5)
    assert score.shape == (2,) and (score < 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_image_tokens_are_the_models_own(family):
    model = make_generative(family)
    adapter = get_adapter(model)
    with adapter.explaining(), torch.no_grad():
        trace = adapter.trace(IMAGES, PHRASE_IDS, attentions=False)
        own = model.get_image_features(pixel_values=IMAGES)
    own = getattr(own, "pooler_output", own)
    own = torch.stack(list(own)) if isinstance(own, (list, tuple)) else own
    torch.testing.assert_close(trace.image_embeddings, own, atol=1e-5, rtol=1e-5)


def test_llava_leaves_out_the_vision_blocks_after_the_feature_layer():
    model = make_generative("llava", layers=3)  # the projector reads block -2
    adapter = get_adapter(model)
    assert adapter.num_layers == 2
    with adapter.explaining(), torch.enable_grad():
        trace = adapter.trace(IMAGES.clone().requires_grad_(True), PHRASE_IDS)
        grads = torch.autograd.grad(trace.score.sum(), trace.attentions)
    # each captured block reaches the score (a later block would have no gradient at all)
    assert all(bool(g.abs().sum() > 0) for g in grads)
    # the readout is every patch token the projector hands on, not the class token
    weights = trace.readout_weights()
    assert weights[:, 0].eq(0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2), atol=1e-6, rtol=0)


def test_llava_reading_the_class_token_reads_it_in_the_rollout_too():
    adapter = get_adapter(make_generative("llava-full"))
    assert adapter.num_image_tokens == 17  # 16 patches and the class token
    with adapter.explaining():
        trace = adapter.trace(IMAGES, PHRASE_IDS)
    weights = trace.readout_weights()
    torch.testing.assert_close(weights, torch.full((2, 17), 1 / 17), atol=1e-7, rtol=0)
    assert trace.target_pass.image_mask.numel() == 16  # the prior's cells: patches only


def test_paligemma_scores_the_phrase_as_the_causal_suffix():
    model = make_generative("paligemma")
    adapter = get_adapter(model)
    seq = adapter.sequences(PHRASE_IDS)
    assert seq.token_type_ids[:, -PHRASE_IDS.shape[1]:].eq(1).all()
    assert seq.token_type_ids[:, :-PHRASE_IDS.shape[1]].eq(0).all()
    score = SimilarityForward(model)(IMAGES, PHRASE_IDS)
    # marking the phrase as prefix too would let each of its tokens see the later ones
    prefix_only = adapter.token_types
    adapter.token_types = lambda prefix, length: torch.zeros(len(prefix) + length, dtype=torch.long)
    try:
        leaked = SimilarityForward(adapter)(IMAGES, PHRASE_IDS)
    finally:
        adapter.token_types = prefix_only
    assert (score - leaked).abs().amax() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_matex_gives_valid_phrase_dependent_maps_from_token_ids(family):
    model = make_generative(family)
    explainer = MATEX(model, decoder_prior=DecoderAttentionPrior())
    maps, diag = explainer.attribute(IMAGES, (PHRASE_IDS,), return_diagnostics=True)
    assert_valid_maps(maps, IMAGES)
    assert (maps.flatten(1).std(1) > 1e-3).all(), "a constant map"
    grid = get_adapter(model).grid_size(IMAGES)
    decoder = diag.priors["decoder"]
    assert decoder.shape == (2, *grid)
    assert (decoder >= 0).all() and (decoder <= 1).all() and (decoder.flatten(1).std(1) > 0).all()
    assert (diag.evidence.flatten(1).std(1) > 0).all()
    reordered = explainer.attribute(IMAGES.flip(0), (SWAPPED_IDS,)).flip(0)
    # the same pairs in another batch order: equal up to float32 rounding
    torch.testing.assert_close(reordered, maps, atol=1e-5, rtol=0)
    swapped = explainer.attribute(IMAGES, (SWAPPED_IDS,))
    assert ((maps - swapped).flatten(1).abs().amax(1) > 1e-3).all(), "maps ignore the phrase"


def test_matex_defaults_on_a_generative_model_are_the_measured_ones():
    from conftest import make_clip

    explainer = MATEX(make_generative("llava"))
    assert readout_kind(explainer.adapter) == "decoder"
    assert explainer.decoder_prior is None and explainer.fusion.alpha == FUSION_ALPHA["decoder"] == 0
    # gated, as on the dual encoders: the priors follow the decoder's evidence
    assert isinstance(explainer.fusion.gate, PriorGate) and PRIOR_GATE["decoder"]
    assert explainer.fusion.background is None is EVIDENCE_BACKGROUND["decoder"]  # measured: kept
    from captum_matex.stages import EvidenceBasins, RegionSmoothing
    from captum_matex.zoo import phantom_prior

    # measured: with the built-in (drawn) atlas the priors weigh evidence basins, unsmoothed;
    # with a fitted atlas they re-weight patch by patch, smoothed within regions as for a probe
    assert isinstance(explainer.fusion.basins, EvidenceBasins)
    assert explainer.fusion.region_smoothing is None
    fitted = MATEX(make_generative("llava"), anatomical_prior=phantom_prior())
    assert isinstance(fitted.fusion.region_smoothing, RegionSmoothing) and fitted.fusion.basins is None
    _, diag = explainer.attribute(IMAGES, (PHRASE_IDS,), return_diagnostics=True)
    assert list(diag.priors) == ["anatomy"]
    clip = MATEX(make_clip())
    assert clip.fusion.alpha == FUSION_ALPHA["class token"] == 0.875  # dual encoders keep theirs
    assert clip.fusion.background == EVIDENCE_BACKGROUND["class token"] == 0.5
    with_prior = baselines.get("matex_with_decoder_prior")(make_generative("llava"))
    _, diag = with_prior.attribute(IMAGES, (PHRASE_IDS,), return_diagnostics=True)
    assert list(diag.priors) == ["anatomy", "decoder"]


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_phrases_of_one_report_share_one_vision_pass(family):
    model = make_generative(family)
    explainer = MATEX(model, decoder_prior=DecoderAttentionPrior())
    passes = []
    handle = explainer.adapter.vision.embeddings.register_forward_hook(lambda *_: passes.append(1))
    try:
        together, diag = explainer.attribute_phrases(IMAGES, PHRASE_IDS, return_diagnostics=True)
    finally:
        handle.remove()
    assert passes == [1]
    assert together.shape == (2, 2, *IMAGES.shape[1:])
    for k in range(2):
        alone, alone_diag = explainer.attribute(
            IMAGES, (PHRASE_IDS[k].expand(2, -1),), return_diagnostics=True
        )
        # the same arithmetic in a batch of B * K decoder rows instead of B: float32 rounding
        torch.testing.assert_close(together[:, k], alone, atol=1e-4, rtol=0)
        torch.testing.assert_close(diag.score[k::2], alone_diag.score, atol=1e-5, rtol=1e-5)


def generative_state(model) -> dict:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "attention": [getattr(m.config, "_attn_implementation", None)
                      for m in model.modules() if hasattr(m, "config")],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "grads": [n for n, p in model.named_parameters() if p.grad is not None],
    }


@pytest.mark.parametrize("family", ["llava", "paligemma"])
def test_the_model_is_restored_after_success_and_after_an_error(family):
    model = make_generative(family)
    model.train()
    model.get_decoder().layers[0].eval()
    SimilarityForward(model)(IMAGES, PHRASE_IDS)  # transformers adds its own hooks on a first pass
    before = generative_state(model)
    assert "sdpa" in before["attention"]
    MATEX(model).attribute(IMAGES, (PHRASE_IDS,))
    assert generative_state(model) == before

    def fail(*_):
        raise RuntimeError("injected in the decoder")

    handle = model.get_decoder().layers[-1].mlp.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="injected"):
        MATEX(model).attribute(IMAGES, (PHRASE_IDS,))
    handle.remove()
    assert generative_state(model) == before


@pytest.mark.parametrize("family", ["llava", "paligemma"])
@pytest.mark.parametrize("name", baselines.available())
def test_every_method_runs_on_generative_models_or_refuses_by_name(name, family):
    model = make_generative(family)
    method = baselines.get(name)
    needs = set(method.requires) - set(get_adapter(model).capabilities)
    if needs:
        with pytest.raises(ValueError, match=f"transformers-{family} models"):
            method(model, TOKENIZER, **CHEAP.get(name, {}))
        return
    maps = method(model, TOKENIZER, **CHEAP.get(name, {})).attribute(IMAGES, (PHRASE_IDS,))
    assert maps.shape == IMAGES.shape and torch.isfinite(maps).all() and (maps >= 0).all()


def test_captum_llm_attribution_is_the_log_likelihood_drop_of_each_blanked_segment():
    model = make_generative("llava")
    explainer = baselines.get("llm_attribution")(model, TOKENIZER, cells=2, normalize=None, sign=None)
    maps = explainer.attribute(IMAGES[:1], (PHRASE_IDS[:1],), output="pixel")[0, 0]
    forward = explainer.forward_func  # the same target, prompt included
    image = IMAGES[:1]
    low, span = image.min(), image.max() - image.min()
    # Captum sees the film as 8 bits; a blanked segment is white, i.e. the film's maximum
    quantised = ((image - low) / span * 255).round() / 255 * span + low
    full = forward(quantised, PHRASE_IDS[:1])
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        blanked = quantised.clone()
        blanked[..., row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] = image.max()
        drop = full - forward(blanked, PHRASE_IDS[:1])
        cell = maps[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16]
        assert cell.std() == 0  # one value per segment (exact: the value is copied)
        # the same forward pass on the same pixels, up to float32 rounding of 255ths
        torch.testing.assert_close(cell[0, 0], drop[0], atol=1e-4, rtol=1e-4)


def test_captum_llm_attribution_needs_a_tokenizer_and_a_plain_prompt():
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        baselines.get("llm_attribution")(make_generative("llava")).attribute(IMAGES, (PHRASE_IDS,))
    with pytest.raises(ValueError, match="token_type_ids"):
        baselines.get("llm_attribution")(make_generative("gemma3"), TOKENIZER)


def test_m2ib_refuses_generative_models_naming_the_missing_contrastive_embedding():
    for family in ("llava", "paligemma", "gemma3"):
        with pytest.raises(ValueError, match="M2IB needs .*contrastive embedding.*log-likelihood"):
            baselines.get("m2ib")(make_generative(family))


def test_captum_methods_run_on_the_same_log_likelihood():
    model = make_generative("llava")
    forward = SimilarityForward(model)
    saliency = Saliency(forward).attribute(IMAGES.clone(), additional_forward_args=(PHRASE_IDS,))
    assert saliency.shape == IMAGES.shape and saliency.abs().sum() > 0
    integrated = IntegratedGradients(forward).attribute(
        IMAGES, baselines=IMAGES * 0, additional_forward_args=(PHRASE_IDS,), n_steps=32,
        return_convergence_delta=True,
    )
    attributions, delta = integrated
    # completeness: the attributions add up to s(x) - s(0) (gaps 0.02 and 0.18 here);
    # measured deltas 1e-6 at 32 Gauss-Legendre steps (7e-3 at 8), so 1e-4 leaves a margin
    assert attributions.shape == IMAGES.shape
    assert (delta.abs() < 1e-4).all()


def test_phrases_and_prompt_as_strings_through_a_tokenizer():
    model = make_generative("llava")
    tokenizer = make_tokenizer()
    explainer = MATEX(model, tokenizer, prompt="the <image> no acute process")
    adapter = explainer.adapter
    ids = tokenizer("the", add_special_tokens=False)["input_ids"]
    prefix = adapter.prefix_ids()
    assert prefix[:1 + len(ids)] == [tokenizer.bos_token_id, *ids]  # BOS, then the text before the image
    assert prefix.count(IMAGE_TOKEN_ID) == adapter.num_image_tokens
    maps, diag = explainer.attribute(IMAGES, (["small left pleural effusion", "cardiac silhouette"],),
                                     return_diagnostics=True)
    assert_valid_maps(maps, IMAGES)
    assert diag.phrases == ["small left pleural effusion", "cardiac silhouette"]
    by_ids = MATEX(model, prompt=adapter.prompt_ids()[1], anatomical_prior=None)
    assert by_ids.adapter.prefix_ids() != prefix  # no text before the image without the marker


def test_impossible_text_is_refused_clearly():
    model = make_generative("llava")
    with pytest.raises(TypeError, match="log-likelihood.*not embeddings"):
        MATEX(model).attribute(IMAGES, (torch.randn(2, 16),))
    with pytest.raises(ValueError, match="prompt= applies to generative models"):
        from conftest import make_clip

        MATEX(make_clip(), prompt="Findings:")
    with pytest.raises(ValueError, match="no tokenizer"):
        MATEX(model).attribute(IMAGES, (["left pleural effusion"] * 2,))


# --------------------------------------------------------------------------
# loading a snapshot and the command line
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    r"""A tiny LLaVA saved with its processor, as a downloaded snapshot is laid out."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1,
    )
    folder = tmp_path_factory.mktemp("llava")
    make_generative("llava").save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_llava_snapshot_loads_from_its_config_and_explains_a_dicom_film(llava_dir, tmp_path):
    import json

    from pydicom.data import get_testdata_file

    from captum_matex.cli import main
    from captum_matex.loading import load_model

    model, processor = load_model(str(llava_dir))
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert get_adapter(model, processor).family == "transformers-llava"
    film = get_testdata_file("RG1_UNCI.dcm")
    out = tmp_path / "out"
    assert main(["explain", film, "small left pleural effusion", "--model", str(llava_dir),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (record,) = summary["phrases"]
    assert record["score"] < 0  # a log-likelihood
    heat = np.load(out / record["files"][1])
    assert heat.shape == tuple(summary["original_size"]) and heat.max() > 0
    assert "report" not in summary and not (out / "report.html").exists()


def test_explain_generate_writes_an_html_report_linking_each_phrase(llava_dir, tmp_path):
    import json
    import re

    from captum_matex.cli import main
    from captum_matex.data import PhantomCXR
    from PIL import Image

    film = tmp_path / "film.png"
    Image.fromarray((PhantomCXR("test")[0].image[0].numpy() * 255).astype("uint8")).save(film)
    out = tmp_path / "report"
    assert main(["explain", str(film), "--generate", "--max-new-tokens", "8",
                 "--model", str(llava_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    page = (out / "report.html").read_text()
    explained = [r["phrase"] for r in summary["phrases"]]
    from captum_matex.phrases import is_negated, report_phrases

    assert explained == [p for p in report_phrases(summary["report"]) if not is_negated(p)]
    assert explained, "the random model's report had no phrase to explain"
    for index, record in enumerate(summary["phrases"]):
        overlay = record["files"][0]
        assert (out / overlay).is_file()
        assert f'href="#phrase-{index}"' in page and f'src="{overlay}"' in page
    # everything the page links is a file beside it: the folder can be zipped as it is
    for link in re.findall(r'src="([^"]+)"', page):
        assert not link.startswith(("/", "http")) and (out / link).is_file()


def test_generate_refuses_a_dual_encoder_by_name(tmp_path, capsys):
    from captum_matex.cli import main
    from captum_matex.data import PhantomCXR
    from PIL import Image

    film = tmp_path / "film.png"
    Image.fromarray((PhantomCXR("test")[0].image[0].numpy() * 255).astype("uint8")).save(film)
    assert main(["explain", str(film), "--generate", "--out", str(tmp_path / "o")]) == 2
    assert "--generate needs a generative model" in capsys.readouterr().err


def test_a_vision_tower_of_another_layout_is_refused_by_name():
    model = make_generative("llava")
    encoder = model.model.vision_tower.encoder
    encoder.layer = encoder.layers  # a DINOv2-like layout: encoder.layer, no encoder.layers
    del encoder.layers
    with pytest.raises(ValueError, match="not of the CLIP or SigLIP layout"):
        MATEX(model)
