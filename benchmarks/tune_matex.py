"""Choose MATEX's fusion and consistency settings on the phantom *validation* split.

Every configuration of a small grid explains the same validation pairs with
the embedded model, with the anatomical prior on the phantom atlas
(:func:`captum_matex.zoo.phantom_atlas`). Configurations are ranked by the
mean, over pointing game, mIoU and CNR (on the original pixel grid, against
the boxes), of the ratio to M2IB's value on the same pairs. The test split is
never read here.

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
from captum_matex.evaluation.samples import phantom_samples
from captum_matex.evaluation.scoring import localisation_scores, prepared_batches
from captum_matex.stages import Fusion, LayerConsistency
from captum_matex.baselines import M2IB
from captum_matex.zoo import phantom_clip, phantom_prior

CRITERIA = ("pointing_game", "miou", "cnr")
REPORTED = CRITERIA + ("energy_pointing_game",)
GRID = {
    "alpha": (0.5, 0.75),
    "temperature": (0.05,),
    "anatomy_floor": (0.1, 0.25, 0.5),
    "text_floor": (0.5, 1.0),
    "sigma": (0.0, 0.5, 1.0),
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
    batches = prepared_batches(samples, processor, args.batch_size)

    def scores_of(explainer) -> dict[str, float]:
        scores: dict[str, list[float]] = {name: [] for name in REPORTED}
        for batch in batches:
            torch.manual_seed(0)
            maps = explainer.attribute(batch.pixels, ([s.phrase for s in batch.samples],),
                                       output="pixel").detach()
            for name, values in localisation_scores(maps, batch).items():
                if name in scores:
                    scores[name] += values
        return {name: float(np.nanmean(v)) for name, v in scores.items()}

    reference = scores_of(M2IB(model, processor))
    print("M2IB on val:", reference)
    results = []
    grid = list(itertools.product(*GRID.values()))
    for values in tqdm(grid, desc="configurations"):
        setting = dict(zip(GRID, values))
        explainer = MATEX(
            model, processor,
            consistency=LayerConsistency(temperature=setting["temperature"]),
            anatomical_prior=phantom_prior(),
            registration=None,  # the grid was scored before the atlas was registered
            fusion=Fusion(alpha=setting["alpha"], sigma=setting["sigma"],
                          floors={"anatomy": setting["anatomy_floor"],
                                  "text": setting["text_floor"]}),
        )
        means = scores_of(explainer)
        objective = float(np.mean([means[c] / reference[c] for c in CRITERIA]))
        results.append({**setting, **means, "objective": objective})
    results.sort(key=lambda r: -r["objective"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps({"split": "val", "n": len(samples),
                                                 "m2ib": reference, "results": results}, indent=1))
    head = list(GRID) + list(REPORTED) + ["objective"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f"{r[k]:.3g}" for k in head) + " |" for r in results]
    (out / "tuning.md").write_text(
        f"MATEX settings on the phantom val split ({len(samples)} pairs), best first; "
        "objective = mean ratio to M2IB over pointing game, mIoU and CNR "
        f"(M2IB: {', '.join(f'{k} {v:.3f}' for k, v in reference.items())}).\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
