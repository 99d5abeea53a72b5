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
from captum_matex.adapters import OpenCLIPAdapter, TimmOpenCLIPAdapter, get_adapter  # noqa: E402
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


@pytest.mark.parametrize("name", baselines.available())
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
