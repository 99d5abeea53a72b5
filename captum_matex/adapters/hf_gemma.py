"""Adapters for transformers ``PaliGemmaForConditionalGeneration`` and
``Gemma3ForConditionalGeneration`` (MedGemma)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_matex.adapters.generative import GenerativeAdapter
from captum_matex.adapters.hf_llava import _is_instance


class HFPaliGemmaAdapter(GenerativeAdapter):
    r"""Adapter for a transformers :class:`~transformers.PaliGemmaForConditionalGeneration`.

    The image tokens are the SigLIP tower's normed last-block tokens,
    projected; the decoder's input is ``<image> x n, BOS, prompt, "\n"`` as
    the prefix (attended both ways) and the phrase as the suffix (causal),
    told apart by ``token_type_ids``, as PaliGemma was trained.

    Args:
        model: a ``PaliGemmaForConditionalGeneration``.
        tokenizer: its processor or tokenizer.
        prompt: see :class:`~captum_matex.adapters.GenerativeAdapter`.
    """

    family = "transformers-paligemma"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a transformers PaliGemma model."""
        return _is_instance(model, "PaliGemmaForConditionalGeneration")

    @property
    def image_grid(self) -> tuple[int, int]:
        return self.patch_grid

    def prefix_ids(self) -> list[int]:
        before, after = self.prompt_ids()
        newline = self._encode("\n") if self.tokenizer is not None else []
        images = [self.image_token_id] * self.num_image_tokens
        return images + self._bos() + before + after + newline

    def token_types(self, prefix: Tensor, phrase_length: int) -> Tensor:
        """0 on the prefix (attended both ways), 1 on the phrase (the suffix)."""
        return torch.cat([torch.zeros_like(prefix), prefix.new_ones(phrase_length)])


class HFGemma3Adapter(GenerativeAdapter):
    r"""Adapter for a transformers :class:`~transformers.Gemma3ForConditionalGeneration`
    (Gemma 3, MedGemma).

    The projector average-pools the SigLIP tower's normed patch grid to
    ``mm_tokens_per_image`` image tokens (a coarser grid, which the decoder's
    prior is upsampled from); the decoder's input is ``BOS, prompt before
    the image, <start_of_image>, <image> x n, <end_of_image>, prompt,
    phrase``, with ``token_type_ids`` 1 on the image tokens (attended both
    ways among themselves).

    Args:
        model: a ``Gemma3ForConditionalGeneration``.
        tokenizer: its processor or tokenizer.
        prompt: see :class:`~captum_matex.adapters.GenerativeAdapter`.
    """

    family = "transformers-gemma3"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a transformers Gemma 3 image-text model."""
        return _is_instance(model, "Gemma3ForConditionalGeneration")

    @property
    def image_grid(self) -> tuple[int, int]:
        side = int(round(self.model.config.mm_tokens_per_image**0.5))
        return side, side

    @property
    def first_read_token(self) -> int:
        """0: the projector pools every token of the (class-token-free) tower."""
        return 0

    def prefix_ids(self) -> list[int]:
        config = self.model.config
        before, after = self.prompt_ids()
        images = [self.image_token_id] * self.num_image_tokens
        return self._bos() + before + [config.boi_token_index] + images + [
            config.eoi_token_index] + after

    def token_types(self, prefix: Tensor, phrase_length: int) -> Tensor:
        """1 on the image tokens, 0 elsewhere."""
        types = prefix.eq(self.image_token_id).long()
        return torch.cat([types, prefix.new_zeros(phrase_length)])
