r"""Comparative studies: run methods on a data set, score them, report.

* :mod:`~captum_matex.evaluation.runner`: :func:`run_benchmark` (``matex
  benchmark``), resumable and sharded over ``torchrun`` workers.
* :mod:`~captum_matex.evaluation.results`: the checksummed, append-only
  results log.
* :mod:`~captum_matex.evaluation.robustness`: the phantom's held-out
  robustness splits (geometry, paraphrase, side swap, markers, two findings).
* :mod:`~captum_matex.evaluation.report`: summaries with bootstrap
  intervals, Markdown tables and figures.
"""

from captum_matex.evaluation.results import ResultsFileError, ResultsLog
from captum_matex.evaluation.robustness import SPLITS, RobustnessSplit
from captum_matex.evaluation.runner import (
    DEFAULT_METHODS,
    BenchmarkConfig,
    BenchmarkError,
    run_benchmark,
)
from captum_matex.evaluation.samples import EvalSample, mscxr_samples, phantom_samples

__all__ = [
    "DEFAULT_METHODS",
    "SPLITS",
    "BenchmarkConfig",
    "BenchmarkError",
    "EvalSample",
    "ResultsFileError",
    "ResultsLog",
    "RobustnessSplit",
    "mscxr_samples",
    "phantom_samples",
    "run_benchmark",
]
