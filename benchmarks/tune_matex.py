"""Choose MATEX's fusion and consistency settings on the phantom *validation* split.

Every configuration of a small grid explains the same validation pairs with
the embedded model; configurations are ranked by the mean of pointing game,
energy pointing game and mIoU (on the original pixel grid, against the boxes).
The test split is never read here.

    python benchmarks/tune_matex.py --limit 200 --out benchmarks/results/tuning
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from captum_matex import MATEX
from captum_matex.data.geometry import prepare
from captum_matex.evaluation.samples import phantom_samples
from captum_matex.evaluation.scoring import BatchInputs, localisation_scores
from captum_matex.stages import Fusion, LayerConsistency
from captum_matex.zoo import phantom_clip

CRITERIA = ("pointing_game", "energy_pointing_game", "miou")
GRID = {
    "alpha": (0.25, 0.5, 0.75),
    "temperature": (0.05, 0.1, 0.5),
    "anatomy_floor": (0.25, 0.5, 0.75),
    "text_floor": (0.5, 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", default="benchmarks/results/tuning")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    model, processor = phantom_clip()
    samples = phantom_samples("val", args.limit)
    batches = []
    for i in range(0, len(samples), args.batch_size):
        chunk = samples[i : i + args.batch_size]
        pixels, geometries = prepare([s.load() for s in chunk], processor)
        batches.append(BatchInputs(chunk, pixels, geometries, torch.empty(0)))
    results = []
    grid = list(itertools.product(*GRID.values()))
    for values in tqdm(grid, desc="configurations"):
        setting = dict(zip(GRID, values))
        explainer = MATEX(
            model, processor,
            consistency=LayerConsistency(temperature=setting["temperature"]),
            fusion=Fusion(alpha=setting["alpha"],
                          floors={"anatomy": setting["anatomy_floor"],
                                  "text": setting["text_floor"]}),
        )
        scores: dict[str, list[float]] = {name: [] for name in CRITERIA}
        for batch in batches:
            maps = explainer.attribute(batch.pixels, ([s.phrase for s in batch.samples],),
                                       output="pixel").detach()
            for name, values_ in localisation_scores(maps, batch).items():
                if name in scores:
                    scores[name] += values_
        means = {name: float(np.nanmean(v)) for name, v in scores.items()}
        results.append({**setting, **means, "objective": float(np.mean(list(means.values())))})
    results.sort(key=lambda r: -r["objective"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps({"split": "val", "n": len(samples),
                                                 "results": results}, indent=1))
    head = list(GRID) + list(CRITERIA) + ["objective"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f"{r[k]:.3g}" for k in head) + " |" for r in results]
    (out / "tuning.md").write_text(
        f"MATEX settings on the phantom val split ({len(samples)} pairs), best first.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
