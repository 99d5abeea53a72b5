"""Input x Gradient (Shrikumar et al., 2016) on the image-text score, via Captum."""

from __future__ import annotations

from captum.attr import InputXGradient as _InputXGradient
from torch import Tensor

from captum_matex.baselines._captum import CaptumBaseline
from captum_matex.baselines._registry import register


@register("input_x_gradient")
class InputXGradient(CaptumBaseline):
    r"""Pixels times the score's gradient, summed over channels, positive part.

    Shrikumar et al., *Not Just a Black Box*, arXiv 1605.01713, 2016;
    Captum's :class:`captum.attr.InputXGradient` on
    :class:`~captum_matex.SimilarityForward`:

    .. math::
        M_{xy} = \mathrm{relu}\Big(\sum_c x_{cxy}\,\frac{\partial s}{\partial x_{cxy}}\Big),

    max-normalised. Pixel values are the model's normalised inputs, so the
    implicit baseline is the dataset mean image.

    Examples::

        >>> maps = InputXGradient(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        return _InputXGradient(self.forward_func).attribute(
            images.detach().requires_grad_(True), additional_forward_args=(text_embeddings,)
        )
