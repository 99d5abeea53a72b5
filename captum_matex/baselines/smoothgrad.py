"""SmoothGrad (Smilkov et al., 2017) on the image-text score, via Captum's NoiseTunnel."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import NoiseTunnel
from captum.attr import Saliency as _Saliency
from torch import Tensor

from captum_matex.baselines._captum import CaptumBaseline
from captum_matex.baselines._registry import register


@register("smoothgrad")
class SmoothGrad(CaptumBaseline):
    r"""Saliency averaged over noisy copies of the image.

    Smilkov et al., *SmoothGrad: removing noise by adding noise*, arXiv
    1706.03825, 2017; Captum's :class:`captum.attr.NoiseTunnel` with
    ``nt_type="smoothgrad"`` around :class:`captum.attr.Saliency`:

    .. math::
        M_{xy} = \sum_c \frac1n \sum_{i=1}^n
        \Big|\frac{\partial s(x + \epsilon_i)}{\partial x_{cxy}}\Big|,\quad
        \epsilon_i \sim \mathcal N(0, \sigma^2),

    max-normalised.

    With a ``seed``, each sample is explained under its own fork of the
    random state seeded with ``seed``, so a sample's map does not depend on
    its batch-mates and two runs agree; this runs NoiseTunnel once per
    sample. ``seed=None`` draws from the global random state in one batched
    call.

    Args:
        nt_samples (int): noisy copies per image. Default: 10
        stdevs (float): noise standard deviation in the model's normalised
            input space (CLIP-normalised pixels span about 4, so 0.5 is about
            12 % of the range; Smilkov et al. suggest 10-20 %). Default: 0.5
        nt_samples_batch_size (int, optional): copies per forward pass.
        seed (int, optional): noise seed, see above. Default: 0

    Examples::

        >>> maps = SmoothGrad(model, processor, nt_samples=20).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    default_sign = "absolute_value"

    def __init__(
        self, model, tokenizer=None, *,
        nt_samples: int = 10,
        stdevs: float = 0.5,
        nt_samples_batch_size: int | None = None,
        seed: int | None = 0,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.nt_samples = nt_samples
        self.stdevs = stdevs
        self.nt_samples_batch_size = nt_samples_batch_size
        self.seed = seed

    def _tunnel(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        return NoiseTunnel(_Saliency(self.forward_func)).attribute(
            images.detach().requires_grad_(True),
            nt_type="smoothgrad",
            nt_samples=self.nt_samples,
            nt_samples_batch_size=self.nt_samples_batch_size,
            stdevs=self.stdevs,
            additional_forward_args=(text_embeddings,),
            abs=True,
        )

    def captum_attribution(self, images: Tensor, text_embeddings: Tensor) -> Tensor:
        if self.seed is None:
            return self._tunnel(images, text_embeddings)
        cuda = [images.device] if images.device.type == "cuda" else []
        maps = []
        for i in range(images.shape[0]):
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self.seed)
                maps.append(self._tunnel(images[i : i + 1], text_embeddings[i : i + 1]))
        return torch.cat(maps)
