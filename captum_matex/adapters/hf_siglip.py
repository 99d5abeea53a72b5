"""Adapters for transformers ``SiglipModel`` (SigLIP, MedSigLIP) and ``Siglip2Model`` (NaFlex)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_matex.adapters.attention import explicit_mha
from captum_matex.adapters.hf_clip import HFEncoderAdapter, _as_tensor
from captum_matex.adapters.probe import AttentionPooled
from captum_matex.targets import SigmoidLogit


def _vision_tower(model: nn.Module) -> nn.Module | None:
    vision = getattr(model, "vision_model", None)
    return getattr(vision, "vision_model", vision)


def _patch_embedding(model: nn.Module) -> nn.Module | None:
    embeddings = getattr(_vision_tower(model), "embeddings", None)
    return getattr(embeddings, "patch_embedding", None)


class SiglipTowers(nn.Module):
    r"""A SigLIP image tower and text tower loaded separately, as one dual encoder.

    Some checkpoints ship the towers as ``SiglipVisionModel`` and
    ``SiglipTextModel``; wrap them with the pair's ``logit_scale`` and
    ``logit_bias`` (from the full checkpoint) to explain their sigmoid logit.

    Args:
        vision_model: a ``SiglipVisionModel`` with its ``map`` head.
        text_model: a ``SiglipTextModel``.
        logit_scale: the pair's learnt log-temperature (a scalar).
        logit_bias: the pair's learnt bias (a scalar).

    Examples::

        >>> towers = SiglipTowers(vision, text, model.logit_scale, model.logit_bias)
        >>> maps = MATEX(towers, processor).attribute(pixel_values, (["left pleural effusion"],))
    """

    def __init__(
        self,
        vision_model: nn.Module,
        text_model: nn.Module,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float,
    ) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.text_model = text_model
        self.logit_scale = nn.Parameter(torch.as_tensor(logit_scale, dtype=torch.float32).reshape(1))
        self.logit_bias = nn.Parameter(torch.as_tensor(logit_bias, dtype=torch.float32).reshape(1))
        self.config = SimpleNamespace(
            vision_config=vision_model.config, text_config=text_model.config
        )

    def get_text_features(self, input_ids: Tensor) -> Tensor:
        """Text embeddings ``(B, E)``, as ``SiglipModel.get_text_features``."""
        return _as_tensor(self.text_model(input_ids=input_ids))


class HFSiglipAdapter(AttentionPooled, HFEncoderAdapter):
    r"""Adapter for a transformers :class:`~transformers.SiglipModel` (SigLIP,
    MedSigLIP-448) or a :class:`SiglipTowers` pair.

    Two things differ from CLIP. There is no class token: the image embedding
    is the ``map`` head, a learnt probe attending over all patch tokens
    followed by an MLP (:class:`~captum_matex.targets.AttentionProbe`); the
    adapter computes the head explicitly with its own weights, so the probe's
    attention probabilities are read with gradients
    (:attr:`~captum_matex.adapters.VisionTrace.readout_attention`) and serve
    as the last step of rollout. And the score is the sigmoid logit
    :math:`e^t \cos + b` (:class:`~captum_matex.targets.SigmoidLogit`), the
    model's own ``logits_per_image``.

    Args:
        model: a ``SiglipModel`` (with ``vision_use_head=True``) or
            :class:`SiglipTowers`.
        tokenizer: its tokenizer or processor (pads to ``max_length``, as
            SigLIP was trained).
    """

    family = "transformers-siglip"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.head = getattr(self.vision, "head", None)
        if self.head is None or not isinstance(getattr(self.head, "attention", None),
                                               nn.MultiheadAttention):
            raise ValueError(
                f"{type(model).__name__}'s image tower has no attention-pooling head "
                "(vision_use_head=False): its embedding is not defined for a sigmoid "
                "image-text logit; load the dual encoder with its head"
            )
        self.target = SigmoidLogit(model.logit_scale, model.logit_bias)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a SigLIP dual encoder (convolutional patch embedding)."""
        return _is_siglip_pair(model) and isinstance(_patch_embedding(model), nn.Conv2d)

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    @property
    def embedding_dim(self) -> int:
        return self.model.text_model.head.out_features

    def input_tokens(self, images: Tensor) -> Tensor:
        return self.vision.embeddings(images)

    def probe_pool(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        r"""The ``map`` head on last-block tokens ``(B, T, D)``: the embedding
        ``(B, E)`` and the probe's ``(B, H, 1, T)`` attention it was made with."""
        normed = self.vision.post_layernorm(tokens)
        probe = self.head.probe.to(normed).expand(normed.shape[0], -1, -1)
        recorded: dict[str, Tensor] = {}
        pooled, _ = explicit_mha(
            self.head.attention, lambda _m, t: recorded.update(t), probe, normed, normed,
            need_weights=False,
        )
        pooled = pooled + self.head.mlp(self.head.layernorm(pooled))
        return pooled[:, 0], recorded["attention"]

    def project_tokens(self, tokens: Tensor) -> Tensor:
        r"""Each token ``(B, n, D)`` in the joint space as the head embeds it when
        the probe attends to that token alone (values, out-projection, MLP)."""
        normed = self.vision.post_layernorm(tokens)
        attention = self.head.attention
        weight = attention.in_proj_weight.chunk(3)[2]
        bias = attention.in_proj_bias.chunk(3)[2] if attention.in_proj_bias is not None else None
        out = attention.out_proj(F.linear(normed, weight, bias))
        return out + self.head.mlp(self.head.layernorm(out))


def _is_siglip_pair(model: nn.Module) -> bool:
    """A sigmoid-logit dual encoder in transformers' layout (head checked by the adapter)."""
    return all(hasattr(model, name) for name in ("logit_scale", "logit_bias", "text_model")) and (
        hasattr(_vision_tower(model), "encoder")
    )


class HFSiglip2Adapter(HFSiglipAdapter):
    r"""Adapter for a transformers :class:`~transformers.Siglip2Model` (NaFlex).

    SigLIP 2 takes images as a variable grid of flattened patches with
    ``spatial_shapes`` and a ``pixel_attention_mask``. The adapter takes
    ``(B, C, H, W)`` images (any ``H, W`` divisible by the patch size,
    non-square included) and builds that layout itself: grid
    ``H/p x W/p``, every patch attended; maps come back ``(B, C, H, W)``.
    Processor outputs in the NaFlex layout convert with :meth:`images_from_patches`.

    Args:
        model: a ``Siglip2Model``.
        tokenizer: its tokenizer or processor.
    """

    family = "transformers-siglip2"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self._grid: tuple[int, int] | None = None

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a SigLIP 2 dual encoder (linear patch embedding)."""
        return _is_siglip_pair(model) and isinstance(_patch_embedding(model), nn.Linear)

    @property
    def image_size(self) -> tuple[int, int]:
        """The square size whose grid matches the position-embedding grid."""
        side = int(round(self._vision_config.num_patches**0.5)) * self.patch_size[0]
        return side, side

    def check_image_size(self, size: tuple[int, int]) -> str | None:
        p = self.patch_size[0]
        if size[0] % p == 0 and size[1] % p == 0 and min(size) >= p:
            return None
        return (
            f"images are {tuple(size)} pixels; SigLIP 2 takes any height and width "
            f"that are multiples of its patch size {p}"
        )

    def input_tokens(self, images: Tensor) -> Tensor:
        batch, channels, height, width = images.shape
        p = self.patch_size[0]
        h, w = height // p, width // p
        patches = (
            images.reshape(batch, channels, h, p, w, p)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(batch, h * w, p * p * channels)
        )
        shapes = torch.tensor([[h, w]] * batch, device=images.device)
        self._grid = (h, w)
        return self.vision.embeddings(patches, shapes)

    def _grid_from_tokens(self, n_patches: int) -> tuple[int, int]:
        if self._grid is not None and self._grid[0] * self._grid[1] == n_patches:
            return self._grid
        return super()._grid_from_tokens(n_patches)

    def images_from_patches(
        self, pixel_values: Tensor, pixel_attention_mask: Tensor, spatial_shapes: Tensor
    ) -> Tensor:
        r"""``(B, C, H, W)`` images from a SigLIP 2 processor's NaFlex output.

        Args:
            pixel_values: ``(B, N_max, p * p * C)`` flattened patches.
            pixel_attention_mask: ``(B, N_max)``, 1 for real patches.
            spatial_shapes: ``(B, 2)`` patch grid ``(h, w)`` per image.

        Raises:
            ValueError: the images of the batch have different grids (explain
                them one at a time).
        """
        shapes = {tuple(s) for s in spatial_shapes.tolist()}
        if len(shapes) != 1:
            raise ValueError(
                f"the batch holds images of {len(shapes)} different patch grids "
                f"{sorted(shapes)}; explain them one at a time"
            )
        (h, w), p = shapes.pop(), self.patch_size[0]
        if not bool(pixel_attention_mask[:, : h * w].bool().all()):
            raise ValueError("pixel_attention_mask marks patches inside the image grid as padding")
        batch = pixel_values.shape[0]
        patches = pixel_values[:, : h * w].reshape(batch, h, w, p, p, -1)
        return patches.permute(0, 5, 1, 3, 2, 4).reshape(batch, -1, h * p, w * p)
