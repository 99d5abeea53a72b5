"""Checking and resolving the inputs every explainer shares: images and text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from captum_matex.adapters.base import VisionLanguageAdapter, model_device


@dataclass
class ResolvedText:
    r"""Text of a batch in the forms explainers use.

    Attributes:
        embeddings: ``(B, E)`` text embeddings (detached), or what the
            adapter's target takes instead (a generative model's ``(B, L)``
            phrase token ids).
        phrases: the phrases as strings where known (from strings or decoded
            token ids), else ``None`` (text given as embeddings).
    """

    embeddings: Tensor
    phrases: list[str] | None


def check_images(images: Any, adapter: VisionLanguageAdapter) -> Tensor:
    r"""Validate a batch of pixel values for ``adapter``'s image tower.

    Raises:
        TypeError / ValueError: with a message that names the fix (also for
            sparse images, and images on the ``meta`` device or on another
            device than the model's).
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of shape (B, C, H, W), got "
            f"{type(images).__name__}; preprocess with the model's processor"
        )
    _check_dense(images, "images", "images.to_dense()")
    _check_images_device(images, adapter)
    if images.ndim != 4:
        hint = " (add a batch dimension with images.unsqueeze(0))" if images.ndim == 3 else ""
        raise ValueError(
            f"images must have shape (B, C, H, W), got {tuple(images.shape)}{hint}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images have dtype {images.dtype}; pass normalised float pixel values "
            "(the model's processor produces them)"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    channels = adapter.num_channels
    if images.shape[1] != channels:
        raise ValueError(
            f"images have {images.shape[1]} channel(s) but the model expects "
            f"{channels}; for grey radiographs repeat the channel "
            f"(images.expand(-1, {channels}, -1, -1)) or use the model's processor"
        )
    problem = adapter.check_image_size(tuple(images.shape[-2:]))
    if problem is not None:
        raise ValueError(problem)
    finite = torch.isfinite(images).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ValueError(
            f"images contain NaN or Inf pixels in sample(s) {bad}; clean or drop them"
        )
    return images


def _check_dense(tensor: Tensor, what: str, fix: str) -> None:
    r"""Refuse a sparse (or otherwise non-strided) tensor, which the model's
    operators do not accept.

    Raises:
        TypeError: ``tensor`` is not a dense tensor; the message gives ``fix``.
    """
    if tensor.layout != torch.strided:
        raise TypeError(f"{what} are a {tensor.layout} tensor; pass a dense one ({fix})")


def _check_images_device(images: Tensor, adapter: VisionLanguageAdapter) -> None:
    r"""Refuse images on the ``meta`` device or on another device than the model's.

    Raises:
        ValueError: the images hold no data (``meta``), or the model sits
            wholly on one device and the images on another; the message
            names the ``.to(...)`` call that fixes it.
    """
    device = model_device(adapter.model)
    target = "cpu" if device is None or device.type == "meta" else str(device)
    if images.is_meta:
        raise ValueError(
            "images are on the 'meta' device, which holds no data; load real pixel "
            "values (e.g. with the model's processor) and move them with "
            f"images.to({target!r})"
        )
    if device is not None and device.type != "meta" and images.device != device:
        raise ValueError(
            f"images are on {str(images.device)!r} but the model is on {target!r}; "
            f"move them with images.to({target!r}) (or the model with "
            f"model.to({str(images.device)!r}))"
        )


def _check_text_tensor(text: Tensor) -> None:
    r"""Refuse token ids or text embeddings on the ``meta`` device.

    Raises:
        ValueError: ``text`` holds no data; the message says how to make it.
    """
    if text.is_meta:
        kind = "text embeddings" if text.is_floating_point() else "token ids"
        raise ValueError(
            f"the {kind} are on the 'meta' device, which holds no data; compute real "
            "ones (token ids with the model's tokenizer, embeddings with its text "
            "encoder, get_text_features) and move them with text.to(images.device)"
        )


def check_text_embeddings(embeddings: Tensor, adapter: VisionLanguageAdapter) -> Tensor:
    r"""Validate text embeddings ``(..., E)`` for ``adapter``'s joint space.

    Args:
        embeddings: float text embeddings, the width ``E`` last.
        adapter: the model's adapter (gives the expected width).

    Returns:
        Tensor: ``embeddings``, detached.

    Raises:
        TypeError: the embeddings are sparse or not floats.
        ValueError: the embeddings are on the ``meta`` device, have the
            wrong width, or are not finite.
    """
    _check_dense(embeddings, "text embeddings", "embeddings.to_dense()")
    _check_text_tensor(embeddings)
    if not embeddings.is_floating_point():
        raise TypeError(
            f"text embeddings have dtype {embeddings.dtype}; pass float embeddings "
            "from the model's text encoder (get_text_features)"
        )
    width = adapter.embedding_dim
    if width is not None and embeddings.shape[-1] != width:
        raise ValueError(
            f"text embeddings have width {embeddings.shape[-1]} but the model's image-text "
            f"embeddings have {width}; compute them with this model's text encoder "
            "(get_text_features) or pass token ids"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("text embeddings contain NaN or Inf")
    return embeddings.detach()


def _phrases_from_strings(text: str | Sequence[str], batch: int) -> list[str]:
    phrases = [text] * batch if isinstance(text, str) else list(text)
    if len(phrases) != batch:
        raise ValueError(
            f"text has {len(phrases)} phrase(s) but images has {batch}; pass one "
            "phrase per image"
        )
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str):
            raise TypeError(f"phrase {i} is a {type(phrase).__name__}, not a str")
        if not phrase.strip():
            raise ValueError(f"phrase {i} is empty; give a finding to explain")
        try:
            phrase.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"phrase {i} is not valid Unicode ({exc.reason} at position {exc.start}); "
                "clean it, e.g. phrase.encode('utf-8', 'replace').decode()"
            ) from None
    return phrases


def resolve_text(
    additional_forward_args: Any,
    batch: int,
    adapter: VisionLanguageAdapter,
    device: torch.device,
) -> ResolvedText:
    r"""Turn ``additional_forward_args`` into text embeddings and phrases.

    ``additional_forward_args`` is ``(text,)`` or ``text``, where ``text`` is
    per-sample token ids ``(B, L)``, per-sample text embeddings ``(B, E)``, a
    list of ``B`` strings, or one string used for every image.

    Raises:
        TypeError / ValueError: with a message that names the fix (wrong
            count, empty or non-Unicode phrase, token ids outside the
            vocabulary or longer than the context, embeddings of the wrong
            width or not finite, a tensor of the wrong shape or dtype, sparse,
            or on the ``meta`` device). Integer token ids of any width are
            taken as ``torch.long``.
    """
    if isinstance(additional_forward_args, tuple):
        if len(additional_forward_args) != 1:
            raise ValueError(
                "additional_forward_args must be (text,): one entry, got "
                f"{len(additional_forward_args)}"
            )
        (text,) = additional_forward_args
    else:
        text = additional_forward_args
    if text is None:
        raise ValueError(
            "no text given: pass additional_forward_args=(text,) with phrases, "
            "token ids or text embeddings"
        )
    if isinstance(text, (bytes, bytearray)):
        raise TypeError("text is bytes; decode it to str first (text.decode('utf-8'))")
    if isinstance(text, (str, list)) or (
        isinstance(text, Sequence) and not isinstance(text, Tensor)
    ):
        phrases = _phrases_from_strings(text, batch)
        ids = adapter.tokenize(phrases, device)
        return ResolvedText(adapter.text_embeddings(ids), phrases)
    if not isinstance(text, Tensor):
        raise TypeError(
            f"text must be token ids, text embeddings or strings, got {type(text).__name__}"
        )
    _check_dense(text, "text token ids or embeddings", "text.to_dense()")
    _check_text_tensor(text)
    if text.dtype == torch.bool or text.is_complex():
        raise TypeError(
            f"text tensor has dtype {text.dtype}; pass token ids as integers "
            "(torch.long) or text embeddings as floats"
        )
    if text.ndim != 2 or text.shape[1] == 0:
        raise ValueError(
            f"text tensor must be per-sample, (B, L) token ids or (B, E) "
            f"embeddings; got shape {tuple(text.shape)}"
        )
    if text.shape[0] != batch:
        raise ValueError(
            f"text has {text.shape[0]} rows but images has {batch}; give one row "
            "per image (repeat it with text.expand(B, -1) for a shared phrase)"
        )
    text = text.to(device)
    if text.is_floating_point():
        return ResolvedText(adapter.text_embeddings(check_text_embeddings(text, adapter)), None)
    if text.shape[1] > adapter.context_length:
        raise ValueError(
            f"token ids have length {text.shape[1]} but the text encoder's context "
            f"is {adapter.context_length}; tokenize with truncation"
        )
    low, high = int(text.min()), int(text.max())
    vocab = adapter.vocab_size
    if low < 0 or (vocab is not None and high >= vocab):
        accepted = "non-negative ids" if vocab is None else f"0..{vocab - 1}"
        raise ValueError(
            f"token ids range from {low} to {high} but the text encoder accepts "
            f"{accepted}; tokenize with this model's own tokenizer"
        )
    text = text.long()  # embedding lookups take int64 (or int32) ids only
    return ResolvedText(adapter.text_embeddings(text), adapter.decode(text))
