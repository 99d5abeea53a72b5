"""The ``matex`` command line: ``matex explain`` and ``matex demo``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

import torch


class CLIError(Exception):
    r"""A user-facing error: printed without a traceback, exit status 2."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "phrase"


def _prepare_out(out: Path, names: Sequence[str], force: bool) -> None:
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise CLIError(
            f"{out} already holds {', '.join(existing[:3])}"
            f"{' ...' if len(existing) > 3 else ''}; pass --force to overwrite or "
            "choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)


def _load_model(path: str | None, device: str):
    if path is None:
        from captum_matex.zoo import phantom_clip

        model, processor = phantom_clip()
        return model.to(device), processor, "embedded phantom_clip"
    from captum_matex.loading import ModelLoadError, load_clip

    try:
        model, processor = load_clip(path, device)
    except ModelLoadError as exc:
        raise CLIError(str(exc)) from exc
    return model, processor, path


def _method(name: str):
    from captum_matex.baselines import get

    try:
        return get(name)
    except KeyError as exc:
        raise CLIError(str(exc).strip("'\"")) from exc


def _save(fig, path: Path) -> None:
    fig.savefig(path, bbox_inches="tight")


def explain(args: argparse.Namespace) -> dict:
    r"""``matex explain``: explain one image for one or more phrases."""
    from captum_matex import MATEX
    from captum_matex.data.images import ImageReadError, read_image
    from captum_matex.viz import diagnostics_figure, overlay_figure

    phrases = list(args.phrases) + list(args.phrase or [])
    if not phrases:
        raise CLIError("give at least one phrase, e.g. matex explain IMAGE 'left pleural effusion'")
    if any(not p.strip() for p in phrases):
        raise CLIError("a phrase is empty; give a finding to explain")
    method = _method(args.method)
    try:
        radiograph = read_image(args.image)
    except ImageReadError as exc:
        raise CLIError(str(exc)) from exc
    model, processor, model_name = _load_model(args.model, args.device)
    out = Path(args.out)
    stems = [f"{i:02d}_{_slug(p)}" for i, p in enumerate(phrases)]
    names = [f"overlay_{s}.png" for s in stems] + ["summary.json"]
    if args.method == "matex":
        names += [f"stages_{s}.png" for s in stems]
    _prepare_out(out, names, args.force)

    pixels = processor(images=[radiograph.to_pil()], return_tensors="pt")["pixel_values"]
    pixels = pixels.to(args.device).expand(len(phrases), -1, -1, -1)
    explainer = method(model, processor)
    if isinstance(explainer, MATEX):
        maps, diagnostics = explainer.attribute(
            pixels, (phrases,), output="pixel", return_diagnostics=True
        )
        scores = diagnostics.score.tolist()
    else:
        maps = explainer.attribute(pixels, (phrases,), output="pixel")
        diagnostics = None
        scores = explainer.forward_func(pixels, phrases).tolist()

    records = []
    for i, (phrase, stem) in enumerate(zip(phrases, stems)):
        heat = maps[i, 0]
        peak = divmod(int(heat.argmax()), heat.shape[1])
        title = f"{args.method}: {phrase!r}\nscore {scores[i]:.3f}"
        _save(overlay_figure(pixels[i], heat, title), out / f"overlay_{stem}.png")
        files = [f"overlay_{stem}.png"]
        if diagnostics is not None:
            _save(diagnostics_figure(diagnostics, i, pixels[i]), out / f"stages_{stem}.png")
            files.append(f"stages_{stem}.png")
        records.append(
            {
                "phrase": phrase,
                "score": scores[i],
                "peak_row_col_model_input": list(peak),
                "layer_weights": (
                    diagnostics.layer_weights[i].tolist() if diagnostics is not None else None
                ),
                "files": files,
            }
        )
    summary = {
        "image": str(args.image),
        "image_size": list(radiograph.size),
        "model": model_name,
        "method": args.method,
        "model_input_size": list(pixels.shape[-2:]),
        "phrases": records,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(records)} explanation(s) to {out}")
    return summary


def demo(args: argparse.Namespace) -> dict:
    r"""``matex demo``: explain phantom test cases with the embedded model."""
    import torch.nn.functional as F

    from captum_matex import MATEX
    from captum_matex.data import PhantomCXR
    from captum_matex.metrics import boxes_to_mask, pointing_game
    from captum_matex.viz import overlay_figure
    from captum_matex.zoo import phantom_clip

    out = Path(args.out)
    names = [f"case_{i:02d}.png" for i in range(args.cases)] + ["demo_summary.json"]
    _prepare_out(out, names, args.force)
    model, processor = phantom_clip()
    dataset = PhantomCXR(split="test", seed=0)
    samples = [dataset[i] for i in range(args.cases)]
    grey = [(s.image[0].numpy() * 255).round().astype("uint8") for s in samples]
    pixels = processor(images=grey, return_tensors="pt")["pixel_values"]
    phrases = [s.phrase for s in samples]
    maps = MATEX(model, processor).attribute(pixels, (phrases,), output="pixel")
    size = tuple(samples[0].image.shape[-2:])
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    hits = pointing_game(maps, boxes_to_mask([s.boxes for s in samples], size)).tolist()
    rows = []
    for i, sample in enumerate(samples):
        hit = bool(hits[i]) if sample.boxes else None  # a normal study has nothing to point at
        verdict = {True: "hit", False: "miss", None: "no finding"}[hit]
        title = f"{sample.phrase!r}\npointing game: {verdict}"
        fig = overlay_figure(sample.image[0], maps[i, 0], title, boxes=sample.boxes)
        _save(fig, out / f"case_{i:02d}.png")
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
    summary = {"cases": rows, "pointing_game": rate}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    r"""The ``matex`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="matex",
        description="Explain what a medical vision-language model looks at (MATEX, Captum).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("explain", help="explain one image for one or more phrases")
    ex.add_argument("image", help="PNG, JPEG or DICOM radiograph")
    ex.add_argument("phrases", nargs="*", help="phrase(s) to explain")
    ex.add_argument("--phrase", action="append", help="another phrase (repeatable)")
    ex.add_argument("--model", help="transformers CLIP directory or hub name "
                    "(default: the embedded phantom model)")
    ex.add_argument("--method", default="matex", help="explanation method (default: matex)")
    ex.add_argument("--out", default="matex_out", help="output directory")
    ex.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ex.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ex.set_defaults(func=explain)

    de = sub.add_parser("demo", help="explain phantom cases with the embedded model")
    de.add_argument("--cases", type=int, default=8, help="number of test cases")
    de.add_argument("--out", default="matex_demo", help="output directory")
    de.add_argument("--force", action="store_true", help="overwrite existing outputs")
    de.set_defaults(func=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of the ``matex`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    torch.set_grad_enabled(True)
    try:
        args.func(args)
    except CLIError as exc:
        print(f"matex: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
