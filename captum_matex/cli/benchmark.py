"""``matex benchmark``: run, resume or list the comparative study's methods and metrics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captum_matex import registry
from captum_matex._quiet import VERBOSE_HELP, quiet_third_party
from captum_matex.cli._common import CLIError, load_plugins
from captum_matex.evaluation import (
    DEFAULT_METHODS,
    SPLITS,
    BenchmarkConfig,
    BenchmarkError,
    ResultsFileError,
    run_benchmark,
)
from captum_matex.loading import MODEL_HELP


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _limit(text: str) -> int | None:
    return None if text.lower() in ("all", "none", "0") else int(text)


def add_parser(sub: argparse._SubParsersAction) -> None:
    r"""Add ``benchmark`` to the ``matex`` sub-commands."""
    parser = sub.add_parser(
        "benchmark",
        help="compare explanation methods against ground-truth boxes (resumable, torchrun-ready)",
        description=(
            "Run a comparative study: every method explains every image-phrase pair; maps "
            "are scored against the boxes on the original pixel grid (localisation), by "
            "re-scoring perturbed inputs (faithfulness) and by sanity checks. Rerun the "
            "same command to resume after an interruption. Scale out with "
            "'torchrun --nproc_per_node=N -m captum_matex.cli benchmark ...'."
        ),
    )
    parser.add_argument("--dataset", choices=["phantom", "mscxr"], default="phantom")
    parser.add_argument("--root", help="folder of your MS-CXR copy (--dataset mscxr)")
    parser.add_argument("--csv", help="MS-CXR release CSV when it is not in --root")
    robustness = "; ".join(f"{s.name}: {s.description}" for s in SPLITS.values())
    parser.add_argument("--split", default="test",
                        help="train, val, test, or all for MS-CXR (default: test); on the "
                        "phantom also a held-out robustness split made from its test films "
                        f"({robustness})")
    parser.add_argument("--limit", type=_limit, default=200,
                        help="image-phrase pairs to use, or 'all' (default: 200)")
    parser.add_argument("--methods", type=_names, default=list(DEFAULT_METHODS),
                        help="comma-separated method names, built-in or plugin (default: MATEX, "
                        "its ablations, prior_only and the baselines; --list shows all)")
    parser.add_argument("--metrics", type=_names, default=None,
                        help="comma-separated metric names, built-in or plugin (default: every "
                        "metric marked for the benchmark; --list shows all)")
    parser.add_argument("--list", action="store_true",
                        help="list every method and metric (built-in and plugin, with where each "
                        "comes from) and every broken plugin, then exit")
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--mode", choices=["letterbox", "processor"], default="letterbox",
                        help="how images become model inputs (default: letterbox)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--method-kwargs", type=json.loads, default={},
                        help='JSON of constructor arguments per method, e.g. \'{"m2ib": {"beta": 1}}\'')
    parser.add_argument("--no-faithfulness", action="store_true",
                        help="skip confidence drop/increase and deletion/insertion")
    parser.add_argument("--curve-steps", type=int, default=16,
                        help="steps of the deletion / insertion curves (default: 16)")
    parser.add_argument("--no-sanity", action="store_true",
                        help="skip model randomisation and prompt sensitivity")
    parser.add_argument("--randomisation-draws", type=int, default=1,
                        help="randomised models the model-randomisation check draws (seeds "
                        "--seed, --seed + 1, ...; each a copy of the model in memory); each "
                        "pair's value is their mean (default: 1)")
    parser.add_argument("--atlas", choices=["auto", "generic", "phantom"], default="auto",
                        help="chest atlas of the anatomical prior (default auto: the phantom "
                        "atlas on the phantom, the generic one otherwise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rescore", type=_names, default=[],
                        help="comma-separated methods of the study to score again on every "
                        "sample when resuming, e.g. after changing their code (a resumed study "
                        "sees changed data, not changed code); to resume an interrupted "
                        "rescoring, rerun without it")
    parser.add_argument("--out", default="matex_benchmark", help="output folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--force", action="store_true",
                        help="set aside (*.bak) damaged or foreign results files in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    parser.set_defaults(func=benchmark)


def benchmark(args: argparse.Namespace) -> dict | None:
    r"""
    ``matex benchmark``: run or resume a study and print its results table, or
    (``--list``) print what can be compared.

    Third-party loading messages are hidden unless ``--verbose``; the
    benchmark's own progress bar stays (``--no-progress`` hides it).

    Returns:
        dict or None: The study's summary; None for ``--list`` and on the
        ranks of a distributed run other than the main one.
    """
    from captum_matex.data import ImageReadError, MSCXRError
    from captum_matex.loading import ModelLoadError

    load_plugins()
    if args.list:
        sys.stdout.write(listing())
        return None
    try:
        config = BenchmarkConfig(
            dataset=args.dataset, split=args.split, limit=args.limit, methods=args.methods,
            model=args.model, root=args.root, csv=args.csv, mode=args.mode,
            batch_size=args.batch_size, faithfulness=not args.no_faithfulness,
            curve_steps=args.curve_steps, sanity=not args.no_sanity, seed=args.seed,
            method_kwargs=args.method_kwargs,
            atlas=args.atlas, metrics=args.metrics,
            randomisation_draws=args.randomisation_draws,
        )
        with quiet_third_party(args.verbose):
            summary = run_benchmark(config, args.out, args.device, args.force,
                                    not args.no_progress, args.rescore)
    except (ResultsFileError, BenchmarkError, MSCXRError, ImageReadError, ModelLoadError) as exc:
        raise CLIError(str(exc)) from exc
    if summary is not None:
        table = Path(args.out, "results.md").read_text().split("\n## Configuration")[0]
        sys.stdout.write(table)
        print(f"\nwrote summary.json, results.md and figures/ to {args.out}")
    return summary


def listing() -> str:
    r"""Every registered method and metric with its origin, then the broken plugins.

    Returns:
        str: The text ``matex benchmark --list`` prints.
    """
    lines = ["methods (--methods):"]
    for entry in registry.methods.entries():
        lines.append(f"  {entry.name:<24} {entry.origin:<22} {entry.obj.__name__}")
    lines.append("metrics (--metrics):")
    for entry in registry.metrics.entries():
        info = entry.obj
        arrow = "higher" if info.higher_is_better else "lower"
        use = "" if info.benchmark == "default" else f" [{info.benchmark}]"
        lines.append(f"  {entry.name:<24} {entry.origin:<22} {info.category}, {arrow} is "
                     f"better: {info.description}{use}")
    broken = registry.broken_plugins()
    if broken:
        lines.append("broken plugins (skipped):")
        lines += [f"  {failure}" for failure in broken]
    return "\n".join(lines) + "\n"
