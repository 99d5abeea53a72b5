"""Saliency (Simonyan et al., 2014) on the image-text score, via Captum."""

from __future__ import annotations

from captum.attr import Saliency as _Saliency
from torch import Tensor

from captum_matex.baselines._captum import CaptumBaseline
from captum_matex.baselines._registry import register


@register("saliency")
class Saliency(CaptumBaseline):
    r"""Gradient magnitude of the image-text cosine with respect to the pixels.

    Simonyan, Vedaldi and Zisserman, *Deep Inside Convolutional Networks*,
    ICLR workshop 2014; Captum's :class:`captum.attr.Saliency` with
    ``abs=True`` on :class:`~captum_matex.SimilarityForward`:

    .. math::
        M_{xy} = \sum_c \Big|\frac{\partial s}{\partial x_{cxy}}\Big| ,

    max-normalised per sample.

    Examples::

        >>> maps = Saliency(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    default_sign = "absolute_value"

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        return _Saliency(self.forward_func).attribute(
            images.detach().requires_grad_(True), additional_forward_args=(text_embeddings,), abs=True
        )
