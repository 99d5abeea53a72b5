"""Metrics on batched torch tensors: localisation against boxes."""

from captum_matex.metrics.localisation import boxes_to_mask, pointing_game

__all__ = ["boxes_to_mask", "pointing_game"]
