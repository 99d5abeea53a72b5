"""Captum's built-in attributions run on the image-text score, with the common output contract."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from captum_matex._inputs import ResolvedText
from captum_matex.explainer import Explainer


class CaptumBaseline(Explainer):
    r"""Base class: a Captum method on :class:`~captum_matex.SimilarityForward`.

    The text is resolved once to per-sample embeddings ``(B, E)`` and passed
    to Captum as ``additional_forward_args``, so Captum's batch expansion
    (integrated-gradient steps, NoiseTunnel samples, perturbations) pairs
    every expanded image with its own text. Captum's ``(B, C, H, W)``
    attribution is summed over channels; :meth:`~Explainer.finish` applies
    the sign (Captum's visualisation convention, default ``"positive"``),
    shapes the map like ``images`` and max-normalises it. With ``sign=None``
    and ``normalize=None`` the map is the raw signed channel sum (maps on the
    patch grid, from layer methods, are never signed).

    Subclasses implement :meth:`captum_attribution`.
    """

    default_normalize = "max"

    def attribute_maps(self, images: Tensor, text: ResolvedText) -> Tensor:
        return self.captum_attribution(images, text.embeddings).detach().sum(1)

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        r"""Captum attribution ``(B, C, H, W)`` (or ``(B, 1, h, w)`` for a layer
        method) of ``forward_func(images, text_embeddings)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement captum_attribution()")


class PerturbationBaseline(CaptumBaseline):
    r"""A Captum perturbation method: the map is made of score differences
    when parts of the image are replaced by ``baseline``, so rounding noise
    is judged against the score (:attr:`~Explainer.score_difference_maps`).

    Args:
        baseline (float): replacement pixel value (normalised space; 0 = the
            dataset mean). Default: 0
        perturbations_per_eval (int): perturbed images per forward pass.
            Default: 16
    """

    score_difference_maps = True

    def __init__(
        self, model, tokenizer=None, *, baseline: float = 0.0, perturbations_per_eval: int = 16,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval
