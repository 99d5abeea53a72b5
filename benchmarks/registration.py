"""MATEX and the prior-only row with and without registering the atlas to each
film, on phantom films as they are and moved as the ``geometry`` robustness
split moves them (rotation, shift, zoom, portrait and landscape canvases).
One JSON line per setting: pointing game, mIoU and CNR. The anatomical prior
uses :func:`captum_matex.zoo.phantom_prior`. Meant for validation films: the
numbers on the method page come from

    python benchmarks/registration.py --model phantom-clip --split val --seed 0 --limit 200
"""

from __future__ import annotations

import argparse
import json

from captum_matex import MATEX
from captum_matex.baselines.prior_only import AnatomyPriorOnly
from captum_matex.evaluation import phantom_samples
from captum_matex.evaluation.robustness import SPLITS
from captum_matex.evaluation.scoring import BatchInputs, mean_localisation_scores, prepared_batches
from captum_matex.loading import load_model
from captum_matex.zoo import phantom_prior

LOCALISATION = ["pointing_game", "miou", "cnr"]
METHODS = {"matex": MATEX, "prior_only": AnatomyPriorOnly}


def scores(explainer, inputs: list[BatchInputs]) -> dict[str, float]:
    r"""Mean localisation scores of one explainer over every batch."""
    return {name: round(value, 3)
            for name, value in mean_localisation_scores(explainer, inputs, LOCALISATION).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="pairs with a finding")
    args = parser.parse_args()
    model, processor = load_model(args.model)
    # a few spare films: a pose may push a finding off the canvas (no box left)
    moved = SPLITS["geometry"].samples(limit=args.limit * 6 // 5, seed=args.seed, base=args.split)
    films = {
        "as they are": phantom_samples(args.split, args.limit, seed=args.seed),
        "moved": [s for s in moved if s.boxes][: args.limit],
    }
    for label, samples in films.items():
        inputs = prepared_batches(samples, processor)
        for name, method in METHODS.items():
            for registered in (True, False):
                extra = {} if registered else {"registration": None}
                explainer = method(model, processor, anatomical_prior=phantom_prior(), **extra)
                print(json.dumps({"model": args.model, "split": args.split, "seed": args.seed,
                                  "films": label, "pairs": len(samples), "method": name,
                                  "registered": registered, **scores(explainer, inputs)}),
                      flush=True)


if __name__ == "__main__":
    main()
