"""``matex demo``: explain phantom test cases with the embedded model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captum_matex._quiet import VERBOSE_HELP
from captum_matex.cli._common import load_model, prepare_out, quietly, save
from captum_matex.loading import EMBEDDED, EMBEDDED_DEFAULT


@quietly
def demo(args: argparse.Namespace) -> dict:
    r"""
    ``matex demo``: explain phantom test cases with the embedded model.

    Third-party loading messages are hidden unless ``--verbose``.

    Returns:
        dict: The summary written to ``demo_summary.json``.
    """
    import torch.nn.functional as F

    from captum_matex import MATEX
    from captum_matex.data import PhantomCXR
    from captum_matex.metrics import boxes_to_mask, pointing_game
    from captum_matex.viz import overlay_figure
    from captum_matex.zoo import phantom_prior

    out = Path(args.out)
    names = [f"case_{i:02d}.png" for i in range(args.cases)] + ["demo_summary.json"]
    prepare_out(out, names, args.force)
    model, processor, model_name = load_model(args.model, "cpu")
    dataset = PhantomCXR(split="test", seed=0)
    samples = [dataset[i] for i in range(args.cases)]
    grey = [(s.image[0].numpy() * 255).round().astype("uint8") for s in samples]
    pixels = processor(images=grey, return_tensors="pt")["pixel_values"]
    phrases = [s.phrase for s in samples]
    explainer = MATEX(model, processor, anatomical_prior=phantom_prior())  # atlas fitted to phantoms
    maps = explainer.attribute(pixels, (phrases,), output="pixel")
    size = tuple(samples[0].image.shape[-2:])
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    hits = pointing_game(maps, boxes_to_mask([s.boxes for s in samples], size)).tolist()
    rows = []
    for i, sample in enumerate(samples):
        hit = bool(hits[i]) if sample.boxes else None  # a normal study has nothing to point at
        verdict = {True: "hit", False: "miss", None: "no finding"}[hit]
        title = f"{sample.phrase!r}\npointing game: {verdict}"
        fig = overlay_figure(sample.image[0], maps[i, 0], title, boxes=sample.boxes)
        save(fig, out / f"case_{i:02d}.png")
        rows.append({"case": i, "phrase": sample.phrase, "finding": sample.finding,
                     "pointing_game": hit, "figure": f"case_{i:02d}.png"})
    scored = [row["pointing_game"] for row in rows if row["pointing_game"] is not None]
    rate = sum(scored) / len(scored) if scored else float("nan")
    print("| case | phrase | pointing game |\n|---|---|---|")
    for row in rows:
        verdict = {True: "hit", False: "miss", None: "n/a (normal)"}[row["pointing_game"]]
        print(f"| {row['case']} | {row['phrase']} | {verdict} |")
    print(f"\nMATEX pointing game: {sum(scored)}/{len(scored)} phantom test cases with a "
          f"finding ({rate:.0%}); figures in {out}")
    summary = {"model": model_name, "cases": rows, "pointing_game": rate}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    r"""Add ``demo`` to ``sub``, the ``matex`` parser's sub-commands."""
    de = sub.add_parser("demo", help="explain phantom cases with the embedded model")
    de.add_argument("--model", choices=sorted(EMBEDDED), default=EMBEDDED_DEFAULT,
                    help="embedded model to explain (default: %(default)s)")
    de.add_argument("--cases", type=int, default=8, help="number of test cases")
    de.add_argument("--out", default="matex_demo", help="output directory")
    de.add_argument("--force", action="store_true", help="overwrite existing outputs")
    de.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    de.set_defaults(func=demo)
