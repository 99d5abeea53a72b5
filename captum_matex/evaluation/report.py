"""Summaries of benchmark rows: means with bootstrap intervals, tables and charts."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from captum_matex import registry

#: Row fields that are not metrics.
ROW_KEYS = ("sample", "method", "finding", "phrase", "laterality", "truth")
#: Metrics broken down by finding in ``results.md`` (BioViL's grounding trio):
#: a mean over findings hides where a map wins (focal findings) and where the
#: anatomical prior alone does (findings whose box is an anatomical region).
BY_FINDING = ("pointing_game", "miou", "cnr")

#: Section title of each metric category in ``results.md``.
SECTIONS = {
    "localisation": "Localisation (original pixel grid, against the boxes)",
    "faithfulness": "Faithfulness (model input)",
    "sanity": "Sanity",
}


def metric_names(rows: Sequence[dict]) -> list[str]:
    r"""Metric columns present in ``rows``, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ROW_KEYS and (value is None or isinstance(value, (int, float))):
                names.setdefault(key, None)
    return list(names)


def bootstrap_interval(
    values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    r"""Percentile bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(rows: Sequence[dict], resamples: int = 1000) -> dict:
    r"""``{method: {metric: {"mean", "ci95", "n"}}}`` plus a per-finding breakdown.

    Rows are sorted by sample id first, so the result does not depend on the
    order in which workers wrote them. NaN values (undefined cases) are left
    out of a metric's mean and counted in ``n_undefined``.
    """
    rows = sorted(rows, key=lambda r: (r["method"], str(r["sample"])))
    names = metric_names(rows)
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)

    def stats(group: list[dict]) -> dict:
        out = {}
        for name in names:
            values = np.array([_value(r, name) for r in group], dtype=float)
            finite = values[np.isfinite(values)]
            out[name] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "ci95": list(bootstrap_interval(values, resamples)),
                "n": int(finite.size),
                "n_undefined": int(values.size - finite.size),
            }
        return out

    summary: dict = {"methods": {}, "by_finding": {}, "n_samples": {}}
    for method, group in by_method.items():
        summary["methods"][method] = stats(group)
        summary["n_samples"][method] = len(group)
        findings: dict[str, list[dict]] = defaultdict(list)
        for row in group:
            findings[str(row.get("finding"))].append(row)
        summary["by_finding"][method] = {
            finding: {name: v["mean"] for name, v in stats(items).items()}
            for finding, items in sorted(findings.items())
        }
    return summary


def paired_differences(
    rows: Sequence[dict], reference: str, metrics: Sequence[str], resamples: int = 1000
) -> dict:
    r"""``{method: {metric: {"mean", "ci95", "n"}}}``: the mean of ``reference``'s
    value minus the method's on the same sample, with a paired percentile
    bootstrap interval (samples resampled together), for every other method.

    Only samples where both values are finite count. An interval that excludes
    zero says the difference holds beyond the sampling noise of these pairs.
    """
    by_method: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_method[row["method"]][str(row["sample"])] = row
    base = by_method.get(reference, {})
    out: dict = {}
    for method in sorted(set(by_method) - {reference}):  # the order of summarize's tables
        out[method] = {}
        shared = sorted(set(base) & set(by_method[method]))
        for name in metrics:
            diffs = np.array([
                _value(base[s], name) - _value(by_method[method][s], name) for s in shared
            ], dtype=float)
            finite = diffs[np.isfinite(diffs)]
            out[method][name] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "ci95": list(bootstrap_interval(diffs, resamples)),
                "n": int(finite.size),
            }
    return out


def _value(row: dict, name: str) -> float:
    r"""A row's metric value as a float, NaN when missing or undefined (``None``)."""
    value = row.get(name)
    return math.nan if value is None else float(value)


def paired_table(differences: dict, reference: str, directions: Mapping[str, bool],
                 metrics: Sequence[str]) -> str:
    r"""A Markdown table of :func:`paired_differences`; a star marks an interval
    that excludes zero in the metric's better direction for ``reference``."""
    if not differences:
        return "(no other method)\n"
    head = ["method"] + [f"{m} {'↑' if directions.get(m, True) else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, per in differences.items():
        cells = [f"{reference} − {method}"]
        for metric in metrics:
            entry = per.get(metric)
            if entry is None or not math.isfinite(entry["mean"]):
                cells.append("n/a")
                continue
            low, high = entry["ci95"]
            better = low > 0 if directions.get(metric, True) else high < 0
            cells.append(f"{entry['mean']:+.3f} [{low:+.3f}, {high:+.3f}]{' *' if better else ''}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(
    summary: dict, directions: Mapping[str, bool], metrics: Sequence[str] | None = None
) -> str:
    r"""A Markdown table of means with 95% intervals; arrows give each metric's
    direction (``directions[name]`` is ``True`` when higher is better)."""
    methods = list(summary["methods"])
    if not methods:
        return "(no results)\n"
    metrics = list(metrics or next(iter(summary["methods"].values())).keys())
    head = ["method"] + [f"{m} {'↑' if directions.get(m, True) else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells = [method]
        for metric in metrics:
            entry = summary["methods"][method].get(metric)
            if entry is None or not math.isfinite(entry["mean"]):
                cells.append("n/a")
                continue
            low, high = entry["ci95"]
            cells.append(f"{entry['mean']:.3f} [{low:.3f}, {high:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metric_bar_chart(summary: dict, metrics: Sequence[str], directions: Mapping[str, bool]) -> Figure:
    r"""One bar chart per metric: each method's mean with its 95% interval."""
    methods = list(summary["methods"])
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.2 * cols, 0.28 * len(methods) * rows + 1.2 * rows), dpi=110)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        means = np.array([summary["methods"][m][metric]["mean"] for m in methods])
        cis = np.array([summary["methods"][m][metric]["ci95"] for m in methods])
        err = np.abs(np.stack([means - cis[:, 0], cis[:, 1] - means]))
        colours = ["tab:red" if m == "matex" else "tab:gray" if m == "prior_only" else "tab:blue"
                   for m in methods]
        ax.barh(range(len(methods)), np.nan_to_num(means), xerr=np.nan_to_num(err),
                color=colours, capsize=2)
        ax.set_yticks(range(len(methods)), methods, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{metric} ({'higher' if directions.get(metric, True) else 'lower'} is better)",
                     fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def comparison_figure(
    images: Sequence[np.ndarray],
    maps: Mapping[str, Sequence],
    boxes: Sequence[Sequence[tuple]],
    phrases: Sequence[str],
) -> Figure:
    r"""A grid of overlays: one row per sample, one column per method.

    Args:
        images: ``(H, W)`` radiographs.
        maps: method name to one map per sample, each of its image's size.
        boxes: ground-truth boxes per sample (drawn in green).
        phrases: phrase per sample (row label).
    """
    from captum_matex.viz import draw_overlay

    methods = list(maps)
    fig = Figure(figsize=(1.9 * len(methods), 2.1 * len(images)), dpi=100)
    for row, (image, sample_boxes, phrase) in enumerate(zip(images, boxes, phrases)):
        for col, method in enumerate(methods):
            ax = fig.add_subplot(len(images), len(methods), row * len(methods) + col + 1)
            draw_overlay(ax, image, maps[method][row], method if row == 0 else "", sample_boxes)
            if col == 0:
                ax.text(-0.05, 0.5, phrase, transform=ax.transAxes, rotation=90,
                        ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(figure: Figure, path: Path) -> None:
    r"""Save ``figure`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temp, bbox_inches="tight")
    os.replace(temp, path)


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def write_report(rows: Sequence[dict], config: dict, out: Path) -> dict:
    r"""Write ``summary.json``, ``results.md`` and ``figures/metrics.png`` for the
    merged rows of a study; each file is replaced atomically. Every metric
    column found in :data:`captum_matex.registry.metrics` (built-in or
    plugin) gets its direction, its category's table and a bar chart.

    Returns:
        The summary (see :func:`summarize`) with the configuration under ``"config"``.
    """
    summary = summarize(rows)
    summary["config"] = config
    names = metric_names(rows)
    infos = {name: registry.metrics.get(name) for name in names if name in registry.metrics}
    directions = {name: info.higher_is_better for name, info in infos.items()}
    directions["seconds_per_sample"] = False
    groups = {
        title: [m for m in names if m in infos and infos[m].category == category]
        for category, title in SECTIONS.items()
    }
    groups["Score and cost"] = [m for m in names if m in ("score", "seconds_per_sample")]
    n = max(summary["n_samples"].values(), default=0)
    text = [f"# Benchmark results\n\n{n} image-phrase pairs per method; mean [95% bootstrap "
            "interval]; arrows give the better direction.\n"]
    for title, columns in groups.items():
        if columns:
            text.append(f"\n## {title}\n\n" + markdown_table(summary, directions, columns))
    reference = (config.get("methods") or [None])[0]
    if reference in summary["methods"] and len(summary["methods"]) > 1:
        paired_metrics = [m for m in names if m in infos]
        summary["paired"] = {reference: paired_differences(rows, reference, paired_metrics)}
        text.append(
            f"\n## {reference} against each method, paired\n\nMean of {reference}'s value minus "
            "the method's on the same pair, [95% paired bootstrap interval]; * marks an interval "
            f"that excludes zero on {reference}'s better side.\n\n"
            + paired_table(summary["paired"][reference], reference, directions, paired_metrics))
    _write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=True))
    for metric in (m for m in BY_FINDING if m in names):
        arrow = "higher" if directions.get(metric, True) else "lower"
        text.append(f"\n## {metric} by finding ({arrow} is better)\n\n"
                    + _by_finding_table(summary, metric))
    text.append("\n## Configuration\n\n```json\n" + json.dumps(config, indent=1) + "\n```\n")
    _write_text(out / "results.md", "".join(text))
    if infos:
        save_figure(metric_bar_chart(summary, list(infos), directions), out / "figures" / "metrics.png")
    return summary


def _by_finding_table(summary: dict, metric: str) -> str:
    findings = sorted({f for per in summary["by_finding"].values() for f in per})
    lines = ["| method | " + " | ".join(findings) + " |", "|" + "---|" * (len(findings) + 1)]
    for method, per in summary["by_finding"].items():
        cells = [per.get(f, {}).get(metric, math.nan) for f in findings]
        lines.append(f"| {method} | " + " | ".join(
            "n/a" if not math.isfinite(c) else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
