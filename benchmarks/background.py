"""MATEX with its evidence's background level kept and removed (the fusion's
``background`` quantile), at one or more fusion weights, on phantom
validation films: pointing game, mIoU, CNR and deletion AUC, one JSON line
per setting. Methods are built as the benchmark builds them (phantom-fitted
atlas, registered, prior gate as MATEX's default). The deletion numbers on
the results page come from

    python benchmarks/background.py --alpha 0.625,0.875 --background none,0.5 --limit 100

(``benchmarks/prior_gate.py --background`` gives the randomisation Spearman
of the same settings.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from captum_matex import SimilarityForward
from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.scoring import (
    curve_step, faithfulness_scores, localisation_scores, prepared_batches,
)
from captum_matex.loading import load_model
from captum_matex.matex import default_fusion
from captum_matex.stages import Fusion

LOCALISATION = ["pointing_game", "miou", "cnr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--alpha", default=None, help="comma-separated fusion weights (default: MATEX's)")
    parser.add_argument("--background", default="none,0.5",
                        help="comma-separated background quantiles, 'none' for none")
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    samples = phantom_samples("val", args.limit, seed=args.seed)
    forward = SimilarityForward(model, processor)  # the score every setting explains
    batches = prepared_batches(samples, processor, args.batch_size, forward=forward)
    own = default_fusion(forward.adapter)
    alphas = [own.alpha] if args.alpha is None else [float(a) for a in args.alpha.split(",")]
    backgrounds = [None if b == "none" else float(b) for b in args.background.split(",")]
    for alpha in alphas:
        for background in backgrounds:
            fusion = Fusion(alpha=alpha, gate=own.gate, background=background)
            config = BenchmarkConfig(atlas="phantom", method_kwargs={"matex": {"fusion": fusion}})
            explainer = config.build("matex", model, processor)
            found: dict[str, list[float]] = {}
            for batch in batches:
                phrases = [s.phrase for s in batch.samples]
                maps = explainer.attribute(batch.pixels, (phrases,), output="pixel").detach()
                scores = localisation_scores(maps, batch, LOCALISATION)
                patch = curve_step(batch.pixels.shape, config.curve_steps)  # as the benchmark's
                scores.update(faithfulness_scores(forward, maps, batch, ["deletion_auc"], patch))
                for metric, values in scores.items():
                    found.setdefault(metric, []).extend(values)
            print(json.dumps({"model": args.model, "seed": args.seed, "pairs": len(samples),
                              "alpha": alpha, "background": background,
                              **{k: round(float(np.nanmean(v)), 4) for k, v in found.items()}}),
                  flush=True)


if __name__ == "__main__":
    main()
