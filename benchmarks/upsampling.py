"""MATEX's patch maps upsampled bilinearly and bicubically (and, for comparison,
bilinearly and then blurred) on phantom validation films: localisation of
MATEX, of MATEX without the anatomical prior and of the prior alone, and
MATEX's deletion AUC, one JSON line per method and upsampling. The numbers
on the method page come from

    python benchmarks/upsampling.py --seed 0 --limit 200
    python benchmarks/upsampling.py --seed 2 --limit 200
"""

from __future__ import annotations

import argparse
import json
from typing import Iterator, get_args

import numpy as np
from torch import Tensor

from captum_matex._maps import gaussian_smooth
from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.scoring import (
    curve_step, faithfulness_scores, localisation_scores, prepared_batches,
)
from captum_matex.explainer import Upsampling, upsample_grid
from captum_matex.loading import load_model

METHODS = ("matex", "matex_no_anatomy", "prior_only")
LOCALISATION = ["pointing_game", "miou", "cnr"]


def upsamplings(grid: Tensor, size: tuple[int, int], blurs: list[float]) -> Iterator[tuple[str, Tensor]]:
    r"""``(name, (B, 1, H, W) maps)`` for each way of bringing ``(B, h, w)`` maps to ``size``."""
    for mode in get_args(Upsampling):
        yield mode, upsample_grid(grid, size, mode)
    for sigma in blurs:
        yield f"bilinear, blur {sigma:g} px", gaussian_smooth(upsample_grid(grid, size)[:, 0], sigma)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--blur", default="4", help="comma-separated blurs in pixels ('' for none)")
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    config = BenchmarkConfig(atlas="phantom")
    explainers = {name: config.build(name, model, processor) for name in METHODS}
    forward = explainers["matex"].forward_func
    samples = phantom_samples("val", args.limit, seed=args.seed)
    blurs = [float(b) for b in args.blur.split(",") if b]
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    for batch in prepared_batches(samples, processor, args.batch_size, forward=forward):
        phrases = [s.phrase for s in batch.samples]
        size = tuple(batch.pixels.shape[-2:])
        patch = curve_step(size, config.curve_steps)  # as the benchmark's curves
        for name, explainer in explainers.items():
            grid = explainer.attribute(batch.pixels, (phrases,), output="grid").detach()[:, 0]
            for label, maps in upsamplings(grid, size, blurs):
                found = localisation_scores(maps, batch, LOCALISATION)
                if name == "matex":
                    found.update(faithfulness_scores(forward, maps, batch, ["deletion_auc"], patch))
                into = scores.setdefault((name, label), {})
                for metric, values in found.items():
                    into.setdefault(metric, []).extend(values)
    for (name, label), found in scores.items():
        print(json.dumps({"model": args.model, "seed": args.seed, "pairs": len(samples), "method": name,
                          "upsampling": label,
                          **{k: round(float(np.nanmean(v)), 4) for k, v in found.items()}}), flush=True)


if __name__ == "__main__":
    main()
