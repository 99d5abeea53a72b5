"""Pointing-game drops of the robustness splits, with paired bootstrap intervals.

The ``geometry``, ``paraphrase`` and ``markers`` splits are made from the
same test films as the untouched ``test`` split of their seed (sample
``phantom-geometry-1-7`` is film 7 of ``phantom-test-1-7``). Given a folder
holding the ``matex benchmark`` studies of one seed (``test/``,
``geometry/``, ...), this prints, per method and split, the untouched and the
split's pointing game and their difference (the drop) over the films both
scored, with a 95% percentile bootstrap interval of films resampled
together, as a Markdown table::

    python benchmarks/robustness_drops.py benchmarks/results/robustness_seed1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from captum_matex.evaluation.report import bootstrap_interval
from captum_matex.evaluation.results import read_study

SPLITS = ("geometry", "paraphrase", "markers")


def film_scores(study: Path, metric: str) -> dict[str, dict[str, float]]:
    r"""``{method: {film: value}}`` of one study folder; a film is its sample
    id without the split's name (``phantom-geometry-1-7`` -> ``1-7``)."""
    scores: dict[str, dict[str, float]] = {}
    for row in read_study(study):
        value = row.get(metric)
        if value is not None:
            film = row["sample"].split("-", 2)[2]
            scores.setdefault(row["method"], {})[film] = float(value)
    return scores


def drops(folder: Path, methods: list[str] | None, metric: str = "pointing_game") -> list[dict]:
    r"""One record per method and split: untouched and split means, the
    paired drop with its interval, and the number of films."""
    untouched = film_scores(folder / "test", metric)
    records = []
    for split in SPLITS:
        if not (folder / split).is_dir():
            continue
        moved = film_scores(folder / split, metric)
        for method in methods or sorted(set(untouched) & set(moved)):
            films = sorted(set(untouched.get(method, {})) & set(moved.get(method, {})))
            before = np.array([untouched[method][f] for f in films])
            after = np.array([moved[method][f] for f in films])
            low, high = bootstrap_interval(before - after)
            records.append({"method": method, "split": split, "films": len(films),
                            "test": float(before.mean()), "split_value": float(after.mean()),
                            "drop": float((before - after).mean()), "ci95": [low, high]})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of one seed's robustness studies")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods (default: every method of both studies)")
    args = parser.parse_args()
    methods = None if args.methods is None else args.methods.split(",")
    print("| method | split | films | test | split | drop [95% paired interval] |")
    print("|---|---|---|---|---|---|")
    for r in drops(args.folder, methods):
        low, high = r["ci95"]
        print(f"| {r['method']} | {r['split']} | {r['films']} | {r['test']:.3f} | "
              f"{r['split_value']:.3f} | {r['drop']:+.3f} [{low:+.3f}, {high:+.3f}] |")


if __name__ == "__main__":
    main()
