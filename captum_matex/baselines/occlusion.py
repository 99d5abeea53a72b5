"""Occlusion (Zeiler and Fergus, 2014) with windows aligned to the patch grid, via Captum."""

from __future__ import annotations

from typing import Any

from captum.attr import Occlusion as _Occlusion
from torch import Tensor

from captum_matex.baselines._captum import PerturbationBaseline
from captum_matex.baselines._registry import register


@register("occlusion")
class Occlusion(PerturbationBaseline):
    r"""Score drop when a window of whole patches is replaced by a baseline.

    Zeiler and Fergus, *Visualizing and Understanding Convolutional
    Networks*, ECCV 2014; Captum's :class:`captum.attr.Occlusion` on
    :class:`~captum_matex.SimilarityForward`. Windows and strides are whole
    multiples of the model's patch size and cover all channels, so every
    occlusion removes whole tokens:

    .. math::
        M_{xy} = \mathrm{relu}\Big(\frac{1}{|W_{xy}|}\sum_{w \ni (x, y)}
        C\,\big(s(x) - s(x_{w \leftarrow b})\big)\Big),

    max-normalised (:math:`W_{xy}`: windows covering the pixel; ``C``
    channels, from summing Captum's per-channel attribution).

    Args:
        window (int): window side in patches. Default: 1
        stride (int): stride in patches. Default: 1
        baseline, perturbations_per_eval: as for :class:`PerturbationBaseline`.

    Examples::

        >>> maps = Occlusion(model, processor, window=2).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    def __init__(
        self, model, tokenizer=None, *, window: int = 1, stride: int = 1, **options: Any
    ) -> None:
        super().__init__(model, tokenizer, **options)
        if window < 1 or stride < 1:
            raise ValueError("window and stride are whole numbers of patches, at least 1")
        self.window = window
        self.stride = stride

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        ph, pw = self.adapter.patch_size
        channels = images.shape[1]
        return _Occlusion(self.forward_func).attribute(
            images,
            sliding_window_shapes=(channels, self.window * ph, self.window * pw),
            strides=(channels, self.stride * ph, self.stride * pw),
            baselines=self.baseline,
            additional_forward_args=(text_embeddings,),
            perturbations_per_eval=self.perturbations_per_eval,
        )
