"""MATEX: multi-scale attention and text-guided explainability, as a Captum attribution."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._inputs import check_images, check_text_embeddings, resolve_text
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.explainer import (
    DEFAULT,
    Explainer,
    OutputKind,
    Upsampling,
    format_maps,
    grouped_relevance,
)
from captum_matex.stages.anatomy import AnatomicalPrior
from captum_matex.stages.attention import GradWeightedAttention
from captum_matex.stages.basins import EvidenceBasins
from captum_matex.stages.consistency import ConsistencyResult, LayerConsistency
from captum_matex.stages.fusion import Fusion
from captum_matex.stages.gate import PriorGate
from captum_matex.stages.propagation import FeatureAffinity
from captum_matex.stages.region_smoothing import RegionSmoothing
from captum_matex.stages.registration import default_registration, register_unmasked
from captum_matex.stages.rollout import MultiScaleRollout
from captum_matex.stages import protocols


@dataclass
class MATEXDiagnostics:
    r"""Intermediate results of one :meth:`MATEX.attribute` call, on the patch grid.

    Attributes:
        grid: ``(h, w)`` patch grid; every map below is ``(B, h, w)`` or
            ``(B, k, h, w)``.
        score: ``(B,)`` image-text cosine similarity that was explained.
        per_layer: ``(B, L, h, w)`` gradient-weighted CLS attention of each
            block (max-normalised), or ``None`` without consistency stage.
        layer_weights: ``(B, L)`` layer-consistency weights, or ``None``.
        rollouts: ``(B, K, h, w)`` one rollout per depth window (after the
            evidence propagation, if any), or ``None``.
        rollout_depths: number of last blocks in each window.
        consistency: ``(B, h, w)`` consistency-weighted map (after the
            evidence propagation, if any), or ``None``.
        evidence: ``(B, h, w)`` the model's evidence before the priors.
        priors: prior name to ``(B, h, w)`` prior, as read (before the fusion
            gates it or spreads it over evidence basins).
        phrases: the explained phrases where known.
        fused: ``(B, h, w)`` final map on the grid.
    """

    grid: tuple[int, int]
    score: Tensor
    per_layer: Tensor | None
    layer_weights: Tensor | None
    rollouts: Tensor | None
    rollout_depths: list[int]
    consistency: Tensor | None
    evidence: Tensor
    priors: dict[str, Tensor] = field(default_factory=dict)
    phrases: list[str] | None = None
    fused: Tensor | None = None

    @staticmethod
    def interleave(per_phrase: Sequence[MATEXDiagnostics]) -> MATEXDiagnostics:
        r"""The diagnostics of ``K`` phrases (each over the same ``B`` images)
        as one over ``B * K`` rows, row ``b * K + k`` for image ``b`` and
        phrase ``k``: what :meth:`MATEX.attribute` gives on each image
        repeated ``K`` times."""

        def join(values: Sequence[Tensor | None]) -> Tensor | None:
            return None if values[0] is None else torch.stack(list(values), 1).flatten(0, 1)

        first = per_phrase[0]
        return MATEXDiagnostics(
            grid=first.grid,
            score=join([d.score for d in per_phrase]),
            per_layer=join([d.per_layer for d in per_phrase]),
            layer_weights=join([d.layer_weights for d in per_phrase]),
            rollouts=join([d.rollouts for d in per_phrase]),
            rollout_depths=first.rollout_depths,
            consistency=join([d.consistency for d in per_phrase]),
            evidence=join([d.evidence for d in per_phrase]),
            priors={name: join([d.priors[name] for d in per_phrase]) for name in first.priors},
            phrases=None if first.phrases is None else [
                d.phrases[b] for b in range(len(first.phrases)) for d in per_phrase
            ],
            fused=join([d.fused for d in per_phrase]),
        )


#: Fusion's weight ``alpha`` of the rollouts against the layer-consistency map,
#: by what the image embedding or the target reads. Each was chosen on the
#: validation films (phantom seed 0, anatomy floor 0.5) of the embedded model
#: of that kind, by pointing game (the class token's, where the pointing game
#: saturates, by the randomisation sanity aim):
#:
#: - ``"class token"`` (CLIP): 0.875, with the prior gate, bicubic
#:   upsampling and the evidence background removed
#:   (:data:`EVIDENCE_BACKGROUND`). The pointing game saturates near 1, so the
#:   criterion is the randomisation sanity aim: every weight from 0.625 to 1
#:   keeps the model randomisation Spearman at most 0.15 on both validation
#:   seeds (``benchmarks/prior_gate.py``, 300 pairs of seeds 0 and 2, pointing
#:   game / mIoU / Spearman: 0.977 / 0.394 / 0.080 and 0.960 / 0.396 / 0.106
#:   at 0.625, 0.983 / 0.404 / 0.089 and 0.970 / 0.405 / 0.115 at 0.75, 0.983
#:   / 0.407 / 0.095 and 0.977 / 0.408 / 0.119 at 0.875, 0.987 / 0.408 / 0.097
#:   and 0.977 / 0.408 / 0.120 at 1); 0.875 is level with 1 and keeps the
#:   layer-consistency map in the fusion. Without the background removal the
#:   Spearman aim allowed only 0.625 (0.123 and 0.147; 0.75: 0.138 and 0.162).
#:   With bilinear upsampling the pointing game was the only criterion and
#:   0.75 was best (0.933 / 0.927 at 0.75, 0.92 / 0.92 at 1, 0.913 / 0.887 at
#:   0.5 on the second stage); ungated, 0.75 was best as well
#:   (``benchmarks/tune_matex.py``).
#: - ``"attention probe"`` (SigLIP's ``map`` head): 0, the consistency map
#:   alone, chosen with the evidence propagated (:data:`PROPAGATION`); phantom
#:   SigLIP (``benchmarks/prior_gate.py --model phantom-siglip --alpha
#:   0,0.25``, seed 0, 300 pairs) pointing game / mIoU / CNR 0.923 / 0.368 /
#:   2.36 at 0 against 0.913 / 0.352 / 2.25 at 0.25. Without the propagation
#:   0.25 was chosen (bilinear maps: 0.93 at 0 and 0.25, CNR 2.39 and 2.55,
#:   0.90 at 0.5, 0.88 at 0.75, 0.85 at 1).
#: - ``"decoder"`` (generative models, whose readout is every image token the
#:   projector hands over): 0, the consistency map alone; phantom report
#:   model 0.95 at 0, 0.91 at 0.25, 0.88 at 0.5, 0.87 at 0.75.
FUSION_ALPHA = {"class token": 0.875, "attention probe": 0.0, "decoder": 0.0}

#: Whether :func:`default_fusion` gates the priors with a
#: :class:`~captum_matex.stages.PriorGate`, by readout, chosen on the same
#: validation films (``benchmarks/prior_gate.py``; gated / ungated):
#:
#: - ``"class token"``: gated; phantom CLIP (pose fine-tuned, alpha 0.75,
#:   seed 0) pointing 0.933 / 0.937, model randomisation Spearman 0.123 /
#:   0.341, side-swapped peaks on the empty side 0.216 / 0.291 (no prior:
#:   0.207); before the fine-tuning (alpha 1) 0.943 / 0.953, 0.144 / 0.355,
#:   0.113 / 0.211 (no prior: 0.103).
#: - ``"attention probe"``: gated; phantom SigLIP 0.905 / 0.925, Spearman
#:   -0.059 / 0.218, empty side 0.107 / 0.636: ungated, the words steer the map.
#: - ``"decoder"``: gated, as on the dual encoders, so that on every readout
#:   the priors follow the model's evidence: a prior may not move a map to
#:   the side of the film the evidence does not favour, nor survive the
#:   model's randomisation. Phantom report model (``benchmarks/prior_gate.py
#:   --model phantom-llava --settings "no prior,ungated,lift only,gated"``,
#:   atlas unregistered, validation seeds 0 and 2, 300 pairs; no prior /
#:   ungated / lift only / gated): pointing game 0.917 / 0.940 / 0.920 /
#:   0.917 and 0.877 / 0.943 / 0.917 / 0.890, mIoU 0.305 / 0.386 / 0.374 /
#:   0.361 and 0.315 / 0.389 / 0.377 / 0.365, randomisation Spearman 0.045 /
#:   0.261 / 0.060 / 0.051 and -0.012 / 0.220 / 0.002 / -0.007, side-swapped
#:   peaks on the empty side 0.066 / 0.122 / 0.094 / 0.066 and 0.053 / 0.134
#:   / 0.077 / 0.053. Ungated, the atlas bought 0.02-0.07 of pointing game
#:   on this readout by overriding the evidence (it survived the
#:   randomisation and sent side-swapped phrases to the empty side twice as
#:   often); the lift check alone ("lift only", the gate without its side
#:   checks) passes the randomisation but not the side swap. The decoder
#:   was ungated before; the results page keeps what that gave.
PRIOR_GATE = {"class token": True, "attention probe": True, "decoder": True}

#: Quantile of each map's smoothed evidence that :func:`default_fusion`
#: treats as the film's background level (subtracted, the rest clipped at 0:
#: :class:`~captum_matex.stages.Fusion`'s ``background``), by readout, chosen
#: on the same validation films (kept / removed at the median):
#:
#: - ``"class token"``: the median; phantom CLIP (``benchmarks/prior_gate.py
#:   --background none,0.5``, gated, 300 pairs of seeds 0 and 2) randomisation
#:   Spearman 0.123 / 0.080 and 0.147 / 0.106 at alpha 0.625, pointing game
#:   and mIoU the same or higher at every alpha from 0.625 to 1; it costs
#:   deletion AUC (0.097 / 0.109, ``benchmarks/background.py``, 100 pairs) and
#:   a little CNR (2.55 / 2.53).
#: - ``"attention probe"``: the median; phantom SigLIP (seed 0, 300 pairs,
#:   alpha 0.25) pointing 0.897 / 0.897, mIoU 0.289 / 0.338, CNR 2.32 / 2.21,
#:   Spearman -0.048 / -0.047.
#: - ``"decoder"``: kept; phantom report model (``benchmarks/background.py
#:   --model phantom-llava --limit 100``: consistency map alone, ungated)
#:   pointing 0.95 / 0.95, mIoU 0.372 / 0.371, CNR 2.52 / 2.42, deletion AUC
#:   -6.24 / -6.12 nats.
EVIDENCE_BACKGROUND = {"class token": 0.5, "attention probe": 0.5, "decoder": None}


#: Whether MATEX spreads the evidence over the model's own patch affinities
#: (a :class:`~captum_matex.stages.FeatureAffinity` with its defaults), by
#: what the score reads. Chosen on the phantom validation split
#: (``benchmarks/robustness_val.py --models phantom-clip,phantom-siglip
#: --methods matex,matex_no_propagation --propagation default,0.05x2rnone``,
#: seeds 0 and 2, 200 pairs each), pointing game / mIoU / CNR without ->
#: with:
#:
#: - ``"class token"`` (phantom CLIP): 0.995 / 0.412 / 2.54 -> 1.000 / 0.424 /
#:   2.68 and 0.965 / 0.400 / 2.39 -> 0.960 / 0.416 / 2.57; burned-in markers
#:   0.965 and 0.950 -> 0.965 and 0.945 (0.945 and 0.925 without the radius);
#:   model randomisation Spearman 0.095 -> 0.097 and 0.119 -> 0.119
#:   (``benchmarks/prior_gate.py``, 300 pairs).
#: - ``"attention probe"`` (phantom SigLIP, fusion alpha 0): 0.890 / 0.341 /
#:   2.17 -> 0.930 / 0.368 / 2.29 and 0.895 / 0.343 / 2.06 -> 0.915 / 0.372 /
#:   2.21.
#: - ``"decoder"``: off (not measured; a generative model's patch tokens are
#:   not in a joint space).
PROPAGATION = {"class token": True, "attention probe": True, "decoder": False}


#: Temperature of :class:`~captum_matex.stages.LayerConsistency` (how sharply
#: the layer-consistency map picks the blocks that agree most), by readout,
#: chosen on the phantom validation films:
#:
#: - ``"class token"``: 0.05 (``benchmarks/tune_matex.py``: 0.05 > 0.1 > 0.5 at
#:   every setting); the rollouts carry most of the fused evidence here.
#: - ``"attention probe"``: 0.2 (``benchmarks/prior_gate.py --model
#:   phantom-siglip --settings gated --consistency 0.05,0.1,0.2,0.5,1``, seeds
#:   0 and 2, 300 pairs); phantom SigLIP (fusion alpha 0: the
#:   consistency map is all of its evidence), pointing game / mIoU / CNR /
#:   randomisation Spearman at 0.05: 0.923 / 0.369 / 2.34 / 0.017 and 0.923 /
#:   0.385 / 2.24 / 0.013; 0.1: 0.937 / 0.374 / 2.38 / 0.011 and 0.943 /
#:   0.389 / 2.27 / 0.011; 0.2: 0.933 / 0.376 / 2.41 / 0.008 and 0.953 /
#:   0.391 / 2.30 / 0.007; 0.5: 0.933 / 0.376 / 2.41 / 0.007 and 0.953 /
#:   0.389 / 2.31 / 0.006; 1: 0.933 / 0.374 / 2.41 / 0.007 and 0.947 / 0.388 /
#:   2.31 / 0.006. At 0.2 the map averages the blocks that agree instead of
#:   following the single most consistent one.
#: - ``"decoder"``: 0.2, chosen with the priors gated (:data:`PRIOR_GATE`;
#:   ``benchmarks/prior_gate.py --model phantom-llava --settings gated
#:   --consistency 0.05,0.2,1``, seeds 0 and 2, 300 pairs, atlas
#:   unregistered); phantom report model (fusion alpha 0), pointing game /
#:   mIoU / CNR / randomisation Spearman / side-swapped peaks on the empty
#:   side at 0.05: 0.917 / 0.361 / 2.45 / 0.051 / 0.066 and 0.890 / 0.365 /
#:   2.34 / -0.007 / 0.053; 0.2: 0.920 / 0.356 / 2.55 / 0.031 / 0.052 and
#:   0.900 / 0.361 / 2.46 / -0.006 / 0.038; 1: 0.900 / 0.320 / 2.56 / 0.026
#:   / 0.066 and 0.883 / 0.333 / 2.51 / -0.009 / 0.043. With the priors
#:   ungated (``--settings ungated --consistency 0.05,0.1,0.2,0.5,1``) 0.05
#:   had been kept: there a higher temperature sent the side-swapped
#:   phrase's map to the empty side more often (0.122 and 0.134 at 0.05,
#:   0.202 and 0.187 at 0.2), which the gate now prevents.
CONSISTENCY_TEMPERATURE = {"class token": 0.05, "attention probe": 0.2, "decoder": 0.2}


#: Whether :func:`default_fusion` smooths the evidence within the anatomical
#: prior's regions (a :class:`~captum_matex.stages.RegionSmoothing` with its
#: defaults), by readout, when the atlas is fitted to the films (with a drawn
#: atlas, :func:`drawn_atlas`, it never does). Measured on the phantom validation films (seeds 0
#: and 2, 300 pairs each, priors gated; ``weight`` 0.5 to 1, ``temperature``
#: 0.1 to 1 or none, ``sigma`` 2 and 3 tried), pointing game / mIoU / CNR
#: without -> with, phantom-fitted atlas, then the generic atlas (every film
#: registered, zoom limit 2.5; its clinical lung outline):
#:
#: - ``"attention probe"``: on. Phantom SigLIP 0.933 / 0.374 / 2.33 -> 0.937
#:   / 0.412 / 2.49 and 0.950 / 0.389 / 2.25 -> 0.957 / 0.425 / 2.47
#:   (randomisation Spearman 0.009 -> 0.023 and 0.008 -> 0.023); generic
#:   atlas 0.917 / 0.358 / 2.25 -> 0.917 / 0.362 / 2.14 and 0.917 / 0.374 /
#:   2.17 -> 0.930 / 0.377 / 2.13. A probe's evidence sits on a few patches
#:   of the structure; the smoothing spreads it over the patches of the
#:   region that the model represents alike.
#: - ``"class token"``: on. Phantom CLIP 0.997 / 0.417 / 2.64 -> 0.993 /
#:   0.424 / 2.90 and 0.967 / 0.423 / 2.51 -> 0.970 / 0.432 / 2.82; with the
#:   generic atlas, whose zones miss the phantom's anatomy, 0.967 / 0.398 /
#:   2.52 -> 0.963 / 0.371 / 2.47 and 0.933 / 0.405 / 2.43 -> 0.937 / 0.379
#:   / 2.45 (a drawn atlas no longer smooths). It was opt-in here while a
#:   drawn atlas smoothed too. On test films of seed 0 (200 pairs) it lowers
#:   two-finding discrimination (0.84 against 0.88, above the aim of 0.75
#:   and every baseline) and raises the randomisation Spearman over five
#:   draws from 0.028 to 0.043 (within the aim of 0.15).
#: - ``"decoder"``: on. Phantom report model 0.917 / 0.354 / 2.54 -> 0.917 /
#:   0.369 / 2.76 and 0.887 / 0.359 / 2.43 -> 0.900 / 0.373 / 2.70
#:   (randomisation Spearman 0.032 -> 0.045 and -0.005 -> 0.010); generic
#:   atlas 0.893 / 0.333 / 2.44 -> 0.893 / 0.324 / 2.38 and 0.860 / 0.343 /
#:   2.33 -> 0.860 / 0.332 / 2.36.
REGION_SMOOTHING = {"class token": True, "attention probe": True, "decoder": True}


def drawn_atlas(anatomical_prior: object) -> bool:
    r"""Whether ``anatomical_prior`` is an
    :class:`~captum_matex.stages.AnatomicalPrior` on an atlas whose lungs are
    the built-in drawing (not :attr:`~captum_matex.stages.ChestAtlas.fitted`
    to the films). Its regions then only roughly follow a film's anatomy, so
    :func:`default_fusion` lets its priors weigh whole evidence basins
    (:class:`~captum_matex.stages.EvidenceBasins`) and never smooths within
    its regions. Measured on the phantom validation films (seeds 0 / 2, 300
    pairs, built-in atlas, every film registered), pointing game / mIoU /
    CNR of MATEX without a prior; patch by patch (with region smoothing
    where :data:`REGION_SMOOTHING` says); per basin, without smoothing:

    - phantom CLIP: 0.970 / 0.378 / 2.88 and 0.970 / 0.386 / 2.73; 0.963 /
      0.371 / 2.47 and 0.937 / 0.379 / 2.45 (without the smoothing 0.967 /
      0.398 / 2.52 and 0.933 / 0.405 / 2.43); 0.970 / 0.381 / 2.90 and
      0.970 / 0.390 / 2.75;
    - phantom SigLIP: 0.930 / 0.331 / 2.50 and 0.943 / 0.351 / 2.39; 0.917 /
      0.362 / 2.14 and 0.930 / 0.377 / 2.13; 0.933 / 0.342 / 2.55 and 0.943
      / 0.362 / 2.43;
    - phantom report model: 0.923 / 0.287 / 2.59 and 0.887 / 0.303 / 2.46;
      0.893 / 0.324 / 2.38 and 0.860 / 0.332 / 2.36; 0.927 / 0.292 / 2.72
      and 0.890 / 0.306 / 2.57.

    Per basin the drawn atlas is at or above the model alone on all three
    for every model and seed; patch by patch it buys more mIoU (0.02-0.04;
    none on the CLIP once smoothed) at a cost in CNR (0.1-0.4) and pointing
    game (``python
    benchmarks/yielding_prior.py --atlas generic --settings "no
    prior,matex,per patch" --seed 0|2 --model ...``). With the phantom
    atlas, fitted to these films, patch by patch wins (method page).
    """
    return isinstance(anatomical_prior, AnatomicalPrior) and not anatomical_prior.atlas.fitted


def default_consistency(adapter: VisionLanguageAdapter) -> LayerConsistency:
    r"""MATEX's default layer consistency for ``adapter``'s readout
    (:data:`CONSISTENCY_TEMPERATURE`)."""
    return LayerConsistency(temperature=CONSISTENCY_TEMPERATURE[readout_kind(adapter)])


def default_propagation(adapter: VisionLanguageAdapter) -> FeatureAffinity | None:
    r"""MATEX's default evidence propagation for ``adapter``'s readout
    (:data:`PROPAGATION`): a :class:`~captum_matex.stages.FeatureAffinity` or ``None``."""
    return FeatureAffinity() if PROPAGATION[readout_kind(adapter)] else None


def readout_kind(adapter: VisionLanguageAdapter) -> str:
    r"""What the adapter's score reads of the image: a key of :data:`FUSION_ALPHA`."""
    capabilities = adapter.capabilities
    if "decoder" in capabilities:
        return "decoder"
    return "class token" if "class token" in capabilities else "attention probe"


def default_fusion(adapter: VisionLanguageAdapter, anatomical_prior: object = None) -> Fusion:
    r"""MATEX's default :class:`~captum_matex.stages.Fusion` for this adapter's
    readout and this anatomical prior stage: ``alpha`` from
    :data:`FUSION_ALPHA`, the evidence's background quantile from
    :data:`EVIDENCE_BACKGROUND`, where :data:`PRIOR_GATE` says so, priors
    gated by a :class:`~captum_matex.stages.PriorGate` (a prior acts only as
    far as the model's evidence leans towards it). For a prior on a drawn
    atlas (:func:`drawn_atlas`, e.g. the built-in one) each prior weighs whole
    evidence basins (:class:`~captum_matex.stages.EvidenceBasins`); for any
    other, patch by patch, with the evidence smoothed within the anatomical
    prior's regions (:class:`~captum_matex.stages.RegionSmoothing`) where
    :data:`REGION_SMOOTHING` says so."""
    kind = readout_kind(adapter)
    drawn = drawn_atlas(anatomical_prior)
    return Fusion(alpha=FUSION_ALPHA[kind], gate=PriorGate() if PRIOR_GATE[kind] else None,
                  background=EVIDENCE_BACKGROUND[kind],
                  region_smoothing=RegionSmoothing() if REGION_SMOOTHING[kind] and not drawn else None,
                  basins=EvidenceBasins() if drawn else None)


class MATEX(Explainer):
    r"""MATEX explains which image regions make a vision-language model match a
    phrase (Imran, Lee, Lee, *MATEX: Multi-scale Attention and Text-guided
    Explainability of Medical Vision-Language Models*, arXiv 2601.11666).

    The paper's abstract names three ingredients: multi-layer attention
    rollout, anatomically informed text-guided spatial priors and layer
    consistency analysis, giving gradient attribution maps. The stages below
    are this package's reconstruction (see the documentation's method page):

    1. ``attention``: gradient-weighted attention per block,
       :math:`\bar A^l = \mathrm{mean}_h\,\mathrm{relu}(\partial s/\partial A^l \odot A^l)`;
    2. ``rollout``: rollouts over several depth windows;
    3. ``consistency``: per-block maps weighted by their agreement;
       ``propagation`` spreads the rollouts and the consistency map over
       the model's own patch-feature affinities;
    4. ``text_prior`` (model-derived patch-text similarity),
       ``anatomical_prior`` (phrase words mapped to a chest atlas) and, for
       a generative model, ``decoder_prior`` (the decoder's gradient-weighted
       attention from the phrase to the image tokens);
    5. ``fusion``: evidence re-weighted (never created) by the priors.

    All of it costs one forward and one backward pass per batch. Each stage is
    an object passed in at construction; pass ``None`` to drop a stage
    (``rollout`` and ``consistency`` may not both be ``None``).

    One model serves one ``attribute`` call at a time: a call while another
    thread explains with the same model raises ``RuntimeError`` (the model's
    mode, ``requires_grad`` and attention implementation are switched for the
    call); use one model copy per thread.

    Args:
        model: a transformers ``CLIPModel`` or a
            :class:`~captum_matex.adapters.VisionLanguageAdapter`.
        tokenizer: tokenizer or processor for text given as strings.
        attention: stage 1, default :class:`~captum_matex.stages.GradWeightedAttention`.
        rollout: stage 2, default :class:`~captum_matex.stages.MultiScaleRollout`.
        consistency: stage 3, default :func:`default_consistency` (a
            :class:`~captum_matex.stages.LayerConsistency` at the readout's temperature).
        propagation: stage 3', spreads the rollouts and the consistency map
            to patches the model represents alike; default
            :func:`default_propagation` (a :class:`~captum_matex.stages.FeatureAffinity`
            on dual encoders, none on generative models: :data:`PROPAGATION`).
        text_prior: stage 4a, e.g. :class:`~captum_matex.stages.PatchTextPrior`;
            default ``None`` (off: it was neutral on the phantom validation
            split, see :class:`~captum_matex.stages.Fusion`).
        anatomical_prior: stage 4b, default :class:`~captum_matex.stages.AnatomicalPrior`.
        registration: stage 4b', moves the anatomical prior onto each film's
            own lung fields; default :func:`~captum_matex.stages.registration.default_registration`
            (an :class:`~captum_matex.stages.AtlasRegistration` of the
            anatomical prior's atlas; none for a custom prior stage). Region
            masks passed as ``anatomy_masks`` are never moved.
        decoder_prior: stage 4c, for generative models, e.g.
            :class:`~captum_matex.stages.DecoderAttentionPrior`; default
            ``None`` (off: on the phantom report model's validation films it
            lowered the pointing game from 0.95 to 0.78; the benchmark's
            ``matex_with_decoder_prior`` row shows it).
        fusion: stage 5, default :func:`default_fusion`: a
            :class:`~captum_matex.stages.Fusion` whose ``alpha`` depends on what
            the score reads (:data:`FUSION_ALPHA`: 0.875 for a class token, 0
            for an attention probe or a generative model's image tokens)
            and whose priors are gated by a :class:`~captum_matex.stages.PriorGate`
            (:data:`PRIOR_GATE`), after the evidence's
            background level is removed (:data:`EVIDENCE_BACKGROUND`); with
            a drawn atlas (the built-in one: :func:`drawn_atlas`) each prior
            weighs whole evidence basins
            (:class:`~captum_matex.stages.EvidenceBasins`), with a fitted
            one it re-weights patch by patch (and smooths within regions
            where :data:`REGION_SMOOTHING` says).
        eval_mode: run the model in eval mode (restored afterwards).
        prompt: for a generative model, the text between the image and the
            explained phrase (default: the family's, e.g. ``"Findings:"``).
        upsample: how the fused patch map reaches the input's size; default
            ``"bicubic"``, which lets its peak fall between patch centres
            (:func:`~captum_matex.explainer.upsample_grid`; chosen on
            validation films, see the method page); ``"bilinear"`` as most
            baselines.

    Examples::

        >>> from captum_matex.zoo import phantom_clip
        >>> model, processor = phantom_clip()
        >>> explainer = MATEX(model, processor)
        >>> maps = explainer.attribute(pixel_values,
        ...                            additional_forward_args=(["left pleural effusion"],))
    """

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        attention: protocols.AttentionStage = DEFAULT,
        rollout: protocols.RolloutStage | None = DEFAULT,
        consistency: protocols.ConsistencyStage | None = DEFAULT,
        propagation: protocols.PropagationStage | None = DEFAULT,
        text_prior: protocols.TextPriorStage | None = None,
        anatomical_prior: protocols.AnatomicalPriorStage | None = DEFAULT,
        registration: protocols.RegistrationStage | None = DEFAULT,
        decoder_prior: protocols.DecoderPriorStage | None = None,
        fusion: protocols.FusionStage = DEFAULT,
        eval_mode: bool = True,
        prompt: str | Sequence[int] | None = None,
        upsample: Upsampling = DEFAULT,
    ) -> None:
        super().__init__(model, tokenizer, eval_mode=eval_mode, prompt=prompt, upsample=upsample)
        self.attention = GradWeightedAttention() if attention is DEFAULT else attention
        self.rollout = MultiScaleRollout() if rollout is DEFAULT else rollout
        self.consistency = (
            default_consistency(self.adapter) if consistency is DEFAULT else consistency
        )
        self.propagation = (
            default_propagation(self.adapter) if propagation is DEFAULT else propagation
        )
        self.text_prior = text_prior
        self.anatomical_prior = (
            AnatomicalPrior() if anatomical_prior is DEFAULT else anatomical_prior
        )
        self.registration = (
            default_registration(self.anatomical_prior) if registration is DEFAULT else registration
        )
        self.decoder_prior = decoder_prior
        self.fusion = (
            default_fusion(self.adapter, self.anatomical_prior) if fusion is DEFAULT else fusion
        )
        if self.attention is None or self.fusion is None:
            raise ValueError("MATEX needs an attention stage and a fusion stage")
        if self.rollout is None and self.consistency is None:
            raise ValueError("MATEX needs the rollout stage, the consistency stage or both")
        for name, protocol in protocols.STAGE_PROTOCOLS.items():
            stage = getattr(self, name)
            if stage is not None and not isinstance(stage, protocol):
                raise TypeError(
                    f"{name}={type(stage).__name__} is not a {protocol.__name__}: it needs "
                    f"{protocols.protocol_methods(protocol)} (see captum_matex.stages.protocols)"
                )

    display_name = "MATEX"
    #: the fusion stage normalises (noise-safe) already
    default_normalize = None
    #: peaks between patch centres (see :func:`~captum_matex.explainer.upsample_grid`)
    default_upsample = "bicubic"

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        additional_forward_args: Any = None,
        output: OutputKind = "image",
        return_diagnostics: bool = False,
        anatomy_masks: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, MATEXDiagnostics]:
        r"""Explain the image-text similarity of each image with its phrase.

        Args:
            inputs: ``(B, C, H, W)`` pixel values as the model's processor
                makes them (or a 1-tuple of it, giving a 1-tuple back, as
                Captum's metrics pass them), in any floating dtype; raw
                integer pixels (``uint8``) are refused with a ``TypeError``
                (the processor normalises them).
            additional_forward_args: ``(text,)``: per-sample token ids
                ``(B, L)``, per-sample text embeddings ``(B, E)``, a list of
                ``B`` phrases, or one phrase for all images. Tensors are
                expanded by Captum's NoiseTunnel and metrics; phrases longer
                than the text encoder's context are truncated with a warning.
                The anatomical prior needs the phrase words, so with text
                embeddings it is uniform unless ``anatomy_masks`` is given.
            output: ``"image"`` for ``(B, C, H, W)``, ``"pixel"`` for
                ``(B, 1, H, W)``, ``"grid"`` for the ``(B, 1, h, w)`` patch grid.
            return_diagnostics: also return a :class:`MATEXDiagnostics`.
            anatomy_masks: optional ``(B, H, W)`` region masks replacing the
                anatomical atlas per sample (e.g. from a lung segmenter).

        Returns:
            Non-negative maps in [0, 1] on the device and in the dtype of
            ``inputs``, and the diagnostics if requested.

        Raises:
            ValueError / TypeError: for malformed images or text, or when the
                score is NaN or Inf (inputs that overflow the model); the
                message names the fix.
            RuntimeError: another thread is explaining with the same model.
        """
        inputs, is_tuple = self._untuple(inputs)
        with self.adapter.explaining(self.eval_mode):
            images, text = self._resolve(inputs, additional_forward_args)
            trace, relevance, readout, decoder = self._attention_relevance(
                images, text.embeddings, self.attention.block
            )
        with torch.no_grad():
            diagnostics = self._fuse(
                trace, relevance, readout, decoder, text.phrases, anatomy_masks, images
            )
        if diagnostics.evidence.flatten(1).amax(1).eq(0).any():
            warnings.warn(
                "MATEX found no positive gradient-weighted attention for some "
                "samples (the score does not increase with any attention weight); "
                "their maps carry no model evidence",
                stacklevel=2,
            )
        maps = format_maps(diagnostics.fused, images, output, self.upsample)
        maps = (maps,) if is_tuple else maps
        return (maps, diagnostics) if return_diagnostics else maps

    def attribute_phrases(
        self,
        inputs: Tensor,
        phrases: Sequence[str] | Sequence[Sequence[str]],
        output: OutputKind = "image",
        anatomy_masks: Tensor | None = None,
        return_diagnostics: bool = False,
    ) -> Tensor | tuple[Tensor, MATEXDiagnostics]:
        r"""Explain ``K`` phrases for every image with one forward pass of the
        image tower (and one backward pass per phrase), instead of ``K``
        forward passes of :meth:`attribute` on repeated images.

        Args:
            inputs: ``(B, C, H, W)`` pixel values.
            phrases: ``K`` phrases for every image, ``B`` sequences of ``K``
                phrases (one per image), text embeddings ``(K, E)`` (shared)
                or ``(B, K, E)`` (the anatomical prior is then uniform), or
                token ids ``(K, L)`` or ``(B, K, L)``.
            output: as in :meth:`attribute`.
            anatomy_masks: optional ``(B, H, W)`` region masks per image.
            return_diagnostics: also return the diagnostics, over ``B * K``
                rows (:meth:`MATEXDiagnostics.interleave`).

        Returns:
            ``(B, K, ...)``: the maps :meth:`attribute` gives for each
            (image, phrase) pair, phrase ``k`` of image ``b`` at ``[b, k]``,
            and the diagnostics if requested.

        Examples::

            >>> maps = explainer.attribute_phrases(
            ...     pixel_values, ["left pleural effusion", "cardiomegaly", "right apical pneumothorax"])
            >>> maps.shape  # (B, 3, C, H, W)
        """
        with self.adapter.explaining(self.eval_mode):
            images = check_images(inputs, self.adapter)
            batch = images.shape[0]
            if isinstance(phrases, Tensor) and phrases.is_floating_point():
                phrases = check_text_embeddings(phrases, self.adapter).to(images.device)
                embeddings = self.adapter.text_embeddings(_phrase_tensor_table(phrases, batch))
                per_image = [[None] * embeddings.shape[1]] * batch
            elif isinstance(phrases, Tensor):  # token ids, checked as attribute() checks them
                ids = _phrase_tensor_table(phrases, batch)
                k = ids.shape[1]
                text = resolve_text((ids.flatten(0, 1),), batch * k, self.adapter, images.device)
                embeddings = text.embeddings.view(batch, k, -1)
                decoded = text.phrases or [None] * (batch * k)
                per_image = [decoded[b * k:(b + 1) * k] for b in range(batch)]
            else:
                per_image = _phrase_table(phrases, batch)
                flat = [p for row in per_image for p in row]
                text = resolve_text((flat,), len(flat), self.adapter, images.device)
                embeddings = text.embeddings.view(batch, len(per_image[0]), -1)
            with torch.enable_grad():
                trace = self.adapter.trace(
                    images.detach().requires_grad_(True), embeddings[:, 0],
                    attentions=True,
                )
                # every further phrase scored on the one image pass (a decoder: one pass each,
                # so that each phrase's backward pass meets only its own decoder rows)
                passes = [trace.target_pass] + [
                    self.adapter.target.evaluate(
                        trace.image_embeddings, embeddings[:, k], attentions=True
                    )
                    for k in range(1, embeddings.shape[1])
                ]
                trace.image_embeddings = trace.target_pass = None
                readout = trace.readout_weights()  # what the embedding reads: every phrase's
                relevances = grouped_relevance(
                    trace.attentions, [p.score for p in passes], self.attention.block,
                    own=[p.attentions for p in passes],
                )
        maps, diagnostics = [], []
        with torch.no_grad():
            for k, (relevance, decoder) in enumerate(relevances):
                trace_k = replace(
                    trace, score=passes[k].score.detach(),
                    text_embeddings=embeddings[:, k].detach(), target_pass=passes[k],
                )
                phrases_k = [row[k] for row in per_image]
                diagnostics.append(self._fuse(
                    trace_k, relevance, readout, decoder, phrases_k, anatomy_masks, images
                ))
                maps.append(format_maps(diagnostics[-1].fused, images, output, self.upsample))
        maps = torch.stack(maps, 1)
        return (maps, MATEXDiagnostics.interleave(diagnostics)) if return_diagnostics else maps

    def _fuse(
        self, trace, relevance, readout, decoder, phrases, anatomy_masks, images
    ) -> MATEXDiagnostics:
        grid = trace.grid
        batch = images.shape[0]
        prefix = trace.num_prefix_tokens
        # an attention-pooling probe's attention (trace.readout_weights()) replaces the class token's row
        extra = {} if readout is None else {"readout": readout}
        rollouts = self.rollout(relevance, prefix, **extra) if self.rollout is not None else None
        consistency = (
            self.consistency(relevance, prefix, **extra) if self.consistency is not None else None
        )
        if self.propagation is not None:
            rollouts, consistency = _propagated(
                self.propagation, rollouts, consistency, trace.patch_embeddings, grid
            )
        priors: dict[str, Tensor] = {}
        if self.text_prior is not None:
            priors["text"] = self.text_prior(trace.patch_embeddings, trace.text_embeddings, grid)
        if self.anatomical_prior is not None:
            priors["anatomy"] = self.anatomical_prior(
                phrases if phrases is not None else [None] * batch,
                grid,
                masks=anatomy_masks,
                device=images.device,
            )
            priors["anatomy"] = register_unmasked(
                self.registration, priors["anatomy"], images, grid, anatomy_masks
            )
        if decoder is not None and self.decoder_prior is not None:
            priors["decoder"] = self.decoder_prior(decoder, trace.target_pass, grid)
        cons_map = consistency.map if consistency is not None else None
        # a fusion stage written before ``features`` joined the protocol is called without it
        reads_features = "features" in inspect.signature(self.fusion).parameters
        given = {"features": trace.patch_embeddings} if reads_features else {}
        fused = self.fusion(rollouts, cons_map, priors, grid, **given)
        fused = self._zero_flat_images(fused, images)

        def as_grid(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.reshape(*x.shape[:-1], *grid)

        return MATEXDiagnostics(
            grid=grid,
            score=trace.score.detach(),
            per_layer=as_grid(consistency.per_layer) if consistency is not None else None,
            layer_weights=consistency.weights if consistency is not None else None,
            rollouts=as_grid(rollouts),
            rollout_depths=self.rollout.depths(relevance.shape[1]) if self.rollout else [],
            consistency=as_grid(cons_map),
            evidence=as_grid(self.fusion.evidence(rollouts, cons_map)),
            priors={name: as_grid(p) for name, p in priors.items()},
            phrases=phrases,
            fused=as_grid(fused),
        )


def _propagated(
    propagation: protocols.PropagationStage, rollouts: Tensor | None,
    consistency: ConsistencyResult | None, patch_embeddings: Tensor, grid: tuple[int, int],
) -> tuple[Tensor | None, ConsistencyResult | None]:
    r"""The ``(B, K, N)`` rollouts and the consistency map spread by
    ``propagation`` in one call (one affinity per image), each map on its own."""
    maps = []
    if rollouts is not None:
        maps.append(rollouts)
    if consistency is not None:
        maps.append(consistency.map[:, None])
    spread = propagation(torch.cat(maps, 1), patch_embeddings, grid)
    if rollouts is not None:
        rollouts, spread = spread[:, : rollouts.shape[1]], spread[:, rollouts.shape[1]:]
    if consistency is not None:
        consistency = replace(consistency, map=spread[:, 0])
    return rollouts, consistency


def _phrase_table(phrases: Sequence[str] | Sequence[Sequence[str]], batch: int) -> list[list[str]]:
    r"""``batch`` rows of ``K`` phrases from ``K`` shared phrases or per-image rows."""
    if isinstance(phrases, str) or not len(phrases):
        raise ValueError("phrases must be a non-empty list of K phrases (or one list per image)")
    if all(isinstance(p, str) for p in phrases):
        return [list(phrases)] * batch
    rows = [list(row) for row in phrases]
    if len(rows) != batch or len({len(row) for row in rows}) != 1 or not rows[0]:
        raise ValueError(
            f"give K phrases for all images or {batch} lists of the same K phrases "
            f"(one per image); got {len(rows)} lists of lengths {sorted({len(r) for r in rows})}"
        )
    return rows


def _phrase_tensor_table(embeddings: Tensor, batch: int) -> Tensor:
    r"""``(batch, K, E)`` text embeddings (or ``(batch, K, L)`` token ids) from
    ``(K, E)`` or ``(batch, K, E)``."""
    if embeddings.dim() == 2:
        return embeddings.unsqueeze(0).expand(batch, -1, -1)
    if embeddings.dim() != 3 or embeddings.shape[0] != batch:
        raise ValueError(
            f"text embeddings (or token ids) for many phrases must be (K, E) or ({batch}, K, E), got "
            f"{tuple(embeddings.shape)}"
        )
    if embeddings.shape[1] == 0:
        raise ValueError("phrases holds no embeddings (K = 0); give at least one phrase")
    return embeddings
