"""Adapter for transformers ``CLIPModel`` (openai CLIP, PubMedCLIP, CheXzero-style fine-tunes)."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator, Sequence

from torch import Tensor, nn

from captum_matex.adapters.base import BlockwiseAdapter, hooked


def _as_tensor(output) -> Tensor:
    """Features as a tensor from transformers 4.x (tensor) or 5.x (ModelOutput)."""
    if isinstance(output, Tensor):
        return output
    if getattr(output, "pooler_output", None) is not None:
        return output.pooler_output
    return output[0]


class HFEncoderAdapter(BlockwiseAdapter):
    r"""What transformers' CLIP-like dual encoders share (CLIP, SigLIP, SigLIP 2).

    The image tower (``model.vision_model``: ``embeddings``, ``encoder.layers``,
    ``post_layernorm``) is run block by block, so that attention probabilities
    of every block (with gradients), the block outputs and partial runs (from
    a given block on) are available in one pass. Attention probabilities are
    read where the softmax is formed, the eager attention path; the adapter
    switches the vision tower to it for the call and restores the model's own
    setting afterwards (transformers 5.x defaults to SDPA, which materialises
    no probabilities).

    Args:
        model: the dual encoder.
        tokenizer: its tokenizer or processor, used for text given as strings.
    """

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.vision = self.vision_transformer(model)
        self._layer_params = set(
            inspect.signature(self.vision.encoder.layers[0].forward).parameters
        )

    @classmethod
    def vision_transformer(cls, model: nn.Module) -> nn.Module:
        r"""The image tower's transformer (``embeddings``, ``encoder.layers``)."""
        vision = model.vision_model
        # transformers 4.x wraps the tower of a stand-alone vision model once more
        return getattr(vision, "vision_model", vision)

    @property
    def _vision_config(self):
        return self.model.config.vision_config

    @property
    def image_size(self) -> tuple[int, int]:
        size = self._vision_config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def patch_size(self) -> tuple[int, int]:
        size = self._vision_config.patch_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def num_channels(self) -> int:
        return self._vision_config.num_channels

    @property
    def context_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.model.config.text_config.vocab_size

    def vision_blocks(self) -> list[nn.Module]:
        return list(self.vision.encoder.layers)

    def encode_text(self, input_ids: Tensor) -> Tensor:
        return _as_tensor(self.model.get_text_features(input_ids=input_ids))

    def run_block(
        self, block: nn.Module, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        captured: list[Tensor] = []
        kwargs = {"output_attentions": True} if want_attention else {}
        if "causal_attention_mask" in self._layer_params:  # transformers 4.x
            kwargs["causal_attention_mask"] = None
        taps = [(block.self_attn, "output", lambda out: captured.append(out[1]))]
        with hooked(taps if want_attention else []):
            out = block(tokens, None, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        attn = captured[0] if captured else None
        if want_attention and attn is None:
            raise RuntimeError(
                "the vision tower returned no attention probabilities (an SDPA or "
                "flash attention path is active); load the model with "
                "attn_implementation='eager'"
            )
        return out, attn

    @contextlib.contextmanager
    def capture_attention_projections(
        self, blocks: Sequence[int]
    ) -> Iterator[dict[int, dict[str, Tensor]]]:
        layers = self.vision.encoder.layers
        captured: dict[int, dict[str, Tensor]] = {b: {} for b in blocks}
        taps = []
        for b in blocks:
            attn, store = layers[b].self_attn, captured[b].__setitem__
            taps += [
                (attn.q_proj, "output", functools.partial(store, "query")),
                (attn.k_proj, "output", functools.partial(store, "key")),
                (attn.v_proj, "output", functools.partial(store, "value")),
                (attn.out_proj, "input", functools.partial(store, "context")),
            ]
        with hooked(taps):
            yield captured

    @contextlib.contextmanager
    def attention_exposed(self) -> Iterator[None]:
        config = self._vision_config
        previous = getattr(config, "_attn_implementation", None)
        try:
            if previous not in (None, "eager"):
                config._attn_implementation = "eager"
            yield
        finally:
            if previous not in (None, "eager"):
                config._attn_implementation = previous


class HFCLIPAdapter(HFEncoderAdapter):
    r"""Adapter for a transformers :class:`~transformers.CLIPModel`: the image
    embedding is the class token, projected (:class:`HFEncoderAdapter` runs the
    tower).

    Args:
        model: a ``CLIPModel``.
        tokenizer: a CLIP tokenizer or processor, used for text given as
            strings.
    """

    family = "transformers-clip"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` looks like a transformers CLIPModel."""
        return all(
            hasattr(model, name)
            for name in ("vision_model", "visual_projection", "text_projection")
        ) and hasattr(getattr(model, "vision_model"), "encoder")

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    @property
    def embedding_dim(self) -> int:
        return self.model.text_projection.out_features

    def input_tokens(self, images: Tensor) -> Tensor:
        return self.vision.pre_layrnorm(self.vision.embeddings(images))

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Map last-block tokens ``(B, n, D)`` into the joint space, as the CLS token is."""
        return self.model.visual_projection(self.vision.post_layernorm(tokens))
