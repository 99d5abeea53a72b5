"""What a method's CNR and mIoU are made of: the map inside and outside the boxes.

CNR (:func:`captum_matex.metrics.cnr`) is
:math:`|\\mu_{in} - \\mu_{out}| / \\sqrt{\\sigma^2_{in} + \\sigma^2_{out}}`; mIoU
(:func:`captum_matex.metrics.miou`) thresholds the map at each ``t`` of
``MIOU_THRESHOLDS``, and its IoU at ``t`` is set by the share of the box
above ``t`` (``box_t``) and the share of the map above ``t`` that lies in the
box (``map_t``). For each method this prints one JSON line per finding and
one for all pairs, with the means over pairs of these parts (each pair's map
min-max normalised first, which leaves its CNR unchanged) and of the CNR
itself, on phantom films::

    python benchmarks/cnr_components.py --split val --seed 0 --limit 200 \\
        --methods matex,matex_no_anatomy
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch

from captum_matex.data.geometry import maps_to_original
from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.scoring import prepared_batches
from captum_matex.loading import load_model
from captum_matex.metrics import boxes_to_mask, cnr, minmax_normalize
from captum_matex.metrics.localisation import MIOU_THRESHOLDS

PARTS = ("mu_in", "mu_out", "sd_in", "sd_out", "cnr",
         *(f"{share}_{t:g}" for t in MIOU_THRESHOLDS for share in ("box", "map")))


def components(heat: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    r"""The parts of the CNR and mIoU of one ``(H, W)`` map against its ``(H, W)``
    bool mask (``map_t`` is NaN where no pixel is above ``t``)."""
    heat = minmax_normalize(heat.double()[None])[0]
    inside, outside = heat[mask], heat[~mask]
    parts = {"mu_in": float(inside.mean()), "mu_out": float(outside.mean()),
             "sd_in": float(inside.std(unbiased=False)),
             "sd_out": float(outside.std(unbiased=False)),
             "cnr": float(cnr(heat[None], mask[None])[0])}
    for t in MIOU_THRESHOLDS:
        above = heat > t
        hits = float((above & mask).sum())
        parts[f"box_{t:g}"] = hits / float(mask.sum())
        parts[f"map_{t:g}"] = hits / float(above.sum()) if above.any() else float("nan")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--methods", default="matex,matex_no_anatomy")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="pairs with a finding")
    parser.add_argument("--atlas", default="phantom", choices=("phantom", "generic"))
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    batches = prepared_batches(phantom_samples(args.split, args.limit, seed=args.seed),
                               processor, args.batch_size)
    config = BenchmarkConfig(atlas=args.atlas, seed=args.seed)
    for method in args.methods.split(","):
        explainer = config.build(method, model, processor)
        parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for batch in batches:
            phrases = [s.phrase for s in batch.samples]
            maps = explainer.attribute(batch.pixels, (phrases,), output="pixel").detach()
            for heat, sample in zip(maps_to_original(maps[:, 0], batch.geometries), batch.samples):
                mask = boxes_to_mask([sample.boxes], tuple(heat.shape))[0]
                for name, value in components(heat, mask).items():
                    for group in (sample.finding, "all"):
                        parts[group][name].append(value)
        for group in sorted(parts, key=lambda g: (g == "all", g)):
            print(json.dumps({"model": args.model, "method": method, "finding": group,
                              "pairs": len(parts[group]["cnr"]),
                              **{name: round(float(np.nanmean(parts[group][name])), 3)
                                 for name in PARTS}}), flush=True)


if __name__ == "__main__":
    main()
