r"""What generative vision-language models share: a vision tower whose tokens a
projector hands to a decoder, which is scored by the phrase's log-likelihood.

The explained scalar of an (image, phrase) pair is
:math:`\sum_j \log p(t_j \mid t_{<j}, \text{image}, \text{prompt})` over the
phrase's tokens, teacher-forced after the family's prompt
(:class:`~captum_matex.targets.PhraseLogLikelihood`). The image tower runs
block by block as for the dual encoders (attention of every block with
gradients); its "embedding" is the image tokens the projector makes, which
the adapter writes into the decoder's input where the image placeholders
stand. The decoder's own attention is captured where it is formed (the
output of each layer's ``self_attn``) for the text-guided prior.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import abstractmethod
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from captum_matex.adapters.base import hooked, warn_truncated
from captum_matex.adapters.hf_clip import HFEncoderAdapter
from captum_matex.targets import PhraseLogLikelihood, TargetPass

#: what a generative family lacks, for refusals of methods that need it
GENERATIVE_MISSING = {
    "class token": "read every image token the projector hands to the decoder, not a class token",
    "contrastive embedding": (
        "score a phrase by its log-likelihood under a decoder, not by the similarity of "
        "an image embedding and a text embedding"
    ),
    "plain causal prompt": (
        "mark the prompt and the phrase apart with token_type_ids, which an attribution that "
        "appends the phrase to input_ids (Captum's LLMAttribution) does not pass"
    ),
}


@dataclass
class Sequences:
    r"""Decoder inputs for ``M`` phrases after one shared prefix.

    Attributes:
        input_ids: ``(M, S)``: prefix (with image placeholders), phrase, padding.
        attention_mask: ``(M, S)``, 0 on the padding after short phrases.
        token_type_ids: ``(M, S)`` or ``None`` (families that need them).
        phrase_mask: ``(M, L)``, 1 on the phrase's real tokens (the last ``L``
            positions).
        image_positions: ``(n,)`` positions of the image placeholders.
    """

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor | None
    phrase_mask: Tensor
    image_positions: Tensor


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    r"""``model.model.<name>`` (transformers 5) or ``model.<name>`` (4.x)."""
    inner = getattr(model, "model", None)
    found = getattr(inner, name, None) if isinstance(inner, nn.Module) else None
    return found if found is not None else getattr(model, name, None)


class GenerativeAdapter(HFEncoderAdapter):
    r"""Base of the adapters for transformers image-to-text models.

    A family says how its image tokens are made from the vision tower's
    tokens (:meth:`image_features`), where they and the prompt stand in the
    decoder's input (:meth:`prefix_ids`), and which token types its attention
    mask needs (:meth:`token_types`); the rest is shared.

    Args:
        model: the image-to-text model.
        tokenizer: its tokenizer or processor, for phrases and prompts given
            as strings.
        prompt: the text between the image and the phrase (the family's
            :attr:`default_prompt` when ``None``; none without a tokenizer),
            a string (needs the tokenizer) or token ids. A string holding the
            processor's image token (e.g. ``"<image>"``) puts the image there
            instead of first.
    """

    capabilities: frozenset[str] = frozenset({"decoder"})
    missing = GENERATIVE_MISSING
    block_readout = None
    #: prompt used when none is given
    default_prompt: str = "Findings:"

    def __init__(self, model: nn.Module, tokenizer=None, prompt: str | Sequence[int] | None = None) -> None:
        vision = self.vision_transformer(model)
        if not isinstance(getattr(getattr(vision, "encoder", None), "layers", None), nn.ModuleList):
            raise ValueError(
                f"{type(model).__name__}'s vision tower ({type(vision).__name__}) is not of the "
                "CLIP or SigLIP layout (embeddings, encoder.layers) that this adapter runs block "
                "by block (e.g. MAIRA-2's RAD-DINO tower); wrap it in your own GenerativeAdapter"
            )
        super().__init__(model, tokenizer)
        self.projector = _submodule(model, "multi_modal_projector")
        self.prompt = self.default_prompt if prompt is None else prompt
        self.target = PhraseLogLikelihood(self.decoder_pass)
        self._forward_params = set(inspect.signature(model.forward).parameters)

    @classmethod
    def vision_transformer(cls, model: nn.Module) -> nn.Module:
        tower = _submodule(model, "vision_tower")
        return getattr(tower, "vision_model", tower)

    # --- what a family says -------------------------------------------------
    @property
    @abstractmethod
    def image_grid(self) -> tuple[int, int]:
        """``(h, w)`` grid of the image tokens the decoder reads (patch cells)."""

    def image_features(self, tokens: Tensor) -> Tensor:
        r"""The decoder's image tokens ``(B, n, D)`` from the last used vision
        block's tokens ``(B, T, d)``, as the model makes them; by default the
        projector on the tower's normed output (``last_hidden_state``, as
        PaliGemma and Gemma 3 read it)."""
        return self.projector(self.vision.post_layernorm(tokens))

    def token_types(self, prefix: Tensor, phrase_length: int) -> Tensor | None:
        r"""``(S,)`` token types of a sequence with ``prefix`` and a phrase of
        ``phrase_length`` tokens, or ``None`` when the family needs none."""
        return None

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        return getattr(config, "image_token_id", None) or config.image_token_index

    @property
    def num_image_tokens(self) -> int:
        """Image placeholders in the decoder's input."""
        h, w = self.image_grid
        return h * w

    def prefix_ids(self) -> list[int]:
        r"""The token ids before the phrase: BOS, the image placeholders and the
        prompt (image first unless the prompt names where it goes)."""
        before, after = self.prompt_ids()
        return self._bos() + before + [self.image_token_id] * self.num_image_tokens + after

    # --- shared ---------------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        return 1 if hasattr(self.vision, "pre_layrnorm") else 0

    @property
    def vision_feature_block(self) -> int:
        r"""Index of the vision block whose output the projector reads (default:
        the last)."""
        return len(self.vision.encoder.layers) - 1

    def vision_blocks(self) -> list[nn.Module]:
        r"""The blocks up to the one the projector reads (later ones do not
        reach the decoder)."""
        return list(self.vision.encoder.layers)[: self.vision_feature_block + 1]

    @property
    def context_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings - len(self.prefix_ids())

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    @property
    def pad_token_id(self) -> int | None:
        r"""The id that pads short phrases (the tokenizer's, else the config's)."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model.config.text_config, "pad_token_id", None)
        return pad

    def input_tokens(self, images: Tensor) -> Tensor:
        tokens = self.vision.embeddings(images)
        return self.vision.pre_layrnorm(tokens) if hasattr(self.vision, "pre_layrnorm") else tokens

    def pooled_embedding(self, tokens: Tensor, want_attention: bool) -> tuple[Tensor, None]:
        return self.image_features(tokens), None

    def image_embedding(self, tokens: Tensor, readout=None) -> Tensor:
        """The decoder's image tokens made from a block's output ``tokens``."""
        return self.image_features(tokens)

    def patch_embeddings(self, patch_tokens: Tensor) -> Tensor:
        """The vision tower's patch tokens themselves (there is no joint space)."""
        return patch_tokens

    def project_tokens(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}: a generative model has no image-text joint space to "
            "project single tokens into"
        )

    def encode_text(self, input_ids: Tensor) -> Tensor:
        raise NotImplementedError("a generative model scores phrases by likelihood, not embeddings")

    def text_embeddings(self, text: Tensor) -> Tensor:
        r"""The phrase's token ids, which is what the log-likelihood target takes.

        Raises:
            TypeError: ``text`` holds float embeddings.
        """
        if text.is_floating_point():
            raise TypeError(
                f"{self.family} models score phrases by their log-likelihood, so text must be "
                "phrases (strings) or (B, L) token ids, not embeddings"
            )
        return text

    def _bos(self) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is None:
            bos = getattr(self.model.config.text_config, "bos_token_id", None)
        return [] if bos is None else [int(bos)]

    def _encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(
                f"the prompt {text!r} is a string but no tokenizer is known; pass the "
                "processor to the explainer, or the prompt as token ids (prompt=[...])"
            )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self) -> tuple[list[int], list[int]]:
        r"""The prompt's token ids before and after the image."""
        prompt = self.prompt
        if not isinstance(prompt, str):
            return [], [int(t) for t in prompt]
        if self.tokenizer is None and prompt == self.default_prompt:
            return [], []  # token ids without a tokenizer: no prompt
        marker = getattr(self.tokenizer, "image_token", None) or "<image>"
        if marker in prompt:
            before, after = prompt.split(marker, 1)
            return (self._encode(before) if before else []), (self._encode(after) if after else [])
        return [], self._encode(prompt)

    def tokenize(self, phrases: Sequence[str], device: torch.device) -> Tensor:
        r"""``(B, L)`` token ids of ``phrases`` (no special tokens), right-padded
        with :attr:`pad_token_id`; truncates to the context with a warning."""
        if self.tokenizer is None:
            return super().tokenize(phrases, device)  # raises: no tokenizer
        rows = [self._encode(p) for p in phrases]
        limit = self.context_length
        warn_truncated([p for p, r in zip(phrases, rows) if len(r) > limit], limit)
        rows = [r[:limit] for r in rows]
        longest = max(len(r) for r in rows)
        if any(len(r) < longest for r in rows) and self.pad_token_id is None:
            raise ValueError("phrases of different lengths need a pad token; the tokenizer has none")
        pad = self.pad_token_id or 0
        return torch.tensor([r + [pad] * (longest - len(r)) for r in rows], device=device)

    def sequences(self, phrase_ids: Tensor) -> Sequences:
        r"""The decoder's inputs for ``(M, L)`` phrase token ids (right-padded
        with :attr:`pad_token_id`) after the family's prefix."""
        prefix = torch.tensor(self.prefix_ids(), device=phrase_ids.device)
        count, length = phrase_ids.shape
        pad = self.pad_token_id
        if pad is None:
            phrase_mask = torch.ones_like(phrase_ids)
        else:  # trailing pad ids are padding
            real = phrase_ids.ne(pad).flip(-1).cumsum(-1).flip(-1).gt(0)
            phrase_mask = real.long()
        input_ids = torch.cat([prefix.expand(count, -1), phrase_ids], 1)
        attention_mask = torch.cat([torch.ones_like(prefix).expand(count, -1), phrase_mask], 1)
        types = self.token_types(prefix, length)
        return Sequences(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=None if types is None else types.expand(count, -1),
            phrase_mask=phrase_mask,
            image_positions=prefix.eq(self.image_token_id).nonzero().flatten(),
        )

    def decoder_pass(
        self, image_tokens: Tensor, phrase_ids: Tensor, attentions: bool = False
    ) -> TargetPass:
        r"""The log-likelihood of each phrase given its image tokens.

        Args:
            image_tokens: ``(..., n, D)`` the decoder's image tokens.
            phrase_ids: ``(..., L)`` phrase token ids, leading dimensions
                broadcastable to the image tokens'.
            attentions: capture the decoder's attention of every layer.

        Returns:
            the scores ``(...)`` and, when ``attentions``, the decoder's
            attention with the phrase-predicting rows and the image columns.
        """
        lead = torch.broadcast_shapes(image_tokens.shape[:-2], phrase_ids.shape[:-1])
        features = image_tokens.expand(*lead, *image_tokens.shape[-2:]).reshape(
            -1, *image_tokens.shape[-2:]
        )
        ids = phrase_ids.expand(*lead, phrase_ids.shape[-1]).reshape(-1, phrase_ids.shape[-1])
        seq = self.sequences(ids)
        length = ids.shape[1]
        embed = self.model.get_input_embeddings()
        safe = seq.input_ids.masked_fill(seq.input_ids >= embed.num_embeddings, 0)
        inputs = embed(safe)
        placeholders = torch.zeros_like(seq.input_ids, dtype=torch.bool)
        placeholders[:, seq.image_positions] = True
        inputs = inputs.masked_scatter(placeholders[..., None], features.to(inputs.dtype))
        kwargs = {"use_cache": False}
        if seq.token_type_ids is not None:
            kwargs["token_type_ids"] = seq.token_type_ids
        if "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = length + 1
        captured: list[Tensor] = []
        taps = [(layer.self_attn, "output", lambda out: captured.append(out[1]))
                for layer in self.decoder_layers()]
        with hooked(taps if attentions else []):
            out = self.model(inputs_embeds=inputs, attention_mask=seq.attention_mask, **kwargs)
        logits = out.logits[:, -(length + 1):-1].float()
        token_logp = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
        score = (token_logp * seq.phrase_mask).sum(-1).view(lead)
        if not attentions:
            return TargetPass(score)
        if any(a is None for a in captured):
            raise RuntimeError(
                "the decoder returned no attention probabilities (a fused attention path is "
                "active); trace inside adapter.explaining(), which switches to eager attention"
            )
        query_mask = torch.zeros_like(seq.attention_mask, dtype=torch.bool)
        query_mask[:, -(length + 1):-1] = seq.phrase_mask.bool()
        cells = seq.image_positions[self.num_image_tokens - self.image_grid[0] * self.image_grid[1]:]
        return TargetPass(score, captured, query_mask, cells, self.image_grid)

    def generate(self, images: Tensor, max_new_tokens: int = 64) -> list[str]:
        r"""The model's greedy report for each image after the prompt.

        Args:
            images: ``(B, C, H, W)`` pixel values.
            max_new_tokens: the longest report, in tokens.

        Returns:
            list of str: one decoded report per image (special tokens dropped).

        Raises:
            ValueError: no tokenizer is known to decode the report.
        """
        if self.tokenizer is None:
            raise ValueError("generating a report needs the model's tokenizer to decode it; "
                             "pass the processor to the explainer")
        prefix = torch.tensor([self.prefix_ids()], device=images.device)
        kwargs = {}
        types = self.token_types(prefix[0], 0)
        if types is not None:
            kwargs["token_type_ids"] = types.expand(images.shape[0], -1)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=prefix.expand(images.shape[0], -1), pixel_values=images,
                attention_mask=torch.ones_like(prefix).expand(images.shape[0], -1),
                max_new_tokens=max_new_tokens, do_sample=False, **kwargs,
            )
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip()
                for row in out[:, prefix.shape[1]:].tolist()]

    def decoder_layers(self) -> list[nn.Module]:
        """The decoder's layers, input to output."""
        return list(self.model.get_decoder().layers)

    @property
    def first_read_token(self) -> int:
        r"""The first of the last block's tokens the projector reads (default:
        the first patch; the class token, where there is one, is dropped)."""
        return self.num_prefix_tokens

    def readout_tokens(self, tokens: Tensor) -> Tensor:
        r"""Uniform weights on the vision tokens the projector reads."""
        weights = torch.zeros(tokens.shape[:2], device=tokens.device, dtype=tokens.dtype)
        weights[:, self.first_read_token:] = 1.0
        return weights / weights.sum(-1, keepdim=True)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """``(h, w)`` patch grid of the vision tower at its input size."""
        (h, w), (ph, pw) = self.image_size, self.patch_size
        return h // ph, w // pw

    def _grid_from_tokens(self, n_patches: int) -> tuple[int, int]:
        return self.patch_grid

    @contextlib.contextmanager
    def attention_exposed(self) -> Iterator[None]:
        r"""Eager attention in every tower (vision and decoder) for the call."""
        configs = {id(m.config): m.config for m in self.model.modules()
                   if hasattr(getattr(m, "config", None), "_attn_implementation")}
        previous = {key: config._attn_implementation for key, config in configs.items()}
        try:
            for config in configs.values():
                config._attn_implementation = "eager"
            yield
        finally:
            for key, config in configs.items():
                config._attn_implementation = previous[key]
