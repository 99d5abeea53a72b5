"""benchmarks/prior_ceiling.py: the grown box masks and the rows."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_ceiling.py"


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT))


def test_a_mask_grows_to_every_patch_it_touches(script):
    mask = torch.zeros(1, 8, 8)
    mask[0, 1, 3:5] = 1  # touches patches (0, 1) and (0, 2) of a 4 x 4 grid of 2 x 2 pixels
    grown = script["whole_patches"](mask, (4, 4))
    expected = torch.zeros(1, 8, 8)
    expected[0, 0:2, 2:6] = 1
    assert torch.equal(grown, expected)


def test_one_line_per_row_with_its_paired_difference(monkeypatch, capsys, script):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "6", "--batch-size", "6"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [line["row"] for line in lines] == list(script["ROWS"])
    reference = lines[0]
    assert "cnr_diff" not in reference and all(line["pairs"] == 6 for line in lines)
    for line in lines[1:]:
        for name in script["METRICS"]:
            mean, low, high = line[f"{name}_diff"]
            assert low <= mean <= high
            # rounded to 3 places on both sides of the difference
            assert mean == pytest.approx(line[name] - reference[name], abs=2e-3)
