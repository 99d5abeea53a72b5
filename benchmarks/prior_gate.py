"""MATEX with and without the prior gate on phantom films: localisation, model
randomisation and side-swapped phrases, one JSON line per setting.

For each setting: pointing game, mIoU and CNR of the true phrase; Spearman
between the maps of the trained and of the fully randomised model
(:func:`captum_matex.metrics.sanity.randomized_model`); and, for films with a
sided finding, the share of maps for the side-swapped phrase that peak on the
stated, empty half of the film (lower is better). The anatomical prior uses
:func:`captum_matex.zoo.phantom_prior` (``--atlas generic``: the built-in
clinical atlas), unregistered, so that the gate is measured alone
(``benchmarks/registration.py`` measures the registration). Meant for
validation films: the numbers on the method page come from

    python benchmarks/prior_gate.py --model phantom-clip --split val --seed 0 --limit 300 \\
        --alpha 0.5,0.75,1.0

the evidence propagation's (``none``: off; ``0.05x2``: temperature 0.05, two
steps, the default radius; ``0.05x2rnone``: no radius) from

    python benchmarks/prior_gate.py --settings gated --propagation none,0.05x2rnone,0.05x2
    python benchmarks/prior_gate.py --model phantom-siglip --settings gated --alpha 0,0.25 \\
        --propagation none,0.05x2rnone,0.05x2

(and ``--seed 2``), the layer-consistency temperatures of an attention probe
and of a decoder (:data:`captum_matex.matex.CONSISTENCY_TEMPERATURE`) from

    python benchmarks/prior_gate.py --model phantom-siglip --settings gated \\
        --consistency 0.05,0.1,0.2,0.5,1
    python benchmarks/prior_gate.py --model phantom-llava --settings ungated \\
        --consistency 0.05,0.1,0.2,0.5,1

(and ``--seed 2``), the decoder's gate (:data:`captum_matex.matex.PRIOR_GATE`) from

    python benchmarks/prior_gate.py --model phantom-llava --settings "no prior,ungated,lift only,gated"

(and ``--seed 2``), and the prior floors on the results page from

    python benchmarks/prior_gate.py --settings "no prior,gated" --floor 0.5,0.25,0.1 \\
        --atlas phantom --propagation none
    python benchmarks/prior_gate.py --settings gated --floor 0.5,0.25,0.1 --atlas generic \\
        --propagation none
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from typing import get_args

import numpy as np
import torch

from captum_matex import MATEX
from captum_matex.data.geometry import maps_to_original
from captum_matex.evaluation import phantom_samples
from captum_matex.evaluation.scoring import BatchInputs, localisation_scores, prepared_batches
from captum_matex.explainer import Upsampling
from captum_matex.loading import load_model
from captum_matex.matex import default_fusion
from captum_matex.metrics import empty_side_peak
from captum_matex.metrics.sanity import randomisation_spearman, randomized_model
from captum_matex.phrases import swap_laterality
from captum_matex.stages import (
    AnatomicalPrior,
    FeatureAffinity,
    Fusion,
    LayerConsistency,
    PriorGate,
)
from captum_matex.zoo import phantom_prior

LOCALISATION = ["pointing_game", "miou", "cnr"]
#: The prior settings, in the order their lines are printed ("lift only": the
#: gate without its side checks, every prior treated as symmetric).
SETTINGS = ("no prior", "ungated", "lift only", "gated")


def propagation(value: str) -> FeatureAffinity | None:
    r"""``"none"`` -> ``None``; ``"0.05x2"`` -> ``FeatureAffinity(temperature=0.05,
    steps=2)``; ``"0.05x2r0.3"`` (``"...rnone"``) sets its radius to 0.3 (None)."""
    if value == "none":
        return None
    temperature, rest = value.split("x")
    steps, _, radius = rest.partition("r")
    reach = {} if not radius else {"radius": None if radius == "none" else float(radius)}
    return FeatureAffinity(temperature=float(temperature), steps=int(steps), **reach)


def stated_half(laterality: str, size: tuple[int, int]) -> torch.Tensor:
    r"""``(1, H, W)`` mask of the half of a PA film the swapped phrase names
    (patient left is image right)."""
    mask = torch.zeros(1, *size, dtype=torch.bool)
    half = size[1] // 2
    if laterality == "left":  # the finding is on the left, the phrase says right
        mask[..., :half] = True
    else:
        mask[..., half:] = True
    return mask


def scores(explainers: tuple[MATEX, MATEX], batches: list[BatchInputs]) -> dict[str, float]:
    r"""The setting's means over every batch (trained explainer first)."""
    trained, randomised = explainers
    out: dict[str, list[float]] = {name: [] for name in LOCALISATION}
    out.update(randomisation_spearman=[], empty_side_peak=[])
    for batch in batches:
        phrases = [s.phrase for s in batch.samples]
        maps = trained.attribute(batch.pixels, (phrases,), output="pixel").detach()
        for name, values in localisation_scores(maps, batch, LOCALISATION).items():
            out[name] += values
        reference = randomised.attribute(batch.pixels, (phrases,), output="pixel").detach()
        out["randomisation_spearman"] += randomisation_spearman(maps, reference).tolist()
        swapped = [swap_laterality(p) for p in phrases]
        maps = trained.attribute(batch.pixels, (swapped,), output="pixel").detach()
        for heat, sample in zip(maps_to_original(maps[:, 0], batch.geometries), batch.samples):
            if sample.laterality in ("left", "right"):
                mask = stated_half(sample.laterality, tuple(heat.shape[-2:]))
                out["empty_side_peak"].append(float(empty_side_peak(heat[None].float(), mask)[0]))
    return {name: round(float(np.nanmean(values)), 3) for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300, help="pairs with a finding")
    parser.add_argument("--alpha", default=None,
                        help="comma-separated fusion weights (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--upsample", default=None, choices=get_args(Upsampling),
                        help="MATEX's upsampling (default: its own)")
    parser.add_argument("--background", default=None,
                        help="comma-separated evidence background quantiles, 'none' for none "
                             "(default: MATEX's own for the model)")
    parser.add_argument("--settings", default="no prior,ungated,gated",
                        help="comma-separated subset of " + ", ".join(map(repr, SETTINGS)))
    parser.add_argument("--floor", default="0.5",
                        help="comma-separated floors of the anatomical prior (lower: stronger prior)")
    parser.add_argument("--atlas", default="phantom", choices=("phantom", "generic"))
    parser.add_argument("--consistency", default=None,
                        help="comma-separated layer-consistency temperatures "
                             "(default: MATEX's own for the model)")
    parser.add_argument("--propagation", default=None,
                        help="comma-separated evidence propagations, TEMPERATURExSTEPS[rRADIUS] "
                             "or 'none' (default: MATEX's own for the model)")
    args = parser.parse_args()
    chosen = args.settings.split(",")
    if set(chosen) - set(SETTINGS):
        parser.error(f"--settings takes a subset of {', '.join(SETTINGS)}, got {args.settings!r}")
    upsample = {} if args.upsample is None else {"upsample": args.upsample}
    model, processor = load_model(args.model)
    randomised = randomized_model(model)
    samples = phantom_samples(args.split, args.limit, seed=args.seed)
    batches = prepared_batches(samples, processor, args.batch_size)
    prior = phantom_prior() if args.atlas == "phantom" else AnatomicalPrior()
    own = default_fusion(MATEX(model, processor).adapter)
    alphas = [own.alpha] if args.alpha is None else [float(a) for a in args.alpha.split(",")]
    backgrounds = [own.background] if args.background is None else [
        None if b == "none" else float(b) for b in args.background.split(",")]
    variants = {"no prior": (None, None), "ungated": (prior, None),
                "lift only": (prior, PriorGate(asymmetry=math.inf)), "gated": (prior, PriorGate())}
    floors = [float(f) for f in args.floor.split(",")]
    spreads = [None] if args.propagation is None else args.propagation.split(",")
    temperatures = [None] if args.consistency is None else [
        float(t) for t in args.consistency.split(",")]
    settings = [(label, alpha, background, floor, spread, temperature)
                for temperature, spread, alpha, background, label
                in itertools.product(temperatures, spreads, alphas, backgrounds, SETTINGS)
                if label in chosen
                for floor in (floors if variants[label][0] is not None else [None])]
    for label, alpha, background, floor, spread, temperature in settings:
        atlas, gate = variants[label]
        stages = {} if spread is None else {"propagation": propagation(spread)}
        if temperature is not None:
            stages["consistency"] = LayerConsistency(temperature=temperature)

        def build(net, alpha=alpha, background=background, floor=floor, atlas=atlas, gate=gate):
            fusion = Fusion(alpha=alpha, gate=gate, background=background,
                            floors=None if floor is None else {"anatomy": floor})
            return MATEX(net, processor, anatomical_prior=atlas, registration=None,
                         fusion=fusion, **stages, **upsample)
        result = scores((build(model), build(randomised)), batches)
        print(json.dumps({"model": args.model, "split": args.split, "seed": args.seed,
                          "pairs": len(samples), "setting": label, "alpha": alpha,
                          "background": background, "atlas": args.atlas,
                          "floor": floor, "propagation": spread or "default",
                          "consistency": temperature or "default",
                          "upsample": args.upsample or MATEX.default_upsample, **result}),
              flush=True)


if __name__ == "__main__":
    main()
