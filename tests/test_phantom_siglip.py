r"""Tests of the embedded phantom SigLIP (captum_matex.zoo.phantom_siglip): it loads
offline from safetensors and JSON, is a SiglipModel with the ``map`` head, its
processor pads text as SigLIP reads it, and it grounds findings and sides on
phantom films of a seed it was neither trained nor selected on, judged by its own
sigmoid logit."""

from __future__ import annotations

import pickle
import socket

import pytest
import torch

from captum_matex.data import PhantomCXR
from captum_matex.data.phantom import candidate_phrases, swap_laterality
from captum_matex.zoo import evaluate_zero_shot, phantom_siglip
from captum_matex.zoo.phantom_siglip import MODEL_DIR

#: trained and selected on PhantomCXR("train" / "val", seed=0); this seed is unseen
UNSEEN_SEED = 1
N_FILMS = 256


@pytest.fixture(scope="module")
def loaded() -> tuple:
    return phantom_siglip()


@pytest.fixture(scope="module")
def films() -> PhantomCXR:
    return PhantomCXR(split="test", seed=UNSEEN_SEED, length=N_FILMS)


def test_loads_offline_without_network_or_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("phantom_siglip tried to open a network connection")

    def no_pickle(*args, **kwargs):
        raise AssertionError("phantom_siglip tried to unpickle")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model, _ = phantom_siglip()
    assert type(model).__name__ == "SiglipModel" and not model.training
    assert model.config._attn_implementation == "eager"


def test_shipped_files_are_safe_and_small() -> None:
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "TRAINING.md"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 2**20


def test_siglip_with_map_head_and_learnt_logit(loaded: tuple) -> None:
    from transformers import SiglipModel

    model, _ = loaded
    assert isinstance(model, SiglipModel)
    vc, tc = model.config.vision_config, model.config.text_config
    assert vc.vision_use_head and isinstance(model.vision_model.head.attention, torch.nn.MultiheadAttention)
    assert vc.image_size // vc.patch_size == 14 and vc.image_size % vc.patch_size == 0
    assert (vc.hidden_size, vc.num_hidden_layers, tc.hidden_size, tc.num_hidden_layers) == (128, 4, 128, 2)
    assert tc.projection_size == vc.hidden_size == 128
    # trained away from SigLIP's initial scale 10 and bias -10, still a positive scale
    scale, bias = float(model.logit_scale.detach().exp()), float(model.logit_bias.detach())
    assert scale > 1 and (scale, bias) != pytest.approx((10.0, -10.0), abs=1e-3)


def test_processor_pads_to_the_context_without_a_mask(loaded: tuple) -> None:
    model, processor = loaded
    tok, tc = processor.tokenizer, model.config.text_config
    assert len(tok) == tc.vocab_size == 80
    enc = processor(text=["cardiomegaly", "small left pleural effusion"], return_tensors="pt")
    assert set(enc.keys()) == {"input_ids"}
    ids = enc["input_ids"]
    assert ids.shape == (2, tc.max_position_embeddings) == (2, 16)
    # the text embedding is the last position's, a <pad> token
    assert (ids[:, -1] == tok.pad_token_id).all() and tok.pad_token_id == tc.pad_token_id
    with torch.no_grad():
        out = model.text_model(input_ids=ids)
    torch.testing.assert_close(out.pooler_output, model.text_model.head(out.last_hidden_state[:, -1]))
    # the adapter tokenises the same way (padding to max_length, ids only)
    from captum_matex.adapters import HFSiglipAdapter, get_adapter

    adapter = get_adapter(model, processor)
    assert type(adapter) is HFSiglipAdapter
    assert torch.equal(adapter.tokenize(["cardiomegaly", "small left pleural effusion"], ids.device), ids)


def _logit_decisions(model, processor, samples) -> tuple[float, float]:
    r"""Finding and side accuracy decided by ``model(...).logits_per_image``
    (``exp(t) cos + b``), the model's own sigmoid logit."""
    tasks = []
    for s in samples:
        present = {r.finding for r in s.findings[1:]} - {s.finding}
        cands = {f: p for f, p in candidate_phrases(s.laterality).items() if f not in present}
        pair = (s.phrase, swap_laterality(s.phrase)) if s.laterality in ("left", "right") else ()
        tasks.append((cands, pair))
    phrases = sorted({p for cands, pair in tasks for p in list(cands.values()) + list(pair)})
    col = {p: j for j, p in enumerate(phrases)}
    batch = processor(images=[s.image for s in samples], text=phrases, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits_per_image  # (images, phrases)
    finding, side = [], []
    for s, row, (cands, pair) in zip(samples, logits, tasks):
        names = list(cands)
        finding.append(names[int(row[[col[cands[f]] for f in names]].argmax())] == s.finding)
        if pair:
            side.append(bool(row[col[pair[0]]] > row[col[pair[1]]]))
    return sum(finding) / len(finding), sum(side) / len(side)


def test_grounds_findings_and_sides_on_an_unseen_seed(loaded: tuple, films: PhantomCXR) -> None:
    r"""Finding and side accuracy >= 0.95 on test films of an unseen seed, by the
    model's own logit; evaluate_zero_shot (cosine) decides identically.

    On these 256 films: finding 0.984, side 0.994; on the first 1000 films of the
    same seed (TRAINING.md) 0.980 / 0.992. The bar is the issue's target, about
    eight films below the shipped model here, so a retrained model that grounds
    noticeably worse fails it."""
    model, processor = loaded
    res = evaluate_zero_shot(model, processor, n=N_FILMS, dataset=films)
    assert res["n"] == N_FILMS and res["n_side"] > 100
    assert res["finding_acc"] >= 0.95, res
    assert res["side_acc"] >= 0.95, res
    samples = [films[i] for i in range(96)]
    by_logit = _logit_decisions(model, processor, samples)
    by_cosine = evaluate_zero_shot(model, processor, n=96, dataset=films)
    assert by_logit == pytest.approx((by_cosine["finding_acc"], by_cosine["side_acc"]), abs=1e-12)


def test_randomised_model_fails_the_bars(loaded: tuple, films: PhantomCXR) -> None:
    r"""The evaluation is not trivially passed: an untrained SigLIP is near chance."""
    from transformers import SiglipModel

    model, processor = loaded
    torch.manual_seed(0)
    rand = SiglipModel(model.config).eval()
    res = evaluate_zero_shot(rand, processor, n=96, dataset=films)
    assert res["finding_acc"] < 0.6 and res["side_acc"] < 0.75, res
