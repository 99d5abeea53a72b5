r"""Sanity checks: does the map depend on the model's weights and on the phrase?

* Model-parameter randomisation (Adebayo et al., NeurIPS 2018):
  :func:`randomized_model` re-initialises the image tower cascading from the
  top block; :func:`randomisation_spearman` compares the maps of the trained
  and the randomised model (low correlation passes).
* Prompt sensitivity: :func:`prompt_sensitivity` measures how far the map
  moves when the phrase is swapped for its contralateral version
  (:func:`~captum_matex.phrases.swap_laterality`, re-exported here) or an
  unrelated finding (high distance passes).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from captum_matex.metrics._common import average_ranks, flatten_maps, pearson
from captum_matex.phrases import swap_laterality as swap_laterality  # re-export

_VISION_WORDS = ("visual", "vision", "image")


def _tower_modules(
    model: nn.Module, block_names: list[str], extra_modules: Sequence[str] | None
) -> list[str]:
    """Names of the image path outside the blocks (embeddings, norms, projection)."""
    top = block_names[0].split(".")[0]
    names = [top]
    if extra_modules is None:
        extra_modules = [
            name
            for name, _ in model.named_children()
            if name != top and any(word in name.lower() for word in _VISION_WORDS)
        ]
    names.extend(extra_modules)
    return names


def _reinit(module: nn.Module, skip: set[int]) -> None:
    """Re-initialise every parameter of ``module`` not in ``skip`` (by id)."""
    covered: set[int] = set(skip)
    for sub in module.modules():
        own = [p for p in sub.parameters(recurse=False) if id(p) not in covered]
        reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
        if own and callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for param in module.parameters():
            if id(param) in covered:
                continue
            std = float(param.float().std()) if param.numel() > 1 else 0.0
            param.normal_(0.0, std if std > 0 else 0.02)
            covered.add(id(param))


def randomized_model(
    model: nn.Module,
    adapter=None,
    num_blocks: int | None = None,
    seed: int = 0,
    extra_modules: Sequence[str] | None = None,
) -> nn.Module:
    r"""A deep copy of ``model`` with the image tower's weights re-initialised,
    cascading from the top (Adebayo et al., "Sanity Checks for Saliency Maps",
    NeurIPS 2018).

    ``num_blocks=k`` re-initialises the last ``k`` vision blocks (output side:
    attention projections, MLPs and norms inside them). ``num_blocks=None``
    is the full cascade: every vision block and then the rest of the image
    path, i.e. the model's child module that holds the blocks (patch and
    position embeddings, class token, pre/post norms) and the image
    projection layers (direct children whose name contains "visual",
    "vision" or "image", e.g. ``visual_projection``; override with
    ``extra_modules``). The text tower is never touched, so the phrase still
    defines the query.

    Modules with ``reset_parameters`` (``nn.Linear``, ``nn.LayerNorm``,
    ``nn.Conv2d``, ``nn.Embedding``, ...) are reset to their PyTorch
    initialisation, as in Quantus' ``ModelParameterRandomisation``; bare
    parameters (class token, ``proj`` matrices) are redrawn from
    ``N(0, std^2)`` with the trained parameter's own standard deviation. The
    original model is left untouched and the global RNG state is restored.

    Args:
        model: the trained image-text model.
        adapter: its :class:`~captum_matex.adapters.VisionLanguageAdapter`
            (built from ``model`` when ``None``); only ``vision_blocks()`` is
            used.
        num_blocks: blocks to randomise from the top, or ``None`` for the
            full cascade.
        seed: seed of the re-initialisation.
        extra_modules: names of direct children of ``model`` randomised with
            the full cascade besides the tower holding the blocks.

    Returns:
        The randomised copy (same mode and ``requires_grad`` flags).

    Raises:
        ValueError: if ``num_blocks`` is outside ``[0, number of blocks]``
            or the adapter's blocks are not modules of ``model``.
    """
    if adapter is None:
        from captum_matex.adapters import get_adapter

        adapter = get_adapter(model)
    names = {id(m): name for name, m in model.named_modules()}
    blocks = adapter.vision_blocks()
    missing = [i for i, b in enumerate(blocks) if id(b) not in names]
    if missing:
        raise ValueError(
            f"vision blocks {missing} of the adapter are not modules of `model`; pass the "
            "adapter built for this model"
        )
    block_names = [names[id(b)] for b in blocks]
    if num_blocks is not None and not 0 <= num_blocks <= len(blocks):
        raise ValueError(
            f"num_blocks must be between 0 and {len(blocks)} (or None for the full "
            f"cascade), got {num_blocks}"
        )
    randomized = copy.deepcopy(model)
    chosen = block_names if num_blocks is None else block_names[len(blocks) - num_blocks :]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        done: set[int] = set()
        for name in reversed(chosen):  # top block first
            block = randomized.get_submodule(name)
            _reinit(block, done)
            done.update(id(p) for p in block.parameters())
        if num_blocks is None:
            for name in _tower_modules(model, block_names, extra_modules):
                module = randomized.get_submodule(name)
                _reinit(module, done)
                done.update(id(p) for p in module.parameters())
    return randomized


def spearman(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    r"""Per-sample Spearman rank correlation between two batches of maps.

    .. math:: \rho = \mathrm{Pearson}(\mathrm{rank}(A), \mathrm{rank}(B))

    over pixels, ranks 1-based with ties given their average rank (scipy's
    ``spearmanr``). NaN when either map is constant or contains NaN/inf (the
    correlation is undefined), as in scipy.

    Args:
        maps_a: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        maps_b: maps of the same shape.

    Returns:
        ``(B,)`` float tensor in [-1, 1].
    """
    a = flatten_maps(maps_a, "maps_a").flatten(1)
    b = flatten_maps(maps_b, "maps_b").flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"maps_a {tuple(a.shape)} and maps_b {tuple(b.shape)} differ in shape")
    finite = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    a = torch.where(finite[:, None], a, torch.zeros_like(a))
    b = torch.where(finite[:, None], b, torch.zeros_like(b))
    rho = pearson(average_ranks(a), average_ranks(b))
    return torch.where(finite, rho, torch.nan).to(a.dtype)


def randomisation_spearman(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    r"""Model-parameter randomisation test score (Adebayo et al., 2018): Spearman
    rank correlation between maps of the trained model (``maps_a``) and of
    :func:`randomized_model` (``maps_b``) for the same inputs.

    **Lower is better**: values near 0 (or below) mean the map depends on the
    learned weights; values near 1 mean the method ignores the model (it fails
    the sanity check). Ties get average ranks; NaN when either map is
    constant or has NaN/inf (see :func:`spearman`). Adebayo et al. also report
    the correlation of absolute values; our maps are non-negative, so the two
    coincide.

    Args:
        maps_a: ``(B, H, W)`` or ``(B, C, H, W)`` maps of the trained model.
        maps_b: maps of the randomised model, same shape.

    Returns:
        ``(B,)`` float tensor in [-1, 1].
    """
    return spearman(maps_a, maps_b)


def prompt_sensitivity(maps: Tensor, maps_swapped: Tensor, measure: str = "spearman") -> Tensor:
    r"""How far the map moves when the phrase is swapped (contralateral or
    unrelated finding), per sample.

    * ``measure="spearman"`` (default): :math:`1 - \rho_{Spearman}`, in
      [0, 2]; 0 means the same ranking of pixels.
    * ``measure="l1"``: total-variation distance of the maps as
      distributions, :math:`\tfrac12 \sum_p |P_p - Q_p|` with
      :math:`P = M^+ / \sum M^+` (negative values clipped), in [0, 1].

    **Higher is better**: a map that does not move when "left" becomes
    "right" does not depend on the phrase. NaN when either map is constant
    (Spearman) or has zero mass (L1), or contains NaN/inf.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` maps for the original phrases.
        maps_swapped: maps of the same images for the swapped phrases.
        measure: ``"spearman"`` or ``"l1"``.

    Returns:
        ``(B,)`` float tensor.
    """
    if measure == "spearman":
        return 1 - spearman(maps, maps_swapped)
    if measure != "l1":
        raise ValueError(f"measure must be 'spearman' or 'l1', got {measure!r}")
    a = flatten_maps(maps, "maps").flatten(1).clamp_min(0)
    b = flatten_maps(maps_swapped, "maps_swapped").flatten(1).clamp_min(0)
    if a.shape != b.shape:
        raise ValueError(f"maps {tuple(a.shape)} and maps_swapped {tuple(b.shape)} differ in shape")
    mass_a, mass_b = a.sum(1, keepdim=True), b.sum(1, keepdim=True)
    tv = 0.5 * (a / mass_a - b / mass_b).abs().sum(1)
    ok = (mass_a[:, 0] > 0) & (mass_b[:, 0] > 0) & torch.isfinite(tv)
    return torch.where(ok, tv, torch.nan)
