"""MATEX with one stage removed (or the optional text prior added), registered by
name for ablation studies."""

from __future__ import annotations

from torch import nn

from captum_matex.adapters import VisionLanguageAdapter
from captum_matex.baselines._registry import register
from captum_matex.matex import MATEX
from captum_matex.stages.basins import EvidenceBasins
from captum_matex.stages.decoder_prior import DecoderAttentionPrior
from captum_matex.stages.region_smoothing import RegionSmoothing
from captum_matex.stages.text_prior import PatchTextPrior


class _Ablation(MATEX):
    removed: str = ""
    title: str = ""

    def __init__(self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, **stages) -> None:
        super().__init__(model, tokenizer, **{self.removed: None}, **stages)

    @classmethod
    def get_name(cls) -> str:
        """The ablation's name, e.g. ``"MATEX w/o anatomical prior"``."""
        return f"MATEX w/o {cls.title}"


@register("matex_no_anatomy")
class MATEXNoAnatomy(_Ablation):
    r"""MATEX without the anatomical prior: the row that shows how much of
    MATEX's grounding comes from the phrase's location words."""

    removed, title = "anatomical_prior", "anatomical prior"


@register("matex_with_decoder_prior")
class MATEXWithDecoderPrior(MATEX):
    r"""MATEX on a generative model with the decoder's attention prior
    (:class:`~captum_matex.stages.DecoderAttentionPrior`) added to the default
    stages: the row that shows what the text-guided prior read from the
    decoder would change (MATEX leaves it out by default, as measured)."""

    requires = frozenset({"decoder"})

    def __init__(self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, **stages) -> None:
        stages.setdefault("decoder_prior", DecoderAttentionPrior())
        super().__init__(model, tokenizer, **stages)

    @classmethod
    def get_name(cls) -> str:
        """``"MATEX + decoder prior"``."""
        return "MATEX + decoder prior"


@register("matex_no_rollout")
class MATEXNoRollout(_Ablation):
    r"""MATEX without the multi-scale rollout (consistency map only)."""

    removed, title = "rollout", "multi-scale rollout"


@register("matex_no_consistency")
class MATEXNoConsistency(_Ablation):
    r"""MATEX without layer-consistency weighting (rollouts only)."""

    removed, title = "consistency", "layer consistency"


@register("matex_no_propagation")
class MATEXNoPropagation(_Ablation):
    r"""MATEX without spreading the evidence over the model's own patch
    affinities (:class:`~captum_matex.stages.FeatureAffinity`)."""

    requires = frozenset({"contrastive embedding"})  # off by default on generative models
    removed, title = "propagation", "feature propagation"


@register("matex_with_text_prior")
class MATEXWithTextPrior(MATEX):
    r"""MATEX with the model-derived patch-text prior
    (:class:`~captum_matex.stages.PatchTextPrior`) added to the default stages:
    the row that shows what the prior MATEX leaves out by default would change."""

    requires = frozenset({"contrastive embedding"})

    def __init__(self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, **stages) -> None:
        stages.setdefault("text_prior", PatchTextPrior())
        super().__init__(model, tokenizer, **stages)

    @classmethod
    def get_name(cls) -> str:
        """``"MATEX + text prior"``."""
        return "MATEX + text prior"


class _FusionOption(MATEX):
    r"""MATEX whose default fusion gains one opt-in part (a fusion passed in is
    used as given)."""

    part: str = ""
    title: str = ""
    option: type = object

    def __init__(self, model: nn.Module | VisionLanguageAdapter, tokenizer=None, **stages) -> None:
        super().__init__(model, tokenizer, **stages)
        if "fusion" not in stages and getattr(self.fusion, self.part) is None:
            setattr(self.fusion, self.part, self.option())

    @classmethod
    def get_name(cls) -> str:
        """The variant's name, e.g. ``"MATEX + region smoothing"``."""
        return f"MATEX + {cls.title}"


@register("matex_region_smoothing")
class MATEXRegionSmoothing(_FusionOption):
    r"""MATEX whose default fusion smooths the evidence within the anatomical
    prior's regions (:class:`~captum_matex.stages.RegionSmoothing`) whatever
    the atlas: the row that shows what that step changes with a drawn atlas,
    where MATEX leaves it out (with a fitted atlas it is MATEX itself:
    :data:`~captum_matex.matex.REGION_SMOOTHING`)."""

    part, title, option = "region_smoothing", "region smoothing", RegionSmoothing


@register("matex_evidence_basins")
class MATEXEvidenceBasins(_FusionOption):
    r"""MATEX whose default fusion spreads each prior over the evidence's
    basins (:class:`~captum_matex.stages.EvidenceBasins`): the priors scale
    whole regions of the model's evidence and reshape none. The row that
    shows what that changes with a fitted atlas; with a drawn atlas it is
    MATEX itself (:func:`~captum_matex.matex.drawn_atlas`)."""

    part, title, option = "basins", "evidence basins", EvidenceBasins
