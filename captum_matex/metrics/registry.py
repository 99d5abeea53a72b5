r"""The built-in metrics with their score direction, as Quantus declares it.

:data:`METRICS` is the built-in table of :data:`captum_matex.registry.metrics`
(the same dict: an entry added here is found by the registry and the
benchmark); installed packages add metrics through the
``captum_matex.metrics`` entry points instead.

    >>> from captum_matex.metrics import METRICS
    >>> info = METRICS["cnr"]
    >>> info.higher_is_better, info.category
    (True, 'localisation')
    >>> scores = info.fn(maps, masks)
"""

from __future__ import annotations

from captum_matex.metrics import faithfulness, localisation, robustness, sanity
from captum_matex.registry import MetricInfo, metrics

__all__ = ["METRICS"]  # MetricInfo stays importable here; it is documented in the registry

_INF = float("inf")

#: Name to :class:`~captum_matex.registry.MetricInfo`; the registry's built-in table.
METRICS: dict[str, MetricInfo] = metrics.table
METRICS.update({
    "pointing_game": MetricInfo(
        localisation.pointing_game, True, "localisation", (0.0, 1.0),
        "map maximum inside the boxes"),
    "energy_pointing_game": MetricInfo(
        localisation.energy_pointing_game, True, "localisation", (0.0, 1.0),
        "share of the (clipped) map mass inside the boxes"),
    "miou": MetricInfo(
        localisation.miou, True, "localisation", (0.0, 1.0),
        "IoU of min-max map > t and boxes, mean over t in 0.1..0.5"),
    "cnr": MetricInfo(
        localisation.cnr, True, "localisation", (0.0, _INF),
        "|mu_in - mu_out| / sqrt(var_in + var_out) (BioViL)"),
    "pixel_auroc": MetricInfo(
        localisation.pixel_auroc, True, "localisation", (0.0, 1.0),
        "rank AUROC of the map as a pixel classifier of the boxes"),
    "top_k_precision": MetricInfo(
        localisation.top_k_precision, True, "localisation", (0.0, 1.0),
        "share of the top 10% pixels inside the boxes"),
    "empty_side_peak": MetricInfo(
        robustness.empty_side_peak, False, "localisation", (0.0, 1.0),
        "map maximum on the stated, empty side (side_swap split)", benchmark="optional"),
    "discrimination": MetricInfo(
        robustness.discrimination, True, "localisation", (0.0, 1.0),
        "both phrases of a two-finding film peak in their own boxes (two_finding split; "
        "from the rows' pointing game)", benchmark="unsupported"),
    "confidence_drop": MetricInfo(
        faithfulness.confidence_drop, False, "faithfulness", (0.0, _INF),
        "100 * max(0, s(x) - s(x * M)) (M2IB)", maps="minmax"),
    "confidence_increase": MetricInfo(
        faithfulness.confidence_increase, True, "faithfulness", (0.0, 100.0),
        "100 * 1[s(x * M) > s(x)] (M2IB)", maps="minmax"),
    "deletion_auc": MetricInfo(
        faithfulness.deletion_auc, False, "faithfulness", (-_INF, _INF),
        "AUC of the score as top pixels are removed (RISE)"),
    "insertion_auc": MetricInfo(
        faithfulness.insertion_auc, True, "faithfulness", (-_INF, _INF),
        "AUC of the score as top pixels are inserted (RISE)"),
    "infidelity": MetricInfo(
        faithfulness.infidelity, False, "faithfulness", (0.0, _INF),
        "Captum infidelity (Yeh et al. 2019)", benchmark="optional"),
    "sensitivity_max": MetricInfo(
        faithfulness.sensitivity_max, False, "faithfulness", (0.0, _INF),
        "Captum max-sensitivity (Yeh et al. 2019)", benchmark="unsupported"),
    "randomisation_spearman": MetricInfo(
        sanity.randomisation_spearman, False, "sanity", (-1.0, 1.0),
        "Spearman of maps, trained vs randomised model (Adebayo et al. 2018)",
        compares="randomised"),
    "prompt_sensitivity": MetricInfo(
        sanity.prompt_sensitivity, True, "sanity", (0.0, 2.0),
        "1 - Spearman of maps for the phrase and its swapped version", compares="swapped"),
})
