"""Captum's own LLM attribution of an image: ``LLMAttribution`` with ``ImageMaskInput``."""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from captum.attr import FeatureAblation, ImageMaskInput, LLMAttribution
from torch import Tensor

from captum_matex._inputs import ResolvedText
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer


def grid_segments(size: tuple[int, int], cells: int) -> Tensor:
    r"""``(H, W)`` segment ids of a regular ``cells x cells`` grid over an image."""
    rows = torch.arange(size[0]) * cells // size[0]
    cols = torch.arange(size[1]) * cells // size[1]
    return rows[:, None] * cells + cols[None, :]


@register("llm_attribution")
class CaptumLLMImageMask(Explainer):
    r"""Captum's attribution of a generated phrase to image segments:
    :class:`captum.attr.LLMAttribution` over :class:`captum.attr.FeatureAblation`
    with an :class:`captum.attr.ImageMaskInput` of a regular grid of segments.

    Each segment is blanked to Captum's baseline colour (white by default)
    in turn and the phrase's log-likelihood given the prompt is re-scored
    (teacher-forced, ``forward_in_tokens=False``); a segment's attribution is
    the drop. That is one forward pass of the whole model per segment and
    image, and the map is as coarse as the grid. What a user of Captum 0.9
    reaches for to explain a multimodal LLM; a baseline row for generative
    models. The film is handed to Captum as an 8-bit image (min-max scaled)
    and read back to the model's pixel range.

    Args:
        cells (int): segments per side. Default: 7
        baseline (tuple): RGB value of blanked segments. Default: ``(255, 255, 255)``
            (Captum's default)

    Examples::

        >>> maps = CaptumLLMImageMask(llava, processor).attribute(
        ...     pixel_values, additional_forward_args=(["left pleural effusion"],))
    """

    display_name = "Captum LLMAttribution"
    default_normalize = "max"
    uses_gradients = False
    score_difference_maps = True
    #: Captum appends the phrase to ``input_ids`` with a plain causal mask
    requires = frozenset({"plain causal prompt"})

    def __init__(
        self, model, tokenizer=None, *, cells: int = 7,
        baseline: tuple[int, int, int] = (255, 255, 255), **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        if cells < 1:
            raise ValueError(f"cells must be at least 1, got {cells}")
        self.cells = cells
        self.baseline = tuple(baseline)

    def attribute_maps(self, images: Tensor, text: ResolvedText) -> Tensor:
        adapter = self.adapter
        if adapter.tokenizer is None:
            raise ValueError(
                "Captum's LLMAttribution needs the model's tokenizer (it decodes the phrase to "
                "label its tokens); pass the processor or tokenizer to the explainer"
            )
        llm = LLMAttribution(FeatureAblation(adapter.model), adapter.tokenizer)
        segments = grid_segments(tuple(images.shape[-2:]), self.cells)
        prefix = torch.tensor([adapter.prefix_ids()], device=images.device)
        maps = []
        for image, phrase in zip(images, text.embeddings):
            low, high = image.min(), image.max()
            span = (high - low).clamp_min(torch.finfo(image.dtype).eps)
            pixels = ((image - low) / span * 255).round().byte().permute(1, 2, 0).cpu().numpy()

            def to_model(pil: PIL.Image.Image, low=low, span=span) -> dict[str, Tensor]:
                array = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1)
                restored = array.to(images.device, images.dtype) / 255 * span + low
                return {"input_ids": prefix, "pixel_values": restored[None]}

            target = phrase[adapter.sequences(phrase[None]).phrase_mask[0].bool()]
            result = llm.attribute(
                ImageMaskInput(PIL.Image.fromarray(pixels, "RGB"), mask=segments,
                               baseline=self.baseline, processor_fn=to_model),
                target=target, forward_in_tokens=False,
            )
            maps.append(result.seq_attr.to(images.device)[segments.to(images.device)])
        return torch.stack(maps)
