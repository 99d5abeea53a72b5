r"""Comparison methods that explain the same model and the same score as MATEX.

Every class here is a Captum attribution with MATEX's call signature,
``attribute(images, additional_forward_args=(text,), output="image")``, and
its output contract: non-negative, finite ``(B, C, H, W)`` maps on the
input's device, batched, with the model left as it came in. Each is an
:class:`~captum_matex.explainer.Explainer` and takes its keyword arguments
(``sign``, ``normalize``, ``eval_mode``) besides its own. Methods are
registered by name so benchmarks and the command line pick them by string:

    >>> from captum_matex import baselines
    >>> baselines.available()[:3]
    ['chefer', 'feature_ablation', 'grad_eclip']
    >>> explainer = baselines.get("m2ib")(model, processor)

MATEX itself is registered as ``"matex"``. These three functions are the
method half of :mod:`captum_matex.registry`, which also lists methods that
installed packages add through the ``captum_matex.methods`` entry points.
"""

from captum_matex.baselines._captum import CaptumBaseline, PerturbationBaseline
from captum_matex.baselines._registry import available, get, register
from captum_matex.baselines.llm_attribution import CaptumLLMImageMask, grid_segments
from captum_matex.baselines.chefer import CheferGradRollout
from captum_matex.baselines.feature_ablation import FeatureAblation, patch_feature_mask
from captum_matex.baselines.grad_eclip import GradECLIP
from captum_matex.baselines.gradcam import ViTGradCAM
from captum_matex.baselines.input_x_gradient import InputXGradient
from captum_matex.baselines.integrated_gradients import IntegratedGradients
from captum_matex.baselines.layer_gradcam import LayerGradCam, TokenGrid
from captum_matex.baselines.legrad import LeGrad
from captum_matex.baselines.m2ib import M2IB
from captum_matex.baselines.occlusion import Occlusion
from captum_matex.baselines.patch_text import PatchTextSimilarity
from captum_matex.baselines.prior_only import AnatomyPriorOnly
from captum_matex.baselines.rollout import AttentionRollout
from captum_matex.baselines.saliency import Saliency
from captum_matex.baselines.smoothgrad import SmoothGrad
from captum_matex.matex import MATEX

register("matex")(MATEX)

from captum_matex.baselines.matex_ablations import (  # noqa: E402  (registers after MATEX)
    MATEXNoAnatomy,
    MATEXNoConsistency,
    MATEXWithDecoderPrior,
    MATEXNoRollout,
    MATEXWithTextPrior,
)

__all__ = [
    "AnatomyPriorOnly",
    "AttentionRollout",
    "CaptumBaseline",
    "CaptumLLMImageMask",
    "CheferGradRollout",
    "FeatureAblation",
    "GradECLIP",
    "InputXGradient",
    "IntegratedGradients",
    "LayerGradCam",
    "LeGrad",
    "M2IB",
    "MATEXNoAnatomy",
    "MATEXNoConsistency",
    "MATEXWithDecoderPrior",
    "MATEXNoRollout",
    "MATEXWithTextPrior",
    "Occlusion",
    "PerturbationBaseline",
    "PatchTextSimilarity",
    "Saliency",
    "SmoothGrad",
    "TokenGrid",
    "ViTGradCAM",
    "available",
    "get",
    "grid_segments",
    "patch_feature_mask",
    "register",
]
