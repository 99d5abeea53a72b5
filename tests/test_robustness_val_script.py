"""benchmarks/robustness_val.py on the embedded phantom CLIP, a few validation pairs."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness_val.py"


def test_one_line_per_split_and_method_with_propagation_variants(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--limit", "4", "--splits", "val,markers",
                                      "--methods", "matex,matex_no_propagation",
                                      "--propagation", "default,0.05x2rnone"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [(l["split"], l["method"]) for l in lines] == [
        (split, method) for split in ("val", "markers")
        for method in ("matex", "matex 0.05x2rnone", "matex_no_propagation")]
    for line in lines:
        assert line["pairs"] == 4 and 0 <= line["pointing_game"] <= 1 and 0 <= line["miou"] <= 1
    # the radius changes which patches share evidence, hence the maps
    val = {l["method"]: l for l in lines if l["split"] == "val"}
    assert val["matex"]["cnr"] != val["matex 0.05x2rnone"]["cnr"]
