"""Loading a user's vision-language model and its processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


class ModelLoadError(RuntimeError):
    r"""A model could not be loaded; the message says from where and why."""


def load_clip(name_or_path: str | Path, device: str = "cpu") -> tuple[nn.Module, Any]:
    r"""Load a transformers CLIP checkpoint and its processor, with eager attention.

    Args:
        name_or_path: a local directory saved with ``save_pretrained`` (what
            the tests and offline users use) or a hub name such as
            ``"openai/clip-vit-base-patch16"`` (needs internet).
        device: where to put the model.

    Returns:
        ``(model, processor)``; the model is in eval mode.

    Raises:
        ModelLoadError: the directory is missing or holds no loadable CLIP.
    """
    from transformers import AutoProcessor, CLIPModel

    source = str(name_or_path)
    local = Path(source)
    if (local.exists() or source.startswith((".", "/", "~"))) and not local.is_dir():
        raise ModelLoadError(f"{source}: not a model directory")
    try:
        model = CLIPModel.from_pretrained(source, attn_implementation="eager")
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load a CLIP model and processor from {source!r}: {exc}"
        ) from exc
    return model.to(device).eval(), processor
