"""Cascading model-parameter randomisation (Adebayo et al., "Sanity checks for
saliency maps", NeurIPS 2018) on an embedded model.

The image tower's blocks are re-initialised one by one from the top
(:func:`captum_matex.metrics.sanity.randomized_model` with ``num_blocks=k``),
then the rest of the image path ("full"). For every stage and method the
Spearman rank correlation between the maps of the trained and of the
randomised model is averaged over phantom test pairs, with a 95% bootstrap
interval. A method whose maps depend on the learnt weights falls towards 0 as
the cascade proceeds; a map that stays high is drawn by something the
randomisation cannot touch (an atlas, the phrase's words, the image's edges).

    python benchmarks/cascading_randomisation.py --model phantom-clip --limit 100 \\
        --out benchmarks/results/sanity/phantom_clip
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from captum_matex.data.geometry import prepare
from captum_matex.evaluation import BenchmarkConfig, phantom_samples
from captum_matex.evaluation.report import bootstrap_interval
from captum_matex.loading import load_model
from captum_matex.metrics.sanity import randomized_model, spearman

DEFAULT_METHODS = "matex,matex_no_anatomy,prior_only,chefer,rollout,saliency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="phantom-clip")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--limit", type=int, default=100, help="test pairs with a finding")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed of the test films")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", default="benchmarks/results/sanity/phantom_clip")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    model, processor = load_model(args.model)
    config = BenchmarkConfig(dataset="phantom", split="test", seed=args.seed, model=args.model)
    samples = phantom_samples("test", args.limit, seed=args.seed)
    batches = []
    for i in range(0, len(samples), args.batch_size):
        chunk = samples[i : i + args.batch_size]
        pixels, _ = prepare([s.load() for s in chunk], processor)
        batches.append((pixels, [s.phrase for s in chunk]))
    methods = args.methods.split(",")
    blocks = len(config.build(methods[0], model, processor).adapter.vision_blocks())
    stages: list[int | None] = list(range(1, blocks + 1)) + [None]

    def maps_of(name: str, net) -> torch.Tensor:
        explainer = config.build(name, net, processor)
        out = []
        for pixels, phrases in batches:
            torch.manual_seed(args.seed)
            out.append(explainer.attribute(pixels, (phrases,), output="pixel").detach())
        return torch.cat(out)

    trained = {name: maps_of(name, model) for name in methods}
    results: dict[str, list[dict]] = {name: [] for name in methods}
    for stage in stages:
        randomised = randomized_model(model, num_blocks=stage, seed=0)
        label = "full" if stage is None else f"top {stage}"
        for name in methods:
            rho = spearman(trained[name], maps_of(name, randomised)).double().numpy()
            low, high = bootstrap_interval(rho)
            results[name].append({"stage": label, "mean": float(np.nanmean(rho)),
                                  "ci95": [low, high], "n": int(np.isfinite(rho).sum())})
        print(label, {n: round(results[n][-1]["mean"], 3) for n in methods}, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [r["stage"] for r in results[methods[0]]]
    (out / "cascade.json").write_text(json.dumps(
        {"model": args.model, "seed": args.seed, "pairs": len(samples), "blocks": blocks,
         "results": results}, indent=1))
    lines = ["| method | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name in methods:
        cells = [f"{r['mean']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" for r in results[name]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "cascade.md").write_text(
        f"Spearman between trained and randomised maps, {args.model}, {len(samples)} phantom "
        f"test pairs (seed {args.seed}); blocks re-initialised from the top, then the whole "
        "image path (full); mean [95% bootstrap interval], lower is better.\n\n"
        + "\n".join(lines) + "\n")
    _plot(results, labels, out / "cascade.png", args.model)
    print("\n".join(lines))


def _plot(results: dict[str, list[dict]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    x = np.arange(len(labels))
    for name, rows in results.items():
        means = np.array([r["mean"] for r in rows])
        low = np.array([r["ci95"][0] for r in rows])
        high = np.array([r["ci95"][1] for r in rows])
        ax.plot(x, means, marker="o", label=name)
        ax.fill_between(x, low, high, alpha=0.15)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("blocks re-initialised (from the output side)")
    ax.set_ylabel("Spearman (trained vs randomised)")
    ax.set_title(f"Cascading randomisation, {title}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
