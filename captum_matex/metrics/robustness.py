r"""Metrics of the held-out robustness splits (:mod:`captum_matex.evaluation.robustness`).

* :func:`empty_side_peak`: for a phrase whose side was swapped, does the map
  peak on the stated side of the film, where there is nothing to find?
* :func:`discrimination`: for a film with two findings, does each phrase's
  map peak in its own finding's boxes?

Both follow the conventions of :mod:`~captum_matex.metrics.localisation`
(constant maps never hit; an empty mask gives NaN).
"""

from __future__ import annotations

from torch import Tensor

from captum_matex.metrics.localisation import pointing_game


def empty_side_peak(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Is the map's maximum on the side of the film that the phrase states,
    when the finding lies on the other side?

    .. math::

        \mathrm{ESP} = \mathbb{1}\left[\arg\max_p M_p \in S\right]

    with :math:`S` the stated side's half of the film (patient left is image
    right on a PA film). **Lower is better** (range [0, 1]; the data-set mean
    is the share of maps that follow the words to the empty side rather than
    the image to the finding). It is the pointing game against :math:`S`, so
    ties, constant maps (0) and empty masks (NaN) behave as in
    :func:`~captum_matex.metrics.pointing_game`.

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (channels summed).
        masks: ``(B, H, W)`` bool, the stated side of each film.

    Returns:
        ``(B,)`` float tensor: 1.0 where the peak is on the stated side.
    """
    return pointing_game(maps, masks)


def discrimination(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Does each phrase of a two-finding film point at its own finding?

    .. math::

        \mathrm{D} = \mathbb{1}\left[\arg\max_p M^{(1)}_p \in B_1\right]
        \cdot \mathbb{1}\left[\arg\max_p M^{(2)}_p \in B_2\right]

    **Higher is better** (range [0, 1]; the data-set mean is the share of
    films where both phrases hit). NaN when either finding has no box.

    Args:
        maps: ``(F, 2, H, W)``: per film, the maps of its two phrases.
        masks: ``(F, 2, H, W)`` bool: per film, the boxes of each finding.

    Returns:
        ``(F,)`` float tensor: 1.0 where both maps peak in their own boxes.
    """
    if maps.dim() != 4 or maps.shape[1] != 2 or masks.shape != maps.shape:
        raise ValueError(f"discrimination takes (F, 2, H, W) maps and masks, got "
                         f"{tuple(maps.shape)} and {tuple(masks.shape)}")
    hits = pointing_game(maps.flatten(0, 1), masks.flatten(0, 1)).view(-1, 2)
    return hits.amin(1)  # NaN propagates: amin of a NaN pair is NaN
