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
attention-pooling readout for a ``map`` head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch.nn.functional as F
from torch import Tensor


class Target(ABC):
    r"""The explained scalar of image and text embeddings.

    Subclasses implement :meth:`__call__`; it must broadcast over leading
    dimensions, so the same target scores ``(B, E)`` pairs, ``(B, K, E)``
    phrases per image and ``(B, N, E)`` patch embeddings (dense maps).
    """

    #: name used in tables and error messages
    name: str = "target"

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
