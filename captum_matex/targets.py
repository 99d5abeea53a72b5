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
