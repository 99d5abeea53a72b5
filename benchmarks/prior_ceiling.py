"""How much any anatomical prior could add to MATEX's evidence: the atlas against
the finding's own box used as the prior, applied on the patch grid (as MATEX
does) and at pixel resolution.

A prior re-weights the model's evidence (:meth:`captum_matex.stages.Fusion.reweight`:
evidence times :math:`\\lambda' + (1 - \\lambda') p`, the gate setting
:math:`\\lambda'` per film). The box rows give that product its best
possible prior, so they bound what a better atlas or registration could buy.
Rows, each scored like the benchmark (pointing game, mIoU, CNR on the
original film) and as a paired difference with MATEX without the prior (mean
and paired bootstrap 95% interval)::

    no prior          MATEX without the anatomical prior (the reference)
    atlas             MATEX (phantom atlas, registered)
    box, patch grid   MATEX with the box as its anatomy mask (pooled to the grid)
    box patches       the same with every patch the box touches wholly inside it
    box, pixels       the reference's evidence, upsampled, times the box prior
    atlas, pixels     the reference's evidence, upsampled, times the registered
                      atlas rendered at the input's resolution

Both pixel rows open the prior as far as MATEX's gate opens the atlas on the
patch grid. On phantom films::

    python benchmarks/prior_ceiling.py --split val --seed 0 --limit 300
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.report import bootstrap_interval
from captum_matex.evaluation.scoring import BatchInputs, localisation_scores, prepared_batches
from captum_matex.explainer import upsample_grid
from captum_matex.loading import load_model
from captum_matex.metrics import boxes_to_mask

METRICS = ["pointing_game", "miou", "cnr"]
ROWS = ("no prior", "atlas", "box, patch grid", "box patches", "box, pixels", "atlas, pixels")


def box_masks(batch: BatchInputs) -> Tensor:
    r"""``(B, H, W)`` float masks of each sample's boxes on the model-input grid."""
    boxes = [g.boxes_to_input(s.boxes) for s, g in zip(batch.samples, batch.geometries)]
    return boxes_to_mask(boxes, tuple(batch.pixels.shape[-2:])).float()


def whole_patches(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    r"""``(B, H, W)`` masks grown to every patch of the ``(h, w)`` grid they touch."""
    size = tuple(masks.shape[-2:])
    touched = F.adaptive_max_pool2d(masks[:, None], grid)
    return F.interpolate(touched, size=size, mode="nearest")[:, 0]


def row_scores(model, processor, batches: list[BatchInputs], atlas: str) -> dict[str, dict]:
    r"""``{row: {metric: [value per pair]}}`` for every row of :data:`ROWS`."""
    config = BenchmarkConfig(atlas=atlas)
    matex, plain = config.build("matex", model, processor), config.build(
        "matex_no_anatomy", model, processor)
    out: dict[str, dict] = {row: defaultdict(list) for row in ROWS}

    def score(row: str, maps: Tensor, batch: BatchInputs) -> None:
        for name, values in localisation_scores(maps.detach(), batch, METRICS).items():
            out[row][name] += values

    for batch in batches:
        phrases = [s.phrase for s in batch.samples]
        size = tuple(batch.pixels.shape[-2:])
        boxes = box_masks(batch)
        maps, found = matex.attribute(batch.pixels, (phrases,), output="pixel",
                                      return_diagnostics=True)
        score("atlas", maps, batch)
        maps, reference = plain.attribute(batch.pixels, (phrases,), output="pixel",
                                          return_diagnostics=True)
        score("no prior", maps, batch)
        grid = found.grid
        for row, masks in (("box, patch grid", boxes), ("box patches", whole_patches(boxes, grid))):
            score(row, matex.attribute(batch.pixels, (phrases,), output="pixel",
                                       anatomy_masks=masks), batch)
        with torch.no_grad():
            opening = matex.fusion.gate(reference.fused.flatten(1),
                                        found.priors["anatomy"].flatten(1), grid)
            evidence = upsample_grid(reference.fused, size, matex.upsample)[:, 0]
            atlas_pixels = matex.anatomical_prior(phrases, size)
            if matex.registration is not None:
                atlas_pixels = matex.registration(atlas_pixels, batch.pixels, size)
            for row, prior in (("box, pixels", boxes),
                               ("atlas, pixels", atlas_pixels.view(-1, *size))):
                fused = matex.fusion.reweight(evidence, {"anatomy": prior}, {"anatomy": opening})
                score(row, fused[:, None], batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300, help="pairs with a finding")
    parser.add_argument("--atlas", default="phantom", choices=("phantom", "generic"))
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    samples = phantom_samples(args.split, args.limit, seed=args.seed)
    out = row_scores(model, processor, prepared_batches(samples, processor, args.batch_size),
                     args.atlas)
    for row in ROWS:
        line = {"model": args.model, "split": args.split, "seed": args.seed,
                "pairs": len(samples), "atlas": args.atlas, "row": row}
        for name in METRICS:
            values = np.array(out[row][name], dtype=float)
            diffs = values - np.array(out["no prior"][name], dtype=float)
            line[name] = round(float(np.nanmean(values)), 3)
            if row != "no prior":
                low, high = bootstrap_interval(diffs)
                line[f"{name}_diff"] = [round(float(np.nanmean(diffs)), 3),
                                        round(low, 3), round(high, 3)]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
