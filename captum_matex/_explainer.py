"""Base class shared by MATEX and every baseline: adapter, inputs, output format."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_matex._inputs import ResolvedText, check_images, resolve_text
from captum_matex._maps import is_flat
from captum_matex.adapters import VisionLanguageAdapter, VisionTrace, get_adapter
from captum_matex.forward import SimilarityForward

OutputKind = Literal["image", "pixel", "grid"]
#: ``(attention (B, H, T, T), gradient (B, H, T, T)) -> (B, T, T)``
BlockReduction = Callable[[Tensor, Tensor], Tensor]


def accepts_tuple(attribute: Callable) -> Callable:
    r"""Let ``attribute`` take its images as a 1-tuple, as Captum passes them in
    places, and answer in kind (a 1-tuple of maps)."""

    @functools.wraps(attribute)
    def wrapper(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        images, is_tuple = VisionLanguageAttribution._untuple(inputs)
        maps = attribute(self, images, *args, **kwargs)
        return (maps,) if is_tuple else maps

    return wrapper


def upsample_grid(grid_maps: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Bilinearly upsample ``(B, h, w)`` patch-grid maps to ``(B, 1, H, W)``."""
    maps = F.interpolate(
        grid_maps[:, None].float(), size=size, mode="bilinear", align_corners=False
    )
    return maps.clamp_min(0)


def format_maps(grid_maps: Tensor, images: Tensor, output: OutputKind) -> Tensor:
    r"""Shape ``(B, h, w)`` maps as an attribution for ``images``.

    Args:
        grid_maps: non-negative maps on the patch grid.
        images: the explained ``(B, C, H, W)`` batch; sets device and dtype.
        output: ``"image"`` gives ``(B, C, H, W)`` (the shape Captum expects),
            ``"pixel"`` gives ``(B, 1, H, W)``, ``"grid"`` gives
            ``(B, 1, h, w)`` without upsampling.
    """
    if output == "grid":
        maps = grid_maps[:, None]
    elif output in ("image", "pixel"):
        maps = upsample_grid(grid_maps, tuple(images.shape[-2:]))
        if output == "image":
            maps = maps.expand(-1, images.shape[1], -1, -1)
    else:
        raise ValueError(f"output must be 'image', 'pixel' or 'grid', got {output!r}")
    return maps.to(device=images.device, dtype=images.dtype).contiguous()


class VisionLanguageAttribution(GradientAttribution):
    r"""A Captum attribution that explains an image-text similarity score.

    The forward function is the cosine similarity between the image embedding
    and the text embedding, ``forward_func(images, text) -> (B,)``, so Captum
    utilities that call ``self.forward_func`` (infidelity, NoiseTunnel,
    sensitivity) see the same score the explainer explains.

    Thread safety: ``attribute`` changes the model's state for the duration
    of the call (eval mode, ``requires_grad``, attention implementation) and
    restores it afterwards, so one model cannot serve two calls at once. A
    call while another thread is explaining with the same model (through any
    explainer or :class:`~captum_matex.SimilarityForward`) raises
    ``RuntimeError``; give each thread its own copy of the model
    (``copy.deepcopy(model)``) or serialise the calls. Calls from one thread,
    also nested ones, are fine.

    Args:
        model: a supported image-text model (see :mod:`captum_matex.adapters`)
            or an adapter.
        tokenizer: tokenizer or processor, needed when text is given as
            strings.
        eval_mode: put the model in eval mode during ``attribute`` (restored
            afterwards).
    """

    def __init__(
        self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, eval_mode: bool = True
    ) -> None:
        self.adapter = get_adapter(model, tokenizer)
        self.eval_mode = eval_mode
        super().__init__(SimilarityForward(self.adapter, eval_mode=eval_mode))

    @classmethod
    def get_name(cls) -> str:
        """The method's name as used in tables and figures."""
        return cls.__name__

    @staticmethod
    def _untuple(inputs: Any) -> tuple[Any, bool]:
        r"""Captum passes inputs as a 1-tuple in places; unwrap it and remember."""
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ValueError(
                    f"inputs must be one image tensor (or a 1-tuple), got {len(inputs)} tensors"
                )
            return inputs[0], True
        return inputs, False

    def _resolve(self, images: Any, additional_forward_args: Any) -> tuple[Tensor, ResolvedText]:
        images = check_images(images, self.adapter)
        text = resolve_text(additional_forward_args, images.shape[0], self.adapter, images.device)
        return images, text

    @staticmethod
    def _zero_flat_images(maps: Tensor, images: Tensor) -> Tensor:
        r"""Zero the maps of images without spatial variation.

        An image whose pixels are constant (up to rounding, :func:`is_flat`)
        holds no evidence anywhere, so any structure in its map would come
        from the model's position embeddings or a prior, not from the film.
        Warns once per call naming the samples.
        """
        flat = is_flat(images)
        if not bool(flat.any()):
            return maps
        warnings.warn(
            f"image(s) {flat.nonzero().flatten().tolist()} have no spatial variation "
            "(constant pixel values): their maps are all zero",
            stacklevel=3,
        )
        return maps.masked_fill(flat.to(maps.device).view(-1, *[1] * (maps.ndim - 1)), 0)

    def _attention_relevance(
        self, images: Tensor, text_embeddings: Tensor, reduce: BlockReduction
    ) -> tuple[VisionTrace, Tensor]:
        r"""One forward and one backward pass giving ``reduce(A^l, dS/dA^l)`` for
        every block ``l``, stacked to ``(B, L, T, T)``. The returned trace has
        no attentions left."""
        with torch.enable_grad():
            trace = self.adapter.trace(
                images.detach().requires_grad_(True), text_embeddings, attentions=True
            )
            (relevance,) = block_relevance(trace, [trace.score], reduce)
        return trace, relevance


def block_relevance(
    trace: VisionTrace, scores: list[Tensor], reduce: BlockReduction
) -> list[Tensor]:
    r"""``reduce(A^l, dS/dA^l)`` of every block for each score in ``scores``
    (each ``(B,)``, computed from ``trace``), stacked to ``(B, L, T, T)``: one
    backward pass per score through the same forward pass.

    Each block is reduced by a tensor hook as soon as its gradient arrives, so
    the full ``(B, H, T, T)`` gradients of all blocks are never held at once;
    during the last backward pass the attention probabilities are released as
    it goes. ``trace.attentions`` is emptied.
    """
    pending: list[Tensor | None] = list(trace.attentions)
    trace.attentions = []
    first = pending[0]
    results = []
    for position, score in enumerate(scores):
        last = position == len(scores) - 1
        reduced: list[Tensor | None] = [None] * len(pending)

        def hook_for(index: int, reduced=reduced, last=last):
            def hook(grad: Tensor) -> None:
                reduced[index] = reduce(pending[index].detach(), grad)
                if last:
                    pending[index] = None

            return hook

        handles = [a.register_hook(hook_for(i)) for i, a in enumerate(pending)]
        try:
            torch.autograd.grad(score.sum(), first, retain_graph=not last)
        finally:
            for handle in handles:
                handle.remove()
        results.append(torch.stack(reduced, 1))
    return results
