"""MATEX, MATEX without the anatomical prior and LeGrad on the robustness
splits drawn from *validation* films, for one or more models: what the
embedded phantom CLIP's pose-augmented fine-tuning was chosen on. One JSON
line per model, split and method: pointing game, mIoU and CNR (the
``two_finding`` and ``side_swap`` splits are scored by the benchmark). The
numbers in ``captum_matex/zoo/phantom_clip/TRAINING.md`` come from

    python benchmarks/robustness_val.py --models phantom-clip,DIR --limit 200
"""

from __future__ import annotations

import argparse
import json

from captum_matex import MATEX, baselines
from captum_matex.evaluation import phantom_samples
from captum_matex.evaluation.robustness import SPLITS
from captum_matex.evaluation.scoring import mean_localisation_scores, prepared_batches
from captum_matex.loading import load_model
from captum_matex.zoo import phantom_prior

LOCALISATION = ["pointing_game", "miou", "cnr"]
SPLIT_NAMES = ("val", "geometry", "paraphrase", "markers")


def samples(split: str, limit: int, seed: int) -> list:
    r"""``limit`` validation pairs of ``split`` (``"val"``: the films as they are)."""
    if split == "val":
        return phantom_samples("val", limit, seed=seed)
    # a few spare films: a pose may push a finding off the canvas (no box left)
    drawn = SPLITS[split].samples(limit=limit * 6 // 5, seed=seed, base="val")
    return [s for s in drawn if s.boxes][:limit]


def explainers(model, processor) -> dict:
    r"""The methods compared, on the phantom-fitted atlas as in the benchmark."""
    return {
        "matex": MATEX(model, processor, anatomical_prior=phantom_prior()),
        "matex_no_anatomy": MATEX(model, processor, anatomical_prior=None),
        "legrad": baselines.get("legrad")(model, processor),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="phantom-clip", help="comma-separated models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="pairs per split")
    args = parser.parse_args()
    for name in args.models.split(","):
        model, processor = load_model(name)
        methods = explainers(model, processor)
        for split in SPLIT_NAMES:
            batches = prepared_batches(samples(split, args.limit, args.seed), processor)
            for method, explainer in methods.items():
                means = mean_localisation_scores(explainer, batches, LOCALISATION)
                print(json.dumps({"model": name, "seed": args.seed, "split": split,
                                  "pairs": sum(len(b.samples) for b in batches), "method": method,
                                  **{k: round(v, 3) for k, v in means.items()}}), flush=True)

if __name__ == "__main__":
    main()
