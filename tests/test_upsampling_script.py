"""benchmarks/upsampling.py on the embedded phantom CLIP, a few validation pairs."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "upsampling.py"


def test_one_line_per_method_and_upsampling(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "4", "--batch-size", "4", "--blur", "4"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert {(l["method"], l["upsampling"]) for l in lines} == {
        (m, u) for m in ("matex", "matex_no_anatomy", "prior_only")
        for u in ("bilinear", "bicubic", "bilinear, blur 4 px")}
    for line in lines:
        assert line["pairs"] == 4 and 0 <= line["pointing_game"] <= 1 and 0 <= line["miou"] <= 1
        assert ("deletion_auc" in line) == (line["method"] == "matex")
    # the same patch maps, only resampled: the three upsamplings score differently, the
    # prior alone and MATEX differ too
    matex = {l["upsampling"]: l for l in lines if l["method"] == "matex"}
    assert len({round(l["miou"], 4) for l in matex.values()}) == 3
    assert len({round(l["deletion_auc"], 4) for l in matex.values()}) == 3
