"""Gradient-weighted attention rollout (Chefer, Gur, Wolf, ICCV 2021)."""

from __future__ import annotations

from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._base import _DEFAULT, BaselineAttribution, resolve_block
from captum_matex.baselines._registry import register
from captum_matex.stages.attention import GradWeightedAttention


@register("chefer")
class CheferGradRollout(BaselineAttribution):
    r"""Generic attention-model explainability (GAE) of Chefer et al.

    Chefer, Gur and Wolf, *Generic Attention-model Explainability for
    Interpreting Bi-Modal and Encoder-Decoder Transformers*, ICCV 2021
    (reference code: github.com/hila-chefer/Transformer-MM-Explainability).

    With :math:`\bar A^l = \mathrm{mean}_h\,\mathrm{relu}(\nabla_{A^l} s \odot A^l)`
    the relevance starts at :math:`R = I` and, for every block from
    ``start_layer`` on,

    .. math::
        R \leftarrow R + \bar A^l R .

    The map is :math:`R[\mathrm{CLS}, \mathrm{patches}]`, bilinearly upsampled
    and min-max normalised. One forward pass and one backward pass that
    stops at block ``start_layer``.

    The authors' CLIP notebook uses only the last block (``start_layer=-1``),
    which is the default; ``start_layer=0`` is the ViT setting of the paper.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        start_layer (int): first block rolled (negative counts from the end).
            Default: -1
        normalize: ``"minmax"`` (reference), ``"max"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).

    Examples::

        >>> maps = CheferGradRollout(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["right upper lobe opacity"],))
    """

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        start_layer: int = -1,
        normalize=_DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, normalize=normalize, eval_mode=eval_mode)
        self.start_layer = start_layer
        self._relevance = GradWeightedAttention("mean")

    @classmethod
    def get_name(cls) -> str:
        """``"Chefer GAE"``."""
        return "Chefer GAE"

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
            Non-negative ``(B, C, H, W)`` maps (or the requested shape) on the
            device of ``inputs``.
        """
        with self.adapter.explaining(self.eval_mode):
            images, text = self._resolve(inputs, additional_forward_args)
            start = resolve_block(self.start_layer, self.adapter.num_layers, "start_layer")
            with torch.enable_grad():
                trace = self.adapter.trace(
                    images.detach().requires_grad_(True), text.embeddings, attentions=True
                )
                # only the rolled blocks: autograd stops at the earliest one
                attentions = trace.attentions[start:]
                grads = torch.autograd.grad(trace.score.sum(), attentions)
        with torch.no_grad():
            relevance = self._relevance([a.detach() for a in attentions], grads)
            tokens = relevance.shape[-1]
            rel = torch.eye(tokens, device=relevance.device, dtype=relevance.dtype)
            rel = rel.expand(relevance.shape[0], tokens, tokens)
            for block in relevance.unbind(1):
                rel = rel + block @ rel
            grid_maps = rel[:, 0, trace.num_prefix_tokens :].reshape(-1, *trace.grid)
        return self._finish_grid(grid_maps, images, output)
