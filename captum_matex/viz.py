"""Figures: overlays of maps on radiographs and MATEX's per-stage diagnostics."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from captum_matex.matex import MATEXDiagnostics

Box = tuple[float, float, float, float]


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def as_grey(image: Tensor | np.ndarray) -> np.ndarray:
    r"""A displayable ``(H, W)`` grey image in [0, 1] from ``(C, H, W)``, ``(H, W)`` or
    ``(H, W, C)`` data of any range (channels averaged, min-max scaled)."""
    array = _to_numpy(image)
    if array.ndim == 3:
        channel_axis = 0 if array.shape[0] in (1, 3, 4) else -1
        array = array.mean(axis=channel_axis)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def draw_overlay(
    ax,
    image: Tensor | np.ndarray,
    attribution: Tensor | np.ndarray,
    title: str = "",
    boxes: Sequence[Box] = (),
    alpha: float = 0.5,
    cmap: str = "jet",
) -> None:
    r"""Draw ``attribution`` blended over ``image`` on a matplotlib axis.

    Args:
        ax: the axis.
        image: the radiograph, any layout :func:`as_grey` accepts.
        attribution: a map of the image's size, ``(H, W)`` or channels first.
        title: axis title.
        boxes: ``(x, y, w, h)`` ground-truth boxes in pixels, drawn in green.
        alpha: opacity of the heat map.
        cmap: matplotlib colour map of the heat map.
    """
    heat = _to_numpy(attribution)
    if heat.ndim == 3:
        heat = heat.mean(0)
    ax.imshow(as_grey(image), cmap="gray", vmin=0, vmax=1)
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=max(float(heat.max()), 1e-12))
    for x, y, w, h in boxes:
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.5))
    peak = np.unravel_index(int(heat.argmax()), heat.shape)
    ax.plot(peak[1], peak[0], marker="+", color="white", markersize=10, mew=2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def overlay_figure(
    image: Tensor | np.ndarray,
    attribution: Tensor | np.ndarray,
    title: str = "",
    boxes: Sequence[Box] = (),
) -> Figure:
    r"""One image with its map overlaid (white cross: the map's peak).

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` (not shown; save it).
    """
    fig = Figure(figsize=(4, 4.3), dpi=120)
    draw_overlay(fig.add_subplot(1, 1, 1), image, attribution, title, boxes)
    fig.tight_layout()
    return fig


def diagnostics_figure(
    diagnostics: MATEXDiagnostics, index: int = 0, image: Tensor | np.ndarray | None = None
) -> Figure:
    r"""MATEX's stages for sample ``index``: each block's gradient-weighted
    attention with its consistency weight, each rollout window, the priors, the
    evidence and the fused map, all on the patch grid.

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure`.
    """
    panels: list[tuple[str, Tensor]] = []
    if diagnostics.per_layer is not None:
        weights = diagnostics.layer_weights[index]
        for layer, grid in enumerate(diagnostics.per_layer[index]):
            panels.append((f"block {layer}  w={weights[layer]:.2f}", grid))
    if diagnostics.rollouts is not None:
        for depth, grid in zip(diagnostics.rollout_depths, diagnostics.rollouts[index]):
            panels.append((f"rollout, last {depth}", grid))
    for name, prior in diagnostics.priors.items():
        panels.append((f"{name} prior", prior[index]))
    panels.append(("evidence", diagnostics.evidence[index]))
    panels.append(("MATEX", diagnostics.fused[index]))
    cols = min(6, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.1 * cols, 2.3 * rows + 0.4), dpi=110)
    for i, (title, grid) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        heat = _to_numpy(grid)
        if image is not None:
            grey = torch.nn.functional.interpolate(
                torch.as_tensor(as_grey(image))[None, None], size=heat.shape, mode="area"
            )[0, 0].numpy()
            ax.imshow(grey, cmap="gray")
            ax.imshow(heat, cmap="jet", alpha=0.55)
        else:
            ax.imshow(heat, cmap="viridis")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    phrase = diagnostics.phrases[index] if diagnostics.phrases else ""
    fig.suptitle(f"MATEX stages: {phrase!r}  (score {float(diagnostics.score[index]):.3f})", fontsize=10)
    fig.tight_layout()
    return fig
