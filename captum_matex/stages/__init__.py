"""MATEX's stages, each a small object with one job, passed to :class:`~captum_matex.MATEX`."""

from captum_matex.stages.anatomy import (
    ATLAS_REGIONS,
    AnatomicalPrior,
    ChestAtlas,
    PhraseAnatomy,
    parse_phrase,
)
from captum_matex.stages.attention import GradWeightedAttention
from captum_matex.stages.basins import EvidenceBasins, evidence_basins
from captum_matex.stages.consistency import ConsistencyResult, LayerConsistency, weigh_by_agreement
from captum_matex.stages.decoder_prior import DecoderAttentionPrior
from captum_matex.stages.fusion import Fusion
from captum_matex.stages.gate import PriorGate
from captum_matex.stages.propagation import FeatureAffinity
from captum_matex.stages.protocols import (
    AnatomicalPriorStage,
    AttentionStage,
    ConsistencyStage,
    DecoderPriorStage,
    FusionStage,
    PropagationStage,
    RegistrationStage,
    RolloutStage,
    TextPriorStage,
)
from captum_matex.stages.region_smoothing import RegionSmoothing
from captum_matex.stages.registration import AtlasRegistration, default_registration, lung_fields
from captum_matex.stages.rollout import MultiScaleRollout, rollout
from captum_matex.stages.text_prior import PatchTextPrior

__all__ = [
    "ATLAS_REGIONS",
    "AnatomicalPrior",
    "AnatomicalPriorStage",
    "AtlasRegistration",
    "AttentionStage",
    "ChestAtlas",
    "ConsistencyResult",
    "ConsistencyStage",
    "DecoderAttentionPrior",
    "DecoderPriorStage",
    "EvidenceBasins",
    "FeatureAffinity",
    "Fusion",
    "FusionStage",
    "GradWeightedAttention",
    "LayerConsistency",
    "MultiScaleRollout",
    "PatchTextPrior",
    "PhraseAnatomy",
    "PriorGate",
    "PropagationStage",
    "RegionSmoothing",
    "RegistrationStage",
    "RolloutStage",
    "TextPriorStage",
    "default_registration",
    "evidence_basins",
    "lung_fields",
    "parse_phrase",
    "rollout",
    "weigh_by_agreement",
]
