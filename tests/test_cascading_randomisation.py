"""benchmarks/cascading_randomisation.py on the embedded phantom CLIP, two pairs."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cascading_randomisation.py"


def test_the_cascade_separates_a_model_free_map_from_one_that_reads_the_weights(
    tmp_path, monkeypatch
):
    out = tmp_path / "cascade"
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "2", "--batch-size", "2",
                                      "--methods", "matex_no_anatomy,prior_only",
                                      "--out", str(out)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    report = json.loads((out / "cascade.json").read_text())
    assert report["pairs"] == 2 and report["blocks"] == 4
    stages = ["top 1", "top 2", "top 3", "top 4", "full"]
    for name in ("matex_no_anatomy", "prior_only"):
        assert [r["stage"] for r in report["results"][name]] == stages
    # the prior never sees the model: identical maps at every stage (Spearman of equal
    # rank vectors, 1 up to the rounding of one Pearson correlation)
    assert [r["mean"] for r in report["results"]["prior_only"]] == pytest.approx([1.0] * 5, abs=1e-6)
    # the model's evidence changes once every block is re-initialised
    by_stage = {r["stage"]: r["mean"] for r in report["results"]["matex_no_anatomy"]}
    assert by_stage["top 4"] < 0.6 and by_stage["full"] < 0.6, by_stage
    assert (out / "cascade.png").stat().st_size > 0
    assert "| prior_only |" in (out / "cascade.md").read_text()
