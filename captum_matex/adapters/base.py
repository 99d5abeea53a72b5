"""The adapter contract: what MATEX and the baselines need from a model family."""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from captum_matex.targets import (
    ClassToken,
    CosineSimilarity,
    MeanTokens,
    Readout,
    Target,
    TargetPass,
)

#: model -> (thread id, nesting depth) of the ``explaining`` context using it
_IN_USE: weakref.WeakKeyDictionary[nn.Module, tuple[int, int]] = weakref.WeakKeyDictionary()
_IN_USE_LOCK = threading.Lock()


@contextlib.contextmanager
def _exclusive(model: nn.Module) -> Iterator[None]:
    r"""Claim ``model`` for the calling thread; nested claims by the same thread are fine.

    Raises:
        RuntimeError: another thread is explaining with ``model`` right now.
    """
    me = threading.get_ident()
    with _IN_USE_LOCK:
        owner, depth = _IN_USE.get(model, (me, 0))
        if owner != me:
            raise RuntimeError(
                f"this {type(model).__name__} is being explained in another thread; "
                "explainers change the model's state (eval mode, requires_grad, "
                "attention implementation) for the duration of a call, so one model "
                "cannot serve two calls at once. Give each thread its own copy "
                "(copy.deepcopy(model)) or serialise the calls with a lock"
            )
        _IN_USE[model] = (me, depth + 1)
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            if depth:
                _IN_USE[model] = (me, depth)
            else:
                del _IN_USE[model]


def _offloaded_prefixes(model: nn.Module) -> list[str]:
    r"""Name prefixes of the submodules of ``model`` that carry an accelerate
    hook (``_hf_hook``): their weights may sit on the ``meta`` device and are
    loaded by the hook on every forward pass (CPU or disk offload)."""
    return [
        f"{name}." if name else ""
        for name, module in model.named_modules()
        if getattr(module, "_hf_hook", None) is not None
    ]


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The parameters, then the buffers, of ``model`` by qualified name."""
    yield from model.named_parameters()
    yield from model.named_buffers()


def meta_tensors(model: nn.Module) -> list[str]:
    r"""Names of the parameters and buffers of ``model`` on the ``meta`` device
    (which holds shapes but no values), leaving out those an accelerate hook
    loads on the fly.

    Args:
        model: any module.

    Returns:
        list[str]: qualified names, parameters first; empty when every
        tensor holds data.
    """
    offloaded = _offloaded_prefixes(model)
    return [
        name
        for name, tensor in _named_tensors(model)
        if tensor.is_meta and not any(name.startswith(p) for p in offloaded)
    ]


def check_materialised(model: nn.Module) -> None:
    r"""Refuse a model whose weights are (partly) on the ``meta`` device.

    A model built without weights (``init_empty_weights``,
    ``device_map="meta"``, ``torch.device("meta")``) or moved there has no
    values to explain; torch would fail deep inside the forward pass or, for
    some operators, quietly compute with garbage.

    Args:
        model: the wrapped image-text model.

    Raises:
        ValueError: some parameters or buffers are on the ``meta`` device;
            the message names them and how to load the weights.
    """
    names = meta_tensors(model)
    if not names:
        return
    total = sum(1 for _ in _named_tensors(model))
    which = (
        "the model's parameters are"
        if len(names) == total
        else f"{len(names)} of the model's {total} parameters and buffers (e.g. "
        f"{', '.join(repr(n) for n in names[:3])}) {'is' if len(names) == 1 else 'are'}"
    )
    raise ValueError(
        f"{which} on the 'meta' device, which holds no data (the model was built "
        "without weights, e.g. under init_empty_weights or device_map='meta', or "
        "moved with .to('meta')); load its weights (from_pretrained, or "
        "model.to_empty(device=...) followed by load_state_dict) before explaining"
    )


def model_device(model: nn.Module) -> torch.device | None:
    r"""The one device holding every parameter and buffer of ``model``.

    Args:
        model: any module.

    Returns:
        torch.device or None: ``None`` when the model has no tensors, spreads
        over several devices, or is dispatched by accelerate (whose hooks
        move inputs to the right device themselves).
    """
    if _offloaded_prefixes(model):
        return None
    devices = {tensor.device for _, tensor in _named_tensors(model)}
    return devices.pop() if len(devices) == 1 else None


#: ``(module, "input" | "output", callback)``: what :func:`hooked` hands to whom
Tap = tuple[nn.Module, str, Callable[[Tensor], None]]


@contextlib.contextmanager
def hooked(taps: Iterable[Tap]) -> Iterator[None]:
    r"""Hand each module's first input (``"input"``) or its output
    (``"output"``) to its callback on every forward pass inside the context.

    The hooks are removed on exit, also on error.

    Args:
        taps: ``(module, where, callback)`` triples.
    """
    handles = []
    try:
        for module, where, callback in taps:
            if where == "input":
                handles.append(module.register_forward_pre_hook(
                    lambda _m, inputs, callback=callback: callback(inputs[0])
                ))
            elif where == "output":
                handles.append(module.register_forward_hook(
                    lambda _m, _i, output, callback=callback: callback(output)
                ))
            else:
                raise ValueError(f"a tap is on the 'input' or the 'output', not {where!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class VisionTrace:
    r"""Everything one forward pass of the image tower exposes to explainers.

    Attributes:
        score: ``(B,)`` cosine similarity between image and text embeddings,
            attached to the autograd graph.
        attentions: one ``(B, H, T, T)`` tensor of attention probabilities
            per vision block, attached to the graph (empty when the trace
            was taken with ``attentions=False``).
        hidden_states: one ``(B, T, D)`` token tensor per block output
            (block ``l`` output at index ``l``), attached to the graph; empty
            unless requested.
        patch_embeddings: ``(B, N, E)`` patch tokens of the last block mapped
            into the joint embedding space (the path the CLS token takes),
            detached.
        text_embeddings: ``(B, E)`` text embeddings, detached.
        grid: ``(h, w)`` patch grid, ``N = h * w``.
        num_prefix_tokens: tokens before the patches (CLS, registers).
        image_embeddings: ``(B, E)`` image embeddings the score was computed
            from, attached to the graph (score further phrases with
            ``adapter.target(trace.image_embeddings, ...)``).
        readout_attention: ``(B, H, Q, T)`` attention probabilities of the
            ``Q`` queries of an attention-pooling probe (SigLIP's ``map``
            head: ``Q = 1``) over the last block's tokens, attached to the
            graph; ``None`` when the image embedding is read from the class
            token.
        readout_tokens: ``(B, T)`` fixed weights of the last block's tokens
            that the target reads when it reads several without a probe
            (a generative model: every image token its projector hands to the
            decoder), detached; ``None`` otherwise.
        target_pass: what the target's own computation exposed (a decoder's
            attention, :class:`~captum_matex.targets.TargetPass`); ``None``
            when the trace was taken without attentions.

    Raises:
        ValueError: the score is NaN or Inf (the inputs overflow the model);
            no explanation of it would mean anything.
    """

    score: Tensor
    attentions: list[Tensor]
    hidden_states: list[Tensor]
    patch_embeddings: Tensor
    text_embeddings: Tensor
    grid: tuple[int, int]
    num_prefix_tokens: int
    image_embeddings: Tensor | None = None
    readout_attention: Tensor | None = None
    readout_tokens: Tensor | None = None
    target_pass: TargetPass | None = None

    def readout_weights(self) -> Tensor | None:
        r"""The ``(B, T)`` weights with which an attention-pooling probe reads the
        last block's tokens (its attention, averaged over heads and queries,
        detached), :attr:`readout_tokens` for a target that reads several
        tokens without a probe, or ``None`` when the embedding is the class
        token.

        This is the probe's counterpart of the class token's one-hot row: what
        the image embedding is made of, not weighted by gradients. MATEX starts
        its rollout from it (weighting it by the gradient as well, as the
        blocks are, was measured worse: on the phantom SigLIP's validation
        films the pointing game fell from 0.86 to 0.56).
        """
        probe = self.readout_attention
        return self.readout_tokens if probe is None else probe.detach().mean((1, 2))

    def read(self, matrix: Tensor, weights: Tensor | None = None) -> Tensor:
        r"""The patch columns of the row(s) of ``matrix`` that the image
        embedding reads.

        With a class token that is row 0 (``matrix[..., 0, prefix:]``); with
        an attention-pooling probe or several read tokens it is every row,
        weighted by ``weights``.

        Args:
            matrix: ``(B, T, T)`` or ``(B, L, T, T)`` token-to-token
                relevance or attention.
            weights: ``(B, T)`` weights of the read rows; default:
                :meth:`readout_weights`. Ignored with a class token.

        Returns:
            ``(B, N)`` or ``(B, L, N)``.
        """
        if weights is None:
            weights = self.readout_weights()
        if weights is None:
            rows = matrix[..., 0, :]
        else:
            weights = weights.view(weights.shape[0], *[1] * (matrix.ndim - 3), 1, -1)
            rows = (weights.to(matrix) @ matrix).squeeze(-2)
        return rows[..., self.num_prefix_tokens:]

    def __post_init__(self) -> None:
        finite = torch.isfinite(self.score.detach())
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise ValueError(
                f"the image-text score is NaN or Inf for sample(s) {bad[:10]}: the "
                "inputs overflow the model (values far outside the range the model's "
                "processor and text encoder produce, or too large for a float16 model); "
                "pass the processor's normalised pixel values or run the model in float32"
            )


def warn_truncated(too_long: Sequence[str], context_length: int) -> None:
    r"""Warn, naming the first one, when ``too_long`` phrases were cut to the context."""
    if too_long:
        warnings.warn(
            f"{len(too_long)} phrase(s) exceed the text encoder's context of "
            f"{context_length} tokens and were truncated, e.g. {too_long[0][:60]!r}",
            stacklevel=4,
        )


class VisionLanguageAdapter(ABC):
    r"""Wraps one family of image-text dual encoders behind a small interface.

    Subclasses know where the attention probabilities live, how to capture them
    with gradients, how to encode text and what the image tower's token layout
    is. Everything an adapter changes on the model during :meth:`explaining`
    is restored when the context exits, also on error.

    Args:
        model: the wrapped image-text model.
        tokenizer: optional tokenizer (or processor with a ``tokenizer``
            attribute) used when text is given as strings.
    """

    family: str = "abstract"
    #: the explained scalar of the family (see :mod:`captum_matex.targets`)
    target: Target = CosineSimilarity()
    #: the tokens that scalar reads
    readout: Readout = ClassToken()
    #: the readout of intermediate blocks' tokens (LeGrad); ``None``: :attr:`readout`
    block_readout: Readout | None = MeanTokens()
    #: what the family offers to methods that need it (see :attr:`Explainer.requires`)
    capabilities: frozenset[str] = frozenset({"class token", "contrastive embedding"})
    #: why a capability is missing, per capability, for error messages
    missing: dict[str, str] = {}

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        self.model = model
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)

    # --- model description -------------------------------------------------
    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of transformer blocks in the image tower."""

    @property
    @abstractmethod
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (CLS first)."""

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` input size the image tower expects."""

    @property
    @abstractmethod
    def num_channels(self) -> int:
        """Channels the image tower expects."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum number of text tokens."""

    @property
    def vocab_size(self) -> int | None:
        """Number of token ids the text encoder accepts, or ``None`` if unknown."""
        return None

    @property
    def embedding_dim(self) -> int | None:
        """Width ``E`` of the joint image-text embedding, or ``None`` if unknown."""
        return None

    def grid_size(self, images: Tensor) -> tuple[int, int]:
        """Patch grid ``(h, w)`` for ``images``."""
        ph, pw = self.patch_size
        return images.shape[-2] // ph, images.shape[-1] // pw

    def check_image_size(self, size: tuple[int, int]) -> str | None:
        r"""Why the image tower cannot take ``(H, W)`` images, or ``None`` if it can.

        The default accepts :attr:`image_size` only; towers with a variable
        patch grid override it.
        """
        expected = tuple(self.image_size)
        if tuple(size) == expected:
            return None
        return (
            f"images are {tuple(size)} pixels but the model expects {expected}; "
            "resize with the model's processor"
        )

    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int]:
        """``(ph, pw)`` pixels per patch."""

    @abstractmethod
    def vision_blocks(self) -> list[nn.Module]:
        """The image tower's transformer blocks, input to output."""

    # --- text --------------------------------------------------------------
    def tokenize(self, phrases: Sequence[str], device: torch.device) -> Tensor:
        """Token ids ``(B, L)`` for ``phrases``; truncates with a warning."""
        if self.tokenizer is None:
            raise ValueError(
                "text was given as strings but no tokenizer is known; pass "
                "`tokenizer=` (or the processor) to the explainer, or pass token "
                "ids / text embeddings instead"
            )
        n_tokens = [len(self.tokenizer(p)["input_ids"]) for p in phrases]
        warn_truncated([p for p, n in zip(phrases, n_tokens) if n > self.context_length],
                       self.context_length)
        enc = self.tokenizer(
            list(phrases),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device)

    def decode(self, input_ids: Tensor) -> list[str] | None:
        """Phrases back from token ids, or ``None`` without a tokenizer."""
        if self.tokenizer is None:
            return None
        return [
            self.tokenizer.decode(row.tolist(), skip_special_tokens=True).strip()
            for row in input_ids
        ]

    @abstractmethod
    def encode_text(self, input_ids: Tensor) -> Tensor:
        """Text embeddings ``(B, E)`` (not normalised) for token ids."""

    # --- image -------------------------------------------------------------
    @abstractmethod
    def trace(
        self,
        images: Tensor,
        text_embeddings: Tensor,
        attentions: bool = True,
        hidden_states: bool = False,
        start_block: int = 0,
    ) -> VisionTrace:
        r"""One forward pass of the image tower with the requested captures.

        Args:
            images: ``(B, C, H, W)`` pixel values, preprocessed for the model.
            text_embeddings: ``(B, E)`` text embeddings.
            attentions: capture attention probabilities of every block.
            hidden_states: capture every block's output tokens.
            start_block: run the tower from this block on; ``images`` then
                holds the ``(B, T, D)`` tokens entering that block (as given
                by :meth:`embed_tokens`). Attentions and hidden states then
                cover blocks ``start_block..L-1`` only.
        """

    @abstractmethod
    def embed_tokens(self, images: Tensor, upto_block: int) -> Tensor:
        """Tokens ``(B, T, D)`` leaving block ``upto_block`` (-1: embeddings)."""

    def text_embeddings(self, text: Tensor) -> Tensor:
        """Embeddings for per-sample text given as ids (int) or embeddings (float)."""
        if text.is_floating_point():
            return text
        with torch.no_grad():
            return self.encode_text(text)

    def image_embedding(self, tokens: Tensor, readout: Readout | None = None) -> Tensor:
        r"""The joint-space image embedding ``(B, E)`` that ``readout`` (default:
        :attr:`readout`) makes of a block's output tokens ``(B, T, D)``."""
        pooled = (readout or self.readout)(tokens, self.num_prefix_tokens)
        return self.project_tokens(pooled[:, None])[:, 0]

    def pooled_embedding(
        self, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        r"""The image embedding ``(B, E)`` of the last block's tokens and, for an
        attention-pooling readout when ``want_attention``, the probe's
        ``(B, H, Q, T)`` attention probabilities it was computed with (``None``
        for a class token)."""
        return self.image_embedding(tokens), None

    @classmethod
    def refusal(cls, method: str, requires: frozenset[str]) -> str | None:
        r"""Why ``method``, which needs ``requires``, cannot run on this
        family, or ``None`` if it can (read from the class: no model needed)."""
        missing = sorted(set(requires) - set(cls.capabilities))
        if not missing:
            return None
        reasons = "; ".join(
            f"{cls.family} models {cls.missing.get(m, f'have no {m}')}" for m in missing
        )
        return f"{method} needs {' and '.join(f'a {m}' for m in missing)}; {reasons}"

    # --- optional capabilities (used by some baselines) -----------------------
    def project_tokens(self, tokens: Tensor) -> Tensor:
        r"""Map block-output tokens ``(B, n, D)`` into the joint image-text space
        the way the image embedding is made from the CLS token (final norm and
        projection). Used by LeGrad (per-block image embeddings).

        Raises:
            NotImplementedError: the adapter does not expose the projection.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement project_tokens(); add it to "
            "the adapter (final layer norm + visual projection) to use this method"
        )

    @contextlib.contextmanager
    def capture_attention_projections(
        self, blocks: Sequence[int]
    ) -> Iterator[dict[int, dict[str, Tensor]]]:
        r"""Capture the attention projections of some vision blocks during a trace.

        Inside the context every forward pass through block ``b`` (in
        ``blocks``, negative indices allowed) stores, in
        ``captured[b]``, the ``(B, T, D)`` tensors ``"query"``, ``"key"`` and
        ``"value"`` (in-projections, heads concatenated, before scaling) and
        ``"context"`` (the attention output before the out-projection, heads
        concatenated), all attached to the autograd graph. Hooks are removed on
        exit, also on error. Used by Grad-ECLIP.

        Args:
            blocks: vision block indices.

        Yields:
            dict: block index (as given) to its captured tensors.

        Raises:
            NotImplementedError: the adapter does not expose the projections.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement capture_attention_projections(); "
            "add it to the adapter to use this method"
        )
        yield {}  # pragma: no cover

    # --- state -------------------------------------------------------------
    @contextlib.contextmanager
    def explaining(
        self, eval_mode: bool = True, exposes_attention: bool = True
    ) -> Iterator[None]:
        r"""Prepare the model for an explanation and restore it afterwards.

        Switches to eval mode (when ``eval_mode``), turns parameter gradients
        off (explainers only need gradients with respect to activations) and,
        when ``exposes_attention``, enables an attention path that exposes
        probabilities. Training flags, ``requires_grad`` and the attention
        implementation are restored on exit, also on error or
        KeyboardInterrupt.

        The model is claimed for the calling thread while the context is open
        (nested contexts in the same thread are fine): saving and restoring
        its state is not safe against a second thread doing the same.

        Raises:
            ValueError: the model's weights are (partly) on the ``meta``
                device (checked before anything on the model changes).
            RuntimeError: another thread is explaining with the same model.
        """
        check_materialised(self.model)
        with _exclusive(self.model):
            modes = {m: m.training for m in self.model.modules()}
            grads = {p: p.requires_grad for p in self.model.parameters()}
            try:
                if eval_mode:
                    self.model.eval()
                for p in grads:
                    p.requires_grad_(False)
                if exposes_attention:
                    with self.attention_exposed():
                        yield
                else:
                    yield
            finally:
                for m, training in modes.items():
                    m.training = training
                for p, flag in grads.items():
                    p.requires_grad_(flag)

    @contextlib.contextmanager
    def attention_exposed(self) -> Iterator[None]:
        """Make attention probabilities observable; restore on exit."""
        yield


class BlockwiseAdapter(VisionLanguageAdapter):
    r"""An adapter that runs the image tower block by block.

    Running the blocks one at a time gives the attention probabilities of
    every block (with gradients), the block outputs and partial runs from a
    given block on in one pass. Subclasses say how tokens enter the first
    block (:meth:`input_tokens`), how one block runs with its probabilities
    captured (:meth:`run_block`) and how tokens reach the joint space
    (:meth:`project_tokens`); :meth:`trace` and :meth:`embed_tokens` follow.
    """

    @property
    def num_layers(self) -> int:
        return len(self.vision_blocks())

    @abstractmethod
    def input_tokens(self, images: Tensor) -> Tensor:
        """Tokens ``(B, T, D)`` entering the first block."""

    @abstractmethod
    def run_block(
        self, block: nn.Module, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Block output ``(B, T, D)`` and, if wanted, its ``(B, H, T, T)`` probabilities."""

    @abstractmethod
    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Map last-block tokens ``(B, n, D)`` into the joint space, as the CLS token is."""

    def embed_tokens(self, images: Tensor, upto_block: int) -> Tensor:
        tokens = self.input_tokens(images)
        for block in self.vision_blocks()[: upto_block + 1]:
            tokens = self.run_block(block, tokens, want_attention=False)[0]
        return tokens

    def trace(
        self,
        images: Tensor,
        text_embeddings: Tensor,
        attentions: bool = True,
        hidden_states: bool = False,
        start_block: int = 0,
    ) -> VisionTrace:
        tokens = self.input_tokens(images) if start_block == 0 else images
        attn_list: list[Tensor] = []
        hidden_list: list[Tensor] = []
        for block in self.vision_blocks()[start_block:]:
            tokens, attn = self.run_block(block, tokens, attentions)
            if attentions:
                if attn is None:
                    raise RuntimeError(
                        "the vision tower returned no attention probabilities (a fused "
                        "attention path is active); trace with attentions=True inside "
                        "adapter.explaining(), which switches to the explicit path"
                    )
                attn_list.append(attn)
            if hidden_states:
                hidden_list.append(tokens)
        prefix = self.num_prefix_tokens
        embedding, probe = self.pooled_embedding(tokens, attentions)
        scored = self.target.evaluate(embedding, text_embeddings, attentions)
        with torch.no_grad():
            patches = self.patch_embeddings(tokens[:, prefix:].detach())
        return VisionTrace(
            score=scored.score,
            attentions=attn_list,
            hidden_states=hidden_list,
            patch_embeddings=patches,
            text_embeddings=text_embeddings.detach(),
            grid=self._grid_from_tokens(tokens.shape[1] - prefix),
            num_prefix_tokens=prefix,
            image_embeddings=embedding,
            readout_attention=probe,
            readout_tokens=self.readout_tokens(tokens),
            target_pass=scored if attentions else None,
        )

    def patch_embeddings(self, patch_tokens: Tensor) -> Tensor:
        r"""The last block's patch tokens ``(B, N, D)`` as the trace exposes them
        (:attr:`VisionTrace.patch_embeddings`): in the joint space
        (:meth:`project_tokens`) for a dual encoder."""
        return self.project_tokens(patch_tokens)

    def readout_tokens(self, tokens: Tensor) -> Tensor | None:
        r"""``(B, T)`` weights of the last block's tokens ``tokens`` that the
        target reads, when it reads several without a probe
        (:attr:`VisionTrace.readout_tokens`); ``None`` (the default) for a
        class token or a probe."""
        return None

    def _grid_from_tokens(self, n_patches: int) -> tuple[int, int]:
        """Patch grid for ``n_patches`` tokens: the configured one, else the squarest."""
        (h, w), (ph, pw) = self.image_size, self.patch_size
        if (h // ph) * (w // pw) == n_patches:
            return h // ph, w // pw
        side = int(round(n_patches**0.5))
        return side, n_patches // side
