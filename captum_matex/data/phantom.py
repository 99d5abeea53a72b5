r"""
Synthetic frontal chest-radiograph phantom with ground-truth findings.

The phantom draws a PA chest film from a handful of smooth analytic shapes
(body, lungs with vascular markings, ribs, clavicles, mediastinum, heart,
diaphragm domes with costophrenic angles) and adds findings at anatomically
plausible places. Every sample carries the pixel mask and the boxes of each
finding, plus a radiology phrase describing it, so that explanation maps can
be scored without any credentialed data.

Radiology convention: the film is viewed as if facing the patient, so the
patient's *left* is on the *image right* (large ``x``).

Samples are a pure function of ``(seed, split, index)``: the splits use
disjoint ranges of per-sample seeds, so ``train``, ``val`` and ``test`` never
share an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

# The dataset, and the public face of four modules, one job each, each importing
# only those named before it: _phantom_phrases holds the finding names and phrase
# templates, _phantom_anatomy the patient geometry, _phantom_film the normal
# film's layers and exposure, _phantom_findings the findings drawn on it. The
# phrase tables and _fill are re-exported for tools/train_phantom.py.
from captum_matex.data._phantom_anatomy import _Anatomy, _draw_heart, _lung_mask
from captum_matex.data._phantom_film import _draw_normal, _render_film
from captum_matex.data._phantom_findings import _ADDERS, _ZONES, _side_index
from captum_matex.data._phantom_phrases import (  # noqa: F401
    BILATERAL_TEMPLATES,
    CANONICAL,
    CANONICAL_BILATERAL,
    FINDINGS,
    LATERALISED,
    TEMPLATES,
    _fill,
    _pick_phrase,
    all_phrases,
    candidate_phrases,
)
from captum_matex.phrases import swap_laterality

__all__ = [
    "PhantomCXR",
    "PhantomSample",
    "FindingRecord",
    "candidate_phrases",
    "swap_laterality",
    "all_phrases",
]

Box = Tuple[int, int, int, int]
SPLIT_OFFSETS: Dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
MAX_LENGTH = 10_000_000
GENERATOR_VERSION = 1  # bump when the drawing changes (training banks are cached by it)


@dataclass
class FindingRecord:
    r"""
    Ground truth of one finding in a phantom image.

    Attributes:
        finding (str): Entry of :attr:`PhantomCXR.FINDINGS`.
        laterality (str or None): ``"left"``, ``"right"``, ``"bilateral"``
            (patient side) or ``None``.
        phrase (str): Radiology phrase describing the finding.
        boxes (list of tuple): ``(x, y, w, h)`` pixel boxes covering the mask.
        mask (torch.Tensor): Boolean ``(H, W)`` pixel mask of the finding.
        zone (str): ``"upper"``, ``"mid"`` or ``"lower"`` lung zone.
        size (str): Size or severity word.
    """

    finding: str
    laterality: Optional[str]
    phrase: str
    boxes: List[Box]
    mask: torch.Tensor
    zone: str = "mid"
    size: str = "moderate"


@dataclass
class PhantomSample:
    r"""
    One phantom radiograph with its ground truth.

    The sample-level fields describe the primary finding
    (``findings[0]``).

    Attributes:
        image (torch.Tensor): Float ``(1, H, W)`` image in ``[0, 1]``.
        phrase (str): Phrase of the primary finding.
        finding (str): Primary finding name.
        laterality (str or None): Side of the primary finding.
        boxes (list of tuple): ``(x, y, w, h)`` boxes of the primary finding
            (empty for normal studies).
        mask (torch.Tensor): Boolean ``(H, W)`` mask of the primary finding.
        findings (list of FindingRecord): All findings, primary first.
        index (int): Index in the split.
        seed (int): Per-sample random seed.
    """

    image: torch.Tensor
    phrase: str
    finding: str
    laterality: Optional[str]
    boxes: List[Box]
    mask: torch.Tensor
    findings: List[FindingRecord] = field(default_factory=list)
    index: int = 0
    seed: int = 0


def _boxes_from_mask(mask: np.ndarray, split_x: Optional[int] = None) -> List[Box]:
    r"""
    Tight ``(x, y, w, h)`` boxes of a mask, optionally one per image half.
    """
    parts = [mask]
    if split_x is not None:
        left, right = mask.copy(), mask.copy()
        left[:, split_x:] = False
        right[:, :split_x] = False
        parts = [left, right]
    boxes = []
    for part in parts:
        rows = np.flatnonzero(part.any(1))
        cols = np.flatnonzero(part.any(0))
        if rows.size == 0:
            continue
        x0, x1, y0, y1 = cols[0], cols[-1], rows[0], rows[-1]
        boxes.append((int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)))
    return boxes


class PhantomCXR(torch.utils.data.Dataset):
    r"""
    Deterministic synthetic PA chest radiographs with grounded findings.

    ``PhantomCXR(split="test", seed=0)[i]`` is always the same image. The
    ``train``, ``val`` and ``test`` splits draw per-sample seeds from disjoint
    ranges, so they share no image.

    Args:

        split (str, optional): ``"train"``, ``"val"`` or ``"test"``.
            Default: ``"test"``
        seed (int, optional): Global seed; different seeds give different
            datasets. Default: 0
        length (int, optional): Number of samples. Default: 1000
        size (int, optional): Image side in pixels. Default: 224
        p_normal (float, optional): Probability of a normal study.
            Default: 1 / len(FINDINGS)
        p_second (float, optional): Probability of a second (non-primary)
            finding in an abnormal study. Default: 0.15
        findings (sequence of str, optional): Restrict primary findings to
            these names. Default: all of :attr:`FINDINGS`

    Examples::

        >>> ds = PhantomCXR(split="test", seed=0)
        >>> s = ds[0]
        >>> s.image.shape, s.phrase, s.boxes
    """

    FINDINGS: Tuple[str, ...] = FINDINGS
    LATERALISED: Tuple[str, ...] = LATERALISED
    TEMPLATES: Dict[str, Tuple[str, ...]] = TEMPLATES

    def __init__(
        self,
        split: str = "test",
        seed: int = 0,
        length: int = 1000,
        size: int = 224,
        p_normal: Optional[float] = None,
        p_second: float = 0.15,
        findings: Optional[Sequence[str]] = None,
    ) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
        if not 0 < length <= MAX_LENGTH:
            raise ValueError(f"length must be in [1, {MAX_LENGTH}], got {length}")
        if size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size}")
        names = tuple(findings) if findings is not None else FINDINGS
        unknown = [f for f in names if f not in FINDINGS]
        if unknown:
            raise ValueError(f"unknown findings {unknown}; choose from {FINDINGS}")
        self.split, self.seed, self.length, self.size = split, seed, length, size
        self.p_second = p_second
        self.primary = names
        self.p_normal = (1.0 / len(FINDINGS)) if p_normal is None else p_normal

    def __len__(self) -> int:
        r"""Number of samples in the split."""
        return self.length

    def sample_seed(self, index: int) -> int:
        r"""
        Per-sample seed of ``index`` (unique across splits for one ``seed``).

        Args:

            index (int): Sample index.

        Returns:
            int: The seed fed to the sample's random generator.
        """
        return SPLIT_OFFSETS[self.split] + index

    def mean_anatomy(self, count: int = 256) -> Dict[str, torch.Tensor]:
        r"""
        The population anatomy of this split: mean soft masks of the patient's
        right lung (image left), left lung and cardiac silhouette over the
        first ``count`` samples' patients (before any finding is drawn).

        Pass it to :class:`~captum_matex.stages.anatomy.ChestAtlas` as
        ``masks`` to fit the anatomical prior to phantom films, as one would
        fit an atlas to a data set's average anatomy (no labels are used).

        Args:

            count (int, optional): Patients averaged. Default: 256

        Returns:
            dict: ``"right lung"``, ``"left lung"`` and ``"heart"`` to
            ``(size, size)`` float tensors in [0, 1].
        """
        total = {"right lung": 0.0, "left lung": 0.0, "heart": 0.0}
        count = min(count, len(self))
        for index in range(count):
            an = _Anatomy(np.random.default_rng([self.seed, self.sample_seed(index)]), self.size)
            total["right lung"] = total["right lung"] + _lung_mask(an, 0)
            total["left lung"] = total["left lung"] + _lung_mask(an, 1)
            total["heart"] = total["heart"] + _draw_heart(an)
        return {name: torch.from_numpy((mask / count).astype(np.float32))
                for name, mask in total.items()}

    def __getitem__(self, index: int) -> PhantomSample:
        r"""
        Generate sample ``index``.

        Args:

            index (int): Index in ``[0, len(self))`` (negative indices wrap).

        Returns:
            PhantomSample: The image and its ground truth.
        """
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        sseed = self.sample_seed(index)
        rng = np.random.default_rng([self.seed, sseed])
        image, records = self._generate(rng)
        p = records[0]
        return PhantomSample(
            image=torch.from_numpy(image)[None],
            phrase=p.phrase,
            finding=p.finding,
            laterality=p.laterality,
            boxes=list(p.boxes),
            mask=p.mask,
            findings=records,
            index=index,
            seed=sseed,
        )

    def _choose_findings(self, rng: np.random.Generator) -> List[str]:
        r"""Primary finding and an optional compatible second finding."""
        abnormal = [f for f in self.primary if f != "normal"]
        if "normal" in self.primary and (not abnormal or rng.random() < self.p_normal):
            return ["normal"]
        first = abnormal[int(rng.integers(0, len(abnormal)))]
        names = [first]
        if rng.random() < self.p_second:
            others = [f for f in FINDINGS if f not in ("normal", first)]
            names.append(others[int(rng.integers(0, len(others)))])
        return names

    def _generate(self, rng: np.random.Generator) -> Tuple[np.ndarray, List[FindingRecord]]:
        r"""Draw one image and its finding records."""
        an = _Anatomy(rng, self.size)
        names = self._choose_findings(rng)
        layers = _draw_normal(rng, an)
        layers["opacity"] = np.zeros_like(an.u)
        layers["markings_mask"] = np.ones_like(an.u)
        raw = []
        for name in names:
            if name == "normal":
                raw.append((name, None, "mid", "", None))
                continue
            lat: Optional[str] = None
            if name in LATERALISED:
                lat = "left" if rng.random() < 0.5 else "right"
                if name == "effusion" and rng.random() < 0.2:
                    lat = "bilateral"
            elif name == "edema":
                lat = "bilateral"
            zones = _ZONES.get(name, ("mid",))
            zone = zones[int(rng.integers(0, len(zones)))]
            sides = [0, 1] if lat == "bilateral" else ([_side_index(lat)] if lat else [])
            mask, size = None, "moderate"
            for s in sides or [None]:
                m, size, zone = _ADDERS[name](rng, an, layers, s, zone)
                if m is not None:
                    mask = m if mask is None else (mask | m)
            raw.append((name, lat, zone, size, mask))
        # the heart is drawn after cardiomegaly may have changed the CTR
        heart_layers = _draw_heart(an)
        records = []
        for name, lat, zone, size, mask in raw:
            if name == "cardiomegaly":
                mask = heart_layers > 0.5
            if mask is None:
                mask = np.zeros((self.size, self.size), bool)
            split_x = int(round(an.cx * self.size)) if lat == "bilateral" else None
            boxes = _boxes_from_mask(mask, split_x)
            phrase = _pick_phrase(rng, name, lat, zone, size)
            records.append(
                FindingRecord(name, lat, phrase, boxes, torch.from_numpy(mask), zone, size)
            )
        image = _render_film(rng, an, layers, heart_layers, self.size)
        return image, records
