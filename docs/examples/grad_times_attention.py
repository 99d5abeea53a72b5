"""A gradient method: the score's gradient times the attention of one block.

``trace.score`` is the explained target, attached to the graph, so a method
differentiates it inside :meth:`patch_map`.
"""

from typing import Any

import torch
from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.explainer import Explainer, resolve_block


class GradTimesAttention(Explainer):
    """relu(dS/dA * A) of one block, mean over heads, read where the embedding reads it."""

    captures_attention = True

    def __init__(self, model, tokenizer=None, *, layer: int = -1, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.layer = layer

    def patch_map(self, trace: VisionTrace) -> Tensor:
        attention = trace.attentions[resolve_block(self.layer, len(trace.attentions))]
        (grad,) = torch.autograd.grad(trace.score.sum(), attention)
        relevance = (grad * attention.detach()).clamp_min(0).mean(1)
        return trace.read(relevance)
