"""A prior that yields to strong evidence, against MATEX's fusion, on phantom
*validation* films (tried for issue 18, not adopted): one JSON line per model,
atlas, split and setting with pointing game, mIoU and CNR.

The yielding prior is raised towards 1 where the model's own evidence is
strong, ``p' = 1 - (1 - p)(1 - e / max e)``, before it re-weights the
evidence, so that it trims only evidence weaker than the film's strongest.
The table on the method page ("Defaults and how they were chosen") comes from

    python benchmarks/yielding_prior.py --model phantom-clip --atlas phantom,generic --seed 0
    python benchmarks/yielding_prior.py --model phantom-clip --atlas phantom,generic \\
        --settings "no prior,yielding+smoothing" --seed 0
    python benchmarks/yielding_prior.py --model phantom-clip --splits val,geometry \\
        --settings "no prior,matex,yielding,yielding+smoothing" --limit 200 --seed 0

(and ``--seed 2``, ``--model phantom-siglip``, ``--model phantom-llava``). The
``basins`` setting spreads the priors over the evidence's basins
(:class:`~captum_matex.stages.EvidenceBasins`), as MATEX does by default with
a drawn atlas such as the generic one; ``per patch`` gives MATEX the fusion
it uses with a fitted atlas whatever the atlas (re-weighting patch by patch,
smoothed within regions); ``no smoothing`` takes that smoothing out. The
method page's "Fusion" rows: ``--atlas generic,phantom --settings "no
prior,matex,per patch,per patch+basins"``. Rows measured before these
defaults (MATEX with the generic atlas re-weighting patch by patch, the
CLIP unsmoothed: the yielding prior's table, the generic-atlas rows of the
region-smoothing table) come from ``per patch`` on the SigLIP and the
report model and ``per patch+no smoothing`` on the CLIP, with ``yielding``
and ``smoothing`` added as the table says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping

from torch import Tensor, nn

from captum_matex import MATEX
from captum_matex.matex import default_fusion
from captum_matex.evaluation.scoring import mean_localisation_scores, prepared_batches
from captum_matex.loading import load_model
from captum_matex.stages import AnatomicalPrior, EvidenceBasins, Fusion, RegionSmoothing
from captum_matex.zoo import phantom_prior

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_val import samples  # noqa: E402  (the same validation films and splits)

#: Settings, combined with "+" (e.g. "yielding+smoothing", "basins+no smoothing").
SETTINGS = ("no prior", "matex", "per patch", "no smoothing", "basins", "yielding", "smoothing")


class YieldingFusion(Fusion):
    r"""MATEX's fusion with each prior raised towards 1 by the evidence's share of its peak."""

    @classmethod
    def like(cls, fusion: Fusion) -> "YieldingFusion":
        r"""``fusion`` with every setting kept, yielding."""
        raised = cls.__new__(cls)
        raised.__dict__.update(vars(fusion))
        return raised

    def reweight(self, evidence: Tensor, priors: Mapping[str, Tensor],
                 openings: Mapping[str, Tensor] | None = None) -> Tensor:
        peak = evidence.flatten(1).amax(1).clamp_min(1e-12)
        share = evidence / peak.view(-1, *[1] * (evidence.dim() - 1))
        raised = {name: 1 - (1 - prior.to(share)) * (1 - share) for name, prior in priors.items()}
        return super().reweight(evidence, raised, openings)


def explainer(setting: str, model: nn.Module, processor: object, atlas: str) -> MATEX:
    r"""MATEX as ``setting`` says, with the phantom-fitted or the generic atlas."""
    parts = set(setting.split("+"))
    unknown = parts - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from {SETTINGS}")
    prior = None if "no prior" in parts else phantom_prior() if atlas == "phantom" else AnatomicalPrior()
    explained = MATEX(model, processor, anatomical_prior=prior)
    if "per patch" in parts:  # the fusion MATEX uses with a fitted atlas, whatever the atlas
        explained.fusion = default_fusion(explained.adapter)
    if "yielding" in parts:
        explained.fusion = YieldingFusion.like(explained.fusion)
    if "basins" in parts:  # the priors spread over the evidence's basins (MATEX's default with a drawn atlas)
        explained.fusion.basins = EvidenceBasins()
    if "no smoothing" in parts:  # MATEX's default with a fitted atlas, taken out
        explained.fusion.region_smoothing = None
    if "smoothing" in parts:  # as the user guide adds it (the matex_region_smoothing row)
        explained.fusion.region_smoothing = RegionSmoothing()
    return explained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--atlas", default="phantom", help="comma-separated: phantom, generic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300, help="pairs per split")
    parser.add_argument("--splits", default="val", help="comma-separated: val, geometry, ...")
    parser.add_argument("--settings", default="matex,yielding",
                        help="comma-separated settings, each one or more of "
                        + ", ".join(map(repr, SETTINGS)) + " joined by '+'")
    args = parser.parse_args()
    model, processor = load_model(args.model)
    for split in args.splits.split(","):
        batches = prepared_batches(samples(split, args.limit, args.seed), processor)
        for atlas in args.atlas.split(","):
            for setting in args.settings.split(","):
                means = mean_localisation_scores(
                    explainer(setting, model, processor, atlas), batches,
                    ["pointing_game", "miou", "cnr"])
                print(json.dumps({"model": args.model, "atlas": atlas, "seed": args.seed,
                                  "split": split, "setting": setting,
                                  **{k: round(v, 3) for k, v in means.items()}}), flush=True)


if __name__ == "__main__":
    main()
