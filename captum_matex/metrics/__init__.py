r"""Metrics on batched torch tensors, grouped like Quantus.

* :mod:`~captum_matex.metrics.localisation`: agreement of maps with boxes
  (pointing game, energy pointing game, mIoU, CNR, pixel AUROC, top-k
  precision).
* :mod:`~captum_matex.metrics.faithfulness`: does the score react where the
  map says (M2IB confidence drop / increase, deletion / insertion AUC,
  Captum's infidelity and max-sensitivity).
* :mod:`~captum_matex.metrics.sanity`: model-parameter randomisation and
  prompt sensitivity.
* :mod:`~captum_matex.metrics.robustness`: the scores of the benchmark's
  robustness splits (empty-side peak, two-finding discrimination).

Each metric returns one value per sample, ``(B,)``. Its score direction,
category and range are in :data:`METRICS` (name to
:class:`~captum_matex.registry.MetricInfo`), the built-in table of
:data:`captum_matex.registry.metrics`.
"""

from captum_matex.metrics.faithfulness import (
    confidence_drop,
    confidence_drop_increase,
    confidence_increase,
    deletion_auc,
    gaussian_blur,
    infidelity,
    insertion_auc,
    perturbation_curve,
    sensitivity_max,
)
from captum_matex.metrics.localisation import (
    MIOU_THRESHOLDS,
    boxes_to_mask,
    cnr,
    energy_pointing_game,
    miou,
    minmax_normalize,
    pixel_auroc,
    pointing_game,
    top_k_precision,
)
from captum_matex.metrics.registry import METRICS, MetricInfo
from captum_matex.metrics.robustness import discrimination, empty_side_peak
from captum_matex.metrics.sanity import (
    prompt_sensitivity,
    randomisation_spearman,
    randomized_model,
    spearman,
)
from captum_matex.phrases import swap_laterality

__all__ = [
    "METRICS",
    "MIOU_THRESHOLDS",
    "MetricInfo",
    "boxes_to_mask",
    "cnr",
    "confidence_drop",
    "confidence_drop_increase",
    "confidence_increase",
    "deletion_auc",
    "discrimination",
    "empty_side_peak",
    "energy_pointing_game",
    "gaussian_blur",
    "infidelity",
    "insertion_auc",
    "miou",
    "minmax_normalize",
    "perturbation_curve",
    "pixel_auroc",
    "pointing_game",
    "prompt_sensitivity",
    "randomisation_spearman",
    "randomized_model",
    "sensitivity_max",
    "spearman",
    "swap_laterality",
    "top_k_precision",
]
