"""Adapters for open_clip models: open_clip's own ViT tower and timm ViT trunks
(BiomedCLIP; SigLIP's ``map``-pooled trunks).

Neither open_clip nor timm is imported here: models are recognised by their
structure, so the package works without the ``openclip`` extra installed.
"""

from __future__ import annotations

import contextlib
import functools
from abc import abstractmethod
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from captum_matex.adapters.attention import explicit_mha
from captum_matex.adapters.base import BlockwiseAdapter, hooked, warn_truncated
from captum_matex.adapters.probe import AttentionPooled
from captum_matex.targets import SigmoidLogit


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


class _OpenCLIPBase(BlockwiseAdapter):
    r"""The text side shared by open_clip models, whatever their image tower.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP``.
        tokenizer: open_clip's tokenizer (``open_clip.get_tokenizer(...)``),
            any callable mapping a list of phrases to ``(B, context_length)``
            token ids, or a transformers tokenizer.
    """

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.visual = model.visual

    # --- text --------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.model, "vocab_size", None) or None

    @property
    def embedding_dim(self) -> int:
        with torch.no_grad():
            return self.project_tokens(self._probe_tokens()).shape[-1]

    @abstractmethod
    def _probe_tokens(self) -> Tensor:
        """A ``(1, 1, D)`` zero token of the image tower's width, dtype and device."""

    def encode_text(self, input_ids: Tensor) -> Tensor:
        return self.model.encode_text(input_ids, normalize=False)

    def tokenize(self, phrases: Sequence[str], device: torch.device) -> Tensor:
        r"""Token ids ``(B, L)``; open_clip-style callables pad and truncate themselves.

        Raises:
            ValueError: no tokenizer, or it returns ids of another length than
                the text encoder's context.
        """
        if self.tokenizer is None or isinstance(self.tokenizer, PreTrainedTokenizerBase):
            return super().tokenize(phrases, device)
        encode = getattr(self.tokenizer, "encode", None)
        if encode is not None:
            too_long = [p for p in phrases if len(encode(p)) + 2 > self.context_length]
            warn_truncated(too_long, self.context_length)
        ids = torch.as_tensor(self.tokenizer(list(phrases)))
        if ids.shape[-1] != self.context_length:
            raise ValueError(
                f"the tokenizer returned {ids.shape[-1]} tokens per phrase but the text "
                f"encoder takes {self.context_length}; make it with "
                f"context_length={self.context_length} (open_clip.get_tokenizer(name, "
                f"context_length={self.context_length}))"
            )
        return ids.to(device)

    def decode(self, input_ids: Tensor) -> list[str] | None:
        """Phrases back from token ids (special and padding tokens dropped)."""
        if self.tokenizer is None or isinstance(self.tokenizer, PreTrainedTokenizerBase):
            return super().decode(input_ids)
        special = {
            0,
            getattr(self.tokenizer, "sot_token_id", 0),
            getattr(self.tokenizer, "eot_token_id", 0),
        }
        return [
            self.tokenizer.decode([t for t in row.tolist() if t not in special]).strip()
            for row in input_ids
        ]


# ----------------------------------------------------------------------------
# open_clip VisionTransformer: nn.MultiheadAttention, called with need_weights=False
# ----------------------------------------------------------------------------
class OpenCLIPAdapter(_OpenCLIPBase):
    r"""Adapter for open_clip models whose image tower is open_clip's ``VisionTransformer``.

    open_clip's residual blocks call :class:`torch.nn.MultiheadAttention` with
    ``need_weights=False`` (a fused kernel, no probabilities). Inside
    :meth:`explaining` each block's attention module runs an explicit
    computation with the module's own weights instead
    (:func:`explicit_mha`, same math), which exposes the probabilities with
    gradients; the modules' own ``forward`` is restored on exit. Only
    class-token pooling (``pool_type='tok'``, open_clip's default) is
    supported.

    Args:
        model: an open_clip ``CLIP`` (e.g. ``open_clip.create_model("ViT-B-16")``).
        tokenizer: ``open_clip.get_tokenizer(name)`` or any callable giving
            ``(B, context_length)`` token ids.
    """

    family = "open_clip-vit"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        if self.visual.attn_pool is not None or self.visual.pool_type != "tok":
            raise ValueError(
                "only open_clip image towers pooled by the class token are supported "
                f"(pool_type='tok', no attentional pooler); this one has {self.visual.pool_type!r}"
            )
        for block in self.vision_blocks():
            attn = getattr(block, "attn", None)
            if (
                not isinstance(attn, nn.MultiheadAttention)
                or attn.bias_k is not None
                or not attn._qkv_same_embed_dim
            ):
                raise ValueError(
                    "open_clip blocks with custom attention (CustomResidualAttentionBlock, "
                    "bias_kv, differing key/value widths) are not supported"
                )
        self._recorded: dict[nn.Module, dict[str, Tensor]] = {}

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is an open_clip model with open_clip's ViT image tower."""
        visual = getattr(model, "visual", None)
        return (
            type(visual).__name__ == "VisionTransformer"
            and type(visual).__module__.startswith("open_clip")
            and hasattr(model, "encode_text")
        )

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self.visual.image_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.visual.patch_size)

    @property
    def num_channels(self) -> int:
        return self.visual.conv1.in_channels

    def vision_blocks(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def _probe_tokens(self) -> Tensor:
        param = self.visual.proj
        return torch.zeros(1, 1, param.shape[0], dtype=param.dtype, device=param.device)

    def input_tokens(self, images: Tensor) -> Tensor:
        return self.visual._embeds(images)

    def run_block(
        self, block: nn.Module, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        batch_first = self.visual.transformer.batch_first
        try:
            out = block(tokens if batch_first else tokens.transpose(0, 1))
            recorded = self._recorded.get(block.attn, {})
        finally:
            self._recorded.pop(block.attn, None)
        out = out if batch_first else out.transpose(0, 1)
        return out, recorded.get("attention") if want_attention else None

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Map last-block tokens ``(B, n, D)`` into the joint space, as the CLS token is."""
        out = self.visual.ln_post(tokens)
        return out @ self.visual.proj if self.visual.proj is not None else out

    def _record(self, mha: nn.Module, tensors: dict[str, Tensor]) -> None:
        self._recorded[mha] = tensors

    @contextlib.contextmanager
    def _explicit_attention(self) -> Iterator[None]:
        """Route every block's attention through :func:`explicit_mha`; nestable."""
        mhas = [b.attn for b in self.vision_blocks() if "forward" not in vars(b.attn)]
        try:
            for mha in mhas:
                mha.forward = functools.partial(explicit_mha, mha, self._record)
            yield
        finally:
            for mha in mhas:
                vars(mha).pop("forward", None)

    @contextlib.contextmanager
    def capture_attention_projections(
        self, blocks: Sequence[int]
    ) -> Iterator[dict[int, dict[str, Tensor]]]:
        layers = self.vision_blocks()
        captured: dict[int, dict[str, Tensor]] = {b: {} for b in blocks}

        def store(block: int, mha: nn.Module) -> Callable[[Tensor], None]:
            def keep(_output) -> None:
                recorded = self._recorded[mha]
                captured[block].update({k: v for k, v in recorded.items() if k != "attention"})

            return keep

        with self._explicit_attention(), hooked(
            [(layers[b].attn, "output", store(b, layers[b].attn)) for b in blocks]
        ):
            yield captured

    @contextlib.contextmanager
    def attention_exposed(self) -> Iterator[None]:
        with self._explicit_attention():
            yield


# ----------------------------------------------------------------------------
# timm VisionTransformer trunk (open_clip TimmModel), e.g. BiomedCLIP
# ----------------------------------------------------------------------------
class TimmOpenCLIPAdapter(_OpenCLIPBase):
    r"""Adapter for open_clip models whose image tower wraps a timm ViT (BiomedCLIP).

    timm's ``Attention`` uses ``F.scaled_dot_product_attention`` while
    ``fused_attn`` is set, which materialises no probabilities. Inside
    :meth:`explaining` every block's ``fused_attn`` is turned off (timm's
    explicit path: ``softmax(q k^T * scale)`` then ``attn_drop``); the
    probabilities are read from the output of ``attn_drop``, the tensor
    multiplied with the values. ``fused_attn`` is restored on exit. Only
    class-token pooling (timm's ``global_pool='token'``) is supported.

    Args:
        model: an open_clip ``CLIP``/``CustomTextCLIP`` whose ``visual`` is a
            ``TimmModel`` around a timm ``VisionTransformer``.
        tokenizer: the text tower's tokenizer (open_clip's ``get_tokenizer``
            result, a transformers tokenizer, or a callable giving
            ``(B, context_length)`` ids).
    """

    family = "open_clip-timm-vit"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.trunk = self.visual.trunk
        self._check_pool()

    def _check_pool(self) -> None:
        """Refuse a trunk whose image embedding this adapter cannot compute."""
        pool = getattr(self.trunk, "global_pool", None)
        if pool != "token" or getattr(self.trunk, "attn_pool", None) is not None:
            raise ValueError(
                "only timm ViT trunks pooled by the class token are supported "
                f"(global_pool='token'); this one has {pool!r}"
            )

    @staticmethod
    def supports(model: nn.Module) -> bool:
        r"""Whether ``model`` is an open_clip model with a timm ViT trunk (other
        than a SigLIP ``map`` trunk, which :class:`TimmSiglipOpenCLIPAdapter` takes)."""
        return _has_timm_vit_trunk(model) and not _is_timm_siglip(model)

    @property
    def num_prefix_tokens(self) -> int:
        return self.trunk.num_prefix_tokens

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self.trunk.patch_embed.img_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.trunk.patch_embed.patch_size)

    @property
    def num_channels(self) -> int:
        return self.trunk.patch_embed.proj.in_channels

    def vision_blocks(self) -> list[nn.Module]:
        return list(self.trunk.blocks)

    def _probe_tokens(self) -> Tensor:
        param = self.trunk.patch_embed.proj.weight  # cls_token is None without a class token
        return torch.zeros(1, 1, self.trunk.num_features, dtype=param.dtype, device=param.device)

    def input_tokens(self, images: Tensor) -> Tensor:
        trunk = self.trunk
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(images))))

    def run_block(
        self, block: nn.Module, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        captured: list[Tensor] = []
        with hooked([(block.attn.attn_drop, "output", captured.append)] if want_attention else []):
            out = block(tokens)
        return out, (captured[0] if captured else None)

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Map last-block tokens ``(B, n, D)`` into the joint space, as the CLS token is."""
        trunk = self.trunk
        pooled = trunk.head(trunk.head_drop(trunk.fc_norm(trunk.norm(tokens))))
        return self.visual.head(pooled)

    @contextlib.contextmanager
    def capture_attention_projections(
        self, blocks: Sequence[int]
    ) -> Iterator[dict[int, dict[str, Tensor]]]:
        layers = self.vision_blocks()
        captured: dict[int, dict[str, Tensor]] = {b: {} for b in blocks}

        def store_qkv(store: dict[str, Tensor]) -> Callable[[Tensor], None]:
            return lambda qkv: store.update(zip(("query", "key", "value"), qkv.chunk(3, dim=-1)))

        taps = []
        for b in blocks:
            attn = layers[b].attn
            taps += [
                (attn.qkv, "output", store_qkv(captured[b])),
                (attn.proj, "input", functools.partial(captured[b].__setitem__, "context")),
            ]
        with hooked(taps):
            yield captured

    @contextlib.contextmanager
    def attention_exposed(self) -> Iterator[None]:
        attns = [b.attn for b in self.vision_blocks()]
        previous = [a.fused_attn for a in attns]
        try:
            for attn in attns:
                attn.fused_attn = False
            yield
        finally:
            for attn, flag in zip(attns, previous):
                attn.fused_attn = flag


def _has_timm_vit_trunk(model: nn.Module) -> bool:
    """Whether ``model`` is an open_clip model whose ``visual`` wraps a timm ViT trunk."""
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    return (
        type(visual).__name__ == "TimmModel"
        and all(hasattr(trunk, name) for name in ("blocks", "patch_embed", "_pos_embed"))
        and hasattr(model, "encode_text")
    )


#: what timm's ``AttentionPoolLatent`` (the ``map`` head) holds, checked by structure
_LATENT_POOL = ("latent", "q", "kv", "q_norm", "k_norm", "proj", "proj_drop", "norm", "mlp",
                "num_heads", "head_dim", "scale", "latent_len", "pos_embed", "pool")


def _is_timm_siglip(model: nn.Module) -> bool:
    """A timm ViT trunk pooled by a latent attention probe (``global_pool='map'``)
    in an open_clip model with a sigmoid-loss ``logit_bias``: open_clip's SigLIP."""
    trunk = getattr(getattr(model, "visual", None), "trunk", None)
    pool = getattr(trunk, "attn_pool", None)
    return (
        _has_timm_vit_trunk(model)
        and getattr(trunk, "global_pool", None) == "map"
        and all(hasattr(pool, name) for name in _LATENT_POOL)
        and getattr(model, "logit_bias", None) is not None
    )


class TimmSiglipOpenCLIPAdapter(AttentionPooled, TimmOpenCLIPAdapter):
    r"""Adapter for open_clip's SigLIP models (``ViT-B-16-SigLIP``,
    ``ViT-SO400M-14-SigLIP``, SigLIP 2 ...): a timm ViT trunk with
    ``global_pool='map'`` and a sigmoid-logit ``logit_bias``.

    As for transformers' SigLIP (:class:`~captum_matex.adapters.HFSiglipAdapter`)
    there is no class token: the image embedding is timm's
    ``AttentionPoolLatent``, a learnt latent probe attending over the last
    block's tokens, then an MLP with a residual. The adapter computes the
    probe explicitly with the module's own weights (the math of its
    ``forward``: ``q``/``kv`` projections, ``q_norm``/``k_norm``, position
    embedding if any, ``softmax(q k^T * scale)``, out-projection, MLP
    residual, ``token``/``avg`` pooling of the latents), so its probabilities
    ``(B, H, Q, T)`` are read with gradients
    (:attr:`~captum_matex.adapters.VisionTrace.readout_attention`; ``Q`` is the
    number of latents the embedding reads: ``latent_len`` with ``avg``
    pooling, the first with ``token`` pooling; tokens the pool does not read,
    such as register tokens, get probability 0). Then the trunk's ``fc_norm``
    and ``head`` and open_clip's ``visual.head``, in the order of the
    model's own ``encode_image``. The score is the model's own logit
    :math:`e^t \cos + b` (:class:`~captum_matex.targets.SigmoidLogit`).

    Args:
        model: an open_clip ``CustomTextCLIP`` (e.g.
            ``open_clip.create_model("ViT-B-16-SigLIP")``).
        tokenizer: ``open_clip.get_tokenizer(name)`` or any callable giving
            ``(B, context_length)`` token ids.
    """

    family = "open_clip-timm-siglip"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.attn_pool = self.trunk.attn_pool
        self.target = SigmoidLogit(model.logit_scale, model.logit_bias)

    def _check_pool(self) -> None:
        if not _is_timm_siglip(self.model):
            raise ValueError(
                "open_clip-timm-siglip needs a timm ViT trunk with global_pool='map' (an "
                "AttentionPoolLatent probe) in a model with a logit_bias (sigmoid loss)"
            )
        if self.trunk.attn_pool.pool not in ("token", "avg"):
            raise ValueError(
                "the trunk's attention pool keeps its latents apart (pool_type="
                f"{self.trunk.attn_pool.pool!r}); only 'token' and 'avg' give one embedding"
            )

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is an open_clip SigLIP: a timm ``map`` trunk and a ``logit_bias``."""
        return _is_timm_siglip(model)

    def _pooled_from(self) -> int:
        """First token the probe reads (timm skips the prefix unless ``pool_include_prefix``)."""
        return 0 if getattr(self.trunk, "pool_include_prefix", False) else self.num_prefix_tokens

    def _to_joint_space(self, pooled: Tensor) -> Tensor:
        """The trunk's ``fc_norm``, ``head_drop``, ``head``, then open_clip's ``visual.head``."""
        trunk = self.trunk
        return self.visual.head(trunk.head(trunk.head_drop(trunk.fc_norm(pooled))))

    def _mlp(self, latents: Tensor) -> Tensor:
        """Out-projection and MLP residual of the pool on its ``(B, Q, C)`` attention output."""
        pool = self.attn_pool
        latents = pool.proj_drop(pool.proj(latents))
        return latents if pool.mlp is None else latents + pool.mlp(pool.norm(latents))

    def probe_pool(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        r"""The ``map`` head on last-block tokens ``(B, T, D)``: the embedding
        ``(B, E)`` and the probe's ``(B, H, Q, T)`` attention it was made with."""
        pool, start = self.attn_pool, self._pooled_from()
        x = self.trunk.norm(tokens)[:, start:]
        batch, n, _ = x.shape
        if pool.pos_embed is not None:
            x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
        # 'token' pooling keeps the first latent only; each latent's query is its own row
        latent = pool.latent[:, :1] if pool.pool == "token" else pool.latent
        queries = latent.shape[1]
        q = pool.q(latent.expand(batch, -1, -1))
        q = q.reshape(batch, queries, pool.num_heads, pool.head_dim).transpose(1, 2)
        k, v = pool.kv(x).reshape(batch, n, 2, pool.num_heads, pool.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        q, k = pool.q_norm(q), pool.k_norm(k)
        # over all T tokens (0 on those the pool skips); this very tensor meets the values
        probs = F.pad(((q * pool.scale) @ k.transpose(-2, -1)).softmax(-1), (start, 0))
        latents = self._mlp((probs[..., start:] @ v).transpose(1, 2).reshape(batch, queries, -1))
        return self._to_joint_space(latents.mean(1)), probs

    def project_tokens(self, tokens: Tensor) -> Tensor:
        r"""Each patch token ``(B, n, D)`` in the joint space as the head embeds
        it when the probe attends to that token alone (values, out-projection,
        MLP residual; every latent then holds the same vector)."""
        pool = self.attn_pool
        x = self.trunk.norm(tokens)
        if pool.pos_embed is not None and pool.pos_embed.shape[0] >= x.shape[1]:
            x = x + pool.pos_embed[pool.pos_embed.shape[0] - x.shape[1]:].to(x.dtype)
        width = pool.kv.out_features // 2
        bias = pool.kv.bias[width:] if pool.kv.bias is not None else None
        return self._to_joint_space(self._mlp(F.linear(x, pool.kv.weight[width:], bias)))
