"""Captum's built-in attributions run on the image-text score, with the common output contract."""

from __future__ import annotations

from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._explainer import OutputKind, accepts_tuple
from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._base import _DEFAULT, BaselineAttribution, Sign, apply_sign


class CaptumBaseline(BaselineAttribution):
    r"""Base class: a Captum method on :class:`~captum_matex.SimilarityForward`.

    The text is resolved once to per-sample embeddings ``(B, E)`` and passed
    to Captum as ``additional_forward_args``, so Captum's batch expansion
    (integrated-gradient steps, NoiseTunnel samples, perturbations) pairs
    every expanded image with its own text. Captum's ``(B, C, H, W)``
    attribution is summed over channels, then :func:`apply_sign` is applied
    (Captum's visualisation convention: ``"positive"`` or
    ``"absolute_value"``), then the map is shaped like ``images`` and
    max-normalised.

    Subclasses implement :meth:`_captum_attribute`.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        sign: ``"positive"``, ``"absolute_value"`` or ``None`` (signed
            pixel map, with ``normalize=None`` the raw channel sum; grid-level
            maps are clamped at zero); default: the method's convention.
        normalize: ``"max"`` (default), ``"minmax"`` or ``None``.
        eval_mode: run the model in eval mode (restored afterwards).
    """

    default_normalize = "max"
    #: sign convention of the method (Captum's visualisation ``sign``)
    default_sign: Sign = "positive"
    #: the attribution is made of score differences (perturbation methods): its
    #: rounding noise is relative to the score, so flatness is judged against it
    score_difference_maps: bool = False

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        sign: Sign = _DEFAULT,
        normalize=_DEFAULT,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, normalize=normalize, eval_mode=eval_mode)
        self.sign = self.default_sign if sign is _DEFAULT else sign
        apply_sign(torch.zeros(()), self.sign)  # validate

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
            Maps on the device of ``inputs`` (non-negative unless ``sign=None``).
        """
        with self.adapter.explaining(self.eval_mode, exposes_attention=False):
            images, text = self._resolve(inputs, additional_forward_args)
            attr = self._captum_attribute(images, text.embeddings)
            scale = self._score_scale(images, text.embeddings)
        if attr.shape[-2:] != images.shape[-2:]:  # a layer method: grid-level map
            # upsampling clamps at zero, so grid-level maps are never signed
            grid_maps = apply_sign(attr.detach().sum(1), self.sign)
            return self._finish_grid(grid_maps, images, output, scale)
        pixel_maps = apply_sign(attr.detach().sum(1), self.sign)
        return self._finish_pixels(pixel_maps, images, output, scale)

    def _score_scale(self, images: Tensor, text_embeddings: Tensor) -> Tensor | None:
        r"""``(B,)`` magnitude of a channel-summed map of score differences,
        ``channels * |s(x)|``; ``None`` for other methods (their own magnitude)."""
        if not self.score_difference_maps:
            return None
        with torch.no_grad():
            score = self.forward_func(images, text_embeddings)
        return score.abs() * images.shape[1]

    def _captum_attribute(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        """Captum attribution ``(B, C, H, W)`` (or ``(B, 1, h, w)``) for ``images``."""
        raise NotImplementedError
