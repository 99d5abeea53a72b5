"""benchmarks/discordant_pairs.py on a small study of the embedded phantom."""

from __future__ import annotations

import runpy
from pathlib import Path

from captum_matex.evaluation import BenchmarkConfig, run_benchmark
from captum_matex.evaluation.results import read_study

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "discordant_pairs.py"


def test_wins_and_losses_are_counted_per_pair_and_finding(tmp_path):
    # rollout ignores the phrase, the prior alone ignores the film: they disagree on some pairs
    run_benchmark(BenchmarkConfig(limit=12, methods=["rollout", "prior_only"], sanity=False,
                                  faithfulness=False), tmp_path, progress=False)
    records = runpy.run_path(str(SCRIPT))["discordant"](tmp_path, "rollout", "prior_only",
                                                         "pointing_game")
    rows = read_study(tmp_path)
    score = {(r["method"], r["sample"]): r["pointing_game"] for r in rows}
    finding = {r["sample"]: r["finding"] for r in rows}
    samples = sorted(finding)
    wins = [s for s in samples if score["rollout", s] > score["prior_only", s]]
    losses = [s for s in samples if score["rollout", s] < score["prior_only", s]]
    assert wins or losses  # the check below compares real disagreements
    total = records[-1]
    assert total == {"finding": "all", "pairs": 12, "wins": len(wins), "losses": len(losses)}
    for record in records[:-1]:
        mine = [s for s in samples if finding[s] == record["finding"]]
        assert record["pairs"] == len(mine)
        assert record["wins"] == len(set(wins) & set(mine))
        assert record["losses"] == len(set(losses) & set(mine))
    assert sum(r["pairs"] for r in records[:-1]) == 12
