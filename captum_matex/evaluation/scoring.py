"""Score one method's maps for one batch of samples: localisation, faithfulness, sanity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from captum_matex.data.geometry import Geometry, maps_to_original, prepare
from captum_matex.evaluation.samples import EvalSample
from captum_matex.forward import SimilarityForward
from captum_matex.metrics import boxes_to_mask, minmax_normalize
from captum_matex.phrases import swap_laterality
from captum_matex.registry import metrics

#: The phrase a map is compared with when the original has no side to swap.
UNRELATED_PHRASE = "right upper lobe nodule"


def swapped_phrase(phrase: str) -> str:
    r"""The contralateral phrase (:func:`~captum_matex.phrases.swap_laterality`),
    or :data:`UNRELATED_PHRASE` for a phrase without a side (prompt-sensitivity
    check)."""
    swapped = swap_laterality(phrase)
    return swapped if swapped != phrase else UNRELATED_PHRASE


@dataclass
class BatchInputs:
    r"""One batch, prepared for the model.

    Attributes:
        samples: the samples.
        pixels: ``(B, C, H, W)`` model input.
        geometries: how each model input maps back to its original image.
        token_ids: ``(B, L)`` per-sample token ids of the phrases.
        scores: the model's image-text score of each sample (the same for
            every method, so computed once per batch).
    """

    samples: Sequence[EvalSample]
    pixels: Tensor
    geometries: list[Geometry]
    token_ids: Tensor
    scores: list[float]


def prepare_batch(samples: Sequence[EvalSample], processor, mode: str = "letterbox",
                  forward: SimilarityForward | None = None,
                  device: torch.device | str | None = None) -> BatchInputs:
    r"""One batch of samples as model inputs.

    Args:
        samples: the samples.
        processor: the model's processor (its image size and normalisation).
        mode: ``"letterbox"`` or ``"processor"``, as for
            :func:`~captum_matex.data.geometry.prepare`.
        forward: the explained score, a
            :class:`~captum_matex.forward.SimilarityForward` (e.g. an
            explainer's ``forward_func``); with it the batch also holds the phrases'
            token ids (its adapter's tokenisation) and the model's score of
            each sample, which faithfulness and sanity scoring need. Without
            it both are empty (localisation scoring needs neither).
        device: where the pixels go (default: the CPU).
    """
    pixels, geometries = prepare([s.load() for s in samples], processor, mode, device=device)
    if forward is None:
        return BatchInputs(samples, pixels, geometries, torch.empty(0), [])
    token_ids = forward.adapter.tokenize([s.phrase for s in samples], pixels.device)
    with torch.no_grad():
        scores = forward(pixels, token_ids).tolist()
    return BatchInputs(samples, pixels, geometries, token_ids, scores)


def prepared_batches(samples: Sequence[EvalSample], processor, size: int = 25,
                     mode: str = "letterbox",
                     forward: SimilarityForward | None = None) -> list[BatchInputs]:
    r"""Samples as model inputs, ``size`` at a time (:func:`prepare_batch`;
    token ids and model scores only with ``forward``).

    Args:
        samples: the samples.
        processor: the model's processor (its image size and normalisation).
        size: samples per batch.
        mode: ``"letterbox"`` or ``"processor"``, as for
            :func:`~captum_matex.data.geometry.prepare`.
        forward: the explained score, as for :func:`prepare_batch`.
    """
    return [prepare_batch(samples[start : start + size], processor, mode, forward)
            for start in range(0, len(samples), size)]


def localisation_scores(maps: Tensor, batch: BatchInputs,
                        names: Sequence[str]) -> dict[str, list[float]]:
    r"""Localisation metrics of input-grid maps, on each sample's original pixel grid.

    Maps go back to the original grid one sample at a time (original sizes
    differ); each metric is called as ``fn(map (1, 1, H, W), mask (1, H, W))``,
    the mask of the sample's boxes, or of its
    :attr:`~captum_matex.evaluation.EvalSample.regions` entry named after the
    metric when it has one.

    Args:
        maps (Tensor): ``(B, 1, H, W)`` maps on the model-input grid.
        batch (BatchInputs): The batch the maps explain.
        names (Sequence[str]): Registered localisation metrics to score.

    Returns:
        dict: Metric name to one value per sample.
    """
    infos = {name: metrics.get(name) for name in names}
    scores: dict[str, list[float]] = {name: [] for name in names}
    originals = maps_to_original(maps[:, 0], batch.geometries)
    for heat, sample in zip(originals, batch.samples):
        heat = heat[None].float()
        size = tuple(heat.shape[-2:])
        mask = boxes_to_mask([sample.boxes], size, device=heat.device)
        for name, info in infos.items():
            region = sample.regions.get(name)
            given = mask if region is None else boxes_to_mask([region], size, device=heat.device)
            scores[name].append(float(info.fn(heat, given)[0]))
    return scores


def mean_localisation_scores(explainer, batches: Sequence[BatchInputs],
                             names: Sequence[str]) -> dict[str, float]:
    r"""Mean localisation metrics of one explainer's maps of each batch's phrases.

    Args:
        explainer: a method with Captum's ``attribute(inputs, (phrases,), output="pixel")``.
        batches (Sequence[BatchInputs]): The batches, e.g. from :func:`prepared_batches`.
        names (Sequence[str]): Registered localisation metrics to score.

    Returns:
        dict: Metric name to its mean over every sample (NaN scores, e.g. of a
        sample without a box, left out).
    """
    values: dict[str, list[float]] = {name: [] for name in names}
    for batch in batches:
        maps = explainer.attribute(batch.pixels, ([s.phrase for s in batch.samples],),
                                   output="pixel").detach()
        for name, scores in localisation_scores(maps, batch, names).items():
            values[name] += scores
    return {name: float(torch.tensor(v, dtype=torch.float64).nanmean()) for name, v in values.items()}


def curve_step(size: Sequence[int], curve_steps: int) -> tuple[int, int]:
    r"""Pixels removed or inserted per step of a deletion or insertion curve
    with ``curve_steps`` steps over an image of ``size`` ``(H, W)``, as
    :func:`faithfulness_scores` takes them (``patch_size``)."""
    height, width = size[-2:]
    return 1, math.ceil(height * width / curve_steps)


def faithfulness_scores(
    forward: Callable[..., Tensor], maps: Tensor, batch: BatchInputs, names: Sequence[str],
    patch_size: Sequence[int],
) -> dict[str, list[float]]:
    r"""Faithfulness metrics on the model input.

    Each metric is called as ``fn(forward, pixels, maps, (token_ids,))``, with
    min-max normalised maps when its :attr:`~captum_matex.registry.MetricInfo.maps`
    says so and with ``patch_size=`` when it takes that keyword (deletion and
    insertion: the pixels removed or inserted per curve step).

    Args:
        forward (Callable): The explained score, ``forward(pixels, token_ids) -> (B,)``.
        maps (Tensor): ``(B, 1, H, W)`` maps on the model-input grid.
        batch (BatchInputs): The batch the maps explain.
        names (Sequence[str]): Registered faithfulness metrics to score.
        patch_size (Sequence[int]): Pixels per curve step, ``(1, n)``.

    Returns:
        dict: Metric name to one value per sample.
    """
    args = (batch.token_ids,)
    normalised = minmax_normalize(maps)
    scores = {}
    for name in names:
        info = metrics.get(name)
        options = {"patch_size": patch_size} if info.accepts("patch_size") else {}
        given = normalised if info.maps == "minmax" else maps
        scores[name] = info.fn(forward, batch.pixels, given, args, **options).tolist()
    return scores


def sanity_scores(
    maps: Tensor, references: Mapping[str, Tensor | Sequence[Tensor]], names: Sequence[str]
) -> dict[str, list[float]]:
    r"""Sanity metrics on the model-input grid: each compares the maps with the
    reference maps its :attr:`~captum_matex.registry.MetricInfo.compares` names.

    Args:
        maps (Tensor): ``(B, 1, H, W)`` maps of the method.
        references (Mapping[str, Tensor or Sequence[Tensor]]): ``"randomised"``
            (the method on a randomised model) and ``"swapped"`` (for the
            swapped phrases) maps; a sequence of maps (e.g. one per random
            draw) gives each sample the mean of its values over them (NaNs
            left out).
        names (Sequence[str]): Registered sanity metrics to score.

    Returns:
        dict: Metric name to one value per sample.
    """
    scores = {}
    for name in names:
        info = metrics.get(name)
        reference = references[info.compares]
        if isinstance(reference, Tensor):
            scores[name] = info.fn(maps, reference).tolist()
        else:
            values = torch.stack([info.fn(maps, r).double() for r in reference])
            scores[name] = values.nanmean(0).tolist()
    return scores
