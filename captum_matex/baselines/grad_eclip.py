"""Grad-ECLIP: gradient-based visual explanation for CLIP (Zhao et al., ICML 2024)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex._inputs import ResolvedText
from captum_matex._maps import normalize_minmax
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer, resolve_block


@register("grad_eclip")
class GradECLIP(Explainer):
    r"""Grad-ECLIP on the image tower.

    Zhao, Wang, Zeng, Zhao and Chan, *Gradient-based Visual Explanation for
    Transformer-based CLIP*, ICML 2024 (reference code:
    github.com/Cyang-Zhao/Grad-Eclip, ``grad_eclip_image.ipynb``).

    For an explained block with in-projections :math:`q, k, v` (heads
    concatenated) and attention output :math:`o` (before the out-projection),
    the channel weights are the score's gradient at the CLS output,
    :math:`w = \partial s / \partial o_{\mathrm{CLS}}`, and the spatial
    weights are the "loosened" attention, the CLS query's cosine with each
    patch key, min-max normalised over patches:

    .. math::
        \lambda_j = \mathrm{minmax}_j\,\cos(q_{\mathrm{CLS}}, k_j),\qquad
        M_j = \sum_{l} \mathrm{relu}\Big(\sum_c w^l_c\, v^l_{jc}\, \lambda^l_j\Big).

    Default: the last block only, as the reference. The map is upsampled
    and min-max normalised.

    Faithfulness note: the reference re-computes the last block's attention
    as a *single* head over the full width (``attention_layer(q, k, v, 1)``),
    which changes the model's output. We keep the model's own multi-head
    attention, so the explained score is the model's score; :math:`q, k, v`
    and the cosine are taken over the full concatenated width as in the
    reference. Needs the adapter's
    :meth:`~captum_matex.adapters.VisionLanguageAdapter.capture_attention_projections`.

    Args:
        layers (Sequence[int]): explained blocks (negative counts from the
            end). Default: ``(-1,)``
        key_similarity (bool): weight by :math:`\lambda` (the reference's
            ``withksim``). Default: True

    Examples::

        >>> maps = GradECLIP(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["left pleural effusion"],))
    """

    display_name = "Grad-ECLIP"
    requires = frozenset({"class token"})

    def __init__(
        self, model, tokenizer=None, *, layers: Sequence[int] = (-1,), key_similarity: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        if not layers:
            raise ValueError("give at least one layer")
        self.layers = tuple(layers)
        self.key_similarity = key_similarity

    def attribute_maps(self, images: Tensor, text: ResolvedText) -> Tensor:
        blocks = sorted({resolve_block(b, self.adapter.num_layers) for b in self.layers})
        with torch.enable_grad(), self.adapter.capture_attention_projections(blocks) as cap:
            trace = self.adapter.trace(
                images.detach().requires_grad_(True), text.embeddings, attentions=False
            )
            grads = torch.autograd.grad(trace.score.sum(), [cap[b]["context"] for b in blocks])
        prefix = trace.num_prefix_tokens
        with torch.no_grad():
            total = 0
            for block, grad in zip(blocks, grads):
                per_patch = grad[:, 0, None, :] * cap[block]["value"].detach()[:, prefix:]
                if self.key_similarity:
                    query = cap[block]["query"].detach()[:, :1]
                    key = cap[block]["key"].detach()[:, prefix:]
                    loosened = normalize_minmax(F.cosine_similarity(query, key, dim=-1))
                    per_patch = per_patch * loosened[..., None]
                total = total + per_patch.sum(-1).clamp_min(0)
        return total.reshape(-1, *trace.grid)
