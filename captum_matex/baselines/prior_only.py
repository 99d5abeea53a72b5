"""The anatomical prior of the phrase alone: an honesty row, no model evidence."""

from __future__ import annotations

from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor

from captum_matex.baselines._registry import register
from captum_matex.explainer import DEFAULT, Explainer, OutputKind, accepts_tuple
from captum_matex.stages.anatomy import AnatomicalPrior
from captum_matex.stages.protocols import RegistrationStage
from captum_matex.stages.registration import default_registration, register_unmasked


@register("prior_only")
class AnatomyPriorOnly(Explainer):
    r"""The phrase's anatomical prior, upsampled: what a map can score on
    grounding benchmarks without looking at the image or the model.

    .. math::
        M = \mathrm{upsample}\big(P_{\mathrm{anat}}(\text{phrase})\big)

    with :math:`P_{\mathrm{anat}}` the
    :class:`~captum_matex.stages.anatomy.AnatomicalPrior` on the patch grid
    (peak 1). Benchmarks report it next to MATEX (see the method's honesty
    rules). Phrases come from strings or are decoded from token ids; text
    given as embeddings has no words, so the prior is uniform unless
    ``anatomy_masks`` is given.

    Args:
        model: a supported image-text model or an adapter (only its input
            layout and tokenizer are used).
        tokenizer: tokenizer or processor for text given as strings or ids.
        anatomical_prior (AnatomicalPrior, optional): the prior (the same
            keyword as MATEX's); the MATEX default when
            omitted.
        registration: moves the prior onto each film, as in MATEX (the same
            keyword and default).
        normalize: ``"max"`` (default), ``"minmax"`` or ``None``.
        eval_mode: kept for the common signature.

    Examples::

        >>> maps = AnatomyPriorOnly(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["left basilar atelectasis"],))
    """

    default_normalize = "max"
    #: upsampled as MATEX upsamples, so the row isolates the prior
    default_upsample = "bicubic"

    def __init__(
        self, model, tokenizer=None, *,
        anatomical_prior: AnatomicalPrior | None = None,
        registration: RegistrationStage | None = DEFAULT,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.anatomical_prior = AnatomicalPrior() if anatomical_prior is None else anatomical_prior
        self.registration = (
            default_registration(self.anatomical_prior) if registration is DEFAULT else registration
        )

    display_name = "Prior only"

    @log_usage()
    @accepts_tuple
    def attribute(
        self,
        inputs: Tensor,
        additional_forward_args: Any = None,
        output: OutputKind = "image",
        anatomy_masks: Tensor | None = None,
    ) -> Tensor:
        r"""
        Args:
            inputs: ``(B, C, H, W)`` pixel values (only their shape, device
                and dtype are used).
            additional_forward_args: ``(text,)``: phrases or token ids (text
                embeddings give a uniform prior).
            output: ``"image"``, ``"pixel"`` or ``"grid"``.
            anatomy_masks: optional ``(B, H, W)`` region masks replacing the
                atlas per sample.

        Returns:
            Non-negative maps on the device of ``inputs``.
        """
        with self.adapter.explaining(self.eval_mode, exposes_attention=False), torch.no_grad():
            images, text = self._resolve(inputs, additional_forward_args)
        grid = self.adapter.grid_size(images)
        phrases = text.phrases if text.phrases is not None else [None] * images.shape[0]
        prior = self.anatomical_prior(phrases, grid, masks=anatomy_masks, device=images.device)
        prior = register_unmasked(self.registration, prior, images, grid, anatomy_masks)
        return self.finish(prior.reshape(-1, *grid), images, output)
