"""Dense patch-text similarity of the last block's projected patch tokens."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.baselines._base import BaselineAttribution
from captum_matex.baselines._registry import register


@register("patch_text")
class PatchTextSimilarity(BaselineAttribution):
    r"""Where the last block's patch tokens, projected into the joint space
    like the CLS token, match the text.

    .. math::
        M_j = \mathrm{relu}\big(\cos(\mathrm{proj}(\mathrm{ln}(z_j)), e_t)\big)

    for the last-block patch tokens :math:`z_j` (no gradient, one forward
    pass), max-normalised. This is the unsmoothed model-derived prior of
    MATEX and the "dense similarity" reading used by MaskCLIP-style methods
    (without their value-path surgery). A map can be all zero when no patch
    has a positive similarity.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        normalize: ``"max"`` (default), ``"minmax"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).

    Examples::

        >>> maps = PatchTextSimilarity(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    default_normalize = "max"

    @classmethod
    def get_name(cls) -> str:
        """``"Patch-text similarity"``."""
        return "Patch-text similarity"

    @log_usage()
    @accepts_tuple
    def attribute(
        self, inputs: Tensor, additional_forward_args: Any = None, output: OutputKind = "image"
    ) -> Tensor:
        r"""
        Args:
            inputs: ``(B, C, H, W)`` pixel values.
            additional_forward_args: ``(text,)``: per-sample token ids or
                embeddings, ``B`` phrases or one phrase.
            output: ``"image"``, ``"pixel"`` or ``"grid"``.

        Returns:
            Non-negative maps on the device of ``inputs``.
        """
        with self.adapter.explaining(self.eval_mode, exposes_attention=False), torch.no_grad():
            images, text = self._resolve(inputs, additional_forward_args)
            trace = self.adapter.trace(images, text.embeddings, attentions=False)
            patches = trace.patch_embeddings
            sim = F.cosine_similarity(
                patches, trace.text_embeddings[:, None].to(patches), dim=-1
            ).clamp_min(0)
        return self._finish_grid(sim.reshape(-1, *trace.grid), images, output)
