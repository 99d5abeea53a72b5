"""Baselines: hand-computed expectations, reference formulas, and one contract test for every method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.testing.helpers.basic import assertTensorAlmostEqual
from conftest import PHRASES, make_clip
from helpers import model_state
from torch import nn

from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex import MATEX, baselines
from captum_matex.adapters.base import VisionLanguageAdapter, VisionTrace
from captum_matex.baselines import (
    M2IB,
    AnatomyPriorOnly,
    AttentionRollout,
    CheferGradRollout,
    FeatureAblation,
    GradECLIP,
    LayerGradCam,
    LeGrad,
    Occlusion,
    PatchTextSimilarity,
    Saliency,
    SmoothGrad,
    ViTGradCAM,
)
from captum_matex.stages.anatomy import AnatomicalPrior, ChestAtlas
from captum_matex.stages.text_prior import PatchTextPrior

# small settings for the costly methods; every other method runs with its defaults
FAST = {
    "integrated_gradients": dict(n_steps=8, internal_batch_size=16),
    "smoothgrad": dict(nt_samples=3),
}


pytestmark = pytest.mark.usefixtures("tiny_threads")


def close(actual, expected, delta=1e-5):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assertTensorAlmostEqual(None, actual.reshape(-1), expected.reshape(-1), delta=delta, mode="max")


# --------------------------------------------------------------------------
# toy adapters with known answers
# --------------------------------------------------------------------------
class _ToyAdapter(VisionLanguageAdapter):
    """One-channel 16x16 images, 4x4 patches (a 4x4 grid), CLS first, text as embeddings."""

    family = "toy"

    def __init__(self, layers: int = 2) -> None:
        super().__init__(nn.Linear(1, 1))
        self._layers = layers

    num_layers = property(lambda self: self._layers)
    num_prefix_tokens = property(lambda self: 1)
    image_size = property(lambda self: (16, 16))
    num_channels = property(lambda self: 1)
    context_length = property(lambda self: 4)
    patch_size = property(lambda self: (4, 4))

    def vision_blocks(self):
        return []

    def encode_text(self, input_ids):
        raise NotImplementedError("toy adapters take text embeddings")


class KnownAttention(_ToyAdapter):
    """Fixed attention probabilities A^l and a score s = sum_l <A^l, G^l>, so ds/dA^l = G^l."""

    def __init__(self, attentions, gradients) -> None:
        super().__init__(layers=len(attentions))
        self.attentions, self.gradients = attentions, gradients

    def embed_tokens(self, images, upto_block):
        raise NotImplementedError

    def trace(self, images, text_embeddings, attentions=True, hidden_states=False, start_block=0):
        batch = images.shape[0]
        attn = [a.expand(batch, -1, -1, -1).clone().requires_grad_(True) for a in self.attentions]
        score = sum((a * g).sum((1, 2, 3)) for a, g in zip(attn, self.gradients))
        score = score + 0 * images.flatten(1).sum(1)
        return VisionTrace(score, attn, [], torch.zeros(batch, 16, 2), text_embeddings, (4, 4), 1)


class PatchScore(_ToyAdapter):
    """Tokens are the raw 4x4 pixel patches; the score only reads the tokens in ``relevant``."""

    def __init__(self, relevant, layers: int = 2) -> None:
        super().__init__(layers)
        self.relevant = torch.as_tensor(relevant)
        self.embed_calls = 0

    def embed_tokens(self, images, upto_block):
        self.embed_calls += 1
        b = images.shape[0]
        patches = images.unfold(2, 4, 4).unfold(3, 4, 4).reshape(b, 16, 16)
        return torch.cat([patches.new_zeros(b, 1, 16), patches], 1)

    def pooled(self, tokens):
        return tokens[:, 1 + self.relevant].sum(1)

    def trace(self, images, text_embeddings, attentions=True, hidden_states=False, start_block=0):
        tokens = self.embed_tokens(images, self.num_layers - 1) if start_block == 0 else images
        score = F.cosine_similarity(self.pooled(tokens), text_embeddings.to(tokens), dim=-1)
        return VisionTrace(
            score, [], [], tokens[:, 1:].detach(), text_embeddings.detach(), (4, 4), 1
        )


def _known_attention(layers=2, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    attn = [torch.softmax(torch.randn(1, heads, 17, 17, generator=g), -1) for _ in range(layers)]
    grads = [torch.randn(1, heads, 17, 17, generator=g) for _ in range(layers)]
    return attn, grads


TOY_IMAGES = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
TOY_TEXT = torch.randn(2, 4)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------
def test_registry_lists_and_returns_every_method():
    names = baselines.available()
    expected = {
        "matex", "m2ib", "chefer", "rollout", "gradcam", "grad_eclip", "legrad", "patch_text",
        "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion",
        "feature_ablation", "layer_gradcam", "prior_only", "matex_no_anatomy",
        "matex_with_text_prior", "matex_no_rollout", "matex_no_consistency", "matex_no_propagation",
        "llm_attribution",
        "matex_with_decoder_prior", "matex_region_smoothing", "matex_evidence_basins",
    }
    assert set(names) == expected and names == sorted(names)
    assert baselines.get("matex") is MATEX
    assert baselines.get("M2IB") is M2IB and baselines.get("grad-eclip") is GradECLIP
    with pytest.raises(KeyError, match="available: chefer, "):
        baselines.get("lime")


# --------------------------------------------------------------------------
# one contract for every registered method (pytorch-grad-cam style)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", runnable_methods(HFCLIPAdapter))
def test_every_method_meets_the_output_contract(name, tokenizer, images):
    model = make_clip()
    model.train()
    model.text_projection.weight.requires_grad_(False)
    before = model_state(model)
    explainer = baselines.get(name)(model, tokenizer, **FAST.get(name, {}))
    assert explainer.has_convergence_delta() is False
    assert hasattr(type(explainer).attribute, "__wrapped__")  # log_usage, for NoiseTunnel
    maps = explainer.attribute(images, additional_forward_args=(PHRASES,))
    assert maps.shape == images.shape
    assert maps.dtype == images.dtype and maps.device == images.device
    assert maps.is_contiguous()
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps <= 1 + 1e-6).all()
    singles = torch.cat(
        [explainer.attribute(images[i : i + 1], ([PHRASES[i]],)) for i in range(4)]
    )
    close(maps, singles, delta=1e-4)
    assert model_state(model) == before  # mode, requires_grad, attention impl, hooks, grads
    grid = explainer.attribute(images, (PHRASES,), output="grid")
    assert grid.shape == (4, 1, 4, 4) and (grid >= 0).all()
    (as_tuple,) = explainer.attribute((images[:2],), ([PHRASES[0], PHRASES[1]],))
    close(as_tuple, maps[:2], delta=1e-4)  # Captum's 1-tuple inputs, answered in kind


# --------------------------------------------------------------------------
# hand-computed expectations on known attention
# --------------------------------------------------------------------------
def test_chefer_last_block_is_the_cls_row_of_grad_weighted_attention():
    # uniform attention; gradient 1 except the CLS row, whose patch columns get j
    attn = [torch.full((1, 2, 17, 17), 1 / 17)]
    grad = torch.ones(1, 2, 17, 17)
    grad[0, :, 0, 1:] = torch.arange(1.0, 17.0)
    grad[0, 1, 0, 1:] *= -1  # the second head's evidence is negative: relu drops it
    adapter = KnownAttention(attn, [grad])
    grid = CheferGradRollout(adapter, normalize=None).attribute(
        TOY_IMAGES, (TOY_TEXT,), output="grid"
    )
    expected = (torch.arange(1.0, 17.0) / 17 / 2).view(4, 4)  # mean over 2 heads of j/17 and 0
    close(grid[:, 0], expected.expand(2, 4, 4), 1e-6)


def test_chefer_rollout_over_all_blocks_matches_the_recursion():
    attn, grads = _known_attention(layers=3)
    adapter = KnownAttention(attn, grads)
    got = CheferGradRollout(adapter, start_layer=0, normalize=None).attribute(
        TOY_IMAGES[:1], (TOY_TEXT[:1],), output="grid"
    )
    rel = torch.eye(17)
    for a, g in zip(attn, grads):
        rel = rel + (g[0] * a[0]).clamp_min(0).mean(0) @ rel
    close(got[0, 0], rel[0, 1:].view(4, 4), 1e-5)
    # the default (last block only) ignores earlier blocks
    last = CheferGradRollout(adapter, normalize=None).attribute(
        TOY_IMAGES[:1], (TOY_TEXT[:1],), output="grid"
    )
    expected_last = (grads[-1][0] * attn[-1][0]).clamp_min(0).mean(0)[0, 1:]
    close(last[0, 0], expected_last.view(4, 4), 1e-6)


def test_attention_rollout_multiplies_renormalised_blocks():
    attn, grads = _known_attention(layers=3)
    got = AttentionRollout(KnownAttention(attn, grads), normalize=None).attribute(
        TOY_IMAGES[:1], (TOY_TEXT[:1],), output="grid"
    )
    joint = torch.eye(17)
    for a in attn:
        step = 0.5 * a[0].mean(0) + 0.5 * torch.eye(17)  # rows of A sum to 1
        joint = step @ joint
    close(got[0, 0], joint[0, 1:].view(4, 4), 1e-6)
    # one block: the CLS row of (A + I) / 2 over patches = A[CLS, patches] / 2
    one = AttentionRollout(KnownAttention(attn[:1], grads[:1]), normalize=None).attribute(
        TOY_IMAGES[:1], (TOY_TEXT[:1],), output="grid"
    )
    close(one[0, 0], (attn[0][0].mean(0)[0, 1:] / 2).view(4, 4), 1e-6)


# --------------------------------------------------------------------------
# reference formulas recomputed from the transformers model itself
# --------------------------------------------------------------------------
@pytest.fixture
def eager():
    model = make_clip()
    model.set_attn_implementation("eager")
    return model


@pytest.fixture
def text_emb():
    return torch.randn(4, 16, generator=torch.Generator().manual_seed(5))


def _direct(model, images, text_emb):
    """Score, attentions and hidden states straight from transformers' own forward."""
    pixels = images.clone().requires_grad_(True)
    out = model.vision_model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    image_emb = model.visual_projection(out.pooler_output)
    score = F.cosine_similarity(image_emb, text_emb, dim=-1)
    return score, out.attentions, out.hidden_states


def test_rollout_chefer_legrad_match_a_direct_computation(eager, images, text_emb):
    score, attns, hidden = _direct(eager, images, text_emb)
    grads = torch.autograd.grad(score.sum(), attns, retain_graph=True)
    eye = torch.eye(17)
    joint, rel = eye, eye.expand(4, 17, 17)
    for a, g in zip(attns, grads):
        joint = (0.5 * a.mean(1) + 0.5 * eye) @ joint
        rel = rel + (g * a).clamp_min(0).mean(1) @ rel
    legrad = 0
    for l in (1, 2):  # the last two blocks
        emb = eager.visual_projection(eager.vision_model.post_layernorm(hidden[l + 1].mean(1)))
        s_l = F.cosine_similarity(emb, text_emb, dim=-1)
        (g_l,) = torch.autograd.grad(s_l.sum(), attns[l], retain_graph=True)
        legrad = legrad + g_l.clamp_min(0).mean(1).mean(1)
    kw = dict(output="grid")
    got = AttentionRollout(eager, normalize=None).attribute(images, (text_emb,), **kw)
    close(got[:, 0].flatten(1), joint.detach()[:, 0, 1:])
    got = CheferGradRollout(eager, start_layer=0, normalize=None).attribute(images, (text_emb,), **kw)
    close(got[:, 0].flatten(1), rel.detach()[:, 0, 1:])
    got = LeGrad(eager, normalize=None).attribute(images, (text_emb,), **kw)
    close(got[:, 0].flatten(1), legrad.detach()[:, 1:])


def test_gradcam_patch_text_saliency_match_a_direct_computation(eager, images, text_emb):
    score, _, hidden = _direct(eager, images, text_emb)
    feats = hidden[2]  # output of block 1 = the block before the last
    (g,) = torch.autograd.grad(score.sum(), feats)
    cam = (g[:, 1:].mean(1, keepdim=True) * feats[:, 1:]).sum(-1).clamp_min(0).detach()
    got = ViTGradCAM(eager, normalize=None).attribute(images, (text_emb,), output="grid")
    close(got[:, 0].flatten(1), cam)
    with torch.no_grad():
        out = eager.vision_model(pixel_values=images)
        patches = eager.visual_projection(eager.vision_model.post_layernorm(out.last_hidden_state[:, 1:]))
        sim = F.cosine_similarity(patches, text_emb[:, None], dim=-1).clamp_min(0)
    got = PatchTextSimilarity(eager, normalize=None).attribute(images, (text_emb,), output="grid")
    close(got[:, 0].flatten(1), sim)
    pixels = images.clone().requires_grad_(True)
    s = F.cosine_similarity(eager.get_image_features(pixel_values=pixels).pooler_output, text_emb)
    (gx,) = torch.autograd.grad(s.sum(), pixels)
    expected = gx.abs().sum(1)
    expected = expected / expected.flatten(1).amax(1)[:, None, None]
    got = Saliency(eager).attribute(images, (text_emb,), output="pixel")
    close(got[:, 0], expected)


def test_grad_eclip_matches_a_direct_computation_of_the_last_block(eager, images, text_emb):
    vision = eager.vision_model
    layer = vision.encoder.layers[-1]
    attn = layer.self_attn
    with torch.no_grad():
        x_in = vision(pixel_values=images, output_hidden_states=True).hidden_states[-2]
    h = layer.layer_norm1(x_in)
    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    split = lambda t: t.view(4, 17, 2, 16).transpose(1, 2)  # noqa: E731
    probs = torch.softmax(split(q) @ split(k).transpose(-1, -2) * 16**-0.5, -1)
    context = (probs @ split(v)).transpose(1, 2).reshape(4, 17, 32)
    x = x_in + attn.out_proj(context)
    x = x + layer.mlp(layer.layer_norm2(x))
    emb = eager.visual_projection(vision.post_layernorm(x[:, 0]))
    score = F.cosine_similarity(emb, text_emb, dim=-1)
    (g,) = torch.autograd.grad(score.sum(), context)
    cos = F.cosine_similarity(q[:, :1], k[:, 1:], dim=-1)
    low, high = cos.amin(1, keepdim=True), cos.amax(1, keepdim=True)
    loosened = (cos - low) / (high - low)
    expected = (g[:, :1] * v[:, 1:] * loosened[..., None]).sum(-1).clamp_min(0).detach()
    got = GradECLIP(eager, normalize=None).attribute(images, (text_emb,), output="grid")
    close(got[:, 0].flatten(1), expected)
    plain = GradECLIP(eager, normalize=None, key_similarity=False).attribute(
        images, (text_emb,), output="grid"
    )
    close(plain[:, 0].flatten(1), (g[:, :1] * v[:, 1:]).sum(-1).clamp_min(0).detach())


def test_adapter_without_projection_capture_names_the_fix():
    with pytest.raises(NotImplementedError, match="capture_attention_projections"):
        GradECLIP(PatchScore([0])).attribute(TOY_IMAGES, (TOY_TEXT[:, :4].repeat(1, 4),))


# --------------------------------------------------------------------------
# Captum built-ins: cross-checks between independent paths
# --------------------------------------------------------------------------
def test_captum_layer_gradcam_equals_vit_gradcam(clip_model, tokenizer, images):
    for layer in (-2, 0):
        ours = ViTGradCAM(clip_model, tokenizer, layer=layer).attribute(images, (PHRASES,))
        captum = LayerGradCam(clip_model, tokenizer, layer=layer).attribute(images, (PHRASES,))
        close(captum, ours)


def test_occlusion_with_patch_windows_equals_patch_feature_ablation(clip_model, tokenizer, images):
    occ = Occlusion(clip_model, tokenizer, normalize=None).attribute(images, (PHRASES,), output="grid")
    abl = FeatureAblation(clip_model, tokenizer, normalize=None).attribute(
        images, (PHRASES,), output="grid"
    )
    close(occ, abl)
    # a patch's value is C times the score drop when that patch is set to the baseline
    forward = Occlusion(clip_model, tokenizer).forward_func
    occluded = images[:1].clone()
    occluded[..., 8:16, 16:24] = 0
    drop = forward(images[:1], PHRASES[:1]) - forward(occluded, PHRASES[:1])
    close(occ[0, 0, 1, 2], (3 * drop).clamp_min(0)[0], 1e-5)
    coarse = FeatureAblation(clip_model, tokenizer, cell=2).attribute(images, (PHRASES,), output="grid")
    assert torch.equal(coarse[..., 0, 0], coarse[..., 1, 1])  # one 2x2-patch feature


def test_smoothgrad_is_seeded_and_tends_to_saliency(clip_model, tokenizer, images):
    explainer = SmoothGrad(clip_model, tokenizer, nt_samples=3, seed=1)
    assert torch.equal(explainer.attribute(images, (PHRASES,)), explainer.attribute(images, (PHRASES,)))
    other = SmoothGrad(clip_model, tokenizer, nt_samples=3, seed=2).attribute(images, (PHRASES,))
    assert not torch.allclose(other, explainer.attribute(images, (PHRASES,)))
    tiny = SmoothGrad(clip_model, tokenizer, nt_samples=2, stdevs=1e-6).attribute(images, (PHRASES,))
    close(tiny, Saliency(clip_model, tokenizer).attribute(images, (PHRASES,)), 1e-3)


def test_prior_only_is_the_upsampled_anatomical_prior(clip_model, tokenizer, images, text_emb):
    maps = AnatomyPriorOnly(clip_model, tokenizer).attribute(images, (PHRASES,), output="grid")
    expected = AnatomicalPrior()(PHRASES, (4, 4))
    close(maps[:, 0].flatten(1), expected, 1e-6)
    # text embeddings carry no words: the prior is uniform, a flat map, so zeros by construction
    uniform = AnatomyPriorOnly(clip_model, tokenizer).attribute(images, (text_emb,))
    assert torch.equal(uniform, torch.zeros_like(uniform))


@pytest.mark.parametrize(
    "name, stage",
    [("matex_no_anatomy", "anatomical_prior"), ("matex_no_rollout", "rollout"),
     ("matex_no_consistency", "consistency")],
)
def test_matex_ablation_drops_exactly_its_stage(clip_model, tokenizer, images, name, stage):
    ablation = baselines.get(name)(clip_model, tokenizer)
    full = MATEX(clip_model, tokenizer)
    assert getattr(ablation, stage) is None
    kept = {"attention", "rollout", "consistency", "text_prior", "anatomical_prior", "fusion"} - {stage}
    assert all(type(getattr(ablation, s)) is type(getattr(full, s)) for s in kept)
    assert ablation.get_name().startswith("MATEX w/o ")
    _, diag = ablation.attribute(images, (PHRASES,), return_diagnostics=True)
    if stage == "anatomical_prior":
        assert diag.priors == {}  # the text prior is off by default too
    else:
        assert getattr(diag, "rollouts" if stage == "rollout" else "consistency") is None


def test_matex_with_text_prior_adds_the_model_derived_prior(clip_model, tokenizer, images):
    _, default = MATEX(clip_model, tokenizer).attribute(images, (PHRASES,), return_diagnostics=True)
    variant = baselines.get("matex_with_text_prior")(clip_model, tokenizer)
    _, diag = variant.attribute(images, (PHRASES,), return_diagnostics=True)
    assert set(default.priors) == {"anatomy"} and set(diag.priors) == {"anatomy", "text"}
    adapter = variant.adapter
    with torch.no_grad(), adapter.explaining(True):
        text = adapter.text_embeddings(adapter.tokenize(PHRASES, images.device))
        trace = adapter.trace(images, text, attentions=False)
    expected = PatchTextPrior()(trace.patch_embeddings, trace.text_embeddings, (4, 4))
    close(diag.priors["text"].flatten(1), expected, 1e-5)


def fitted_prior() -> AnatomicalPrior:
    r"""An anatomical prior on an atlas whose lungs are masks (here the built-in
    drawing's own, rendered), so MATEX's fusion re-weights patch by patch."""
    drawing = ChestAtlas()
    masks = {name: drawing.render(name, (224, 224)) for name in ("right lung", "left lung")}
    return AnatomicalPrior(atlas=ChestAtlas(masks=masks))


def test_matex_evidence_basins_is_matex_with_basins_in_its_fusion(clip_model, tokenizer, images):
    from captum_matex.stages import EvidenceBasins, Fusion

    default = MATEX(clip_model, tokenizer, anatomical_prior=fitted_prior())
    variant = baselines.get("matex_evidence_basins")(clip_model, tokenizer, anatomical_prior=fitted_prior())
    assert isinstance(variant.fusion.basins, EvidenceBasins) and default.fusion.basins is None
    _, found = variant.attribute(images, (PHRASES,), return_diagnostics=True)
    _, plain = default.attribute(images, (PHRASES,), return_diagnostics=True)
    close(found.evidence, plain.evidence, 1e-6)  # the same evidence, re-weighted otherwise
    own = Fusion(alpha=default.fusion.alpha, gate=default.fusion.gate,
                 background=default.fusion.background, basins=EvidenceBasins(),
                 region_smoothing=default.fusion.region_smoothing)  # a fitted atlas smooths
    expected = MATEX(clip_model, tokenizer, anatomical_prior=fitted_prior(), fusion=own).attribute(
        images, (PHRASES,), output="grid")
    close(found.fused[:, None], expected, 1e-6)
    assert (found.fused - plain.fused).abs().amax() > 1e-3  # the basins change the maps
    # on the built-in (drawn) atlas MATEX weighs basins already: the variant is MATEX
    drawn = baselines.get("matex_evidence_basins")(clip_model, tokenizer)
    close(drawn.attribute(images, (PHRASES,), output="grid"),
          MATEX(clip_model, tokenizer).attribute(images, (PHRASES,), output="grid"), 1e-6)
    assert baselines.get("matex_evidence_basins")(clip_model, tokenizer, fusion=default.fusion).fusion \
        is default.fusion


def test_matex_region_smoothing_is_matex_with_the_smoothing_in_its_fusion(clip_model, tokenizer, images):
    from captum_matex.stages import Fusion, RegionSmoothing

    variant = baselines.get("matex_region_smoothing")(clip_model, tokenizer)
    default = MATEX(clip_model, tokenizer)
    assert isinstance(variant.fusion.region_smoothing, RegionSmoothing)
    assert default.fusion.region_smoothing is None  # the built-in atlas is drawn: no smoothing
    _, found = variant.attribute(images, (PHRASES,), return_diagnostics=True)
    _, plain = default.attribute(images, (PHRASES,), return_diagnostics=True)
    # the same model evidence (the same operations on the same inputs), smoothed only in the fusion
    close(found.evidence, plain.evidence, 1e-6)
    own = Fusion(alpha=default.fusion.alpha, gate=default.fusion.gate,
                 background=default.fusion.background, region_smoothing=RegionSmoothing(),
                 basins=default.fusion.basins)  # the built-in atlas: priors weigh basins
    expected = MATEX(clip_model, tokenizer, fusion=own).attribute(images, (PHRASES,), output="grid")
    close(found.fused[:, None], expected, 1e-6)
    # MATEX hands the fusion the model's patch embeddings: the feature term changes the maps
    spatial = Fusion(alpha=default.fusion.alpha, gate=default.fusion.gate,
                     background=default.fusion.background,
                     region_smoothing=RegionSmoothing(temperature=None), basins=default.fusion.basins)
    without = MATEX(clip_model, tokenizer, fusion=spatial).attribute(images, (PHRASES,), output="grid")
    assert (without - expected).abs().amax() > 1e-3
    # a fusion stage written before ``features`` joined the protocol still works

    class OldFusion:
        def evidence(self, rollouts, consistency):
            return default.fusion.evidence(rollouts, consistency)

        def __call__(self, rollouts, consistency, priors, grid=None):
            return default.fusion(rollouts, consistency, priors, grid)

    old = MATEX(clip_model, tokenizer, fusion=OldFusion()).attribute(images, (PHRASES,), output="grid")
    close(old, default.attribute(images, (PHRASES,), output="grid"), 1e-6)
    # a fusion passed in is used as given
    assert baselines.get("matex_region_smoothing")(clip_model, tokenizer, fusion=default.fusion).fusion \
        is default.fusion


# --------------------------------------------------------------------------
# M2IB
# --------------------------------------------------------------------------
def test_m2ib_concentrates_on_the_tokens_that_carry_the_score():
    relevant = [5, 6, 9, 10]  # the central 2x2 patches
    adapter = PatchScore(relevant)
    images = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    text = adapter.pooled(adapter.embed_tokens(images, 0))  # the score starts at 1
    maps, capacity = M2IB(adapter, layer=0).attribute(
        images, (text,), output="grid", return_capacity=True
    )
    flat = maps[:, 0].flatten(1)
    top = flat.topk(4, dim=1).indices.sort(1).values
    assert top.tolist() == [relevant] * 3
    others = [j for j in range(16) if j not in relevant]
    assert (flat[:, relevant].amin(1) > 5 * flat[:, others].amax(1)).all()
    assert capacity.shape == (3, 17, 16) and (capacity >= 0).all()


def test_m2ib_runs_blocks_before_the_bottleneck_once_and_literal_agrees():
    adapter = PatchScore([1, 2, 3])
    text = adapter.pooled(adapter.embed_tokens(TOY_IMAGES, 0))
    adapter.embed_calls = 0
    fast = M2IB(adapter, layer=0, steps=4).attribute(TOY_IMAGES, (text,))
    assert adapter.embed_calls == 1
    adapter.embed_calls = 0
    literal = M2IB(adapter, layer=0, steps=4, literal=True).attribute(TOY_IMAGES, (text,))
    assert adapter.embed_calls == 1 + 4
    close(literal, fast, 1e-5)


def test_m2ib_on_clip_is_seeded_efficient_and_literal_agree(clip_model, tokenizer, images):
    explainer = M2IB(clip_model, tokenizer, seed=7)
    assert explainer.bottleneck_block() == 1  # 3 blocks: one must follow the bottleneck
    first = explainer.attribute(images, (PHRASES,))
    assert torch.equal(first, explainer.attribute(images, (PHRASES,)))
    assert not torch.allclose(first, explainer.attribute(images, (PHRASES,), seed=8))
    literal = M2IB(clip_model, tokenizer, seed=7, literal=True).attribute(images, (PHRASES,))
    close(literal, first, 1e-4)
    early = M2IB(clip_model, tokenizer, layer=0).attribute(images, (PHRASES,))
    assert not torch.allclose(early, first)
    torch.manual_seed(0)
    a = M2IB(clip_model, tokenizer, seed=None).attribute(images[:1], (PHRASES[:1],))
    torch.manual_seed(0)
    assert torch.equal(a, M2IB(clip_model, tokenizer, seed=None).attribute(images[:1], (PHRASES[:1],)))


def test_m2ib_default_layer_scales_the_reference_depth():
    assert [M2IB.default_layer(n) for n in (12, 24, 6, 4, 3, 2, 1)] == [9, 18, 4, 2, 1, 0, 0]
    with pytest.raises(ValueError, match="layer=5 is out of range for a vision tower with 3 blocks"):
        M2IB(make_clip(), layer=5).attribute(torch.randn(1, 3, 32, 32), (torch.randn(1, 16),))


def test_m2ib_capacity_is_the_gaussian_kl_and_finite_for_large_logits():
    alpha = torch.tensor([[[-3.0, 0.0, 2.0, 40.0]]])
    feats = torch.tensor([[[[0.5, -1.0, 2.0, 0.1]]]])
    capacity, z = M2IB._bottleneck(alpha, feats, torch.zeros(1, 1, 4))
    lam = torch.sigmoid(alpha)
    ref = -0.5 * (1 + torch.log((1 - lam) ** 2) - (lam * feats[:, 0]) ** 2 - (1 - lam) ** 2)
    close(capacity[..., :3], ref[..., :3], 1e-5)  # the reference's formula where it is finite
    assert torch.isfinite(capacity).all() and capacity[..., 3] > 30  # ref: +inf
    close(z[:, 0], lam * feats[:, 0], 1e-6)


def test_m2ib_reads_the_capacity_of_the_last_forward_pass_like_the_reference():
    adapter = PatchScore([0, 1])
    text = adapter.pooled(adapter.embed_tokens(TOY_IMAGES, 0))
    _, cap = M2IB(adapter, layer=0, steps=1).attribute(TOY_IMAGES, (text,), return_capacity=True)
    lam = torch.sigmoid(torch.tensor(5.0))  # the initial mask: the one update is never read
    feats = adapter.embed_tokens(TOY_IMAGES, 0)
    close(cap, -0.5 * (1 + torch.log((1 - lam) ** 2) - (lam * feats) ** 2 - (1 - lam) ** 2), 1e-4)
    _, after = M2IB(adapter, layer=0, steps=1, capacity_after_last_update=True).attribute(
        TOY_IMAGES, (text,), return_capacity=True
    )
    assert not torch.allclose(after, cap)


def test_baselines_work_inside_captum_noise_tunnel_and_reject_bad_output(clip_model, tokenizer, images):
    from captum.attr import NoiseTunnel

    ids = tokenizer(PHRASES, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    explainer = ViTGradCAM(clip_model, tokenizer)
    torch.manual_seed(0)
    smooth = NoiseTunnel(explainer).attribute(
        images, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, additional_forward_args=(ids,)
    )
    assert smooth.shape == images.shape and torch.isfinite(smooth).all() and (smooth >= 0).all()
    with pytest.raises(ValueError, match="output must be 'image', 'pixel' or 'grid'"):
        explainer.attribute(images, (ids,), output="heatmap")
    with pytest.raises(ValueError, match="output must be"):
        Saliency(clip_model, tokenizer).attribute(images, (ids,), output="heatmap")
