r"""Stage 4b: anatomical spatial prior read from the phrase.

Location words in a phrase ("left basilar atelectasis", "right apical
pneumothorax") are mapped to soft regions of a generic frontal chest
radiograph. The stage has three parts:

- :func:`~captum_matex.phrases.parse_phrase` turns a phrase into a
  :class:`~captum_matex.phrases.PhraseAnatomy` (laterality, anatomical
  regions, finding); both live in :mod:`captum_matex.phrases` and are
  re-exported here;
- :class:`ChestAtlas` renders soft region masks at any resolution, from
  built-in shapes or from masks the user supplies (for example the output of a
  lung segmenter);
- :class:`AnatomicalPrior` is the pluggable MATEX stage: phrases in, one
  ``(B, h * w)`` prior over the patch grid out.

Scope of the parser: one laterality per phrase (a phrase naming both sides is
bilateral) and no negation handling: "no pneumothorax" is read like
"pneumothorax". Phrases without any anatomical word give a uniform prior, so
the stage never removes evidence it knows nothing about.

Radiology convention: on a PA/AP film the patient's left is on the image's
right. This is the default ``orientation="radiological"``; pass
``orientation="anatomical"`` for images shown with the patient's left on the
image's left.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.phrases import PhraseAnatomy, parse_phrase

# The MATEX stage, and the public face of the chest atlas: _atlas_shapes holds
# the built-in region shapes, _atlas the ChestAtlas that renders them (each
# importing only those named before it).
from captum_matex.stages._atlas import ATLAS_REGIONS, ChestAtlas, _check_orientation, _check_size

__all__ = [
    "ATLAS_REGIONS",
    "AnatomicalPrior",
    "ChestAtlas",
    "PhraseAnatomy",
    "parse_phrase",
]


def _split_masks(
    masks: Tensor | Sequence[Tensor | None] | None, batch: int
) -> list[Tensor | None]:
    r"""Per-sample user masks as a list of ``(H, W)`` tensors or ``None``."""
    if masks is None:
        return [None] * batch
    if isinstance(masks, Tensor):
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3:
            raise ValueError(
                f"masks must be (B, H, W) or (B, 1, H, W), got shape {tuple(masks.shape)}"
            )
        masks = list(masks.unbind(0))
    masks = list(masks)
    if len(masks) != batch:
        raise ValueError(f"masks has {len(masks)} rows but phrases has {batch}")
    return [None if mask is None else _check_sample_mask(mask) for mask in masks]


def _check_sample_mask(mask: Tensor) -> Tensor:
    r"""One per-sample mask as ``(H, W)``."""
    if mask.is_meta:
        raise ValueError(
            "anatomy masks are on the 'meta' device, which holds no data; compute real "
            "masks (e.g. with a lung segmenter) and move them with masks.to(images.device)"
        )
    if mask.is_sparse:
        raise TypeError("anatomy masks are sparse; pass dense masks (masks.to_dense())")
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"each mask must be (H, W) or (1, H, W), got shape {tuple(mask.shape)}")
    return mask


def _pool_mask(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    r"""Area-average one ``(H, W)`` mask to ``grid`` and flatten it row-major."""
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0:
        raise ValueError("masks must be finite and non-negative (probabilities or 0/1 labels)")
    return F.adaptive_avg_pool2d(mask[None, None], grid).flatten()


def _normalise_peak(values: Tensor) -> Tensor:
    r"""Scale to peak 1; an all-zero map becomes uniform ones."""
    peak = values.max()
    return values / peak if peak > 0 else torch.ones_like(values)


class AnatomicalPrior:
    r"""Anatomical spatial prior over the patch grid, read from each phrase.

    Each phrase is parsed with :func:`~captum_matex.phrases.parse_phrase`;
    its regions (union = pixelwise max; a side and a zone intersect, so
    "left upper lobe" is the left lung times the upper band) are rendered
    by a :class:`ChestAtlas`, area-averaged to the patch grid and scaled to
    peak 1. A phrase without anatomical words, or ``None``, gives a uniform
    prior of ones, so the fusion stage falls back to the model's own
    evidence. Per-sample user masks replace the atlas for their samples.

    Args:
        atlas (ChestAtlas, optional): region atlas; built from
            ``orientation`` and ``softness`` when omitted.
            Default: None
        orientation (str, optional): ``"radiological"`` (patient's left on the
            image right, PA/AP films) or ``"anatomical"``. Must match
            ``atlas.orientation`` when an atlas is given.
            Default: ``"radiological"``
        softness (float, optional): edge width of the built-in shapes in
            normalised image units; only when ``atlas`` is omitted.
            Default: None (the atlas default, 0.02)

    Examples::

        >>> prior = AnatomicalPrior()
        >>> p = prior(["left pleural effusion", "no anatomy here"], grid=(14, 14))
        >>> p.shape
        torch.Size([2, 196])
        >>> bool((p[1] == 1).all())
        True
        >>> prior.describe("left pleural effusion")  # doctest: +NORMALIZE_WHITESPACE
        "'left pleural effusion': laterality=left, finding=effusion ->
        left base | left costophrenic angle"
    """

    def __init__(
        self,
        atlas: ChestAtlas | None = None,
        orientation: str = "radiological",
        softness: float | None = None,
    ) -> None:
        _check_orientation(orientation)
        if atlas is None:
            atlas = ChestAtlas(
                orientation=orientation, softness=0.02 if softness is None else softness
            )
        elif softness is not None:
            raise ValueError("softness applies to the built-in atlas; set it on the ChestAtlas")
        elif atlas.orientation != orientation:
            raise ValueError(
                f"atlas was built with orientation={atlas.orientation!r} but "
                f"orientation={orientation!r}; pass the same value to both"
            )
        self.atlas = atlas

    @property
    def orientation(self) -> str:
        r"""Image orientation of the atlas (``"radiological"`` or ``"anatomical"``)."""
        return self.atlas.orientation

    def parse(self, phrase: str | None) -> PhraseAnatomy:
        r"""Parse one phrase (diagnostics).

        Args:
            phrase (str or None): the phrase; ``None`` parses as no anatomy.

        Returns:
            PhraseAnatomy: laterality, regions and finding of the phrase.
        """
        return parse_phrase(phrase) if phrase is not None else PhraseAnatomy(None, (), None)

    def describe(self, phrase: str | None) -> str:
        r"""One line saying what the prior reads from a phrase and renders.

        Args:
            phrase (str or None): the phrase.

        Returns:
            str: the parse and the atlas regions, or a note that the prior is
            uniform.
        """
        anatomy = self.parse(phrase)
        if not anatomy.regions:
            return f"{phrase!r}: no anatomical word -> uniform prior"
        return (
            f"{phrase!r}: laterality={anatomy.laterality}, finding={anatomy.finding} -> "
            + " | ".join(anatomy.atlas_keys())
        )

    def __call__(
        self,
        phrases: Sequence[str | None],
        grid: tuple[int, int],
        masks: Tensor | Sequence[Tensor | None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""
        Args:
            phrases (Sequence[str or None]): one phrase per sample.
            grid (tuple[int, int]): ``(h, w)`` patch grid.
            masks (Tensor or Sequence[Tensor or None], optional): per-sample
                region masks replacing the atlas, ``(B, H, W)`` or
                ``(B, 1, H, W)`` non-negative values, or a length-``B``
                sequence of ``(H, W)`` tensors and ``None`` (``None`` = use
                the atlas for that sample). Area-averaged to ``grid``.
                Default: None
            device (torch.device or str, optional): output device; defaults
                to the device of ``masks`` when it is a tensor, else the CPU.
            dtype (torch.dtype, optional): floating output dtype.
                Default: ``torch.float32``

        Returns:
            Tensor: ``(B, h * w)`` prior in [0, 1], peak 1 per sample,
            flattened row-major like ViT patch tokens. Samples whose phrase
            has no anatomical word, or whose mask is all zeros, get ones.

        Examples::

            >>> prior = AnatomicalPrior()
            >>> masks = torch.zeros(2, 224, 224)
            >>> masks[1, :112] = 1.0  # sample 1: a segmentation of the top half
            >>> p = prior(["right apical pneumothorax", None], (14, 14), masks=[None, masks[1]])
            >>> p.shape, float(p[1].view(14, 14)[:7].mean()), float(p[1].view(14, 14)[7:].sum())
            (torch.Size([2, 196]), 1.0, 0.0)
        """
        if isinstance(phrases, str):
            raise TypeError("phrases must be a sequence of phrases, one per sample, not a str")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
        grid = _check_size(grid, "grid")
        per_sample = _split_masks(masks, len(phrases))
        if device is None:
            device = masks.device if isinstance(masks, Tensor) else torch.device("cpu")
        rows = [
            self._sample_prior(phrase, mask, grid).to(device=device, dtype=dtype)
            for phrase, mask in zip(phrases, per_sample)
        ]
        if not rows:
            return torch.empty(0, grid[0] * grid[1], device=device, dtype=dtype)
        return torch.stack(rows)

    def _sample_prior(
        self, phrase: str | None, mask: Tensor | None, grid: tuple[int, int]
    ) -> Tensor:
        r"""Flat prior of one sample: its own mask if given, else the atlas."""
        if mask is not None:
            return _normalise_peak(_pool_mask(mask, grid))
        if phrase is not None and not isinstance(phrase, str):
            raise TypeError(f"each phrase must be a str or None, got {type(phrase).__name__}")
        keys = self.parse(phrase).atlas_keys()
        if not keys:
            return torch.ones(grid[0] * grid[1])
        return _normalise_peak(self.atlas.render(keys, grid).flatten())
