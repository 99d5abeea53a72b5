"""Families whose image embedding is an attention-pooling probe (SigLIP's ``map`` head)."""

from __future__ import annotations

import functools

from torch import Tensor

from captum_matex.targets import AttentionProbe, Readout

#: why such a family has no class token, for refusals of methods that need one
NO_CLASS_TOKEN = (
    "pool with an attention probe over all patch tokens (the 'map' head), not a class token"
)


class AttentionPooled:
    r"""Mixin for an adapter whose image embedding is a learnt probe attending
    over the last block's tokens: put it before the adapter base class and
    implement :meth:`probe_pool`.

    It supplies the readout (:class:`~captum_matex.targets.AttentionProbe`),
    the probe's attention for the trace (``readout_attention``, the last step
    of rollout), the probe as the readout of intermediate blocks (LeGrad), and
    the capabilities: no class token, so methods that need one are refused
    with :data:`NO_CLASS_TOKEN` as the reason.
    """

    block_readout: Readout | None = None
    capabilities: frozenset[str] = frozenset({"contrastive embedding"})
    missing: dict[str, str] = {"class token": NO_CLASS_TOKEN}

    def probe_pool(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        r"""The pooling head on last-block tokens ``(B, T, D)``, computed with
        its probabilities materialised: the joint-space embedding ``(B, E)``
        and the probe's ``(B, H, Q, T)`` attention, the very tensor multiplied
        with the values (so its gradient is the score's)."""
        raise NotImplementedError(f"{type(self).__name__} must implement probe_pool()")

    @functools.cached_property
    def readout(self) -> AttentionProbe:
        """The probe, as the readout of the family's image embedding."""
        return AttentionProbe(self.probe_pool)

    def pooled_embedding(
        self, tokens: Tensor, want_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        """The probe's embedding and, if wanted, its attention (see :meth:`probe_pool`)."""
        embedding, attention = self.probe_pool(tokens)
        return embedding, attention if want_attention else None

    def image_embedding(self, tokens: Tensor, readout: Readout | None = None) -> Tensor:
        """The probe's embedding of ``tokens``, or another readout's, projected."""
        if readout is None or isinstance(readout, AttentionProbe):
            return self.probe_pool(tokens)[0]
        return super().image_embedding(tokens, readout)  # type: ignore[misc]
