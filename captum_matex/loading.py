"""Loading a user's vision-language model and its processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelLoadError(RuntimeError):
    r"""A model could not be loaded; the message says from where and why."""


def _check_local(source: str) -> None:
    r"""Refuse a local path that is missing, not a directory or holds only pickled weights."""
    local = Path(source)
    looks_local = local.exists() or source.startswith((".", "/", "~"))
    if not looks_local:
        return
    if not local.exists():
        raise ModelLoadError(
            f"{source}: no such model directory; pass a directory saved with save_pretrained "
            "or a hub name such as openai/clip-vit-base-patch16"
        )
    if not local.is_dir():
        raise ModelLoadError(f"{source}: not a model directory (it is a file); pass its folder")
    pickles = sorted(p.name for p in local.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(local.glob("*.safetensors")):
        raise ModelLoadError(
            f"{source} holds only pickled weights ({', '.join(pickles[:3])}), which can run "
            "code when loaded; matex reads safetensors only. Convert them once where you trust "
            "the file: CLIPModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
        )


def load_clip(name_or_path: str | Path, device: str = "cpu") -> tuple[nn.Module, Any]:
    r"""Load a transformers CLIP checkpoint and its processor, with eager attention.

    Weights are read from safetensors only (``use_safetensors=True``): a
    checkpoint that only has pickled weights (``pytorch_model.bin``, ``.pt``)
    is refused, never unpickled.

    Args:
        name_or_path: a local directory saved with ``save_pretrained`` (what
            the tests and offline users use) or a hub name such as
            ``"openai/clip-vit-base-patch16"`` (needs internet).
        device: where to put the model.

    Returns:
        ``(model, processor)``; the model is in eval mode.

    Raises:
        ModelLoadError: the directory is missing, holds only pickled
            weights, or holds no loadable CLIP or no image processor.
    """
    from transformers import AutoProcessor, CLIPModel

    source = str(name_or_path)
    _check_local(source)
    try:
        model = CLIPModel.from_pretrained(source, attn_implementation="eager", use_safetensors=True)
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load a CLIP model and processor from {source!r}: {exc}"
        ) from exc
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{source!r} holds no image processor ({type(processor).__name__} was "
            "found): save the checkpoint's CLIPProcessor with save_pretrained into the "
            "same directory"
        )
    return model.to(device).eval(), processor
