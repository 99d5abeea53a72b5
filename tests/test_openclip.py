"""open_clip adapters: open_clip ViT and timm ViT trunk (BiomedCLIP); random weights, no download."""

from __future__ import annotations

import pytest

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import PHRASES, make_tokenizer  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from transformers import BertConfig  # noqa: E402

from captum_matex import MATEX, baselines  # noqa: E402
from captum_matex.adapters import HFCLIPAdapter, OpenCLIPAdapter, TimmOpenCLIPAdapter, get_adapter  # noqa: E402
from captum_matex.support import runnable_methods  # noqa: E402
from captum_matex.cli import main  # noqa: E402
from captum_matex.data import read_image  # noqa: E402
from captum_matex.data.geometry import prepare  # noqa: E402
from captum_matex.loading import (  # noqa: E402
    ModelLoadError,
    OpenCLIPProcessor,
    load_model,
    load_open_clip,
)

# small settings for the costly methods; every other method runs with its defaults
FAST = {
    "m2ib": dict(steps=1, num_samples=2),
    "integrated_gradients": dict(n_steps=4),
    "smoothgrad": dict(nt_samples=2),
}


pytestmark = pytest.mark.usefixtures("tiny_threads")


def open_clip_vit(seed: int = 0) -> nn.Module:
    """open_clip's CLIP with its own VisionTransformer (2 blocks, 32 px, 8 px patches)."""
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
        text_cfg=dict(context_length=16, width=32, heads=2, layers=1),
    ).eval()


def biomedclip(tmp_path, trunk: nn.Module | None = None, seed: int = 0) -> nn.Module:
    r"""BiomedCLIP's architecture: a timm ViT trunk (``vit_base_patch16_224`` unless
    ``trunk`` is given) and a BERT text tower from a local config, no pretrained weights."""
    torch.manual_seed(seed)
    BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, pad_token_id=0,
    ).save_pretrained(tmp_path)
    model = open_clip.CustomTextCLIP(
        embed_dim=16,
        vision_cfg=dict(
            timm_model_name="vit_base_patch16_224", timm_model_pretrained=False,
            timm_pool="", timm_proj="linear", image_size=224,
        ),
        text_cfg=dict(
            hf_model_name=str(tmp_path), hf_model_pretrained=False, hf_tokenizer_name=str(tmp_path),
            hf_proj_type="mlp", hf_pooler_type="cls_last_hidden_state_pooler", context_length=16,
        ),
    )
    if trunk is not None:
        model.visual.trunk = trunk
        model.visual.head.proj = nn.Linear(trunk.num_features, 16, bias=False)
    return model.eval()


def tiny_timm_vit() -> nn.Module:
    """timm's VisionTransformer (the class of ``vit_base_patch16_224``), 2 blocks, 32 px."""
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )


def model_state(model: nn.Module) -> dict:
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "fused_attn": [getattr(m, "fused_attn", None) for m in model.modules()],
        "forward": [m for m in model.modules() if "forward" in vars(m)],
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in model.modules()
        ),
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
    }


@pytest.fixture(params=["open_clip_vit", "timm_vit"])
def family(request, tmp_path):
    if request.param == "open_clip_vit":
        return open_clip_vit(), open_clip.SimpleTokenizer(context_length=16), OpenCLIPAdapter
    return biomedclip(tmp_path, tiny_timm_vit()), make_tokenizer(), TimmOpenCLIPAdapter


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_get_adapter_recognises_both_towers(family):
    model, tokenizer, adapter_cls = family
    adapter = get_adapter(model, tokenizer)
    assert type(adapter) is adapter_cls
    assert adapter.num_layers == 2 and adapter.patch_size == (8, 8)
    assert adapter.image_size == (32, 32)
    assert adapter.embedding_dim == 16 and adapter.context_length == 16


@pytest.mark.parametrize("name", runnable_methods(HFCLIPAdapter))  # dual encoders, class token
def test_every_method_meets_the_output_contract(name, family, images):
    model, tokenizer, _ = family
    model.train()
    before = model_state(model)
    explainer = baselines.get(name)(model, tokenizer, **FAST.get(name, {}))
    maps = explainer.attribute(images, additional_forward_args=(PHRASES[:2],))
    assert maps.shape == images.shape
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert model_state(model) == before


def _explicit_attention(block: nn.Module, x: Tensor, timm_block: bool) -> Tensor:
    r"""softmax(Q K^T / sqrt(d)) of one block, by hand from the module weights."""
    attn = block.attn
    if timm_block:
        q, k, _ = F.linear(block.norm1(x), attn.qkv.weight, attn.qkv.bias).chunk(3, -1)
    else:
        q, k, _ = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    q, k = (t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in (q, k))
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)


def test_captured_attention_is_the_blocks_softmax_and_matex_scores_the_cosine(family, images):
    model, tokenizer, adapter_cls = family
    adapter = get_adapter(model, tokenizer)
    ids = adapter.tokenize(PHRASES[:2], images.device)
    text = adapter.encode_text(ids)
    with adapter.explaining(), torch.enable_grad():
        trace = adapter.trace(images.requires_grad_(True), text, hidden_states=True)
        grads = torch.autograd.grad(trace.score.sum(), trace.attentions)
    assert all(g.abs().sum() > 0 for g in grads)  # captured on the path to the score
    timm_block = adapter_cls is TimmOpenCLIPAdapter
    blocks = adapter.vision_blocks()
    with torch.no_grad():
        entering = [adapter.embed_tokens(images, upto_block=-1)] + trace.hidden_states[:-1]
        for block, x, attn in zip(blocks, entering, trace.attentions):
            torch.testing.assert_close(attn, _explicit_attention(block, x, timm_block))
        expected = F.cosine_similarity(model.encode_image(images), model.encode_text(ids), dim=-1)
    torch.testing.assert_close(trace.score.detach(), expected, atol=1e-5, rtol=1e-5)
    _, diagnostics = MATEX(model, tokenizer).attribute(
        images, (PHRASES[:2],), return_diagnostics=True
    )
    torch.testing.assert_close(diagnostics.score, expected, atol=1e-5, rtol=1e-5)


def _matex_score_is_open_clips_cosine(model, tokenizer, images, phrases):
    maps, diagnostics = MATEX(model, tokenizer).attribute(
        images, (phrases,), return_diagnostics=True
    )
    with torch.no_grad():
        ids = get_adapter(model, tokenizer).tokenize(phrases, images.device)
        expected = F.cosine_similarity(model.encode_image(images), model.encode_text(ids), dim=-1)
    assert maps.shape == images.shape and torch.isfinite(maps).all() and (maps >= 0).all()
    torch.testing.assert_close(diagnostics.score, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_full_size_open_clip_vit_b_16():
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    assert type(get_adapter(model, tokenizer)) is OpenCLIPAdapter
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    _matex_score_is_open_clips_cosine(model, tokenizer, images, PHRASES[:1])


@pytest.mark.slow
def test_full_size_biomedclip_architecture(tmp_path):
    model = biomedclip(tmp_path)
    adapter = get_adapter(model, make_tokenizer())
    assert type(adapter) is TimmOpenCLIPAdapter
    assert adapter.num_layers == 12 and adapter.image_size == (224, 224)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    _matex_score_is_open_clips_cosine(model, make_tokenizer(), images, PHRASES[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("name", ["matex", "chefer", "m2ib"])
def test_methods_on_cuda_match_the_cpu(name, family, images):
    model, tokenizer, _ = family
    on_cpu = baselines.get(name)(model, tokenizer, **FAST.get(name, {})).attribute(
        images, (PHRASES[:2],))
    on_gpu = baselines.get(name)(model.cuda(), tokenizer, **FAST.get(name, {})).attribute(
        images.cuda(), (PHRASES[:2],))
    assert on_gpu.device.type == "cuda" and torch.isfinite(on_gpu).all()
    if name != "m2ib":  # M2IB's noise comes from the device's generator
        assert (on_gpu.cpu() - on_cpu).abs().max().item() <= 1e-3


# --------------------------------------------------------------------------
# loading from the hub layout (open_clip_config.json + weights + tokenizer)
# --------------------------------------------------------------------------
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


def save_hub_folder(folder: Path, model_cfg: dict, preprocess_cfg: dict, tokenizer=None,
                    seed: int = 0) -> tuple[Path, nn.Module]:
    r"""Write a random model in the layout of a hub snapshot; return the folder and the model."""
    torch.manual_seed(seed)
    model = open_clip.create_model(
        "local-dir:" + str(_write_config(folder, model_cfg, preprocess_cfg)),
        require_pretrained=False, pretrained_text=False,
    ).eval()
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder, model


def _write_config(folder: Path, model_cfg: dict, preprocess_cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


OPEN_CLIP_VIT_CFG = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
    text_cfg=dict(context_length=16, width=32, heads=2, layers=1),
)


def biomedclip_cfg(folder: Path) -> dict:
    """BiomedCLIP's configuration with a small timm ViT and a one-layer BERT."""
    return dict(
        embed_dim=16,
        vision_cfg=dict(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False,
                        timm_pool="", timm_proj="linear", image_size=224),
        text_cfg=dict(hf_model_name=str(folder), hf_tokenizer_name=str(folder),
                      hf_proj_type="mlp", hf_pooler_type="cls_last_hidden_state_pooler",
                      context_length=16),
    )


@pytest.fixture(params=["open_clip_vit", "timm_vit"])
def hub_folder(request, tmp_path):
    folder = tmp_path / request.param
    if request.param == "open_clip_vit":
        return save_hub_folder(folder, OPEN_CLIP_VIT_CFG, PREPROCESS)
    BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, pad_token_id=0,
    ).save_pretrained(folder)
    return save_hub_folder(folder, biomedclip_cfg(folder), PREPROCESS, make_tokenizer())


def test_load_model_reads_a_hub_snapshot_folder(hub_folder):
    folder, original = hub_folder
    radiograph = read_image(get_testdata_file("RG1_UNCI.dcm"))
    for name in (str(folder), f"local-dir:{folder}"):
        model, processor = load_model(name)
        assert isinstance(processor, OpenCLIPProcessor)
        assert type(get_adapter(model, processor)) in (OpenCLIPAdapter, TimmOpenCLIPAdapter)
        loaded, saved = model.state_dict(), original.state_dict()
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[k], saved[k]) for k in saved)
        spec = processor.image_processor
        assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
        assert spec.resample == "bilinear" and spec.input_size == get_adapter(model).image_size
    pixels, _ = prepare([radiograph], processor)
    assert pixels.shape[-2:] == spec.input_size
    # a mid-grey pixel is normalised with the folder's mean and std
    assert prepare([np.full((8, 8), 0.5)], processor)[0].abs().max() < 0.02
    _matex_score_is_open_clips_cosine(model, processor.tokenizer, pixels, PHRASES[:1])


def test_explain_command_with_an_open_clip_folder(hub_folder, tmp_path):
    folder, _ = hub_folder
    image = tmp_path / "chest.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 50), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["explain", str(image), "left pleural effusion", "--model", str(folder),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(folder)
    heat = np.load(out / summary["phrases"][0]["files"][1])
    assert heat.shape == (60, 50) and np.isfinite(heat).all() and heat.max() > 0


def test_open_clip_folders_that_cannot_load_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="no open_clip_config.json"):
        load_open_clip(str(tmp_path))
    weightless = _write_config(tmp_path / "weightless", OPEN_CLIP_VIT_CFG, PREPROCESS)
    with pytest.raises(ModelLoadError, match="cannot load an open_clip model"):
        load_model(weightless)
    folder, _ = save_hub_folder(tmp_path / "longest", OPEN_CLIP_VIT_CFG,
                                {**PREPROCESS, "resize_mode": "longest"})
    with pytest.raises(ModelLoadError, match="resize_mode 'longest'"):
        load_model(folder)
    image = tmp_path / "chest.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image)
    assert main(["explain", str(image), "effusion", "--model", str(folder),
                 "--out", str(tmp_path / "out")]) == 2
    assert "resize_mode 'longest'" in capsys.readouterr().err


# --------------------------------------------------------------------------
# open_clip SigLIP: a timm trunk with global_pool='map' and a logit_bias
# --------------------------------------------------------------------------
from captum.attr import Saliency  # noqa: E402

from captum_matex import SimilarityForward, registry  # noqa: E402
from captum_matex.adapters import TimmSiglipOpenCLIPAdapter  # noqa: E402
from captum_matex.targets import SigmoidLogit  # noqa: E402

#: the variants of timm's map head (AttentionPoolLatent) an open_clip SigLIP may carry
SIGLIP_VARIANTS = {
    "siglip": {},  # as ViT-B-16-SigLIP: no class token, one latent, 'token' pooling
    "registers": dict(reg_tokens=2),  # prefix tokens the pool leaves out
    "registers_pooled": dict(reg_tokens=2, pool_include_prefix=True),
    "avg_latents_qk_norm": dict(latent_len=3, pool_type="avg", qk_norm=True),
    "token_of_3_latents_linear_proj": dict(latent_len=3, proj=True),
}


def open_clip_siglip(seed: int = 0, layers: int = 2, reg_tokens: int = 0,
                     pool_include_prefix: bool = False, latent_len: int = 1,
                     pool_type: str = "token", qk_norm: bool = False, proj: bool = False
                     ) -> nn.Module:
    r"""open_clip's SigLIP layout (``ViT-B-16-SigLIP``: ``CustomTextCLIP``, a timm
    trunk with ``global_pool='map'``, a text tower pooled at the last token,
    ``init_logit_bias``) at 32 px, width 32, with a logit scale and bias away from
    1 and 0 (else the sigmoid logit and the cosine could not be told apart).
    ``proj``: an open_clip linear projection after the trunk (``timm_proj='linear'``)."""
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(
        embed_dim=32,
        vision_cfg=dict(timm_model_name="test_vit", timm_model_pretrained=False,
                        timm_pool="map", timm_proj="none", image_size=32),
        text_cfg=dict(context_length=16, width=32, heads=2, layers=1, no_causal_mask=True,
                      proj_bias=True, pool_type="last"),
        init_logit_bias=-10,
    )
    trunk = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=layers, num_heads=2, num_classes=0,
        class_token=False, reg_tokens=reg_tokens, global_pool="map",
        pool_include_prefix=pool_include_prefix,
    )
    if (latent_len, pool_type, qk_norm) != (1, "token", False):
        trunk.attn_pool = timm.layers.AttentionPoolLatent(
            32, num_heads=2, latent_len=latent_len, pool_type=pool_type, qk_norm=qk_norm,
            norm_layer=nn.LayerNorm,
        )
    model.visual.trunk = trunk
    if proj:
        model.visual.head = nn.Sequential(nn.Linear(32, 32, bias=False))
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    return model.eval()


SIGLIP_TOKENIZER = open_clip.SimpleTokenizer(context_length=16)
SIGLIP_PHRASES = ["left pleural effusion", "right upper lobe opacity"]


def test_open_clip_siglip_is_dispatched_on_structure_and_refused_by_the_token_adapter():
    model = open_clip_siglip()
    adapter = get_adapter(model, SIGLIP_TOKENIZER)
    assert type(adapter) is TimmSiglipOpenCLIPAdapter
    assert adapter.family == "open_clip-timm-siglip"
    assert adapter.num_prefix_tokens == 0 and adapter.num_layers == 2
    assert adapter.image_size == (32, 32) and adapter.embedding_dim == 32
    assert adapter.capabilities == frozenset({"contrastive embedding"}) and isinstance(adapter.target, SigmoidLogit)
    # chosen explicitly, the class-token adapter keeps refusing a map trunk
    with pytest.raises(ValueError, match="pooled by the class token.*'map'"):
        TimmOpenCLIPAdapter(model)
    # a map trunk without a sigmoid bias is no SigLIP: the class-token adapter says why not
    model.logit_bias = None
    assert not TimmSiglipOpenCLIPAdapter.supports(model)
    with pytest.raises(ValueError, match="pooled by the class token.*'map'"):
        get_adapter(model)


def _siglip_logit(model: nn.Module, images: Tensor, ids: Tensor) -> Tensor:
    """The model's own logit of each (image, phrase) pair, from its forward outputs."""
    image_features, text_features, scale, bias = model(images, ids)
    return (scale * image_features @ text_features.T + bias).diagonal()


@pytest.mark.parametrize("variant", SIGLIP_VARIANTS)
def test_open_clip_siglip_score_is_the_models_own_logit_and_the_probe_its_pool(variant, images):
    model = open_clip_siglip(**SIGLIP_VARIANTS[variant])
    adapter = get_adapter(model, SIGLIP_TOKENIZER)
    ids = adapter.tokenize(SIGLIP_PHRASES, images.device)
    text = adapter.encode_text(ids)
    with torch.no_grad():
        expected = _siglip_logit(model, images, ids)
        torch.testing.assert_close(SimilarityForward(model, SIGLIP_TOKENIZER)(images, ids),
                                   expected, atol=1e-5, rtol=0)
    with adapter.explaining(), torch.enable_grad():
        trace = adapter.trace(images.clone().requires_grad_(True), text)
        grads = torch.autograd.grad(trace.score.sum(), trace.attentions + [trace.readout_attention])
    torch.testing.assert_close(trace.score.detach(), expected, atol=1e-5, rtol=0)
    # the MAP readout, computed explicitly, is the model's own (fused) image embedding
    with torch.no_grad():
        embedding = model.encode_image(images)
    torch.testing.assert_close(trace.image_embeddings.detach(), embedding, atol=1e-5, rtol=0)
    cosine = F.cosine_similarity(embedding, text, dim=-1)
    assert (trace.score.detach() - cosine).abs().min() > 1.0, "the logit is the cosine"
    # the probe's probabilities: over every token, summing to one, 0 on tokens the pool skips
    trunk = model.visual.trunk
    skipped = 0 if trunk.pool_include_prefix else trunk.num_prefix_tokens
    queries = trunk.attn_pool.latent_len if trunk.attn_pool.pool == "avg" else 1
    probe = trace.readout_attention.detach()
    assert probe.shape == (2, 2, queries, trunk.num_prefix_tokens + 16)
    torch.testing.assert_close(probe.sum(-1), torch.ones(2, 2, queries), atol=1e-6, rtol=0)
    assert (probe[..., :skipped] == 0).all()
    # on the path to the score: every block's attention and the probe's
    assert all(g.abs().sum() > 0 for g in grads)
    assert grads[-1][..., :skipped].abs().sum() == 0


def test_open_clip_siglip_projected_patches_are_the_head_on_one_token():
    model = open_clip_siglip()
    adapter = get_adapter(model)
    tokens = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        one_at_a_time = torch.stack(
            [adapter.probe_pool(tokens[:, i:i + 1])[0] for i in range(5)], 1)
        torch.testing.assert_close(adapter.project_tokens(tokens), one_at_a_time,
                                   atol=1e-6, rtol=0)


def test_open_clip_siglip_matex_maps_are_valid_phrase_dependent_and_restore_the_model(images):
    model = open_clip_siglip(layers=3)
    model.train()
    before = model_state(model)
    explainer = MATEX(model, SIGLIP_TOKENIZER)
    maps, diagnostics = explainer.attribute(images, (SIGLIP_PHRASES,), return_diagnostics=True)
    assert model_state(model) == before
    assert maps.shape == images.shape and torch.isfinite(maps).all() and (maps >= 0).all()
    assert (maps.flatten(1).std(1) > 0).all(), "a constant map"
    model.eval()
    with torch.no_grad():
        ids = get_adapter(model, SIGLIP_TOKENIZER).tokenize(SIGLIP_PHRASES, images.device)
        torch.testing.assert_close(diagnostics.score, _siglip_logit(model, images, ids),
                                   atol=1e-5, rtol=0)
    swapped = explainer.attribute(images, (SIGLIP_PHRASES[::-1],))
    assert (maps - swapped).abs().amax() > 1e-3, "the maps do not depend on the phrase"


def test_open_clip_siglip_every_method_runs_or_refuses_by_name(images):
    model = open_clip_siglip()
    model.train()
    before = model_state(model)
    family = get_adapter(model).family
    ran = set()
    for name in registry.methods.available():
        cls = registry.methods.get(name)
        if "class token" in cls.requires:
            with pytest.raises(ValueError, match=f"needs a class token; {family} models pool"):
                cls(model, SIGLIP_TOKENIZER)
            continue
        if set(cls.requires) - set(get_adapter(model).capabilities):  # e.g. a decoder's prompt
            with pytest.raises(ValueError, match=f"{family} models"):
                cls(model, SIGLIP_TOKENIZER)
            continue
        maps = cls(model, SIGLIP_TOKENIZER, **FAST.get(name, {})).attribute(
            images, (SIGLIP_PHRASES,))
        assert maps.shape == images.shape and torch.isfinite(maps).all(), name
        assert (maps >= 0).all(), name
        ran.add(name)
    assert {"matex", "chefer", "rollout", "gradcam", "legrad", "saliency"} <= ran
    assert {"m2ib", "grad_eclip"}.isdisjoint(ran)
    assert model_state(model) == before


def test_captum_saliency_explains_open_clip_siglips_logit(images):
    model = open_clip_siglip()
    forward = SimilarityForward(model, SIGLIP_TOKENIZER)
    ids = get_adapter(model, SIGLIP_TOKENIZER).tokenize(SIGLIP_PHRASES, images.device)
    x = images.clone().requires_grad_(True)
    grads = Saliency(forward).attribute(x, additional_forward_args=(ids,), abs=False)
    (expected,) = torch.autograd.grad(_siglip_logit(model, x, ids).sum(), x)
    torch.testing.assert_close(grads, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_full_size_open_clip_vit_b_16_siglip():
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    adapter = get_adapter(model)
    assert type(adapter) is TimmSiglipOpenCLIPAdapter
    assert adapter.num_layers == 12 and adapter.image_size == (224, 224)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(1, 32000, (1, 64), generator=torch.Generator().manual_seed(0))
    maps, diagnostics = MATEX(model).attribute(images, (ids,), return_diagnostics=True)
    with torch.no_grad():
        expected = _siglip_logit(model, images, ids)
    assert maps.shape == images.shape and torch.isfinite(maps).all() and (maps >= 0).all()
    torch.testing.assert_close(diagnostics.score, expected, atol=1e-4, rtol=1e-5)
