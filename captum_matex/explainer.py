r"""The public base of every explanation method: :class:`Explainer`.

A method is one short subclass. :meth:`Explainer.attribute` owns everything
around the method's own idea: input checks, tokenisation, the model's state
(eval mode, hooks, attention implementation, restored in ``finally``), one
traced forward pass with the captures the method asks for, sign, the maps of
images without spatial variation, upsampling, dtype and device, the one
noise-safe normalisation and the output format. A method overrides
:meth:`Explainer.patch_map`, which turns the captured quantities (attention,
hidden states, the score to differentiate) into a patch-grid map, or, when it
needs a pass of its own, :meth:`Explainer.attribute_maps`::

    class LastBlockAttention(Explainer):
        captures_attention = True
        uses_gradients = False

        def patch_map(self, trace):
            # what the image embedding reads of the last block's attention:
            # the class token's row, or the rows an attention-pooling probe reads
            return trace.read(trace.attentions[-1].mean(1))
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Literal, Sequence, get_args

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_matex._inputs import ResolvedText, check_images, resolve_text
from captum_matex._maps import Normalization, is_flat, normalize
from captum_matex.adapters import VisionLanguageAdapter, VisionTrace, get_adapter
from captum_matex.forward import SimilarityForward

OutputKind = Literal["image", "pixel", "grid"]
Upsampling = Literal["bilinear", "bicubic"]
Sign = Literal["positive", "absolute_value"] | None
#: ``(attention (B, H, T, T), gradient (B, H, T, T)) -> (B, T, T)``
BlockReduction = Callable[[Tensor, Tensor], Tensor]

#: marks an argument left at the method's own default
DEFAULT: Any = object()


def accepts_tuple(attribute: Callable) -> Callable:
    r"""Let ``attribute`` take its images as a 1-tuple, as Captum passes them in
    places, and answer in kind (a 1-tuple of maps)."""

    @functools.wraps(attribute)
    def wrapper(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        images, is_tuple = VisionLanguageAttribution._untuple(inputs)
        maps = attribute(self, images, *args, **kwargs)
        return (maps,) if is_tuple else maps

    return wrapper


def apply_sign(maps: Tensor, sign: Sign) -> Tensor:
    r"""Captum's visualisation convention for signed attributions.

    ``"positive"`` keeps the evidence for the score (relu), ``"absolute_value"``
    its magnitude, ``None`` leaves the sign (the map may then be negative).
    """
    if sign is None:
        return maps
    if sign == "positive":
        return maps.clamp_min(0)
    if sign == "absolute_value":
        return maps.abs()
    raise ValueError(f"sign must be 'positive', 'absolute_value' or None, got {sign!r}")


def check_upsample(mode: Upsampling) -> None:
    r"""Raise a ``ValueError`` naming the choices unless ``mode`` is an :data:`Upsampling`."""
    if mode not in get_args(Upsampling):
        choices = " or ".join(repr(m) for m in get_args(Upsampling))
        raise ValueError(f"upsample must be {choices}, got {mode!r}")


def upsample_grid(grid_maps: Tensor, size: tuple[int, int], mode: Upsampling = "bilinear") -> Tensor:
    r"""Upsample ``(B, h, w)`` non-negative patch-grid maps to ``(B, 1, H, W)``.

    ``"bilinear"`` puts every map's maximum on the centre of its highest
    cell, so a region smaller than a patch that lies between cell centres
    can never hold it. ``"bicubic"`` (Keys' interpolating kernel) puts the
    maximum between cells where the neighbouring cells say it lies; its
    overshoot is clamped at zero and the map rescaled so that its peak keeps
    the grid's peak value (a map in [0, 1] stays in [0, 1]).
    """
    check_upsample(mode)
    grid_maps = grid_maps[:, None].float()
    maps = F.interpolate(grid_maps, size=size, mode=mode, align_corners=False).clamp_min(0)
    if mode == "bicubic":
        peak = grid_maps.flatten(1).amax(1)
        upsampled_peak = maps.flatten(1).amax(1)
        scale = torch.where(upsampled_peak > 0, peak / upsampled_peak.clamp_min(1e-30), 0.0)
        maps = maps * scale[:, None, None, None]
    return maps


def format_maps(
    grid_maps: Tensor, images: Tensor, output: OutputKind, upsample: Upsampling = "bilinear"
) -> Tensor:
    r"""Shape ``(B, h, w)`` maps as an attribution for ``images``.

    Args:
        grid_maps: non-negative maps on the patch grid.
        images: the explained ``(B, C, H, W)`` batch; sets device and dtype.
        output: ``"image"`` gives ``(B, C, H, W)`` (the shape Captum expects),
            ``"pixel"`` gives ``(B, 1, H, W)``, ``"grid"`` gives
            ``(B, 1, h, w)`` without upsampling.
        upsample: interpolation to the input's size (see :func:`upsample_grid`).
    """
    if output == "grid":
        maps = grid_maps[:, None]
    elif output in ("image", "pixel"):
        maps = upsample_grid(grid_maps, tuple(images.shape[-2:]), upsample)
        if output == "image":
            maps = maps.expand(-1, images.shape[1], -1, -1)
    else:
        raise ValueError(f"output must be 'image', 'pixel' or 'grid', got {output!r}")
    return maps.to(device=images.device, dtype=images.dtype).contiguous()


def format_pixel_maps(
    pixel_maps: Tensor, images: Tensor, output: OutputKind, grid: tuple[int, int]
) -> Tensor:
    r"""Shape ``(B, H, W)`` pixel-level maps as an attribution for ``images``.

    ``"image"`` repeats the map over channels, ``"pixel"`` adds a channel
    axis, ``"grid"`` area-averages it to the ``(h, w)`` patch grid.
    """
    if output == "image":
        maps = pixel_maps[:, None].expand(-1, images.shape[1], -1, -1)
    elif output == "pixel":
        maps = pixel_maps[:, None]
    elif output == "grid":
        maps = F.adaptive_avg_pool2d(pixel_maps[:, None].float(), grid)
    else:
        raise ValueError(f"output must be 'image', 'pixel' or 'grid', got {output!r}")
    return maps.to(device=images.device, dtype=images.dtype).contiguous()


def resolve_block(index: int, num_layers: int, what: str = "layer") -> int:
    r"""A block index in ``[0, num_layers)`` from a possibly negative ``index``."""
    resolved = index + num_layers if index < 0 else index
    if not 0 <= resolved < num_layers:
        raise ValueError(
            f"{what}={index} is out of range for a vision tower with {num_layers} blocks "
            f"(valid: {-num_layers}..{num_layers - 1})"
        )
    return resolved


class VisionLanguageAttribution(GradientAttribution):
    r"""A Captum attribution that explains the adapter's image-text target.

    The forward function is the adapter's target (CLIP: the cosine similarity
    of image and text embeddings), ``forward_func(images, text) -> (B,)``, so
    Captum utilities that call ``self.forward_func`` (infidelity, NoiseTunnel,
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
        prompt: for a generative model, the text between the image and the
            explained phrase (default: the family's, e.g. ``"Findings:"``).
    """

    #: the method's name in tables and figures (default: the class name)
    display_name: str | None = None
    #: what the method needs of a model family (e.g. ``{"class token"}``); a
    #: family without it is refused by name (:meth:`VisionLanguageAdapter.refusal`)
    requires: frozenset[str] = frozenset()

    def __init__(
        self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, eval_mode: bool = True,
        prompt: str | Sequence[int] | None = None,
    ) -> None:
        self.adapter = get_adapter(model, tokenizer, prompt)
        refusal = self.adapter.refusal(self.get_name(), self.requires)
        if refusal is not None:
            raise ValueError(refusal)
        self.eval_mode = eval_mode
        super().__init__(SimilarityForward(self.adapter, eval_mode=eval_mode))

    @classmethod
    def get_name(cls) -> str:
        """The method's name as used in tables and figures."""
        return cls.display_name or cls.__name__

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
    ) -> tuple[VisionTrace, Tensor, Tensor | None, Tensor | None]:
        r"""One forward and one backward pass giving ``reduce(A^l, dS/dA^l)`` for
        every block ``l``, stacked to ``(B, L, T, T)``, the ``(B, T)`` row the
        image embedding reads (:meth:`VisionTrace.readout_weights`; ``None``
        with a class token) and the same reduction of the target's own
        attention (a decoder's layers, ``(B, L_d, S, S)``; ``None`` for a dual
        encoder). The returned trace has no attentions left."""
        with torch.enable_grad():
            trace = self.adapter.trace(
                images.detach().requires_grad_(True), text_embeddings, attentions=True
            )
            readout = trace.readout_weights()
            ((relevance, decoder),) = grouped_relevance(
                trace.attentions, [trace.score], reduce, own=[trace.target_pass.attentions]
            )
        return trace, relevance, readout, decoder


class Explainer(VisionLanguageAttribution):
    r"""Base class of every method: the template around a method's own idea.

    :meth:`attribute` checks the inputs, resolves the text, claims the model
    (:meth:`~captum_matex.adapters.VisionLanguageAdapter.explaining`),
    computes the maps with :meth:`attribute_maps` and finishes them with
    :meth:`finish` (sign, zero maps for images without spatial variation,
    upsampling, the noise-safe normalisation, the output format).

    The default :meth:`attribute_maps` runs one traced forward pass with what
    the class asks for (:attr:`captures_attention`,
    :attr:`captures_hidden_states`, autograd on when :attr:`uses_gradients`)
    and hands the :class:`~captum_matex.adapters.VisionTrace` to
    :meth:`patch_map`, the one function most methods override: it returns
    ``(B, N)`` or ``(B, h, w)`` patch maps and may take gradients of
    ``trace.score``.

    Args:
        model: a supported image-text model or an adapter.
        tokenizer: tokenizer or processor for text given as strings.
        sign: ``"positive"``, ``"absolute_value"`` or ``None`` (Captum's
            visualisation convention; maps on the patch grid are never
            negative); default: :attr:`default_sign`.
        normalize: ``"minmax"``, ``"max"`` or ``None``; default: the
            method's own convention (:attr:`default_normalize`). Flat maps
            (rounding noise) become zeros either way.
        eval_mode: run the model in eval mode (restored afterwards).
        prompt: for a generative model, the text between the image and the
            phrase (default: the family's).
        upsample: ``"bilinear"`` or ``"bicubic"``, how patch-grid maps reach
            the input's size (:func:`upsample_grid`); default: the method's
            own convention (:attr:`default_upsample`).
    """

    #: normalisation the method's reference implementation uses
    default_normalize: Normalization = "minmax"
    #: how the method's reference implementation upsamples patch-grid maps
    default_upsample: Upsampling = "bilinear"
    #: sign convention of the method
    default_sign: Sign = "positive"
    #: :meth:`patch_map` reads ``trace.attentions`` (attention probabilities of every block)
    captures_attention: bool = False
    #: :meth:`patch_map` reads ``trace.hidden_states`` (every block's output tokens)
    captures_hidden_states: bool = False
    #: :meth:`patch_map` takes gradients (the trace runs with autograd on)
    uses_gradients: bool = True
    #: the maps are score differences (perturbation methods): rounding noise
    #: is judged against the score, not against the map
    score_difference_maps: bool = False

    def __init__(
        self,
        model: nn.Module | VisionLanguageAdapter,
        tokenizer=None,
        *,
        sign: Sign = DEFAULT,
        normalize: Normalization = DEFAULT,
        eval_mode: bool = True,
        prompt: str | Sequence[int] | None = None,
        upsample: Upsampling = DEFAULT,
    ) -> None:
        super().__init__(model, tokenizer, eval_mode, prompt)
        self.sign = self.default_sign if sign is DEFAULT else sign
        self.normalize = self.default_normalize if normalize is DEFAULT else normalize
        self.upsample = self.default_upsample if upsample is DEFAULT else upsample
        apply_sign(torch.zeros(()), self.sign)  # validate
        if self.normalize not in ("minmax", "max", None):
            raise ValueError(f"normalize must be 'minmax', 'max' or None, got {normalize!r}")
        check_upsample(self.upsample)

    @log_usage()
    @accepts_tuple
    def attribute(
        self, inputs: Tensor, additional_forward_args: Any = None, output: OutputKind = "image"
    ) -> Tensor:
        r"""
        Args:
            inputs: ``(B, C, H, W)`` pixel values (or a 1-tuple of them).
            additional_forward_args: ``(text,)``: per-sample token ids or
                embeddings, ``B`` phrases or one phrase.
            output: ``"image"`` for ``(B, C, H, W)``, ``"pixel"`` for
                ``(B, 1, H, W)``, ``"grid"`` for the ``(B, 1, h, w)`` patch grid.

        Returns:
            Maps on the device and in the dtype of ``inputs`` (non-negative
            unless ``sign=None``).
        """
        with self.adapter.explaining(self.eval_mode, exposes_attention=self.captures_attention):
            images, text = self._resolve(inputs, additional_forward_args)
            maps = self.attribute_maps(images, text)
            scale = self.noise_scale(images, text)
        return self.finish(maps, images, output, scale)

    def attribute_phrases(
        self, inputs: Tensor, phrases: Sequence[str], output: OutputKind = "image"
    ) -> Tensor:
        r"""Explain ``K`` phrases for every image.

        The base explains each image repeated once per phrase in one batch
        of ``B * K``; a method that can share work between phrases overrides
        it (MATEX runs the image tower once per image).

        Returns:
            ``(B, K, ...)``: the map of phrase ``k`` for image ``b`` at ``[b, k]``.
        """
        images, is_tuple = self._untuple(inputs)
        if isinstance(phrases, str) or not len(phrases):
            raise ValueError("phrases must be a non-empty list of K phrases")
        batch, k = images.shape[0], len(phrases)
        repeated = images[:, None].expand(-1, k, *images.shape[1:]).reshape(-1, *images.shape[1:])
        maps = self.attribute(repeated, ([p for _ in range(batch) for p in phrases],), output)
        return maps.view(batch, k, *maps.shape[1:])

    def attribute_maps(self, images: Tensor, text: ResolvedText) -> Tensor:
        r"""The method's raw maps for checked ``images`` and resolved ``text``.

        Runs inside :meth:`attribute`'s claim on the model. The default traces
        one forward pass with the class's captures and calls
        :meth:`patch_map`; override it for a method that needs passes of its
        own (perturbations, optimisation, no model at all).

        Returns:
            ``(B, h, w)`` patch-grid maps or ``(B, H, W)`` pixel maps.
        """
        with torch.set_grad_enabled(self.uses_gradients):
            trace = self.adapter.trace(
                images.detach().requires_grad_(self.uses_gradients),
                text.embeddings,
                attentions=self.captures_attention,
                hidden_states=self.captures_hidden_states,
            )
            maps = self.patch_map(trace)
        return maps.detach().reshape(-1, *trace.grid)

    def patch_map(self, trace: VisionTrace) -> Tensor:
        r"""Turn one traced forward pass into ``(B, N)`` (or ``(B, h, w)``) patch maps.

        Args:
            trace: the pass, with the captures the class asks for; its
                ``score`` is the explained target (differentiable when
                :attr:`uses_gradients`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override patch_map() (or attribute_maps())"
        )

    def noise_scale(self, images: Tensor, text: ResolvedText) -> Tensor | None:
        r"""``(B,)`` magnitude the maps' rounding noise is relative to.

        ``None`` (the maps' own magnitude) except for maps of score
        differences (:attr:`score_difference_maps`), whose channel-summed
        values are judged against ``channels * |s(x)|``.
        """
        if not self.score_difference_maps:
            return None
        with torch.no_grad():
            score = self.forward_func(images, text.embeddings)
        return score.abs() * images.shape[1]

    def finish(
        self, maps: Tensor, images: Tensor, output: OutputKind, scale: Tensor | None = None
    ) -> Tensor:
        r"""Raw ``(B, h, w)`` grid or ``(B, H, W)`` pixel maps -> the attribution.

        Applies the sign, zeroes the maps of images without spatial variation,
        shapes them for ``output`` on the device and in the dtype of
        ``images`` and normalises them (flat maps become zeros, judged
        against ``scale`` when given).
        """
        maps = apply_sign(maps.detach(), self.sign)
        if maps.shape[-2:] == images.shape[-2:]:
            maps = self._zero_flat_images(maps, images)
            maps = format_pixel_maps(maps, images, output, self.adapter.grid_size(images))
        else:  # patch grid: upsampling clamps at zero, so grid maps are never signed
            maps = torch.nan_to_num(maps.float(), nan=0.0).clamp_min(0)
            maps = format_maps(self._zero_flat_images(maps, images), images, output, self.upsample)
        return normalize(maps, self.normalize, scale=scale, dtype=images.dtype).contiguous()


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
    attentions, trace.attentions = trace.attentions, []
    return [shared for shared, _ in grouped_relevance(attentions, scores, reduce)]


def grouped_relevance(
    shared: list[Tensor],
    scores: list[Tensor],
    reduce: BlockReduction,
    own: list[list[Tensor]] | None = None,
) -> list[tuple[Tensor, Tensor | None]]:
    r""":func:`block_relevance` with, for each score, attention tensors of its
    own: ``shared`` are the vision blocks every score passes through,
    ``own[k]`` e.g. the decoder layers of the pass that computed
    ``scores[k]``. For each score, ``(shared stack (M, L, T, T), own stack
    (M, L_k, S, S) or None)``, from one backward pass per score.

    The backward pass runs to the first shared tensor, the earliest in the
    graph, so every tensor in between meets its gradient. The shared tensors
    are released during the last pass, each score's own ones during its
    pass; the lists are emptied.
    """
    own = own if own is not None else [[] for _ in scores]
    pending: list[Tensor | None] = list(shared)
    shared.clear()
    first = pending[0]
    results = []
    for position, (score, extra) in enumerate(zip(scores, own)):
        last = position == len(scores) - 1
        tensors: list[Tensor | None] = pending + list(extra)
        extra.clear()
        reduced: list[Tensor | None] = [None] * len(tensors)

        def hook_for(index: int, reduced=reduced, tensors=tensors, last=last):
            def hook(grad: Tensor) -> None:
                reduced[index] = reduce(tensors[index].detach(), grad)
                if last or index >= len(pending):
                    tensors[index] = None
                    if index < len(pending):
                        pending[index] = None

            return hook

        handles = [a.register_hook(hook_for(i)) for i, a in enumerate(tensors)]
        try:
            torch.autograd.grad(score.sum(), first, retain_graph=not last)
        finally:
            for handle in handles:
                handle.remove()
        mine = reduced[len(pending):]
        results.append((torch.stack(reduced[:len(pending)], 1),
                        torch.stack(mine, 1) if mine else None))
    return results
