"""Model adapters: one small class per vision-language model family."""

from __future__ import annotations

from torch import nn

from captum_matex import registry

from captum_matex.adapters.base import BlockwiseAdapter, VisionLanguageAdapter, VisionTrace
from captum_matex.adapters.hf_clip import HFCLIPAdapter, HFEncoderAdapter
from captum_matex.adapters.hf_siglip import HFSiglip2Adapter, HFSiglipAdapter, SiglipTowers
from captum_matex.adapters.probe import NO_CLASS_TOKEN, AttentionPooled
from captum_matex.adapters.generative import GENERATIVE_MISSING, GenerativeAdapter
from captum_matex.adapters.hf_gemma import HFGemma3Adapter, HFPaliGemmaAdapter
from captum_matex.adapters.hf_llava import HFLlavaAdapter
from captum_matex.adapters.open_clip import (
    OpenCLIPAdapter,
    TimmOpenCLIPAdapter,
    TimmSiglipOpenCLIPAdapter,
)

#: Adapter classes tried in order by :func:`get_adapter`.
ADAPTERS: list[type[VisionLanguageAdapter]] = [
    HFCLIPAdapter,
    HFSiglipAdapter,
    HFSiglip2Adapter,
    OpenCLIPAdapter,
    TimmOpenCLIPAdapter,
    TimmSiglipOpenCLIPAdapter,
    HFLlavaAdapter,
    HFPaliGemmaAdapter,
    HFGemma3Adapter,
]


def get_adapter(
    model: nn.Module | VisionLanguageAdapter, tokenizer=None, prompt=None
) -> VisionLanguageAdapter:
    r"""Wrap ``model`` in the adapter of its family.

    Args:
        model: a supported model, or an adapter (returned as is).
        tokenizer: tokenizer or processor for text given as strings.
        prompt: for a generative model, the text between the image and the
            explained phrase (a string or token ids; default: the family's).

    Raises:
        TypeError: no adapter supports ``model``; the message lists the
            supported families and how to add one.
        ValueError: ``prompt`` is given for a model that takes none.
    """
    adapter = _adapter_of(model, tokenizer)
    if prompt is not None:
        if not hasattr(adapter, "prompt"):
            raise ValueError(
                f"prompt= applies to generative models; {adapter.family} models score a "
                "phrase without one"
            )
        adapter.prompt = prompt
    return adapter


def _adapter_of(model: nn.Module | VisionLanguageAdapter, tokenizer) -> VisionLanguageAdapter:
    if isinstance(model, VisionLanguageAdapter):
        if tokenizer is not None:
            model.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        return model
    # ADAPTERS as it is now (users may have inserted into it), then registered and plugin adapters
    candidates = ADAPTERS + [a for a in registry.adapters.objects() if a not in ADAPTERS]
    for adapter_cls in candidates:
        if adapter_cls.supports(model):
            return adapter_cls(model, tokenizer)
    families = ", ".join(a.family for a in candidates)
    raise TypeError(
        f"{type(model).__name__} is not a supported vision-language model "
        f"(supported: {families}). Wrap it in a subclass of "
        "captum_matex.adapters.VisionLanguageAdapter and pass the adapter instead."
    )


__all__ = [
    "ADAPTERS",
    "AttentionPooled",
    "NO_CLASS_TOKEN",
    "BlockwiseAdapter",
    "GENERATIVE_MISSING",
    "GenerativeAdapter",
    "HFGemma3Adapter",
    "HFLlavaAdapter",
    "HFPaliGemmaAdapter",
    "HFCLIPAdapter",
    "HFEncoderAdapter",
    "HFSiglip2Adapter",
    "HFSiglipAdapter",
    "OpenCLIPAdapter",
    "SiglipTowers",
    "TimmOpenCLIPAdapter",
    "TimmSiglipOpenCLIPAdapter",
    "VisionLanguageAdapter",
    "VisionTrace",
    "get_adapter",
]
