"""Stage 1: gradient-weighted attention per block (Chefer et al., ICCV 2021)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class GradWeightedAttention:
    r"""Relevance of each block's attention to the score.

    .. math::
        \bar A^l = \operatorname{mean}_h \operatorname{relu}(G^l \odot A^l),
        \qquad G^l = \partial s / \partial A^l

    Args:
        head_reduction: ``"mean"`` (Chefer et al.) or ``"max"`` over heads.
    """

    def __init__(self, head_reduction: str = "mean") -> None:
        if head_reduction not in ("mean", "max"):
            raise ValueError(f"head_reduction must be 'mean' or 'max', got {head_reduction!r}")
        self.head_reduction = head_reduction

    def __call__(self, attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
        r"""
        Args:
            attentions: per block, ``(B, H, T, T)`` attention probabilities.
            gradients: per block, the score's gradient with the same shape.

        Returns:
            ``(B, L, T, T)`` non-negative block relevances.
        """
        if len(attentions) != len(gradients) or not attentions:
            raise ValueError("need one gradient per attention map, and at least one block")
        return torch.stack([self.block(a, g) for a, g in zip(attentions, gradients)], 1)

    def block(self, attention: Tensor, gradient: Tensor) -> Tensor:
        r"""One block: ``(B, H, T, T)`` attention and gradient -> ``(B, T, T)``."""
        weighted = (gradient * attention).clamp_min(0)
        return weighted.mean(1) if self.head_reduction == "mean" else weighted.amax(1)
