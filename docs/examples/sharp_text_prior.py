"""A MATEX stage variant: the patch-text prior raised to a power."""

from torch import Tensor

from captum_matex.stages import PatchTextPrior


class SharpPatchTextPrior(PatchTextPrior):
    """Fewer, more confident regions than the default patch-text prior."""

    def __init__(self, sigma: float = 1.0, power: float = 2.0) -> None:
        super().__init__(sigma)
        self.power = power

    def __call__(self, patch_embeddings: Tensor, text_embeddings: Tensor, grid) -> Tensor:
        return super().__call__(patch_embeddings, text_embeddings, grid) ** self.power
