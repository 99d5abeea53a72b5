"""Dense patch-text similarity of the last block's projected patch tokens."""

from __future__ import annotations

from torch import Tensor

from captum_matex.adapters import VisionTrace
from captum_matex.baselines._registry import register
from captum_matex.explainer import Explainer


@register("patch_text")
class PatchTextSimilarity(Explainer):
    r"""Where the last block's patch tokens, projected into the joint space
    like the CLS token, match the text.

    .. math::
        M_j = \mathrm{relu}\big(\cos(\mathrm{proj}(\mathrm{ln}(z_j)), e_t)\big)

    for the last-block patch tokens :math:`z_j` (no gradient, one forward
    pass), max-normalised. This is the unsmoothed model-derived prior of
    MATEX and the "dense similarity" reading used by MaskCLIP-style methods
    (without their value-path surgery). A map can be all zero when no patch
    has a positive similarity.

    Examples::

        >>> maps = PatchTextSimilarity(model, processor).attribute(
        ...     pixel_values, additional_forward_args=(["cardiomegaly"],))
    """

    display_name = "Patch-text similarity"
    requires = frozenset({"contrastive embedding"})
    default_normalize = "max"
    uses_gradients = False

    def patch_map(self, trace: VisionTrace) -> Tensor:
        return self.adapter.target(trace.patch_embeddings, trace.text_embeddings[:, None]).clamp_min(0)
