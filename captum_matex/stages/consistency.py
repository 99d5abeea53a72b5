"""Stage 3: layer-consistency weighting of per-block maps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from captum_matex._maps import EPS, normalize_max


@dataclass
class ConsistencyResult:
    r"""Output of :class:`LayerConsistency`.

    Attributes:
        map: ``(B, N)`` consistency-weighted map.
        weights: ``(B, L)`` block weights, each row sums to 1.
        agreement: ``(B, L)`` mean correlation of each block with the others.
        per_layer: ``(B, L, N)`` per-block maps (max-normalised).
    """

    map: Tensor
    weights: Tensor
    agreement: Tensor
    per_layer: Tensor


def pearson_matrix(maps: Tensor) -> Tensor:
    r"""Pearson correlation between the rows of ``maps`` ``(B, L, N)`` -> ``(B, L, L)``.

    A constant row correlates 0 with everything (and 1 with itself).
    """
    centred = maps - maps.mean(-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > EPS, centred / norm.clamp_min(EPS), torch.zeros_like(centred))
    corr = unit @ unit.transpose(1, 2)
    eye = torch.eye(maps.shape[1], device=maps.device, dtype=torch.bool)
    return torch.where(eye, torch.ones_like(corr), corr)


class LayerConsistency:
    r"""Weight each block's map by how much it agrees with the other blocks.

    Per-block maps :math:`c_l = \bar A^l[\mathrm{CLS}, \mathrm{patches}]`
    are max-normalised; block :math:`l`'s agreement :math:`a_l` is its mean
    Pearson correlation with the other blocks; weights are
    :math:`w = \mathrm{softmax}(a / \tau)` and the map is
    :math:`\sum_l w_l c_l`.

    Args:
        temperature: :math:`\tau`; small values pick the most consistent
            blocks, large values average all blocks. The default 0.05 was
            chosen on the phantom validation split
            (``benchmarks/tune_matex.py``; 0.05 > 0.1 > 0.5 at every setting).
            :class:`~captum_matex.MATEX` picks its own by readout
            (:data:`~captum_matex.matex.CONSISTENCY_TEMPERATURE`).
        first_layer: ignore blocks before this index (early blocks mostly
            attend locally).
    """

    def __init__(self, temperature: float = 0.05, first_layer: int = 0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.first_layer = first_layer

    def __call__(
        self, block_relevance: Tensor, num_prefix_tokens: int, readout: Tensor | None = None
    ) -> ConsistencyResult:
        r"""
        Args:
            block_relevance: ``(B, L, T, T)`` from :class:`GradWeightedAttention`.
            num_prefix_tokens: tokens before the patches (CLS at index 0).
            readout: ``(B, T)`` weights of the tokens an attention-pooling
                probe reads (SigLIP): block ``l``'s map is then
                :math:`r\,\bar A^l`, the rows it reads, instead of the CLS row.
        """
        first = min(self.first_layer, block_relevance.shape[1] - 1)
        if readout is None:
            per_layer = block_relevance[:, first:, 0, num_prefix_tokens:]
        else:
            weights = readout.to(block_relevance)[:, None, None]
            per_layer = (weights @ block_relevance[:, first:])[:, :, 0, num_prefix_tokens:]
        return weigh_by_agreement(per_layer, self.temperature)


def weigh_by_agreement(per_layer: Tensor, temperature: float) -> ConsistencyResult:
    r"""Layer consistency of ``(B, L, N)`` per-layer maps: each map is
    max-normalised, layer :math:`l`'s agreement :math:`a_l` is its mean
    Pearson correlation with the other layers, and the map is
    :math:`\sum_l \mathrm{softmax}(a / \tau)_l\, c_l`."""
    per_layer = normalize_max(per_layer, start_dim=2)
    num_layers = per_layer.shape[1]
    corr = pearson_matrix(per_layer)
    if num_layers > 1:
        agreement = (corr.sum(-1) - 1) / (num_layers - 1)
    else:
        agreement = torch.ones(corr.shape[:2], device=corr.device, dtype=corr.dtype)
    weights = torch.softmax(agreement / temperature, dim=-1)
    fused = (weights[..., None] * per_layer).sum(1)
    return ConsistencyResult(fused, weights, agreement, per_layer)
