"""A new adapter: a user's model that holds a transformers CLIP inside.

Subclassing the shipped adapter of the inner model is enough; registering the
class lets every explainer find it (``get_adapter`` asks ``supports``).
"""

from torch import Tensor, nn

from captum_matex.adapters import HFCLIPAdapter
from captum_matex.registry import adapters


class ChestModel(nn.Module):
    """A user's module: a CLIP and a classification head on its image embedding."""

    def __init__(self, clip: nn.Module, num_findings: int = 8) -> None:
        super().__init__()
        self.clip = clip
        self.head = nn.Linear(clip.config.projection_dim, num_findings)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.head(self.clip.get_image_features(pixel_values=pixel_values))


class ChestModelAdapter(HFCLIPAdapter):
    """Explains the CLIP inside a :class:`ChestModel`."""

    family = "chest-model"

    def __init__(self, model: ChestModel, tokenizer=None) -> None:
        super().__init__(model.clip, tokenizer)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, ChestModel)


adapters.register(ChestModelAdapter.family, ChestModelAdapter)
