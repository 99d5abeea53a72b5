"""Integrated Gradients (Sundararajan et al., ICML 2017) on the image-text score, via Captum."""

from __future__ import annotations

from typing import Any

from captum.attr import IntegratedGradients as _IntegratedGradients
from torch import Tensor

from captum_matex.baselines._captum import CaptumBaseline
from captum_matex.baselines._registry import register


@register("integrated_gradients")
class IntegratedGradients(CaptumBaseline):
    r"""Integrated gradients from a constant baseline image, positive part.

    Sundararajan, Taly and Yan, *Axiomatic Attribution for Deep Networks*,
    ICML 2017; Captum's :class:`captum.attr.IntegratedGradients` on
    :class:`~captum_matex.SimilarityForward`:

    .. math::
        M_{xy} = \mathrm{relu}\Big(\sum_c (x - x')_{cxy} \int_0^1
        \frac{\partial s(x' + a (x - x'))}{\partial x_{cxy}}\, da\Big),

    Gauss-Legendre quadrature with ``n_steps`` points, evaluated
    ``internal_batch_size`` images at a time; max-normalised.

    Args:
        n_steps (int): quadrature points. Default: 50
        internal_batch_size (int, optional): images per forward pass (bounds
            memory; ``None`` = all ``B * n_steps`` at once). Default: 16
        baseline (float): constant baseline pixel value, in the model's
            normalised input space (0 = the dataset mean). Default: 0

    Examples::

        >>> maps = IntegratedGradients(model, processor, n_steps=32).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    def __init__(
        self, model, tokenizer=None, *,
        n_steps: int = 50,
        internal_batch_size: int | None = 16,
        baseline: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.baseline = baseline

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        return _IntegratedGradients(self.forward_func).attribute(
            images,
            baselines=self.baseline,
            additional_forward_args=(text_embeddings,),
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )
