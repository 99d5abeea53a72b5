"""Registered methods (default: MATEX, MATEX without the anatomical prior and
LeGrad) on *validation* films as they are and on the robustness splits drawn
from them, for one or more models: what the embedded phantom models'
fine-tunings were chosen on. One JSON line per model, split and method:
pointing game, mIoU and CNR (the ``two_finding`` and ``side_swap`` splits are
scored by the benchmark). Methods are built as the benchmark builds them, on
the phantom-fitted atlas. The numbers in
``captum_matex/zoo/phantom_clip/TRAINING.md`` come from

    python benchmarks/robustness_val.py --models phantom-clip,DIR --limit 200
    python benchmarks/robustness_val.py --models phantom-clip,DIR \
        --splits val,geometry,paraphrase,markers --methods matex,matex_no_anatomy

and, for instance, ``--splits val --methods matex,prior_only,rollout`` sets a
candidate model against the prior alone and rollout on plain validation films.
MATEX's evidence propagation was chosen with

    python benchmarks/robustness_val.py --models phantom-clip,phantom-siglip \
        --methods matex,matex_no_propagation --propagation default,0.05x2rnone

(and ``--seed 2``; ``--propagation`` takes the specs of ``benchmarks/prior_gate.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.robustness import SPLITS
from captum_matex.evaluation.scoring import mean_localisation_scores, prepared_batches
from captum_matex.loading import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_gate import propagation  # noqa: E402  (the same propagation specs)

LOCALISATION = ["pointing_game", "miou", "cnr"]
SPLIT_NAMES = ("val", "geometry", "paraphrase", "markers")
METHODS = ("matex", "matex_no_anatomy", "legrad")


def samples(split: str, limit: int, seed: int) -> list:
    r"""``limit`` validation pairs of ``split`` (``"val"``: the films as they are)."""
    if split == "val":
        return phantom_samples("val", limit, seed=seed)
    # a few spare films: a pose may push a finding off the canvas (no box left)
    drawn = SPLITS[split].samples(limit=limit * 6 // 5, seed=seed, base="val")
    return [s for s in drawn if s.boxes][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="phantom-clip", help="comma-separated models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="pairs per split")
    parser.add_argument("--splits", default=",".join(SPLIT_NAMES), help="comma-separated splits")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--method-kwargs", type=json.loads, default={},
                        help='constructor arguments per method, e.g. \'{"matex": {"upsample": "bilinear"}}\'')
    parser.add_argument("--propagation", default="default",
                        help="comma-separated evidence propagations of the matex row, "
                             "'default' or as in prior_gate.py (each a row 'matex SPEC')")
    args = parser.parse_args()
    rows = [(method, spread) for method in args.methods.split(",")
            for spread in (args.propagation.split(",") if method == "matex" else ["default"])]
    for name in args.models.split(","):
        model, processor = load_model(name)
        methods = {}
        for method, spread in rows:
            kwargs = {**args.method_kwargs.get(method, {})}
            if spread != "default":
                kwargs["propagation"] = propagation(spread)
            config = BenchmarkConfig(atlas="phantom", method_kwargs={method: kwargs})
            label = method if spread == "default" else f"{method} {spread}"
            methods[label] = config.build(method, model, processor)
        for split in args.splits.split(","):
            batches = prepared_batches(samples(split, args.limit, args.seed), processor)
            for method, explainer in methods.items():
                means = mean_localisation_scores(explainer, batches, LOCALISATION)
                print(json.dumps({"model": name, "seed": args.seed, "split": split,
                                  "pairs": sum(len(b.samples) for b in batches), "method": method,
                                  **{k: round(v, 3) for k, v in means.items()}}), flush=True)


if __name__ == "__main__":
    main()
