"""Pairs on which two methods of one study disagree, by finding.

A paired difference of a 0/1 metric (the pointing game) is made of the
pairs on which the two methods disagree: its interval is set by how many
there are, not by the number of pairs. Given a ``matex benchmark`` study
folder, this prints, per finding and for all pairs, how many pairs the first
method scores above the second (``wins``) and below it (``losses``), as
JSON lines::

    python benchmarks/discordant_pairs.py benchmarks/results/beyond_prior_seed4/phantom_atlas \\
        --methods matex,matex_no_anatomy --metric pointing_game
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from captum_matex.evaluation.results import read_study


def discordant(study: Path, first: str, second: str, metric: str) -> list[dict]:
    r"""Per finding (and ``"all"``): the pairs both methods scored, and on how
    many ``first``'s ``metric`` is above (``wins``) or below (``losses``)
    ``second``'s."""
    values: dict[str, dict[str, tuple[str, float]]] = {first: {}, second: {}}
    for row in read_study(study):
        if row["method"] in values and row.get(metric) is not None:
            values[row["method"]][row["sample"]] = (row["finding"], float(row[metric]))
    counts: dict[str, Counter] = {}
    for sample in sorted(set(values[first]) & set(values[second])):
        finding, a = values[first][sample]
        b = values[second][sample][1]
        for group in (finding, "all"):
            tally = counts.setdefault(group, Counter())
            tally["pairs"] += 1
            tally["wins"] += a > b
            tally["losses"] += a < b
    return [{"finding": group, "pairs": counts[group]["pairs"], "wins": counts[group]["wins"],
             "losses": counts[group]["losses"]}
            for group in sorted(counts, key=lambda g: (g == "all", g))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="folder of one matex benchmark study")
    parser.add_argument("--methods", default="matex,matex_no_anatomy",
                        help="the two methods compared, first,second")
    parser.add_argument("--metric", default="pointing_game")
    args = parser.parse_args()
    first, second = args.methods.split(",")
    for record in discordant(args.study, first, second, args.metric):
        print(json.dumps({"first": first, "second": second, "metric": args.metric, **record}))


if __name__ == "__main__":
    main()
