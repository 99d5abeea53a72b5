"""Assertions shared by the explainer tests."""

from __future__ import annotations

import torch
from torch import nn


def model_state(model: nn.Module) -> dict:
    """Everything an explainer must leave as it found it."""
    config = model.config.vision_config
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "attn": getattr(config, "_attn_implementation", None),
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {}))
            for m in model.modules()
        ),
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
    }


def assert_valid_maps(maps: torch.Tensor, images: torch.Tensor) -> None:
    assert maps.shape == images.shape
    assert maps.dtype == images.dtype and maps.device == images.device
    assert maps.is_contiguous()
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert (maps.flatten(1).amax(1) > 0).all(), "a map is all zero"
