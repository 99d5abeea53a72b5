r"""The call signature of each MATEX stage, as :class:`typing.Protocol` classes.

:class:`~captum_matex.MATEX` takes any object that has the stage's methods,
so a new variant needs no subclassing and no edit of MATEX: a user's own
stage type-checks against these protocols (and ``isinstance`` checks them at
run time, by method names)::

    class LastBlockOnly:
        def __call__(self, block_relevance, num_prefix_tokens):
            return block_relevance[:, -1:, 0, num_prefix_tokens:]

        def depths(self, num_layers):
            return [1]

    assert isinstance(LastBlockOnly(), RolloutStage)
    MATEX(model, processor, rollout=LastBlockOnly())

Shapes: ``B`` samples, ``L`` blocks, ``H`` heads, ``T`` tokens, ``N``
patches (``h * w``), ``K`` rollout windows.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from captum_matex.stages.consistency import ConsistencyResult
from captum_matex.targets import TargetPass


@runtime_checkable
class AttentionStage(Protocol):
    r"""Stage 1: attention and its gradient of one block -> relevance."""

    def block(self, attention: Tensor, gradient: Tensor) -> Tensor:
        r"""``(B, H, T, T)`` attention probabilities and the score's gradient
        with respect to them -> ``(B, T, T)`` non-negative relevance."""
        ...


@runtime_checkable
class RolloutStage(Protocol):
    r"""Stage 2: block relevances -> maps rolled out over depth windows."""

    def __call__(self, block_relevance: Tensor, num_prefix_tokens: int, **readout: Tensor) -> Tensor:
        r"""``(B, L, T, T)`` relevances -> ``(B, K, N)`` patch maps (the CLS row).

        For a model read by an attention-pooling probe (SigLIP), MATEX also
        passes ``readout=``, the ``(B, T)`` weights with which the probe reads
        the last block's tokens, which take the place of the CLS row; a stage
        without that keyword serves class-token models only."""
        ...

    def depths(self, num_layers: int) -> list[int]:
        r"""The number of blocks in each of the ``K`` windows, for diagnostics."""
        ...


@runtime_checkable
class ConsistencyStage(Protocol):
    r"""Stage 3: block relevances -> a map weighted by how much blocks agree."""

    def __call__(
        self, block_relevance: Tensor, num_prefix_tokens: int, **readout: Tensor
    ) -> ConsistencyResult:
        r"""``(B, L, T, T)`` relevances -> map ``(B, N)``, weights ``(B, L')``,
        agreement and per-block maps (``readout=`` as for the rollout stage)."""
        ...


@runtime_checkable
class PropagationStage(Protocol):
    r"""Stage 3': evidence maps spread over the model's own patch features."""

    def __call__(self, maps: Tensor, patch_embeddings: Tensor, grid: tuple[int, int]) -> Tensor:
        r"""``(B, N)`` or ``(B, K, N)`` maps and ``(B, N, E)`` last-block patch
        embeddings on an ``(h, w)`` grid -> maps of the same shape."""
        ...


@runtime_checkable
class TextPriorStage(Protocol):
    r"""Stage 4a: a prior from the model's own patch-text similarity."""

    def __call__(
        self, patch_embeddings: Tensor, text_embeddings: Tensor, grid: tuple[int, int]
    ) -> Tensor:
        r"""``(B, N, E)`` projected patch tokens and ``(B, E)`` text embeddings
        -> ``(B, N)`` prior in [0, 1]."""
        ...


@runtime_checkable
class AnatomicalPriorStage(Protocol):
    r"""Stage 4b: a prior from the phrase's words (or the user's region masks)."""

    def __call__(self, phrases: Sequence[str | None], grid: tuple[int, int],
                 masks: Tensor | Sequence[Tensor | None] | None = None,
                 device: torch.device | str | None = None) -> Tensor:
        r"""One phrase (or ``None``: no words) per sample -> ``(B, N)`` prior in [0, 1]."""
        ...


@runtime_checkable
class RegistrationStage(Protocol):
    r"""Stage 4b': the anatomical prior moved onto each film's own anatomy."""

    def __call__(self, prior: Tensor, images: Tensor, grid: tuple[int, int]) -> Tensor:
        r"""``(B, N)`` atlas prior and the ``(B, C, H, W)`` films -> ``(B, N)`` prior
        in [0, 1] registered to each film."""
        ...


@runtime_checkable
class DecoderPriorStage(Protocol):
    r"""Stage 4c: a generative model's prior from its decoder's attention."""

    def __call__(
        self, decoder_relevance: Tensor, target_pass: TargetPass, grid: tuple[int, int]
    ) -> Tensor:
        r"""``(M, L_d, S, S)`` reduced decoder attention of the pass
        ``target_pass`` -> ``(M, N)`` prior in [0, 1] on the patch grid."""
        ...


@runtime_checkable
class FusionStage(Protocol):
    r"""Stage 5: the model's evidence, re-weighted (never created) by the priors."""

    def evidence(self, rollouts: Tensor | None, consistency: Tensor | None) -> Tensor:
        r"""``(B, K, N)`` rollouts and a ``(B, N)`` consistency map -> ``(B, N)`` evidence."""
        ...

    def __call__(self, rollouts: Tensor | None, consistency: Tensor | None,
                 priors: Mapping[str, Tensor], grid: tuple[int, int] | None = None,
                 features: Tensor | None = None) -> Tensor:
        r"""Evidence times the priors -> ``(B, N)`` map in [0, 1]; ``features``
        are the ``(B, N, E)`` patch embeddings (a fusion may ignore them)."""
        ...


#: MATEX's argument for each stage -> the protocol it must follow
STAGE_PROTOCOLS: dict[str, type] = {
    "attention": AttentionStage,
    "rollout": RolloutStage,
    "consistency": ConsistencyStage,
    "propagation": PropagationStage,
    "text_prior": TextPriorStage,
    "anatomical_prior": AnatomicalPriorStage,
    "registration": RegistrationStage,
    "decoder_prior": DecoderPriorStage,
    "fusion": FusionStage,
}


def protocol_methods(protocol: type) -> str:
    r"""The methods a stage needs to follow ``protocol``, e.g. ``"__call__() and depths()"``."""
    names = [n for n in vars(protocol) if n == "__call__" or not n.startswith("_")]
    return " and ".join(f"{n}()" for n in names)
