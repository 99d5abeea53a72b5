"""The built-in atlas's lungs against clinical lung masks: Dice of the atlas's
outline with the median outline of binary lung masks of frontal chest films,
each lung cropped to its own box (its shape) and both lungs to their common
box (their layout), plus the per-film median Dice of the layout.

Then the atlas on each film: Dice of its two lungs with the film's mask,
letterboxed into a 224-px input, as drawn and registered with the mask as
the film's lung fields (``AtlasRegistration(fields=..., overlying=())``, as
a whole-lung segmenter would drive it); medians over the films. The V7 masks
are taken as whole lungs, the lung behind the heart included, because the
atlas's whole lungs match their median outline better (Dice 0.91) than its
lungs with the heart and mediastinum taken out (0.87).

The built-in lung shape (method page, "Text-guided priors") was fitted to the
two-lung masks among the V7 Labs COVID-19 X-ray lung annotations that
torchxrayvision ships in its wheel (517 masks, 434 of them with two lungs
split at the mediastinum)::

    pip download torchxrayvision==1.5.7 --no-deps -d /tmp/txv
    unzip -o /tmp/txv/torchxrayvision-1.5.7-py3-none-any.whl \\
        torchxrayvision/data/semantic_masks_v7labs_lungs.zip -d /tmp/txv
    python benchmarks/atlas_lungs.py /tmp/txv/torchxrayvision/data/semantic_masks_v7labs_lungs.zip

A mask is any image whose pixels above 127 are lung; it is split into the
image-left lung (the patient's right) and the image-right lung at the emptiest
column of the middle third of its lungs' width, and kept only if that column
holds at most a tenth of the fullest column's lung pixels and the smaller side
at least 30% of the larger's.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from captum_matex.stages import AtlasRegistration, ChestAtlas

SIZE = 128  # side of the common frame every cropped lung is resampled to
INPUT = 224  # side of the model input a film is letterboxed into
LUNGS = ("right lung", "left lung")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_masks(path: Path) -> Iterator[np.ndarray]:
    r"""Binary ``(H, W)`` masks from a folder or a zip file of mask images."""
    from PIL import Image

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name.lower().endswith(SUFFIXES):
                    yield np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L")) > 127
    else:
        for file in sorted(Path(path).iterdir()):
            if file.suffix.lower() in SUFFIXES:
                yield np.asarray(Image.open(file).convert("L")) > 127


def split_lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    r"""The image-left and image-right lungs of a two-lung mask, or ``None``."""
    columns = np.nonzero(mask.any(0))[0]
    if columns.size < 3:
        return None
    start, stop = columns[0], columns[-1] + 1
    third = (stop - start) // 3
    counts = mask[:, start + third:stop - third].sum(0)
    cut = start + third + int(np.argmin(counts))
    if counts.min() > 0.1 * mask.sum(0).max():  # no gap between two lungs
        return None
    left, right = mask.copy(), mask.copy()
    left[:, cut:] = False
    right[:, :cut] = False
    sizes = left.sum(), right.sum()
    if min(sizes) < 0.3 * max(sizes):
        return None
    return left, right


def crop(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    r"""``mask`` cut to its bounding box and area-resampled to ``SIZE x SIZE``."""
    mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    box = mask[int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1]
    fine = F.interpolate(box[None, None], size=(4 * SIZE, 4 * SIZE), mode="nearest")
    return F.avg_pool2d(fine, 4)[0, 0]


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Dice overlap of two soft masks, each thresholded at 0.5."""
    a, b = a > 0.5, b > 0.5
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def letterbox(mask: np.ndarray) -> torch.Tensor:
    r"""``mask`` padded to a centred square and area-resampled to ``INPUT x INPUT``,
    as ``matex explain --mode letterbox`` fits a film into a model's input."""
    height, width = mask.shape
    side = max(height, width)
    square = torch.zeros(side, side)
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = torch.from_numpy(mask.astype(np.float32))
    return F.interpolate(square[None, None], size=(INPUT, INPUT), mode="area")[0, 0]


def placed(mask: np.ndarray, atlas: ChestAtlas) -> tuple[float, float]:
    r"""Dice of ``atlas``'s two lungs with ``mask`` on the letterboxed film, as
    drawn and registered with the mask as the film's lung fields (what a lung
    segmenter gives :class:`~captum_matex.stages.AtlasRegistration`); NaN where
    the registration declines the fit."""
    film = letterbox(mask)
    lungs = atlas.render(list(LUNGS), (INPUT, INPUT))
    registration = AtlasRegistration(atlas, fields=lambda batch: film.expand(len(batch), -1, -1),
                                     overlying=())  # whole-lung masks (docstring)
    image = film.expand(1, 3, INPUT, INPUT)
    if not bool(registration.transforms(image)[1][0]):
        return dice(lungs, film), math.nan
    warped = registration(lungs.flatten()[None], image, (INPUT, INPUT))
    return dice(lungs, film), dice(warped.view(INPUT, INPUT), film)


def compare(masks: Iterator[np.ndarray], atlas: ChestAtlas) -> dict:
    r"""Dice of ``atlas``'s lungs with the median outline of ``masks``, and with
    each mask on its film, as drawn and registered to it."""
    frames: dict[str, list[torch.Tensor]] = {"right lung": [], "left lung": [], "both lungs": []}
    on_film: list[tuple[float, float]] = []
    total = 0
    for mask in masks:
        total += 1
        lungs = split_lungs(mask)
        if lungs is None:
            continue
        frames["right lung"].append(crop(lungs[0]))
        frames["left lung"].append(crop(lungs[1]))
        frames["both lungs"].append(crop(mask))
        on_film.append(placed(mask, atlas))
    if not frames["both lungs"]:
        raise SystemExit("no mask with two lungs found")
    drawn = {name: atlas.render(name, (512, 512)) for name in LUNGS}
    drawn["both lungs"] = atlas.render(list(LUNGS), (512, 512))  # the union
    result: dict = {"masks": total, "two lungs": len(frames["both lungs"])}
    for name, crops in frames.items():
        result[name] = round(dice(crop(drawn[name]), torch.stack(crops).mean(0)), 3)
    own = crop(drawn["both lungs"])
    result["both lungs, per film median"] = round(
        float(np.median([dice(own, c) for c in frames["both lungs"]])), 3)
    drawn, registered = np.array(on_film).T
    result["on the film, as drawn, median"] = round(float(np.median(drawn)), 3)
    result["on the film, registered, median"] = round(float(np.nanmedian(registered)), 3)
    result["registered films"] = int(np.isfinite(registered).sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("masks", type=Path, help="a folder or zip file of lung mask images")
    args = parser.parse_args()
    print(json.dumps({"atlas": "built-in", **compare(read_masks(args.masks), ChestAtlas())}))


if __name__ == "__main__":
    main()
