"""Score one method's maps for one batch of samples: localisation, faithfulness, sanity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import Tensor

from captum_matex.data.geometry import Geometry, maps_to_original
from captum_matex.evaluation.samples import EvalSample
from captum_matex.metrics import (
    boxes_to_mask,
    cnr,
    confidence_drop_increase,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    minmax_normalize,
    miou,
    pixel_auroc,
    pointing_game,
    prompt_sensitivity,
    randomisation_spearman,
    top_k_precision,
)
from captum_matex.phrases import swap_laterality

#: Localisation metrics scored on the original pixel grid against the boxes.
LOCALISATION = {
    "pointing_game": pointing_game,
    "energy_pointing_game": energy_pointing_game,
    "miou": miou,
    "cnr": cnr,
    "pixel_auroc": pixel_auroc,
    "top_k_precision": top_k_precision,
}

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


def localisation_scores(maps: Tensor, batch: BatchInputs) -> dict[str, list[float]]:
    r"""Localisation metrics of ``(B, 1, H, W)`` input-grid maps, computed on
    each sample's original pixel grid against its boxes (one sample at a time,
    since original sizes differ)."""
    scores: dict[str, list[float]] = {name: [] for name in LOCALISATION}
    originals = maps_to_original(maps[:, 0], batch.geometries)
    for heat, sample in zip(originals, batch.samples):
        heat = heat[None].float()
        mask = boxes_to_mask([sample.boxes], tuple(heat.shape[-2:]), device=heat.device)
        for name, metric in LOCALISATION.items():
            scores[name].append(float(metric(heat, mask)[0]))
    return scores


def faithfulness_scores(
    forward: Callable[..., Tensor], maps: Tensor, batch: BatchInputs, patch_size: Sequence[int]
) -> dict[str, list[float]]:
    r"""M2IB's confidence drop / increase and RISE deletion / insertion AUC, on
    the model input."""
    args = (batch.token_ids,)
    normalised = minmax_normalize(maps)
    drop, increase = confidence_drop_increase(forward, batch.pixels, normalised, args)
    # deletion replaces pixels by 0 (the data set's mean colour in normalised inputs);
    # insertion reveals them on a blurred copy (the metrics' defaults)
    deletion = deletion_auc(forward, batch.pixels, maps, args, patch_size=patch_size)
    insertion = insertion_auc(forward, batch.pixels, maps, args, patch_size=patch_size)
    return {
        "confidence_drop": drop.tolist(),
        "confidence_increase": increase.tolist(),
        "deletion_auc": deletion.tolist(),
        "insertion_auc": insertion.tolist(),
    }


def sanity_scores(
    maps: Tensor, randomised_maps: Tensor | None, swapped_maps: Tensor
) -> dict[str, list[float]]:
    r"""Randomisation Spearman (trained vs randomised model) and prompt
    sensitivity (phrase vs swapped phrase) on the model-input grid."""
    scores = {"prompt_sensitivity": prompt_sensitivity(maps, swapped_maps).tolist()}
    if randomised_maps is not None:
        scores["randomisation_spearman"] = randomisation_spearman(maps, randomised_maps).tolist()
    return scores

