"""A plugin package: one method and one metric, declared in pyproject.toml."""

import torch
from torch import Tensor

from captum_matex.explainer import Explainer, ResolvedText
from captum_matex.metrics import pointing_game
from captum_matex.registry import MetricInfo


class CentrePrior(Explainer):
    """A model-free reference row: a Gaussian bump at the centre of the film."""

    display_name = "Centre prior"

    def attribute_maps(self, images: Tensor, text: ResolvedText) -> Tensor:
        h, w = self.adapter.grid_size(images)
        ys = torch.linspace(-1, 1, h, device=images.device)[:, None]
        xs = torch.linspace(-1, 1, w, device=images.device)[None, :]
        bump = torch.exp(-(ys**2 + xs**2) / 0.5)
        return bump.expand(images.shape[0], h, w)


PEAK_IN_BOX = MetricInfo(
    pointing_game, True, "localisation", (0.0, 1.0), "the map's maximum lies in a box"
)
