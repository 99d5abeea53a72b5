"""Evaluation samples from the phantom or a local MS-CXR copy, in one form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from captum_matex.data.images import Radiograph
from captum_matex.phrases import laterality

Box = tuple[float, float, float, float]


@dataclass
class EvalSample:
    r"""One image-phrase pair to explain and score.

    Attributes:
        id: stable identifier (used as the results key).
        phrase: the phrase explained.
        finding: finding category.
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or ``None``.
        boxes: ``(x, y, w, h)`` ground-truth boxes in original pixels.
        load: returns the :class:`~captum_matex.data.Radiograph` (lazy, so a
            large dataset is not held in memory).
    """

    id: str
    phrase: str
    finding: str | None
    laterality: str | None
    boxes: list[Box]
    load: Callable[[], Radiograph]


def phantom_samples(split: str = "test", limit: int | None = None, seed: int = 0) -> list[EvalSample]:
    r"""Phantom samples with a finding (normal studies have nothing to localise).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        limit: keep the first ``limit`` samples with a finding.
        seed: the phantom's seed.
    """
    from captum_matex.data import PhantomCXR

    dataset = PhantomCXR(split=split, seed=seed)
    samples: list[EvalSample] = []
    for index in range(len(dataset)):
        if limit is not None and len(samples) >= limit:
            break
        sample = dataset[index]
        if not sample.boxes:
            continue
        pixels = sample.image[0].numpy().astype(np.float32)
        samples.append(
            EvalSample(
                id=f"phantom-{split}-{seed}-{index}",
                phrase=sample.phrase,
                finding=sample.finding,
                laterality=sample.laterality,
                boxes=[tuple(map(float, b)) for b in sample.boxes],
                load=lambda pixels=pixels, index=index: Radiograph(
                    pixels, f"phantom:{split}:{index}", {"format": "phantom"}
                ),
            )
        )
    return samples


def mscxr_samples(
    root: str, split: str | None = None, limit: int | None = None, csv: str | None = None
) -> list[EvalSample]:
    r"""Samples of a local MS-CXR copy (see :class:`~captum_matex.data.MSCXR`).

    Args:
        root: folder of the MIMIC-CXR-JPG ``files/`` tree and the release CSV.
        split: ``"train"``, ``"val"``, ``"test"`` (v1.1.0 CSV) or ``None`` for all.
        limit: keep the first ``limit`` image-phrase pairs.
        csv: the release CSV when not in ``root``.
    """
    from captum_matex.data import MSCXR, read_image

    dataset = MSCXR(root, csv=csv, split=split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    samples = []
    for index in range(count):
        item = dataset[index]
        samples.append(
            EvalSample(
                id=f"mscxr-{item.dicom_id}-{index}",
                phrase=item.phrase,
                finding=item.finding,
                laterality=laterality(item.phrase, literal=True),
                boxes=[tuple(map(float, b)) for b in item.boxes],
                load=lambda file=item.file: read_image(file),  # not cached: bounded memory
            )
        )
    return samples

