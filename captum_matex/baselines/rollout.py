"""Attention rollout (Abnar and Zuidema, ACL 2020)."""

from __future__ import annotations

from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._base import _DEFAULT, BaselineAttribution, resolve_block
from captum_matex.baselines._registry import register
from captum_matex.stages.rollout import rollout


@register("rollout")
class AttentionRollout(BaselineAttribution):
    r"""Raw attention rollout, no gradients and no text.

    Abnar and Zuidema, *Quantifying Attention Flow in Transformers*, ACL 2020.

    Each block's head-averaged attention gets the residual connection and
    its rows are renormalised; the blocks are multiplied in forward order:

    .. math::
        \hat A^l = \mathrm{rownorm}\big(\mathrm{mean}_h A^l + I\big),\qquad
        R = \hat A^{L-1} \cdots \hat A^{s}.

    The map is :math:`R[\mathrm{CLS}, \mathrm{patches}]`, upsampled and
    min-max normalised. It ignores the phrase (the same map for every text):
    a text-agnostic reference row for benchmarks.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        start_layer (int): first block rolled (negative counts from the end).
            Default: 0
        head_reduction (str): ``"mean"`` (Abnar and Zuidema), ``"max"`` or
            ``"min"`` over heads. Default: ``"mean"``
        normalize: ``"minmax"`` (default), ``"max"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).

    Examples::

        >>> maps = AttentionRollout(model).attribute(pixel_values,
        ...                                          additional_forward_args=(ids,))
    """

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        start_layer: int = 0,
        head_reduction: str = "mean",
        normalize=_DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, normalize=normalize, eval_mode=eval_mode)
        if head_reduction not in ("mean", "max", "min"):
            raise ValueError(f"head_reduction must be 'mean', 'max' or 'min', got {head_reduction!r}")
        self.start_layer = start_layer
        self.head_reduction = head_reduction

    @classmethod
    def get_name(cls) -> str:
        """``"Attention rollout"``."""
        return "Attention rollout"

    @log_usage()
    @accepts_tuple
    def attribute(
        self, inputs: Tensor, additional_forward_args: Any = None, output: OutputKind = "image"
    ) -> Tensor:
        r"""
        Args:
            inputs: ``(B, C, H, W)`` pixel values.
            additional_forward_args: ``(text,)`` as for every method (checked,
                but the map does not depend on it).
            output: ``"image"``, ``"pixel"`` or ``"grid"``.

        Returns:
            Non-negative maps on the device of ``inputs``.
        """
        with self.adapter.explaining(self.eval_mode), torch.no_grad():
            images, text = self._resolve(inputs, additional_forward_args)
            trace = self.adapter.trace(images, text.embeddings, attentions=True)
            start = resolve_block(self.start_layer, len(trace.attentions), "start_layer")
            heads = torch.stack(trace.attentions[start:], 1)  # (B, L', H, T, T)
            if self.head_reduction == "mean":
                fused = heads.mean(2)
            elif self.head_reduction == "max":
                fused = heads.amax(2)
            else:
                fused = heads.amin(2)
            joint = rollout(fused.float())
            grid_maps = joint[:, 0, trace.num_prefix_tokens :].reshape(-1, *trace.grid)
        return self._finish_grid(grid_maps, images, output)
