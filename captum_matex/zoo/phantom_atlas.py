"""The chest atlas fitted to the phantom's population anatomy."""

from __future__ import annotations

import functools

from captum_matex.stages.anatomy import AnatomicalPrior, ChestAtlas


@functools.lru_cache(maxsize=1)
def phantom_atlas(count: int = 256) -> ChestAtlas:
    r"""
    A :class:`~captum_matex.stages.anatomy.ChestAtlas` whose lungs and heart
    are the mean anatomy of ``count`` phantom *train* patients
    (:meth:`~captum_matex.data.PhantomCXR.mean_anatomy`).

    The built-in atlas describes a typical clinical PA film (lungs from 12 %
    to 82 % of the height); phantom lungs end near 62-66 %, so "base" and
    "lower zone" would land below the diaphragm. This is the phantom's
    counterpart of fitting the atlas to a data set's average anatomy, or of a
    lung segmenter: no finding and no label is used.

    Args:
        count (int, optional): Patients averaged. Default: 256

    Returns:
        ChestAtlas: the fitted atlas (cached).
    """
    from captum_matex.data import PhantomCXR

    return ChestAtlas(masks=PhantomCXR(split="train").mean_anatomy(count))


def phantom_prior() -> AnatomicalPrior:
    r"""An :class:`~captum_matex.stages.anatomy.AnatomicalPrior` on :func:`phantom_atlas`,
    the anatomical prior to use when explaining phantom films."""
    return AnatomicalPrior(atlas=phantom_atlas())
