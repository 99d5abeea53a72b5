"""benchmarks/randomisation_draws.py on the embedded phantom CLIP, a few test pairs."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "randomisation_draws.py"


def test_one_line_per_draw_and_a_summary_per_method(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "4", "--batch-size", "4",
                                      "--draws", "0,1", "--methods", "matex,prior_only"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [(l["method"], l.get("draw")) for l in lines] == [
        ("matex", 0), ("matex", 1), ("matex", None), ("prior_only", 0), ("prior_only", 1),
        ("prior_only", None)]
    per_draw = {(l["method"], l["draw"]): l for l in lines if "draw" in l}
    for line in per_draw.values():
        low, high = line["ci95"]
        assert -1 <= low <= line["spearman"] <= high <= 1
    # the atlas alone ignores the model: every draw leaves its map as it was
    assert per_draw["prior_only", 0]["spearman"] == pytest.approx(1.0, abs=1e-6)
    # MATEX reads the weights: two draws, two different randomised models and scores
    assert per_draw["matex", 0]["spearman"] != per_draw["matex", 1]["spearman"]
    summary = lines[2]
    draws = [per_draw["matex", d]["spearman"] for d in (0, 1)]
    # each value is rounded to 3 decimals before and after averaging
    assert summary["mean_over_draws"] == pytest.approx(sum(draws) / 2, abs=1e-3)
    assert summary["range"] == [min(draws), max(draws)]
