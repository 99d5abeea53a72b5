"""Adapter for transformers ``LlavaForConditionalGeneration`` (LLaVA-Med, MAIRA-2)."""

from __future__ import annotations

from torch import Tensor, nn

from captum_matex.adapters.generative import GenerativeAdapter


def _is_instance(model: nn.Module, name: str) -> bool:
    r"""Whether ``model`` is a ``transformers.<name>`` (or a subclass: MAIRA-2's)."""
    import transformers

    cls = getattr(transformers, name, None)
    return cls is not None and isinstance(model, cls)


class HFLlavaAdapter(GenerativeAdapter):
    r"""Adapter for a transformers :class:`~transformers.LlavaForConditionalGeneration`
    with any vision tower of CLIP or SigLIP layout and any decoder (Llama,
    Mistral, Phi, ...).

    The projector reads the output of the vision block named by
    ``config.vision_feature_layer`` (the blocks after it never reach the
    decoder and are left out), without the class token when
    ``vision_feature_select_strategy="default"``. The decoder's input is
    ``BOS, <image> x n, prompt, phrase`` (or the image where the prompt holds
    ``"<image>"``).

    Args:
        model: a ``LlavaForConditionalGeneration`` (or subclass).
        tokenizer: its processor or tokenizer.
        prompt: see :class:`~captum_matex.adapters.GenerativeAdapter`.
    """

    family = "transformers-llava"
    capabilities = frozenset({"decoder", "plain causal prompt"})

    def __init__(self, model: nn.Module, tokenizer=None, prompt=None) -> None:
        super().__init__(model, tokenizer, prompt)
        layer = model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(
                f"vision_feature_layer={layer!r}: the projector reads several vision blocks at "
                "once; only one block (an int) is supported"
            )
        self.strategy = model.config.vision_feature_select_strategy
        if self.strategy == "default" and self.num_prefix_tokens == 0:
            raise ValueError(
                "vision_feature_select_strategy='default' drops the first token, but this "
                "vision tower has no class token (it would drop a patch); use 'full'"
            )

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is a transformers LLaVA model."""
        return _is_instance(model, "LlavaForConditionalGeneration")

    @property
    def vision_feature_block(self) -> int:
        layer = self.model.config.vision_feature_layer  # an index into hidden_states
        count = len(self.vision.encoder.layers)
        return (layer if layer >= 0 else count + 1 + layer) - 1

    @property
    def image_grid(self) -> tuple[int, int]:
        return self.patch_grid

    @property
    def first_read_token(self) -> int:
        """0 with ``vision_feature_select_strategy="full"``: the class token is read too."""
        return self.num_prefix_tokens if self.strategy == "default" else 0

    @property
    def num_image_tokens(self) -> int:
        h, w = self.image_grid
        return h * w + self.num_prefix_tokens - self.first_read_token

    def image_features(self, tokens: Tensor) -> Tensor:
        selected = tokens[:, 1:] if self.strategy == "default" else tokens
        return self.projector(selected)
