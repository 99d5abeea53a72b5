"""benchmarks/cnr_components.py: the parts of the CNR, on a made-up map and on phantom films."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cnr_components.py"


def test_the_parts_make_up_the_cnr_of_the_normalised_map():
    components = runpy.run_path(str(SCRIPT))["components"]
    heat = torch.zeros(4, 4)
    heat[:2, :2] = torch.tensor([[3.0, 5.0], [5.0, 5.0]])  # inside: 3, 5, 5, 5
    heat[3, 3] = 1.0  # outside: eleven zeros and a one
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    parts = components(heat, mask)
    # min-max normalised by 5: inside 0.6, 1, 1, 1; outside eleven 0 and one 0.2
    assert parts["mu_in"] == pytest.approx(0.9) and parts["mu_out"] == pytest.approx(0.2 / 12)
    assert parts["sd_in"] == pytest.approx(math.sqrt(0.03))
    assert parts["sd_out"] == pytest.approx(math.sqrt(0.04 / 12 - (0.2 / 12) ** 2))
    assert parts["cnr"] == pytest.approx(
        (parts["mu_in"] - parts["mu_out"]) / math.hypot(parts["sd_in"], parts["sd_out"]))


def test_the_shares_above_each_threshold_make_up_the_miou():
    components = runpy.run_path(str(SCRIPT))["components"]
    from captum_matex.metrics import miou

    heat = torch.zeros(4, 4)
    heat[:2, :2] = torch.tensor([[1.0, 0.45], [0.25, 0.0]])
    heat[3, 3] = 0.35
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    parts = components(heat, mask)
    # above 0.1: three box pixels and the outside one; above 0.3 two and it; above 0.4 two; 0.5 one
    assert [parts[f"box_{t}"] for t in (0.1, 0.2, 0.3, 0.4, 0.5)] == [0.75, 0.75, 0.5, 0.5, 0.25]
    assert [parts[f"map_{t}"] for t in (0.1, 0.2, 0.3, 0.4, 0.5)] == pytest.approx(
        [0.75, 0.75, 2 / 3, 1.0, 1.0])
    area = float(mask.sum())
    ious = []
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        hits = parts[f"box_{t}"] * area
        ious.append(hits / (hits / parts[f"map_{t}"] + area - hits))
    assert float(miou(heat[None], mask[None])[0]) == pytest.approx(sum(ious) / 5)


def test_one_line_per_finding_and_one_for_all(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "6", "--batch-size", "6",
                                      "--methods", "prior_only"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert lines[-1]["finding"] == "all" and lines[-1]["pairs"] == 6
    assert sum(l["pairs"] for l in lines[:-1]) == 6
    for line in lines:
        assert 0 <= line["mu_out"] < line["mu_in"] <= 1 and line["cnr"] > 0
        assert 0 < line["box_0.5"] <= line["box_0.1"] <= 1 and 0 < line["map_0.1"] <= 1
