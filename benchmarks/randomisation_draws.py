"""Model randomisation Spearman over several random draws of the randomised model.

``matex benchmark`` re-initialises the image tower once, with the study's seed
(:func:`captum_matex.metrics.sanity.randomized_model`), and its interval
covers the pairs only. The random draw moves the score too: this script scores
the same films against several draws and prints, per method, each draw's mean
with its 95% bootstrap interval over the pairs, then the mean and the range
over the draws (one JSON line each)::

    python benchmarks/randomisation_draws.py --model phantom-clip --seed 0 --limit 200 \\
        --draws 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.report import bootstrap_interval
from captum_matex.evaluation.scoring import prepared_batches
from captum_matex.loading import load_model
from captum_matex.metrics.sanity import randomisation_spearman, randomized_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--methods", default="matex,matex_no_anatomy")
    parser.add_argument("--limit", type=int, default=200, help="test pairs with a finding")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the test films")
    parser.add_argument("--draws", default="0,1,2,3,4",
                        help="comma-separated seeds of the randomised model")
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    batches = prepared_batches(phantom_samples("test", args.limit, seed=args.seed), processor,
                               args.batch_size)
    config = BenchmarkConfig(seed=args.seed)
    draws = [int(d) for d in args.draws.split(",")]
    common = {"model": args.model, "films_seed": args.seed, "pairs": args.limit}
    for method in args.methods.split(","):
        explainer = config.build(method, model, processor)
        trained = [explainer.attribute(b.pixels, ([s.phrase for s in b.samples],),
                                       output="pixel").detach() for b in batches]
        means = []
        for draw in draws:
            randomised = config.build(method, randomized_model(model, seed=draw), processor)
            values = []
            for batch, maps in zip(batches, trained):
                phrases = [s.phrase for s in batch.samples]
                reference = randomised.attribute(batch.pixels, (phrases,), output="pixel").detach()
                values += randomisation_spearman(maps, reference).tolist()
            means.append(float(np.nanmean(values)))
            low, high = bootstrap_interval(np.asarray(values, dtype=float))
            print(json.dumps({**common, "method": method, "draw": draw,
                              "spearman": round(means[-1], 3),
                              "ci95": [round(low, 3), round(high, 3)]}), flush=True)
        print(json.dumps({**common, "method": method, "draws": draws,
                          "mean_over_draws": round(float(np.mean(means)), 3),
                          "range": [round(min(means), 3), round(max(means), 3)]}), flush=True)


if __name__ == "__main__":
    main()
