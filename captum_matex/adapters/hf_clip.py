"""Adapter for transformers ``CLIPModel`` (openai CLIP, PubMedCLIP, CheXzero-style fine-tunes)."""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_matex.adapters.base import VisionLanguageAdapter, VisionTrace


def _as_tensor(output) -> Tensor:
    """Features as a tensor from transformers 4.x (tensor) or 5.x (ModelOutput)."""
    if isinstance(output, Tensor):
        return output
    if getattr(output, "pooler_output", None) is not None:
        return output.pooler_output
    return output[0]


class HFCLIPAdapter(VisionLanguageAdapter):
    r"""Adapter for a transformers :class:`~transformers.CLIPModel`.

    The image tower is run block by block, so that attention probabilities of
    every block (with gradients), the block outputs and partial runs (from a
    given block on) are available in one pass. Attention probabilities need
    the eager attention path; the adapter switches the vision tower to it for
    the call and restores the model's own setting afterwards (transformers 5.x
    defaults to SDPA, which materialises no probabilities).

    Args:
        model: a ``CLIPModel``.
        tokenizer: a CLIP tokenizer or processor, used for text given as
            strings.
    """

    family = "transformers-clip"

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__(model, tokenizer)
        self.vision = model.vision_model
        self._layer_params = set(
            inspect.signature(self.vision.encoder.layers[0].forward).parameters
        )

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` looks like a transformers CLIPModel."""
        return all(
            hasattr(model, name)
            for name in ("vision_model", "visual_projection", "text_projection")
        ) and hasattr(getattr(model, "vision_model"), "encoder")

    @property
    def _vision_config(self):
        return self.model.config.vision_config

    @property
    def num_layers(self) -> int:
        return len(self.vision.encoder.layers)

    @property
    def num_prefix_tokens(self) -> int:
        return 1

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

    @property
    def embedding_dim(self) -> int:
        return self.model.text_projection.out_features

    def vision_blocks(self) -> list[nn.Module]:
        return list(self.vision.encoder.layers)

    def encode_text(self, input_ids: Tensor) -> Tensor:
        return _as_tensor(self.model.get_text_features(input_ids=input_ids))

    def embed_tokens(self, images: Tensor, upto_block: int) -> Tensor:
        tokens = self.vision.pre_layrnorm(self.vision.embeddings(images))
        for layer in self.vision.encoder.layers[: upto_block + 1]:
            tokens = self._run_layer(layer, tokens, want_attention=False)[0]
        return tokens

    def _run_layer(
        self, layer: nn.Module, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        captured: list[Tensor | None] = []
        handle = None
        if want_attention:
            handle = layer.self_attn.register_forward_hook(
                lambda _m, _i, out: captured.append(out[1])
            )
        kwargs = {"output_attentions": True} if want_attention else {}
        if "causal_attention_mask" in self._layer_params:  # transformers 4.x
            kwargs["causal_attention_mask"] = None
        try:
            out = layer(tokens, None, **kwargs)
        finally:
            if handle is not None:
                handle.remove()
        out = out[0] if isinstance(out, tuple) else out
        attn = captured[0] if captured else None
        if want_attention and attn is None:
            raise RuntimeError(
                "the vision tower returned no attention probabilities (an SDPA or "
                "flash attention path is active); load the model with "
                "attn_implementation='eager'"
            )
        return out, attn

    def trace(
        self,
        images: Tensor,
        text_embeddings: Tensor,
        attentions: bool = True,
        hidden_states: bool = False,
        start_block: int = 0,
    ) -> VisionTrace:
        if start_block == 0:
            tokens = self.vision.pre_layrnorm(self.vision.embeddings(images))
        else:
            tokens = images
        attn_list: list[Tensor] = []
        hidden_list: list[Tensor] = []
        for layer in self.vision.encoder.layers[start_block:]:
            tokens, attn = self._run_layer(layer, tokens, attentions)
            if attentions:
                attn_list.append(attn)
            if hidden_states:
                hidden_list.append(tokens)
        image_emb = self.project_tokens(tokens[:, :1])[:, 0]
        score = F.cosine_similarity(image_emb, text_embeddings.to(image_emb), dim=-1)
        with torch.no_grad():
            patches = self.project_tokens(tokens[:, self.num_prefix_tokens :].detach())
        ph, pw = self.grid_size_from_tokens(tokens.shape[1] - self.num_prefix_tokens)
        return VisionTrace(
            score=score,
            attentions=attn_list,
            hidden_states=hidden_list,
            patch_embeddings=patches,
            text_embeddings=text_embeddings.detach(),
            grid=(ph, pw),
            num_prefix_tokens=self.num_prefix_tokens,
        )

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Map last-block tokens ``(B, n, D)`` into the joint space, as the CLS token is."""
        return self.model.visual_projection(self.vision.post_layernorm(tokens))

    def grid_size_from_tokens(self, n_patches: int) -> tuple[int, int]:
        """Patch grid for ``n_patches`` tokens, using the configured aspect."""
        h, w = self.image_size
        ph, pw = self.patch_size
        gh, gw = h // ph, w // pw
        if gh * gw == n_patches:
            return gh, gw
        side = int(round(n_patches**0.5))
        return side, n_patches // side

    @contextlib.contextmanager
    def capture_attention_projections(
        self, blocks: Sequence[int]
    ) -> Iterator[dict[int, dict[str, Tensor]]]:
        layers = self.vision.encoder.layers
        captured: dict[int, dict[str, Tensor]] = {b: {} for b in blocks}
        handles = []

        def store(block: int, name: str):
            def hook(_module, _inputs, output):
                captured[block][name] = output

            return hook

        def store_context(block: int):
            def pre_hook(_module, inputs):
                captured[block]["context"] = inputs[0]

            return pre_hook

        try:
            for b in blocks:
                attn = layers[b].self_attn
                handles.append(attn.q_proj.register_forward_hook(store(b, "query")))
                handles.append(attn.k_proj.register_forward_hook(store(b, "key")))
                handles.append(attn.v_proj.register_forward_hook(store(b, "value")))
                handles.append(attn.out_proj.register_forward_pre_hook(store_context(b)))
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def _attention_exposed(self) -> Iterator[None]:
        config = self._vision_config
        previous = getattr(config, "_attn_implementation", None)
        try:
            if previous not in (None, "eager"):
                config._attn_implementation = "eager"
            yield
        finally:
            if previous not in (None, "eager"):
                config._attn_implementation = previous
