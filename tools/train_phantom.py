r"""
Train the embedded phantom CLIP or SigLIP from scratch, reproducibly from a seed.

Usage, from the root of a source checkout with the package installed
(``pip install -e .``)::

    python tools/train_phantom.py --seed 0 --out DIR [--steps N] [--family siglip]

It is a development tool, kept out of the installed package; the weights it
trained ship in ``captum_matex/zoo/phantom_clip/`` (``--family clip``, the
default) and ``captum_matex/zoo/phantom_siglip/`` (``--family siglip``).

The script

1. renders a bank of training phantoms once (``PhantomCXR("train", seed)``),
   quantised to 8 bits and resized to the model input exactly as the
   processor does (bicubic, antialiased);
2. trains a transformers ``CLIPModel`` (fixed temperature 0.07) with

   - an image-to-text loss over *every* phantom phrase, with several
     positives (all phrases naming the primary finding on the right side and,
     where a zone is named, in the right zone) and with phrases of secondary
     findings and other zones masked out (neither positive nor negative);
   - a side loss: true phrase against the same phrase with left/right
     swapped (cross-entropy over the pair);
   - a finding loss: cross-entropy over one canonical phrase per finding;
   - a text-to-image contrastive loss over the batch, with images of the
     same finding and side masked out as false negatives;
   - training-only heads (:class:`AuxHeads`, not shipped): finding and side
     classifiers on the image embedding, which break the left/right symmetry
     that the contrastive losses alone sit in for hundreds of steps, and a
     patch head predicting which patches a finding covers;
   With ``--family siglip`` the model is a transformers ``SiglipModel``
   (``map`` attention-pooling head, text pooled at the last, padded,
   position, no attention mask), its logit scale and bias are learnt from
   SigLIP's initial ``log(10)`` and ``-10`` (``--logit-lr-mult`` scales
   their learning rate), and the two image-text terms
   (image-to-phrase and text-to-image) are SigLIP's pairwise sigmoid loss
   (every valid image-phrase pair a binary task: positive, negative or
   ignored as above) instead of softmax cross-entropy; the side, finding
   and auxiliary losses are the same;
   ``--init DIR`` starts from a model saved by an earlier run of the same
   family (new optimiser, learning-rate schedule and auxiliary heads);
   ``--pose P`` moves each training film with probability ``P`` as the
   ``geometry`` robustness split moves test films (rotation, zoom, shift,
   letterboxed canvases) and its patch-coverage target with it
   (:func:`pose_augment`); the shipped CLIP's second stage used 0.5;
   ``--word-noise P`` rewords each phrase of the table with probability
   ``P`` per step (:func:`reword`): words become the tokenizer's unknown
   token and unknown words are inserted, targets unchanged, so the text
   encoder learns to read the words it knows in a wording it has never
   seen (no word outside the phantom's own vocabulary is used);
3. keeps the checkpoint with the best validation accuracy
   (``PhantomCXR("val", seed)``), saves it with the processor to ``--out``
   and writes ``metrics.json`` and ``TRAINING.md`` (command, seed, wall
   time, test-split zero-shot accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from captum_matex.data.phantom import (
    BILATERAL_TEMPLATES,
    CANONICAL,
    CANONICAL_BILATERAL,
    FINDINGS,
    GENERATOR_VERSION,
    TEMPLATES,
    PhantomCXR,
    _fill,
    candidate_phrases,
    swap_laterality,
)
from captum_matex.zoo.phantom_clip import (
    CONTEXT_LENGTH,
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    PATCH_SIZE,
    build_config,
    build_processor,
    evaluate_zero_shot,
    save_pretrained,
)

ZONES = ("upper", "mid", "lower")
FAMILIES = ("clip", "siglip")
SIDES = ("left", "right", "bilateral", None)


@dataclass(frozen=True)
class PhraseKey:
    r"""
    What a phrase asserts: finding, side and the zones it is compatible with.

    Attributes:
        finding (str): Finding name.
        laterality (str or None): Side named by the phrase.
        zones (tuple of str): Zones the phrase is true for.
    """

    finding: str
    laterality: Optional[str]
    zones: Tuple[str, ...]


def phrase_table() -> Dict[str, set]:
    r"""
    Every phantom phrase with the set of keys it is true for.

    Returns:
        dict: phrase -> set of :class:`PhraseKey`.
    """
    table: Dict[str, set] = {}
    sizes = ("small", "moderate", "large", "mild")
    groups = [(f, t, False) for f, ts in TEMPLATES.items() for t in ts]
    groups += [(f, t, True) for f, ts in BILATERAL_TEMPLATES.items() for t in ts]
    for finding, template, bilateral in groups:
        lateral = "{side}" in template
        sides: Sequence[Optional[str]] = ("left", "right") if lateral else [None]
        for side in sides:
            lat = "bilateral" if bilateral else side
            if finding == "edema":
                lat = "bilateral"
            for zone in ZONES:
                for size in sizes:
                    phrase = _fill(template, side, zone, size)
                    if "{zone}" in template:
                        zones: Tuple[str, ...] = (zone,)
                    elif "{lobe}" in template:
                        zones = ("upper",) if zone == "upper" else ("mid", "lower")
                    else:
                        zones = ZONES
                    table.setdefault(phrase, set()).add(PhraseKey(finding, lat, zones))
    return table


def canonical_phrases() -> Dict[Tuple[str, Optional[str]], str]:
    r"""Canonical phrase per (finding, side) for the finding loss."""
    out = {}
    for f in FINDINGS:
        for side in SIDES:
            if side == "bilateral" and f in CANONICAL_BILATERAL:
                out[(f, side)] = CANONICAL_BILATERAL[f]
            else:
                out[(f, side)] = CANONICAL[f].format(side=side if side in ("left", "right") else "right")
    return out


# --------------------------------------------------------------------------
# image bank
# --------------------------------------------------------------------------


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    r"""
    Quantise ``(B, 1, H, W)`` images in ``[0, 1]`` to 8 bits and resize to
    the model input as the processor does (bicubic, antialiased).

    Args:

        images (torch.Tensor): Float images in ``[0, 1]``.

    Returns:
        torch.Tensor: ``uint8`` tensor ``(B, 1, IMAGE_SIZE, IMAGE_SIZE)``.
    """
    x = torch.round(images.clamp(0, 1) * 255.0)
    if x.shape[-1] != IMAGE_SIZE or x.shape[-2] != IMAGE_SIZE:
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", antialias=True, align_corners=False)
    return torch.round(x).clamp(0, 255).to(torch.uint8)


def _render_chunk(args: Tuple[str, int, int, int, int]) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    r"""Render samples ``[start, stop)`` of a split (worker function)."""
    split, seed, length, start, stop = args
    torch.set_num_threads(1)
    ds = PhantomCXR(split=split, seed=seed, length=length)
    imgs, meta = [], []
    grid = IMAGE_SIZE // PATCH_SIZE
    for i in range(start, stop):
        s = ds[i]
        imgs.append(s.image)
        union = torch.stack([r.mask for r in s.findings]).any(0).float()[None, None]
        frac = F.adaptive_avg_pool2d(union, grid)[0, 0]
        meta.append(
            {
                "finding": s.finding,
                "laterality": s.laterality,
                "zone": s.findings[0].zone,
                "phrase": s.phrase,
                "phrases": [r.phrase for r in s.findings],
                "others": [(r.finding, r.laterality) for r in s.findings[1:]],
                "patches": [round(float(v), 3) for v in frac.flatten()],
            }
        )
    x = to_model_input(torch.stack(imgs)).numpy()
    return x, meta


def render_bank(
    split: str, seed: int, length: int, workers: int = 2, chunk: int = 250
) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    r"""
    Render ``length`` phantoms of a split as model-sized ``uint8`` images.

    Args:

        split (str): Phantom split.
        seed (int): Phantom seed.
        length (int): Number of samples.
        workers (int, optional): Worker processes. Default: 2
        chunk (int, optional): Samples per task. Default: 250

    Returns:
        tuple: ``uint8`` tensor ``(length, 1, S, S)`` and per-sample metadata.
    """
    tasks = [(split, seed, length, a, min(length, a + chunk)) for a in range(0, length, chunk)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_chunk, tasks)
    else:
        parts = [_render_chunk(t) for t in tasks]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    meta = [m for p in parts for m in p[1]]
    return images, meta


def load_or_render(
    cache: Optional[Path], split: str, seed: int, length: int, workers: int
) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    r"""Render a bank, re-using a cached copy (``.pt`` of tensors + JSON)."""
    if cache is not None:
        # "c": the metadata lists every finding's phrase ("phrases")
        name = f"v{GENERATOR_VERSION}c_{split}_{seed}_{length}_{IMAGE_SIZE}.npy"
        img_path = cache / name
        meta_path = img_path.with_suffix(".json")
        if img_path.is_file() and meta_path.is_file():
            return torch.from_numpy(np.load(img_path)), json.loads(meta_path.read_text())
    images, meta = render_bank(split, seed, length, workers)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(img_path, images.numpy())
        meta_path.write_text(json.dumps(meta))
    return images, meta


# --------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------


class Targets:
    r"""
    Positive / ignore masks of images against the full phrase table.

    Args:

        phrases (list of str): All phrases, in the order they are encoded.
        table (dict): Output of :func:`phrase_table`.
    """

    def __init__(self, phrases: List[str], table: Dict[str, set]) -> None:
        self.phrases = phrases
        self.index = {p: i for i, p in enumerate(phrases)}
        self.keys = [table[p] for p in phrases]
        self.canon = canonical_phrases()

    def masks(self, meta: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""
        Positive and valid masks of one image over all phrases.

        Args:

            meta (dict): Sample metadata (finding, laterality, zone, others).

        Returns:
            tuple: Boolean ``pos`` and ``valid`` vectors over phrases.
        """
        n = len(self.phrases)
        pos, valid = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
        others = {tuple(o) for o in meta["others"]}
        lat = meta["laterality"]
        for j, keys in enumerate(self.keys):
            for k in keys:
                if k.finding == meta["finding"] and k.laterality == lat:
                    if meta["zone"] in k.zones:
                        pos[j] = True
                    else:
                        valid[j] = False
                elif k.finding == meta["finding"] and lat == "bilateral":
                    valid[j] = False  # a one-sided phrase is half true
                if any(k.finding == f and k.laterality in (s, None) or s == "bilateral" and k.finding == f for f, s in others):
                    valid[j] = False
        pos[self.index[meta["phrase"]]] = True
        valid |= pos
        return pos, valid

    def finding_candidates(self, meta: Dict[str, Any]) -> Tuple[List[int], int]:
        r"""Canonical phrase indices (one per finding, sample's side), target."""
        others = {o[0] for o in meta["others"]} - {meta["finding"]}
        idx, target = [], -1
        for f, phrase in candidate_phrases(meta["laterality"]).items():
            if f in others:
                continue
            if f == meta["finding"]:
                target = len(idx)
            idx.append(self.index[phrase])
        return idx, target


def batch_targets(targets: Targets, metas: Sequence[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
    r"""Stack per-image masks, side pairs and finding candidates."""
    pos, valid = zip(*[targets.masks(m) for m in metas])
    side_idx, side_rows = [], []
    for r, m in enumerate(metas):
        if m["laterality"] in ("left", "right"):
            swapped = swap_laterality(m["phrase"])
            side_idx.append((targets.index[m["phrase"]], targets.index[swapped]))
            side_rows.append(r)
    cands = [targets.finding_candidates(m) for m in metas]
    width = max(len(c[0]) for c in cands)
    cand_idx = torch.zeros(len(metas), width, dtype=torch.long)
    cand_ok = torch.zeros(len(metas), width, dtype=torch.bool)
    for r, (idx, _) in enumerate(cands):
        cand_idx[r, : len(idx)] = torch.tensor(idx)
        cand_ok[r, : len(idx)] = True
    group = [(m["finding"], m["laterality"]) for m in metas]
    same = torch.tensor([[a == b for b in group] for a in group])
    return {
        "pos": torch.stack(pos),
        "valid": torch.stack(valid),
        "side_rows": torch.tensor(side_rows, dtype=torch.long),
        "side_idx": torch.tensor(side_idx, dtype=torch.long).reshape(-1, 2),
        "cand_idx": cand_idx,
        "cand_ok": cand_ok,
        "cand_target": torch.tensor([c[1] for c in cands]),
        "own": torch.tensor([targets.index[m["phrase"]] for m in metas]),
        "same": same,
    }


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------


def normalise(x: torch.Tensor) -> torch.Tensor:
    r"""``uint8`` ``(B, 1, S, S)`` -> normalised 3-channel pixel values."""
    x = x.float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 3) -> torch.Tensor:
    r"""Small translations and intensity jitter (never a left-right flip)."""
    b = x.shape[0]
    x = x.float()
    if shift > 0:
        pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        s = x.shape[-1]
        x = torch.stack([pad[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(b)])
    gain = 1 + 0.08 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 10 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    return (x * gain + bias).round().clamp(0, 255)


def pose_augment(
    x: torch.Tensor, coverage: torch.Tensor, gen: torch.Generator, share: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""
    Move a share of the films as the ``geometry`` robustness split does
    (:mod:`captum_matex.evaluation.robustness`), and their patch coverage with
    them: rotation up to 10 degrees, zoom 0.85-1.15, shift up to 15%; one
    moved film in three is also shrunk by 224/288, as a portrait or landscape
    canvas is when letterboxed into the square input. Outside the film is black.

    Args:

        x (torch.Tensor): ``(B, 1, S, S)`` films (0-255).
        coverage (torch.Tensor): ``(B, g * g)`` patch coverage of the findings.
        gen (torch.Generator): Random numbers.
        share (float): Probability that a film is moved.

    Returns:
        tuple: The films and their coverage, moved.
    """
    films, cells = x.float().clone(), coverage.clone()
    moved = (torch.rand(x.shape[0], generator=gen) < share).nonzero()[:, 0]
    b = len(moved)
    if b == 0:
        return films, cells
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    angle = torch.deg2rad(u(-10, 10))
    zoom = u(0.85, 1.15) * torch.where(torch.rand(b, generator=gen) < 1 / 3, 224 / 288, 1.0)
    shift = torch.stack([u(-0.3, 0.3), u(-0.3, 0.3)], 1)  # 15% of the size = 0.3 in [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) / zoom[:, None, None]
    theta = torch.cat([inverse, -(inverse @ shift[..., None])], 2)

    def move(images: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    g = int(round(coverage.shape[1] ** 0.5))
    films[moved] = move(films[moved])
    cells[moved] = move(cells[moved].view(b, 1, g, g)).flatten(1)
    return films, cells


#: words that state a phrase's side, never reworded (:func:`reword`)
SIDE_WORDS = ("left", "right", "bilateral", "both")


def reword(
    phrase: str, gen: torch.Generator, share: float, unknown: str,
    drop: float = 0.25, max_inserted: int = 2, keep: Sequence[str] = SIDE_WORDS,
) -> str:
    r"""
    With probability ``share``, a wording of ``phrase`` the model has never
    seen: each word but the side words (``keep``: the targets say which side
    the phrase names, so it must still name it) becomes ``unknown`` with
    probability ``drop``, and up to ``max_inserted`` ``unknown`` words are
    put in at random places (what a radiologist's wording looks like to a
    word-level tokenizer that lacks some of its words).

    Args:

        phrase (str): A phantom phrase.
        gen (torch.Generator): Random numbers.
        share (float): Probability that the phrase is reworded.
        unknown (str): The tokenizer's unknown token.
        drop (float, optional): Probability of each word becoming ``unknown``.
        max_inserted (int, optional): Most ``unknown`` words inserted.
        keep (sequence of str, optional): Words never replaced.

    Returns:
        str: The phrase, reworded or as it was.
    """
    if float(torch.rand((), generator=gen)) >= share:
        return phrase
    words = [
        unknown if w not in keep and float(torch.rand((), generator=gen)) < drop else w
        for w in phrase.split()
    ]
    for _ in range(int(torch.randint(0, max_inserted + 1, (), generator=gen))):
        words.insert(int(torch.randint(0, len(words) + 1, (), generator=gen)), unknown)
    return " ".join(words)


def encode_texts(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Normalised text embeddings."""
    out = model.get_text_features(input_ids=ids, attention_mask=mask)
    return F.normalize(getattr(out, "pooler_output", out), dim=-1)


def encode_images(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    r"""Normalised image embeddings."""
    out = model.get_image_features(pixel_values=pixels)
    return F.normalize(getattr(out, "pooler_output", out), dim=-1)


def multi_positive_ce(logits: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    r"""Mean of ``-log(sum_pos softmax)`` with invalid entries removed."""
    neg_inf = torch.finfo(logits.dtype).min
    denom = torch.logsumexp(logits.masked_fill(~valid, neg_inf), dim=1)
    num = torch.logsumexp(logits.masked_fill(~pos, neg_inf), dim=1)
    return (denom - num).mean()


def sigmoid_pairs(logits: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    r"""
    SigLIP's pairwise sigmoid loss: every valid pair is a binary task
    (``pos``: label 1, else -1); summed over a row's pairs, averaged over rows.
    """
    sign = pos.to(logits.dtype) * 2 - 1
    return -(F.logsigmoid(sign * logits) * valid).sum(1).mean()


def losses(
    img: torch.Tensor,
    txt: torch.Tensor,
    t: Dict[str, torch.Tensor],
    scale: Any,
    bias: Any = None,
    sigmoid: bool = False,
) -> Dict[str, torch.Tensor]:
    r"""
    All training losses for one batch (see the module docstring); with
    ``sigmoid`` the image-text terms are SigLIP's sigmoid loss on the logits
    ``scale * cos + bias``.
    """
    pair_loss = sigmoid_pairs if sigmoid else multi_positive_ce
    logits = scale * img @ txt.T  # (B, P)
    if bias is not None:
        logits = logits + bias
    out = {"phrase": pair_loss(logits, t["pos"], t["valid"])}
    if len(t["side_rows"]):
        pair = logits[t["side_rows"][:, None], t["side_idx"]]
        out["side"] = F.cross_entropy(pair, torch.zeros(len(pair), dtype=torch.long))
    else:
        out["side"] = logits.new_zeros(())
    cand = torch.gather(logits, 1, t["cand_idx"]).masked_fill(~t["cand_ok"], -1e4)
    out["finding"] = F.cross_entropy(cand, t["cand_target"])
    own = txt[t["own"]]  # (B, D): each image's own phrase
    t2i = scale * own @ img.T  # (B texts, B images)
    if bias is not None:
        t2i = t2i + bias
    eye = torch.eye(len(img), dtype=torch.bool)
    out["t2i"] = pair_loss(t2i, eye, eye | ~t["same"])
    return out


def evaluate_bank(
    model: Any,
    images: torch.Tensor,
    metas: Sequence[Dict[str, Any]],
    targets: Targets,
    txt_ids: torch.Tensor,
    txt_mask: torch.Tensor,
    batch: int = 128,
) -> Dict[str, Any]:
    r"""Finding and side accuracy on a pre-rendered bank (fast, no processor)."""
    was = model.training
    model.eval()
    hit, side = {f: [] for f in FINDINGS}, {}
    with torch.no_grad():
        txt = encode_texts(model, txt_ids, txt_mask)
        for a in range(0, len(images), batch):
            img = encode_images(model, normalise(images[a : a + batch]))
            t = batch_targets(targets, metas[a : a + batch])
            logits = img @ txt.T
            cand = torch.gather(logits, 1, t["cand_idx"]).masked_fill(~t["cand_ok"], -1e4)
            ok = (cand.argmax(1) == t["cand_target"]).tolist()
            for m, o in zip(metas[a : a + batch], ok):
                hit[m["finding"]].append(o)
            if len(t["side_rows"]):
                pair = logits[t["side_rows"][:, None], t["side_idx"]]
                for r, o in zip(t["side_rows"].tolist(), (pair[:, 0] > pair[:, 1]).tolist()):
                    side.setdefault(metas[a + r]["finding"], []).append(o)
    model.train(was)
    flat = [h for v in hit.values() for h in v]
    flat_side = [h for v in side.values() for h in v]
    return {
        "finding_acc": float(np.mean(flat)),
        "side_acc": float(np.mean(flat_side)) if flat_side else float("nan"),
        "per_finding": {f: round(float(np.mean(v)), 3) for f, v in hit.items() if v},
        "per_finding_side": {f: round(float(np.mean(v)), 3) for f, v in side.items() if v},
    }


# --------------------------------------------------------------------------
# model families: where CLIP and SigLIP differ
# --------------------------------------------------------------------------


def build_model(family: str, processor: Any, args: argparse.Namespace) -> Tuple[Any, int]:
    r"""
    A new model of ``family`` and its joint embedding size.

    CLIP: ``CLIPModel``, logit scale frozen at 1/0.07. SigLIP:
    ``SiglipModel`` with the ``map`` head, logit scale and bias learnt from
    ``log(10)`` and ``-10``.
    """
    sizes = dict(vision_width=args.vision_width, vision_layers=args.vision_layers, text_layers=args.text_layers)
    if family == "siglip":
        from transformers import SiglipModel

        from captum_matex.zoo.phantom_siglip import build_config as siglip_config
        from captum_matex.zoo.phantom_siglip import init_logit_parameters

        config = siglip_config(len(processor.tokenizer), **sizes)
        model = SiglipModel(config)
        init_logit_parameters(model)
        return model, config.text_config.projection_size
    from transformers import CLIPModel

    config = build_config(len(processor.tokenizer), **sizes)
    model = CLIPModel(config)
    model.logit_scale.requires_grad_(False)
    return model, config.projection_dim


def family_processor(family: str) -> Any:
    r"""The processor a model of ``family`` ships with."""
    if family == "siglip":
        from captum_matex.zoo.phantom_siglip import build_siglip_processor

        return build_siglip_processor()
    return build_processor()


def text_inputs(family: str, processor: Any, phrases: Sequence[str]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    r"""
    Token ids and attention mask of ``phrases`` as the model reads them:
    CLIP pads to the longest phrase with a mask; SigLIP pads to the context
    length without one (the text embedding is the last, padded, position).
    """
    tok = processor.tokenizer
    if family == "siglip":
        enc = tok(list(phrases), padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt")
        return enc["input_ids"], None
    enc = tok(list(phrases), padding=True, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def image_forward(family: str, model: Any, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""
    Normalised image embeddings and last-block patch tokens: CLIP projects
    the class token and drops it from the patches; SigLIP's embedding is its
    ``map`` head and every token is a patch.
    """
    vis = model.vision_model(pixel_values=pixels)
    if family == "siglip":
        return F.normalize(vis.pooler_output, dim=-1), vis.last_hidden_state
    return F.normalize(model.visual_projection(vis.pooler_output), dim=-1), vis.last_hidden_state[:, 1:]


def logit_parameters(family: str, model: Any) -> Tuple[Any, Any]:
    r"""
    Logit scale and bias for the losses: CLIP's fixed scale (a float, no
    bias); SigLIP's learnt ``exp(logit_scale)`` and ``logit_bias`` (tensors).
    """
    if family == "siglip":
        return model.logit_scale.exp(), model.logit_bias
    return float(model.logit_scale.exp()), None


def load_family(family: str, directory: Path) -> Tuple[Any, Any]:
    r"""Load a saved model of ``family`` with the package loader."""
    if family == "siglip":
        from captum_matex.zoo.phantom_siglip import phantom_siglip

        return phantom_siglip(directory)
    from captum_matex.zoo.phantom_clip import phantom_clip

    return phantom_clip(directory)


class AuxHeads(torch.nn.Module):
    r"""
    Training-only supervision heads (not shipped with the model).

    A finding head and a side head on the normalised image embedding give
    the vision tower a direct signal for what and which side, which breaks
    the left/right symmetry that a purely contrastive loss starts in; a patch
    head on the last-block patch tokens predicts the fraction of each patch
    covered by a finding, so the evidence sits on the finding's patches.

    Args:

        embed_dim (int): Joint embedding size.
        width (int): Vision hidden size.
    """

    def __init__(self, embed_dim: int, width: int) -> None:
        super().__init__()
        self.finding = torch.nn.Linear(embed_dim, len(FINDINGS))
        self.side = torch.nn.Linear(embed_dim, 3)
        self.patch = torch.nn.Linear(width, 1)


SIDE_CLASS = {"right": 0, "left": 1}


def aux_losses(
    heads: AuxHeads,
    img: torch.Tensor,
    patches: torch.Tensor,
    metas: Sequence[Dict[str, Any]],
    coverage: torch.Tensor,
) -> Dict[str, torch.Tensor]:
    r"""Cross-entropy for finding and side, BCE for patch ``coverage`` ``(B, N)``."""
    f_t = torch.tensor([FINDINGS.index(m["finding"]) for m in metas])
    s_t = torch.tensor([SIDE_CLASS.get(m["laterality"], 2) for m in metas])
    return {
        "aux_finding": F.cross_entropy(heads.finding(10 * img), f_t),
        "aux_side": F.cross_entropy(heads.side(10 * img), s_t),
        "aux_patch": F.binary_cross_entropy_with_logits(heads.patch(patches)[..., 0], coverage),
    }


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    r"""Linear warm-up then cosine decay to 5% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    r"""Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=FAMILIES, default="clip", help="CLIPModel or SiglipModel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--bank", type=int, default=30000, help="training images rendered once")
    p.add_argument("--val", type=int, default=600)
    p.add_argument("--test", type=int, default=1000, help="test samples for the final report")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes rendering the bank")
    p.add_argument("--cache", type=Path, default=None, help="directory caching rendered banks")
    p.add_argument("--w-phrase", type=float, default=1.0, help="image-to-phrase term")
    p.add_argument("--w-side", type=float, default=1.0)
    p.add_argument("--w-finding", type=float, default=1.0)
    p.add_argument("--w-t2i", type=float, default=0.5)
    p.add_argument("--w-aux", type=float, default=1.0, help="training-only heads (0: off)")
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument(
        "--logit-lr-mult",
        type=float,
        default=1.0,
        help="learning-rate multiplier of the learnt logit scale and bias (SigLIP)",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from the weights saved in this directory (a previous run of the same family)",
    )
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this wall time (0: off)")
    p.add_argument(
        "--pose",
        type=float,
        default=0.0,
        help="share of training films moved as the geometry robustness split moves films (0: none)",
    )
    p.add_argument(
        "--word-noise",
        type=float,
        default=0.0,
        help="share of phrases reworded with unknown words each step (0: none)",
    )
    p.add_argument(
        "--unseen-seed",
        type=int,
        default=None,
        help="also report the test split of this phantom seed (one not trained or selected on)",
    )
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    r"""
    Train, select on validation, save and report.

    Args:

        argv (sequence of str, optional): Command-line arguments.
            Default: ``sys.argv[1:]``

    Returns:
        dict: Final metrics (validation and test).
    """
    args = parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "train_log.jsonl", "w")

    def report(rec: Dict[str, Any]) -> None:
        rec["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    processor = family_processor(args.family)
    model, embed_dim = build_model(args.family, processor, args)
    if args.init is not None:
        model.load_state_dict(load_family(args.family, args.init)[0].state_dict())
    sigmoid = args.family == "siglip"
    n_params = sum(p.numel() for p in model.parameters())

    table = phrase_table()
    phrases = sorted(table)
    targets = Targets(phrases, table)
    txt_ids, txt_mask = text_inputs(args.family, processor, phrases)

    train_x, train_meta = load_or_render(args.cache, "train", args.seed, args.bank, args.workers)
    val_x, val_meta = load_or_render(args.cache, "val", args.seed, args.val, args.workers)
    report({"event": "banks", "train": len(train_x), "val": len(val_x), "params": n_params})

    heads = AuxHeads(embed_dim, args.vision_width)
    params = [p for p in list(model.parameters()) + list(heads.parameters()) if p.requires_grad]
    fast = [p for n, p in model.named_parameters() if n in ("logit_scale", "logit_bias") and p.requires_grad]
    fast = fast if args.logit_lr_mult != 1.0 else []
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2 and not any(p is q for q in fast)]
    groups = [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}]
    if fast:
        groups.append({"params": fast, "weight_decay": 0.0, "lr_mult": args.logit_lr_mult})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))
    weights = {"phrase": args.w_phrase, "side": args.w_side, "finding": args.w_finding, "t2i": args.w_t2i}
    weights.update(aux_finding=args.w_aux, aux_side=args.w_aux, aux_patch=args.w_aux)
    best: Tuple[float, int, Dict[str, Any]] = (-1.0, -1, {})
    best_state: Dict[str, torch.Tensor] = {}
    model.train()
    step_t = time.time()
    step = 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup) * g.get("lr_mult", 1.0)
        idx = torch.randint(0, len(train_x), (args.batch,), generator=gen)
        metas = [train_meta[i] for i in idx.tolist()]
        films = train_x[idx]
        coverage = torch.tensor([m["patches"] for m in metas], dtype=torch.float32)
        if args.pose > 0:
            films, coverage = pose_augment(films, coverage, gen, args.pose)
        pixels = normalise(augment(films, gen))
        t = batch_targets(targets, metas)
        img, patches = image_forward(args.family, model, pixels)
        if args.word_noise > 0:
            noisy = [reword(p, gen, args.word_noise, processor.tokenizer.unk_token) for p in phrases]
            txt = encode_texts(model, *text_inputs(args.family, processor, noisy))
        else:
            txt = encode_texts(model, txt_ids, txt_mask)
        scale, bias = logit_parameters(args.family, model)
        parts = losses(img, txt, t, scale, bias, sigmoid)
        if args.w_aux > 0:
            parts.update(aux_losses(heads, img, patches, metas, coverage))
        loss = sum(weights[k] * v for k, v in parts.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0:
            rec = {k: round(float(v.detach()), 4) for k, v in parts.items()}
            if sigmoid:
                rec.update(logit_scale=round(float(scale.detach()), 3), logit_bias=round(float(bias.detach()), 3))
            rec.update(step=step, s_per_step=round((time.time() - step_t) / (25 if step else 1), 3))
            report(rec)
            step_t = time.time()
        last = step == args.steps - 1
        over = args.max_minutes > 0 and (time.time() - t0) > 60 * args.max_minutes
        if (step + 1) % args.eval_every == 0 or last or over:
            val = evaluate_bank(model, val_x, val_meta, targets, txt_ids, txt_mask)
            score = val["finding_acc"] + val["side_acc"]
            report({"event": "val", "step": step + 1, **val})
            if score >= best[0]:
                best = (score, step + 1, val)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if over:
            report({"event": "time_limit", "step": step + 1})
            break
    train_s = time.time() - t0
    model.load_state_dict(best_state)
    model.eval()
    save_pretrained(model, processor, args.out)
    loaded, proc = load_family(args.family, args.out)
    test = evaluate_zero_shot(loaded, proc, n=args.test, split="test", seed=0)
    extra: Dict[str, Any] = {}
    if args.family != "clip":
        extra["family"] = args.family
        extra["logit_scale"] = float(loaded.logit_scale.detach().exp())
        extra["logit_bias"] = float(loaded.logit_bias.detach())
    if args.unseen_seed is not None:
        extra["test_unseen_seed"] = args.unseen_seed
        extra["test_unseen"] = evaluate_zero_shot(loaded, proc, n=args.test, split="test", seed=args.unseen_seed)
    metrics = {
        "seed": args.seed,
        "steps_run": step + 1,
        "best_step": best[1],
        "val": best[2],
        "test": test,
        **extra,
        "params": n_params,
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_training_md(args, metrics, argv)
    report({"event": "done", "test": test, **{k: v for k, v in extra.items() if k == "test_unseen"}})
    log.close()
    return metrics


def write_training_md(args: argparse.Namespace, metrics: Dict[str, Any], argv: Optional[Sequence[str]]) -> None:
    r"""Write ``TRAINING.md`` (command, seed, wall time, final metrics)."""
    cmd = "python tools/train_phantom.py " + " ".join(argv if argv is not None else sys.argv[1:])
    test = metrics["test"]
    size_mb = (args.out / "model.safetensors").stat().st_size / 2**20
    title = {"clip": "CLIP", "siglip": "SigLIP"}[args.family]
    lines = [
        f"# Phantom {title}: training record",
        "",
        f"- command: `{cmd}`",
        f"- seed: {args.seed}",
        f"- parameters: {metrics['params']:,} ({size_mb:.1f} MB safetensors)",
        f"- steps run: {metrics['steps_run']} (best validation checkpoint: step {metrics['best_step']})",
        f"- wall time: {metrics['train_wall_s'] / 60:.1f} min rendering the bank and training, "
        f"{metrics['total_wall_s'] / 60:.1f} min with the final test evaluation, on {args.threads} CPU threads",
        "",
        "## Zero-shot accuracy, test split (`PhantomCXR(split='test', seed=0)`, "
        f"n={test['n']}, side n={test['n_side']})",
        "",
        f"- finding (pick the right finding among the canonical phrases): {test['finding_acc']:.3f}",
        f"- side (true phrase vs left/right-swapped phrase): {test['side_acc']:.3f}",
        "",
        "| finding | finding acc | side acc |",
        "|---|---|---|",
    ]
    for f in FINDINGS:
        fa = test["per_finding"].get(f)
        sa = test["per_finding_side"].get(f)
        lines.append(f"| {f} | {'' if fa is None else f'{fa:.3f}'} | {'' if sa is None else f'{sa:.3f}'} |")
    if "test_unseen" in metrics:
        unseen = metrics["test_unseen"]
        lines += [
            "",
            f"## Zero-shot accuracy, unseen seed (`PhantomCXR(split='test', seed={metrics['test_unseen_seed']})`, "
            f"n={unseen['n']}, side n={unseen['n_side']})",
            "",
            f"- finding: {unseen['finding_acc']:.3f}",
            f"- side: {unseen['side_acc']:.3f}",
        ]
    if "logit_scale" in metrics:
        lines += [
            "",
            f"Learnt logit scale exp(t) = {metrics['logit_scale']:.2f}, bias b = {metrics['logit_bias']:.2f} "
            "(initialised at 10 and -10).",
        ]
    val = metrics["val"]
    lines += [
        "",
        f"Validation (selection) at the best step: finding {val.get('finding_acc', float('nan')):.3f}, "
        f"side {val.get('side_acc', float('nan')):.3f}.",
        "",
        "Computed by `captum_matex.zoo.evaluate_zero_shot(model, processor, n=...)`.",
        "",
    ]
    (args.out / "TRAINING.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
