"""SigLIP-family models (SiglipModel, Siglip2Model with NaFlex, SiglipTowers): the adapter's
sigmoid-logit target and attention-probe readout agree with the model's own outputs, every
method runs or refuses by name, maps are valid and phrase-dependent, the model is restored."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import Saliency
from conftest import WORDS, make_siglip, make_tokenizer
from helpers import assert_valid_maps, model_state

try:  # transformers 5.x: the numpy patchifier of the PIL processor (no torchvision)
    from transformers.models.siglip2.image_processing_pil_siglip2 import convert_image_to_patches
except ImportError:  # transformers 4.x
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

from captum_matex import MATEX, SimilarityForward, registry
from captum_matex.adapters import (
    HFSiglip2Adapter,
    HFSiglipAdapter,
    SiglipTowers,
    get_adapter,
)
from captum_matex.stages import Fusion, LayerConsistency, MultiScaleRollout, PriorGate
from captum_matex.targets import SigmoidLogit

pytestmark = pytest.mark.usefixtures("tiny_threads")

TOKENIZER = make_tokenizer()
PHRASES = ["left pleural effusion", "right upper lobe opacity"]
#: float32 agreement of two computations of the same logit (explicit vs fused
#: attention, another summation order): a few ulps of values of size ~5
ATOL = 1e-5


def ids(phrases=PHRASES):
    return TOKENIZER(list(phrases), padding="max_length", max_length=16, return_tensors="pt")[
        "input_ids"
    ]


def images(batch=2, height=32, width=32, seed=1):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def naflex(pixels: torch.Tensor, patch: int):
    """A SigLIP 2 processor's layout for ``pixels``, built with transformers' own patchifier."""
    patches = torch.stack(
        [torch.from_numpy(convert_image_to_patches(image.numpy(), patch)) for image in pixels]
    )
    grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
    mask = torch.ones(patches.shape[:2], dtype=torch.long)
    return patches, mask, torch.tensor([grid] * len(pixels))


def test_dispatch_is_on_class_and_config_not_on_names():
    assert type(get_adapter(make_siglip(1))) is HFSiglipAdapter
    assert type(get_adapter(make_siglip(2))) is HFSiglip2Adapter


def test_siglip_target_is_the_models_own_sigmoid_logit():
    model = make_siglip(1)
    adapter = get_adapter(model, TOKENIZER)
    x, text = images(), ids()
    with torch.no_grad():
        out = model(input_ids=text, pixel_values=x)
        score = SimilarityForward(model)(x, text)
        pooled = model.get_image_features(pixel_values=x).pooler_output
        with adapter.explaining():
            trace = adapter.trace(x, adapter.encode_text(text))
    assert isinstance(adapter.target, SigmoidLogit)
    torch.testing.assert_close(score, out.logits_per_image.diagonal(), atol=ATOL, rtol=0)
    # the MAP readout (explicit probe attention) is the model's pooled embedding
    torch.testing.assert_close(trace.image_embeddings, pooled, atol=ATOL, rtol=0)
    # and the logit is not the cosine (scale e^2.3, bias -4)
    cosine = torch.nn.functional.cosine_similarity(pooled, adapter.encode_text(text))
    assert (score - cosine).abs().min() > 1.0
    # the probe reads every patch: one query, probabilities summing to one
    assert trace.readout_attention.shape == (2, 2, 1, 16)
    torch.testing.assert_close(
        trace.readout_attention.sum(-1), torch.ones(2, 2, 1), atol=1e-6, rtol=0
    )


def test_siglip2_non_square_target_equals_the_model_on_its_naflex_input():
    model = make_siglip(2)  # 16 position embeddings (4 x 4), resized by the model
    adapter = get_adapter(model, TOKENIZER)
    x, text = images(height=24, width=40), ids()  # a 3 x 5 patch grid
    patches, mask, shapes = naflex(x, 8)
    with torch.no_grad():
        out = model(input_ids=text, pixel_values=patches, pixel_attention_mask=mask,
                    spatial_shapes=shapes)
        score = SimilarityForward(model)(x, text)
    torch.testing.assert_close(score, out.logits_per_image.diagonal(), atol=ATOL, rtol=0)
    # processor outputs convert back to the (B, C, H, W) images exactly (a permutation)
    assert torch.equal(adapter.images_from_patches(patches, mask, shapes), x)


def test_siglip2_refuses_sizes_off_the_patch_grid_and_mixed_grids():
    adapter = get_adapter(make_siglip(2))
    with pytest.raises(ValueError, match="multiples of its patch size 8"):
        SimilarityForward(adapter)(images(height=30, width=40), ids())
    patches, mask, _ = naflex(images(height=24, width=40), 8)
    with pytest.raises(ValueError, match="2 different patch grids"):
        adapter.images_from_patches(patches, mask, torch.tensor([[3, 5], [5, 3]]))


def test_siglip_towers_pair_equals_the_full_model():
    model = make_siglip(1)
    towers = SiglipTowers(model.vision_model, model.text_model, model.logit_scale.item(),
                          model.logit_bias.item())
    x, text = images(), ids()
    with torch.no_grad():
        expected = model(input_ids=text, pixel_values=x).logits_per_image.diagonal()
        torch.testing.assert_close(SimilarityForward(towers)(x, text), expected, atol=ATOL,
                                   rtol=0)


@pytest.mark.parametrize("version,size", [(1, (32, 32)), (2, (24, 40))])
def test_matex_maps_are_valid_phrase_dependent_and_the_model_is_restored(version, size):
    model = make_siglip(version)
    x = images(*(2,), height=size[0], width=size[1])
    SimilarityForward(model)(x, ids())  # warm-up: transformers adds its own hooks once
    model.train()
    before = model_state(model)
    explainer = MATEX(model, TOKENIZER)
    maps, diag = explainer.attribute(x, (PHRASES,), return_diagnostics=True)
    assert model_state(model) == before
    assert_valid_maps(maps, x)
    assert diag.grid == (size[0] // 8, size[1] // 8)
    assert (diag.evidence.flatten(1).std(1) > 0).all(), "a constant map"
    swapped = explainer.attribute(x, (PHRASES[::-1],))
    assert (maps - swapped).abs().amax() > 1e-3, "the maps do not depend on the phrase"


def test_matex_fuses_with_the_alpha_measured_for_its_readout():
    from conftest import make_clip

    from captum_matex.matex import FUSION_ALPHA, readout_kind

    siglip, clip = MATEX(make_siglip(), make_tokenizer()), MATEX(make_clip(), make_tokenizer())
    assert readout_kind(siglip.adapter) == "attention probe" and siglip.fusion.alpha == 0.0
    assert readout_kind(clip.adapter) == "class token" and clip.fusion.alpha == 0.875
    assert FUSION_ALPHA == {"class token": 0.875, "attention probe": 0.0, "decoder": 0.0}
    assert isinstance(siglip.fusion.gate, PriorGate) and isinstance(clip.fusion.gate, PriorGate)
    assert siglip.fusion.background == clip.fusion.background == 0.5
    from captum_matex.stages import EvidenceBasins, RegionSmoothing
    from captum_matex.zoo import phantom_prior

    # with a fitted atlas both smooth within regions; with the built-in (drawn) atlas
    # neither smooths and the priors weigh evidence basins
    fitted_siglip = MATEX(make_siglip(), make_tokenizer(), anatomical_prior=phantom_prior())
    fitted_clip = MATEX(make_clip(), make_tokenizer(), anatomical_prior=phantom_prior())
    assert isinstance(fitted_siglip.fusion.region_smoothing, RegionSmoothing)
    assert isinstance(fitted_clip.fusion.region_smoothing, RegionSmoothing)
    assert fitted_siglip.fusion.basins is None and fitted_clip.fusion.basins is None
    for drawn in (siglip, clip):
        assert drawn.fusion.region_smoothing is None
        assert isinstance(drawn.fusion.basins, EvidenceBasins)
    # the weight reaches the map: the probe model's map differs from one fused at CLIP's alpha
    images, phrases = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), WORDS[:2]
    default = siglip.attribute(images, (phrases,))
    clip_fusion = Fusion(alpha=FUSION_ALPHA["class token"], gate=PriorGate(), background=0.5,
                         basins=EvidenceBasins())
    at_clip_alpha = MATEX(make_siglip(), make_tokenizer(), fusion=clip_fusion).attribute(
        images, (phrases,))
    assert (default - at_clip_alpha).abs().amax() > 1e-3


def test_matex_weighs_the_layers_at_the_temperature_measured_for_its_readout():
    from conftest import make_clip

    from captum_matex.matex import CONSISTENCY_TEMPERATURE

    siglip, clip = MATEX(make_siglip(), make_tokenizer()), MATEX(make_clip(), make_tokenizer())
    probe = CONSISTENCY_TEMPERATURE["attention probe"]
    assert siglip.consistency.temperature == probe
    assert clip.consistency.temperature == CONSISTENCY_TEMPERATURE["class token"] == 0.05
    assert probe != 0.05
    # the temperature reaches the map: the probe model's map differs from one at CLIP's
    images, phrases = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), WORDS[:2]
    default = siglip.attribute(images, (phrases,))
    at_clip_temperature = MATEX(
        make_siglip(), make_tokenizer(), consistency=LayerConsistency(temperature=0.05)
    ).attribute(images, (phrases,))
    assert (default - at_clip_temperature).abs().amax() > 1e-3


def test_probe_relevance_starts_the_rollout_and_reads_each_block():
    model = make_siglip(1, layers=4)
    explainer = MATEX(model, TOKENIZER)
    x = images()
    with explainer.adapter.explaining():
        trace, relevance, readout, decoder = explainer._attention_relevance(
            x, explainer.adapter.encode_text(ids()), explainer.attention.block
        )
    assert relevance.shape == (2, 4, 16, 16) and readout.shape == (2, 16)
    assert decoder is None  # a dual encoder's target forms no attention of its own
    # the row the embedding reads: the probe's attention, averaged over heads
    with explainer.adapter.explaining():
        again = explainer.adapter.trace(x, explainer.adapter.encode_text(ids()))
    torch.testing.assert_close(readout, again.readout_attention.mean((1, 2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(readout.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
    rows = MultiScaleRollout(windows=(1,))(relevance, 0, readout=readout)[:, 0]
    step = torch.eye(16) + relevance[:, -1]
    step = step / step.sum(-1, keepdim=True)
    expected = (readout / readout.sum(-1, keepdim=True))[:, None] @ step
    torch.testing.assert_close(rows, expected[:, 0], atol=1e-6, rtol=1e-5)
    per_layer = LayerConsistency()(relevance, 0, readout=readout).per_layer
    direct = torch.einsum("bt,bltn->bln", readout, relevance)
    direct = direct / direct.amax(-1, keepdim=True)
    torch.testing.assert_close(per_layer, direct, atol=1e-6, rtol=1e-5)


def test_a_class_token_readout_row_is_the_old_cls_row():
    relevance = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    one_hot = torch.zeros(2, 5)
    one_hot[:, 0] = 1
    rollout = MultiScaleRollout()
    torch.testing.assert_close(rollout(relevance, 1, readout=one_hot), rollout(relevance, 1))
    consistency = LayerConsistency()
    torch.testing.assert_close(consistency(relevance, 1, readout=one_hot).map,
                               consistency(relevance, 1).map)


@pytest.mark.parametrize("version", [1, 2])
def test_every_method_runs_or_refuses_by_name(version):
    model = make_siglip(version)
    x = images(height=24, width=40) if version == 2 else images()
    family = get_adapter(model).family
    cheap = {"integrated_gradients": dict(n_steps=4), "smoothgrad": dict(nt_samples=2)}
    ran = set()
    for name in registry.methods.available():
        cls = registry.methods.get(name)
        if "class token" in cls.requires:
            with pytest.raises(ValueError, match=f"needs a class token; {family} models pool"):
                cls(model, TOKENIZER)
            continue
        if set(cls.requires) - set(get_adapter(model).capabilities):  # e.g. a decoder's prompt
            with pytest.raises(ValueError, match=f"{family} models"):
                cls(model, TOKENIZER)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = cls(model, TOKENIZER, **cheap.get(name, {})).attribute(x, (PHRASES,))
        assert maps.shape == x.shape and torch.isfinite(maps).all(), name
        ran.add(name)
    assert {"matex", "chefer", "rollout", "gradcam", "legrad", "saliency"} <= ran
    assert {"m2ib", "grad_eclip"}.isdisjoint(ran)


def test_attribute_phrases_matches_attribute_per_phrase():
    model = make_siglip(1)
    explainer = MATEX(model, TOKENIZER)
    x = images()
    batched = explainer.attribute_phrases(x, PHRASES)
    for k, phrase in enumerate(PHRASES):
        torch.testing.assert_close(batched[:, k], explainer.attribute(x, (phrase,)),
                                   atol=1e-5, rtol=0)


def test_captum_saliency_explains_the_sigmoid_logit():
    model = make_siglip(1)
    x = images().requires_grad_(True)
    forward = SimilarityForward(model, TOKENIZER)
    grads = Saliency(forward).attribute(x, additional_forward_args=(ids(),), abs=False)
    score = forward(x, ids()).sum()
    (expected,) = torch.autograd.grad(score, x)
    torch.testing.assert_close(grads, expected, atol=1e-6, rtol=1e-5)
    assert len(WORDS) + 4 == model.config.text_config.vocab_size


def test_a_siglip_model_without_its_head_is_refused():
    model = make_siglip(1)
    model.vision_model.head = None
    with pytest.raises((ValueError, TypeError), match="head"):
        MATEX(model, TOKENIZER)


@pytest.fixture(scope="module")
def medsiglip_shaped_dir(tmp_path_factory):
    r"""A random SiglipModel of MedSigLIP-448's input shape (448 px, 14 px patches, a
    32 x 32 grid; tiny widths) saved with its processor, as a local snapshot is."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(WORDS) + 4, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=448, patch_size=14, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2),
    )
    folder = tmp_path_factory.mktemp("medsiglip")
    SiglipModel(config).save_pretrained(folder)
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": 448, "width": 448}),
        tokenizer=TOKENIZER,
    )
    processor.save_pretrained(folder)
    return folder


def test_a_medsiglip_shaped_snapshot_loads_and_explains_a_dicom_film(medsiglip_shaped_dir, tmp_path):
    import json

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    from captum_matex.cli import main
    from captum_matex.loading import load_model

    model, _ = load_model(str(medsiglip_shaped_dir))
    assert type(model).__name__ == "SiglipModel"
    assert model.config.vision_config._attn_implementation == "eager"
    film = get_testdata_file("RG1_UNCI.dcm")
    out = tmp_path / "out"
    assert main(["explain", film, "left pleural effusion", "--model",
                 str(medsiglip_shaped_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_input_size"] == [448, 448]
    header = pydicom.dcmread(film, stop_before_pixels=True)
    heat = np.load(out / "map_00_left-pleural-effusion.npy")
    assert heat.shape == (int(header.Rows), int(header.Columns))
    assert np.isfinite(heat).all() and heat.max() > 0 and heat.std() > 0


def test_load_model_refuses_a_checkpoint_that_is_no_dual_encoder(tmp_path):
    from transformers import BertConfig

    from captum_matex.loading import ModelLoadError, load_model

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="holds a 'bert' model"):
        load_model(str(tmp_path))


def test_the_support_matrix_is_what_the_constructors_do():
    from conftest import make_clip, make_generative

    from captum_matex.support import support_matrix, support_table

    matrix = support_matrix()
    models = {"transformers-clip": make_clip(), "transformers-siglip": make_siglip(1),
              "transformers-siglip2": make_siglip(2),
              **{f"transformers-{f}": make_generative(f) for f in ("llava", "paligemma", "gemma3")}}
    for name, row in matrix.items():
        method = registry.methods.get(name)
        for family, model in models.items():
            if row[family] is None:
                method(model, TOKENIZER)
            else:
                with pytest.raises(ValueError) as refused:
                    method(model, TOKENIZER)
                assert str(refused.value) == row[family]
    assert matrix["m2ib"]["transformers-siglip"].startswith("M2IB needs a class token")
    table = support_table()
    assert "✗ needs a class token" in table and table.count("   * - ") == len(matrix) + 1


def test_matex_demo_runs_on_the_embedded_phantom_siglip(tmp_path):
    import json

    from captum_matex.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--model", "phantom-siglip", "--cases", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["model"] == "phantom-siglip" and len(summary["cases"]) == 4
    assert all((out / case["figure"]).stat().st_size > 1000 for case in summary["cases"])
