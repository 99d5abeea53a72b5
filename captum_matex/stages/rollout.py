"""Stage 2: multi-scale attention rollout over depth windows."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from captum_matex._maps import EPS


def rollout(block_relevance: Tensor) -> Tensor:
    r"""Roll relevance through blocks: :math:`R = \prod_l \mathrm{rownorm}(I + \bar A^l)`.

    Args:
        block_relevance: ``(B, L, T, T)``, blocks in forward order.

    Returns:
        ``(B, T, T)`` rollout, first block applied first.
    """
    batch, _, tokens, _ = block_relevance.shape
    eye = torch.eye(tokens, device=block_relevance.device, dtype=block_relevance.dtype)
    result = eye.expand(batch, tokens, tokens)
    for layer in block_relevance.unbind(1):
        step = eye + layer
        step = step / step.sum(-1, keepdim=True).clamp_min(EPS)
        result = step @ result
    return result


class MultiScaleRollout:
    r"""Rollouts over several depth windows, each read at the CLS row (or the
    weights with which an attention-pooling probe reads the tokens).

    A window is an ``int`` ``k`` (the last ``k`` blocks) or a ``float``
    ``f`` in (0, 1] (the last ``ceil(f * L)`` blocks). The default covers the
    last block, the last quarter, the last half and all blocks; windows that
    coincide on a shallow tower count once (:meth:`depths`).

    Args:
        windows: the depth windows.
    """

    def __init__(self, windows: Sequence[int | float] = (1, 0.25, 0.5, 1.0)) -> None:
        if not windows:
            raise ValueError("give at least one depth window")
        for w in windows:
            if isinstance(w, bool) or not (
                (isinstance(w, int) and w >= 1) or (isinstance(w, float) and 0 < w <= 1)
            ):
                raise ValueError(f"window {w!r} must be an int >= 1 or a float in (0, 1]")
        self.windows = tuple(windows)

    def depths(self, num_layers: int) -> list[int]:
        r"""Number of last blocks each window covers for a ``num_layers`` tower,
        shallowest first, each depth once.

        Windows that cover the same blocks on this tower (on 4 blocks the last
        block and the last quarter; on 2 blocks the last block, quarter and
        half) are one window: the spec's windows are a *set* of scales, so a
        depth reached twice would weigh its rollout double in the fusion's
        mean.
        """
        return sorted({
            min(num_layers, w) if isinstance(w, int) else max(1, math.ceil(w * num_layers))
            for w in self.windows
        })

    def __call__(
        self, block_relevance: Tensor, num_prefix_tokens: int, readout: Tensor | None = None
    ) -> Tensor:
        r"""
        Args:
            block_relevance: ``(B, L, T, T)`` from :class:`GradWeightedAttention`.
            num_prefix_tokens: tokens before the patches (CLS at index 0).
            readout: ``(B, T)`` weights of the tokens the image embedding
                reads, for an attention-pooling probe (SigLIP: its attention,
                :meth:`~captum_matex.adapters.VisionTrace.readout_weights`); ``None``: the
                class token's row.

        Returns:
            ``(B, K, N)`` one patch map per window.

        Every window ends at the last block, so only the readout row is
        needed: it is propagated from the last block backwards,
        :math:`r \leftarrow r\,\mathrm{rownorm}(I + \bar A^l)`, and read off
        when a window's depth is reached (O(L T^2) instead of O(L T^3)).
        A probe is the last step: its relevance is the starting row.
        """
        batch, num_layers, tokens, _ = block_relevance.shape
        depths = self.depths(num_layers)
        eye = torch.eye(tokens, device=block_relevance.device, dtype=block_relevance.dtype)
        if readout is None:
            row = eye[0].expand(batch, 1, tokens)
        else:
            row = readout.to(eye)[:, None] / readout.sum(-1).clamp_min(EPS)[:, None, None]
        at_depth = {}
        for depth in range(1, max(depths) + 1):
            step = eye + block_relevance[:, num_layers - depth]
            step = step / step.sum(-1, keepdim=True).clamp_min(EPS)
            row = row @ step
            at_depth[depth] = row[:, 0, num_prefix_tokens:]
        return torch.stack([at_depth[d] for d in depths], 1)
