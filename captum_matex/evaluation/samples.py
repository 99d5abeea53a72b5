"""Evaluation samples from the phantom or a local MS-CXR copy, in one form."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterator

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
        regions: metric name to the boxes that metric is scored against
            instead of ``boxes`` (e.g. the stated, empty side of the film for
            ``empty_side_peak``, see :mod:`~captum_matex.evaluation.robustness`).
    """

    id: str
    phrase: str
    finding: str | None
    laterality: str | None
    boxes: list[Box]
    load: Callable[[], Radiograph]
    regions: dict[str, list[Box]] = field(default_factory=dict)


def phantom_samples(split: str = "test", limit: int | None = None, seed: int = 0) -> list[EvalSample]:
    r"""Phantom samples with a finding (normal studies have nothing to localise).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        limit: keep the first ``limit`` samples with a finding, reading as
            many films as that takes (``None``: those of the split's default
            1000 films). The first films are the same for every limit.
        seed: the phantom's seed.
    """
    from captum_matex.data.phantom import MAX_LENGTH

    reach = {} if limit is None else {"length": MAX_LENGTH}  # films are drawn lazily
    films = phantom_films(split, seed, **reach)
    return [phantom_sample(f"phantom-{split}-{seed}-{index}", sample, f"phantom:{split}:{index}")
            for index, sample in islice(films, limit)]


def phantom_films(split: str = "test", seed: int = 0, **options: Any) -> Iterator[tuple[int, Any]]:
    r"""The phantom films of ``split`` with a finding, in index order, generated lazily.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: the phantom's seed.
        **options: further :class:`~captum_matex.data.PhantomCXR` arguments
            (e.g. ``p_second=1.0``).

    Yields:
        ``(index, PhantomSample)`` pairs.
    """
    from captum_matex.data import PhantomCXR

    dataset = PhantomCXR(split=split, seed=seed, **options)
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample.boxes:
            yield index, sample


def phantom_sample(id: str, sample: Any, source: str, pixels: np.ndarray | None = None,
                   **fields: Any) -> EvalSample:
    r"""An :class:`EvalSample` of a :class:`~captum_matex.data.PhantomSample`.

    Args:
        id: the results key.
        sample: the phantom sample (its primary finding is explained).
        source: the radiograph's ``path`` (where it came from).
        pixels: ``(H, W)`` film to use instead of the sample's own image.
        **fields: :class:`EvalSample` fields replacing the sample's (``phrase``,
            ``boxes``, ``regions``, ...).
    """
    if pixels is None:
        pixels = sample.image[0].numpy()
    pixels = np.asarray(pixels, dtype=np.float32)
    values = dict(phrase=sample.phrase, finding=sample.finding, laterality=sample.laterality,
                  boxes=[tuple(map(float, b)) for b in sample.boxes])
    values.update(fields)
    return EvalSample(id=id, load=lambda: Radiograph(pixels, source, {"format": "phantom"}),
                      **values)


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

