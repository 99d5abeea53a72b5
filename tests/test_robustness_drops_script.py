"""benchmarks/robustness_drops.py on two small studies of the embedded phantom."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from captum_matex.evaluation import BenchmarkConfig, run_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness_drops.py"


def test_drops_pair_each_split_film_with_its_untouched_film(tmp_path):
    for split in ("test", "geometry"):
        run_benchmark(BenchmarkConfig(split=split, limit=6, methods=["rollout", "prior_only"],
                                      sanity=False, faithfulness=False),
                      tmp_path / split, progress=False)
    script = runpy.run_path(str(SCRIPT))
    records = script["drops"](tmp_path, ["rollout", "prior_only"], "miou")
    assert [(r["method"], r["split"]) for r in records] == [("rollout", "geometry"),
                                                            ("prior_only", "geometry")]
    untouched = script["film_scores"](tmp_path / "test", "miou")
    moved = script["film_scores"](tmp_path / "geometry", "miou")
    assert set(untouched["rollout"]) == set(moved["rollout"])  # the same films, ids "0-<n>"
    for record in records:
        method = record["method"]
        films = sorted(untouched[method])
        differences = [untouched[method][f] - moved[method][f] for f in films]
        assert record["films"] == len(films) == 6
        assert record["drop"] == pytest.approx(np.mean(differences), abs=1e-12)
        assert record["test"] - record["split_value"] == pytest.approx(record["drop"], abs=1e-12)
        low, high = record["ci95"]
        assert low <= record["drop"] <= high
    # the films moved: the maps' overlap with the moved boxes is not the untouched one
    assert any(abs(r["drop"]) > 1e-3 for r in records)
