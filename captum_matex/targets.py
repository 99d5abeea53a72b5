r"""What is explained (a *target*) and which vision tokens it reads (a *readout*).

Every method explains one scalar per image-phrase pair. The *target* turns an
image embedding and a text embedding into that scalar; the *readout* says
which of the image tower's output tokens make the image embedding. An adapter
pairs a default target and readout for its model family
(:attr:`~captum_matex.adapters.VisionLanguageAdapter.target`,
:attr:`~captum_matex.adapters.VisionLanguageAdapter.readout`); the adapter's
trace, :class:`~captum_matex.SimilarityForward`, MATEX and every baseline take
them from there, so the score is computed in exactly one place.

A new model family brings its own: a sigmoid-logit target for SigLIP, an
attention-pooling readout for a ``map`` head, the log-likelihood of a phrase
for a generative model (whose "image embeddings" are the image tokens its
projector hands to the decoder and whose "text" is the phrase's token ids).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import torch.nn.functional as F
from torch import Tensor


@dataclass
class TargetPass:
    r"""One evaluation of a target and what its own computation exposes.

    A dual encoder's target is a formula of two embeddings and exposes
    nothing; a generative model's runs its decoder, whose attention from the
    phrase's tokens to the image tokens is the text-guided evidence MATEX
    reads (:class:`~captum_matex.stages.DecoderAttentionPrior`).

    Attributes:
        score: the scores, ``(...)`` over the broadcast leading dimensions.
        attentions: one ``(M, H, S, S)`` attention tensor per decoder layer,
            attached to the graph (``M`` scored sequences: the leading
            dimensions flattened); empty when nothing was captured.
        query_mask: ``(M, S)`` the positions whose outputs predict the
            phrase's tokens, or ``None``.
        image_mask: ``(M, S)`` the positions of the image tokens that stand
            for patch-grid cells, or ``None``.
        image_grid: ``(h, w)`` grid of those image tokens, or ``None``.
    """

    score: Tensor
    attentions: list[Tensor] = field(default_factory=list)
    query_mask: Tensor | None = None
    image_mask: Tensor | None = None
    image_grid: tuple[int, int] | None = None


class Target(ABC):
    r"""The explained scalar of image and text embeddings.

    Subclasses implement :meth:`__call__`; it must broadcast over leading
    dimensions, so the same target scores ``(B, E)`` pairs, ``(B, K, E)``
    phrases per image and ``(B, N, E)`` patch embeddings (dense maps). A
    target whose computation exposes attention (a decoder's) also overrides
    :meth:`evaluate`.
    """

    #: name used in tables and error messages
    name: str = "target"

    def evaluate(
        self, image_embeddings: Tensor, text_embeddings: Tensor, attentions: bool = False
    ) -> TargetPass:
        r"""The scores and, when ``attentions``, the attention the target's own
        computation forms (none for a formula of two embeddings)."""
        return TargetPass(self(image_embeddings, text_embeddings))

    @abstractmethod
    def __call__(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        r"""
        Args:
            image_embeddings: ``(..., E)`` image (or patch) embeddings.
            text_embeddings: ``(..., E)`` text embeddings, broadcastable to them.

        Returns:
            ``(...)`` scores.
        """


class CosineSimilarity(Target):
    r"""CLIP's image-text score, :math:`\cos(f_I(x), f_T(t))` (the score M2IB explains)."""

    name = "cosine similarity"

    def __call__(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return F.cosine_similarity(image_embeddings, text_embeddings.to(image_embeddings), dim=-1)


class SigmoidLogit(Target):
    r"""SigLIP's image-text score, the pair's logit
    :math:`e^{t}\cos(f_I(x), f_T(t)) + b` with the model's own learnt
    temperature :math:`t` (``logit_scale``) and bias :math:`b` (``logit_bias``).

    The sigmoid of it is the model's probability that the pair matches;
    unlike CLIP's softmax, it is not normalised over other phrases, so the
    logit itself is the model's score of the pair.

    Args:
        logit_scale: the model's ``logit_scale`` parameter (read at call time,
            so later changes to the model are seen).
        logit_bias: the model's ``logit_bias`` parameter.
    """

    name = "sigmoid logit"

    def __init__(self, logit_scale: Tensor, logit_bias: Tensor) -> None:
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias

    def __call__(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        cosine = F.cosine_similarity(
            image_embeddings, text_embeddings.to(image_embeddings), dim=-1
        )
        scale = self.logit_scale.to(cosine).exp().squeeze()
        return cosine * scale + self.logit_bias.to(cosine).squeeze()


class PhraseLogLikelihood(Target):
    r"""A generative model's score of a phrase: the sum of the log-probabilities
    of its tokens given the image and the prompt (teacher forcing),
    :math:`\sum_j \log p(t_j \mid t_{<j}, x, \text{prompt})`.

    Its "image embeddings" are the ``(..., n, D)`` image tokens the model's
    projector hands to the decoder, its "text embeddings" the ``(..., L)``
    token ids of the phrase; :meth:`evaluate` also gives the decoder's
    attention.

    Args:
        decoder_pass: ``(image_tokens, phrase_ids, attentions) ->``
            :class:`TargetPass`, the adapter's run of the decoder.
    """

    name = "phrase log-likelihood"

    def __init__(self, decoder_pass: Callable[[Tensor, Tensor, bool], TargetPass]) -> None:
        self.decoder_pass = decoder_pass

    def __call__(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return self.decoder_pass(image_embeddings, text_embeddings, False).score

    def evaluate(
        self, image_embeddings: Tensor, text_embeddings: Tensor, attentions: bool = False
    ) -> TargetPass:
        return self.decoder_pass(image_embeddings, text_embeddings, attentions)


class Readout(ABC):
    r"""Which output tokens of the image tower make the image embedding.

    :meth:`__call__` pools the last block's tokens ``(B, T, D)`` into one
    token ``(B, D)``, which the adapter projects into the joint space.
    """

    #: name used in tables and error messages
    name: str = "readout"

    @abstractmethod
    def __call__(self, tokens: Tensor, num_prefix_tokens: int) -> Tensor:
        r"""
        Args:
            tokens: ``(B, T, D)`` tokens leaving a block.
            num_prefix_tokens: tokens before the patches.

        Returns:
            ``(B, D)`` pooled token.
        """


class ClassToken(Readout):
    r"""The class token (index 0) is the image embedding, as in CLIP."""

    name = "class token"

    def __call__(self, tokens: Tensor, num_prefix_tokens: int) -> Tensor:
        return tokens[:, 0]


class MeanTokens(Readout):
    r"""The mean of all tokens, as LeGrad reads intermediate blocks."""

    name = "mean of all tokens"

    def __call__(self, tokens: Tensor, num_prefix_tokens: int) -> Tensor:
        return tokens.mean(1)


class AttentionProbe(Readout):
    r"""A learned probe attends over all tokens and an MLP follows (SigLIP's
    ``map`` head, multi-head attention pooling).

    There is no class token: the image embedding reads every patch token,
    weighted by the probe's attention. Explainers read the probe's attention
    (:attr:`~captum_matex.adapters.VisionTrace.readout_attention`) as the
    last step of attention rollout.

    Args:
        pool: ``tokens (B, T, D) -> (embedding (B, E), probabilities (B, H, 1, T))``,
            the adapter's explicit computation of the head.
    """

    name = "attention-pooling probe"

    def __init__(self, pool: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
        self.pool = pool

    def __call__(self, tokens: Tensor, num_prefix_tokens: int) -> Tensor:
        return self.pool(tokens)[0]
