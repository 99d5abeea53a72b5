"""The image-text similarity score as a plain forward function for Captum."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from captum_matex._inputs import check_images, resolve_text
from captum_matex.adapters import VisionLanguageAdapter, get_adapter


class SimilarityForward:
    r"""``forward(images, text) -> (B,)``: the adapter's target, e.g. the cosine
    similarity of image and text embeddings (CLIP), the pair's sigmoid logit
    (SigLIP) or the phrase's log-likelihood given the image (generative models).

    This is the score MATEX and every baseline explain. Hand it to any Captum
    method to run it on the same score and inputs::

        >>> forward = SimilarityForward(model, processor)
        >>> ig = IntegratedGradients(forward)
        >>> ig.attribute(pixel_values, additional_forward_args=(input_ids,))

    ``text`` is per-sample token ids ``(B, L)`` or embeddings ``(B, E)``
    (expanded along with the images by Captum), or strings. The model runs in
    eval mode during the call (restored afterwards) when ``eval_mode``; like
    the explainers, it refuses (``RuntimeError``) to run while another thread
    explains with the same model.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        eval_mode: evaluate with dropout off.
        prompt: for a generative model, the text between the image and the
            phrase (default: the family's).
    """

    def __init__(
        self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, eval_mode: bool = True,
        prompt: str | Sequence[int] | None = None,
    ) -> None:
        self.adapter = get_adapter(model, tokenizer, prompt)
        self.eval_mode = eval_mode

    def __call__(self, images: Tensor, text: Any) -> Tensor:
        images = check_images(images, self.adapter)
        with self.adapter.explaining(self.eval_mode, exposes_attention=False):
            resolved = resolve_text((text,), images.shape[0], self.adapter, images.device)
            return self.adapter.trace(images, resolved.embeddings, attentions=False).score

