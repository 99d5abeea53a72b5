"""A new method in one short file: the last block's CLS-to-patch attention.

It overrides the one function of :class:`~captum_matex.explainer.Explainer`
that turns a traced forward pass into a patch map; input checks, the
model's state, upsampling, the noise-safe normalisation and the output
format come from the base. Registering it makes it a benchmark method.
"""

from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.explainer import Explainer
from captum_matex.registry import methods


class LastBlockAttention(Explainer):
    """What the image embedding reads of the last block's attention, mean over heads (no
    gradients): the class token's row, or the rows a SigLIP probe reads."""

    display_name = "Last-block attention"
    default_normalize = "max"
    captures_attention = True  # the trace keeps every block's attention probabilities
    uses_gradients = False  # nothing to differentiate: run without autograd

    def patch_map(self, trace: VisionTrace) -> Tensor:
        return trace.read(trace.attentions[-1].mean(1))


methods.register("last_block_attention", LastBlockAttention)
