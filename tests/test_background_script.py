"""benchmarks/background.py on the embedded phantom CLIP, a few validation pairs."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "background.py"


def test_one_line_per_weight_and_background(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "4", "--batch-size", "4",
                                      "--alpha", "0.625,0.875", "--background", "none,0.5"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [(l["alpha"], l["background"]) for l in lines] == [
        (0.625, None), (0.625, 0.5), (0.875, None), (0.875, 0.5)]
    for line in lines:
        assert line["pairs"] == 4 and 0 <= line["pointing_game"] <= 1 and 0 <= line["miou"] <= 1
        assert line["cnr"] > 0 and math.isfinite(line["deletion_auc"])
    # the same evidence with its lower half tied at zero: the deletion curve's order changes
    for alpha in (0.625, 0.875):
        kept, removed = (l["deletion_auc"] for l in lines if l["alpha"] == alpha)
        assert kept != removed
