r"""Held-out robustness splits of the phantom: ``matex benchmark --split <name>``.

Each split transforms the films of the phantom's ``test`` split (of the
study's ``--seed``), deterministically from that seed, so a method's scores
on a split can be set against its scores on the untouched films:

* ``geometry``: each film rotated by up to 10°, shifted by up to 15% of its
  size and zoomed by 0.85-1.15; one film in three is put on a portrait
  (288 × 224) or landscape (224 × 288) canvas. The boxes move with the film
  (the axis-aligned box of their transformed corners, clipped to the canvas).
* ``paraphrase``: the same films, each phrase reworded as a radiologist might
  (:data:`PARAPHRASES`, wordings the phantom generator never produces), with
  the same side and lung zone.
* ``side_swap``: the films with a left or right finding, the phrase's side
  swapped; the boxes stay on the true finding. Scored by
  :func:`~captum_matex.metrics.empty_side_peak`: how often the map peaks on
  the side the phrase states, where there is nothing (patient left is image
  right, the phantom's PA convention; the film's halves split at its centre).
* ``markers``: the same films with burned-in markers, a laterality letter
  ("L" or "R") in a corner, a text block and a ruler along an edge, in bright
  pixels that never touch the finding's boxes.
* ``two_finding``: films the phantom draws with two findings whose boxes are
  disjoint, two samples per film (one per phrase, each with its own boxes).
  Scored by ``discrimination``: the share of films where both phrases' maps
  peak in their own boxes (from the rows' pointing game).

Sample ids name the split (``phantom-<split>-<seed>-<index>``, the index of
the base film in the ``test`` split; ``two_finding`` adds ``-0`` and ``-1``
per phrase), so results files of different splits never mix.

Examples::

    >>> from captum_matex.evaluation.robustness import SPLITS
    >>> samples = SPLITS["geometry"].samples(limit=8, seed=0)
    >>> samples[0].id, samples[0].load().size
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from captum_matex.data._phantom_phrases import _fill
from captum_matex.evaluation.samples import Box, EvalSample, phantom_films, phantom_sample
from captum_matex.phrases import swap_laterality

__all__ = [
    "PARAPHRASES",
    "RobustnessSplit",
    "SPLITS",
    "affine_film",
    "draw_markers",
    "film_discrimination",
    "paraphrase",
]

#: The base films: the phantom's test split.
BASE_SPLIT = "test"

#: Radiologist wordings of each phantom finding that the phantom generator
#: never produces (placeholders as in the generator's templates: ``{side}``,
#: ``{zone}``, ``{lobe}``, ``{size}``). ``"effusion_bilateral"`` words a
#: bilateral effusion.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "consolidation": (
        "patchy airspace disease in the {side} {zone} lung field",
        "ill-defined airspace shadowing in the {side} {zone} zone",
        "increased opacification of the {side} {lobe} lobe",
        "airspace consolidation of the {side} {lobe} lobe",
    ),
    "nodule": (
        "solitary pulmonary nodule in the {side} {zone} lung field",
        "well-circumscribed nodule in the {side} {zone} zone",
        "round density projecting over the {side} {zone} lung",
        "{size} pulmonary nodule in the {side} {lobe} lobe",
    ),
    "effusion": (
        "layering {side} pleural fluid",
        "{size} {side} pleural fluid collection",
        "meniscus of fluid at the {side} lung base",
        "the {side} costophrenic angle is blunted",
    ),
    "effusion_bilateral": (
        "bilateral layering pleural fluid",
        "fluid at both lung bases",
        "both costophrenic angles are blunted",
    ),
    "pneumothorax": (
        "air in the {side} pleural space at the apex",
        "{side} apical pleural air collection",
        "visceral pleural edge at the {side} apex with no lung markings beyond it",
    ),
    "cardiomegaly": (
        "increased cardiothoracic ratio",
        "cardiac enlargement",
        "the cardiac silhouette is enlarged",
        "prominent heart size",
    ),
    "atelectasis": (
        "subsegmental atelectasis at the {side} lung base",
        "discoid atelectasis in the {side} lower zone",
        "volume loss in the {side} lower lobe",
        "linear opacity at the {side} base, likely atelectasis",
    ),
    "edema": (
        "pulmonary vascular congestion with interstitial edema",
        "bilateral hazy perihilar airspace opacities",
        "perihilar haziness in keeping with fluid overload",
        "upper lobe diversion with interstitial edema",
    ),
}

#: Canvases ``(H, W)`` of the ``geometry`` split's portrait and landscape films.
CANVASES: dict[str, tuple[int, int]] = {"portrait": (288, 224), "landscape": (224, 288)}

_TEXT_BLOCKS = ("PORTABLE\nAP ERECT", "SUPINE\n08:42", "ICU BED 4\nSEMI-ERECT", "PA\nINSP")
_TAGS = {"geometry": 1, "paraphrase": 2, "markers": 3}  # per-split streams of random numbers


@dataclass(frozen=True)
class RobustnessSplit:
    r"""One held-out split: how its samples are made and what it adds to the scores.

    Attributes:
        name (str): The ``--split`` name.
        description (str): One line for ``matex benchmark --help``.
        make (Callable): ``make(limit, seed)`` returns the split's samples.
        metrics (tuple of str): Registered localisation metrics this split
            adds to the study; each is scored against the sample's
            :attr:`~captum_matex.evaluation.EvalSample.regions` entry of its
            name. Only this split may score them. Default: ().
        needs (tuple of str): Metrics the split's :attr:`derive` reads, added
            to the study. Default: ().
        derived (tuple of str): Columns :attr:`derive` adds. Default: ().
        derive (Callable or None): ``derive(rows)`` returns the merged rows
            with the :attr:`derived` columns (scores over several rows, such
            as a film's two phrases). Default: None.
    """

    name: str
    description: str
    make: Callable[[int | None, int, str], list[EvalSample]]
    metrics: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    derive: Callable[[list[dict]], list[dict]] | None = None

    def samples(self, limit: int | None = None, seed: int = 0,
                base: str = BASE_SPLIT) -> list[EvalSample]:
        r"""The split's samples, in a fixed order.

        Args:
            limit (int, optional): Image-phrase pairs (``two_finding`` keeps
                whole films: ``limit // 2`` of them). Default: None (all).
            seed (int, optional): The phantom's seed. Default: 0.
            base (str, optional): The phantom split whose films are
                transformed: ``"test"`` for the benchmark, ``"val"`` to choose
                settings on. Default: ``"test"``

        Returns:
            list of EvalSample: The samples (ids name ``base`` when it is not
            ``"test"``).
        """
        return self.make(limit, seed, base)

    def columns(self, rows: list[dict]) -> list[dict]:
        r"""``rows`` with the :attr:`derived` columns (unchanged without :attr:`derive`)."""
        return rows if self.derive is None else self.derive(rows)


def _rng(name: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _TAGS[name], index])


def _base(seed: int, base: str) -> Iterator[tuple[int, object]]:
    return phantom_films(base, seed)


def _id(name: str, seed: int, index: int, base: str = BASE_SPLIT) -> str:
    split = name if base == BASE_SPLIT else f"{base}-{name}"
    return f"phantom-{split}-{seed}-{index}"


# ----------------------------------------------------------------------------- geometry
def affine_film(pixels: np.ndarray, boxes: Sequence[Box], angle: float, zoom: float,
                shift: tuple[float, float], canvas: tuple[int, int],
                ) -> tuple[np.ndarray, list[Box]]:
    r"""Rotate, zoom and shift a film onto a canvas, and its boxes with it.

    The film's centre goes to the canvas centre plus ``shift``; pixels are
    resampled bilinearly, the canvas outside the film is black. A box becomes
    the axis-aligned box of its four transformed corners, clipped to the
    canvas (coordinates are pixel edges, as for
    :func:`~captum_matex.metrics.boxes_to_mask`).

    Args:
        pixels (numpy.ndarray): ``(H, W)`` film.
        boxes (sequence of tuple): ``(x, y, w, h)`` boxes on the film.
        angle (float): Rotation in degrees (positive: clockwise on screen).
        zoom (float): Scale factor.
        shift (tuple): ``(dx, dy)`` as fractions of the film's width and height.
        canvas (tuple): ``(H, W)`` of the result.

    Returns:
        tuple: The ``canvas``-sized film and its boxes (a box entirely off
        the canvas is dropped).
    """
    h, w = pixels.shape
    height, width = canvas
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = w / 2, h / 2
    centre_x, centre_y = width / 2 + shift[0] * w, height / 2 + shift[1] * h
    rows = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    cols = torch.arange(width, dtype=torch.float64)[None, :] + 0.5
    dx, dy = (cols - centre_x) / zoom, (rows - centre_y) / zoom
    source_x, source_y = cx + cos * dx + sin * dy, cy - sin * dx + cos * dy  # the inverse map
    grid = torch.stack([2 * source_x / w - 1, 2 * source_y / h - 1], -1)[None].float()
    film = torch.nn.functional.grid_sample(
        torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None], grid,
        mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()
    return film, _clipped(_moved_boxes(boxes, (h, w), angle, zoom, shift, canvas), canvas)


def _moved_boxes(boxes: Sequence[Box], size: tuple[int, int], angle: float, zoom: float,
                 shift: tuple[float, float], canvas: tuple[int, int]) -> list[Box]:
    r"""The axis-aligned boxes of the transformed corners, before clipping."""
    h, w = size
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    moved = []
    for x, y, bw, bh in boxes:
        dx = np.array([x, x + bw, x, x + bw]) - w / 2
        dy = np.array([y, y, y + bh, y + bh]) - h / 2
        xs = canvas[1] / 2 + shift[0] * w + zoom * (cos * dx - sin * dy)
        ys = canvas[0] / 2 + shift[1] * h + zoom * (sin * dx + cos * dy)
        moved.append((float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
                      float(ys.max() - ys.min())))
    return moved


def _clipped(boxes: Sequence[Box], canvas: tuple[int, int]) -> list[Box]:
    r"""``boxes`` clipped to the canvas, those entirely off it dropped."""
    clipped = []
    for x, y, w, h in boxes:
        x0, x1 = max(x, 0.0), min(x + w, float(canvas[1]))
        y0, y1 = max(y, 0.0), min(y + h, float(canvas[0]))
        if x1 > x0 and y1 > y0:
            clipped.append((x0, y0, x1 - x0, y1 - y0))
    return clipped


def _box_area(boxes: Sequence[Box]) -> float:
    return sum(w * h for _, _, w, h in boxes)


def _geometry_samples(limit: int | None, seed: int, base: str = BASE_SPLIT) -> list[EvalSample]:
    samples = []
    for index, sample in islice(_base(seed, base), limit):
        rng = _rng("geometry", seed, index)
        pixels = sample.image[0].numpy()
        size = pixels.shape
        canvas = size
        if rng.random() < 1 / 3:
            canvas = CANVASES["portrait" if rng.random() < 0.5 else "landscape"]
        for _ in range(20):  # redraw a pose that pushes the finding off the canvas
            angle, zoom = rng.uniform(-10, 10), rng.uniform(0.85, 1.15)
            shift = (rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15))
            whole = _moved_boxes(sample.boxes, size, angle, zoom, shift, canvas)
            kept = _clipped(whole, canvas)
            if len(kept) == len(whole) and _box_area(kept) >= 0.9 * _box_area(whole):
                break
        film, boxes = affine_film(pixels, sample.boxes, angle, zoom, shift, canvas)
        samples.append(phantom_sample(_id("geometry", seed, index, base), sample,
                                      f"phantom:geometry:{index}", film, boxes=boxes))
    return samples


# ----------------------------------------------------------------------------- paraphrase
def paraphrase(finding: str, laterality: str | None, zone: str, size: str,
               rng: np.random.Generator) -> str:
    r"""A :data:`PARAPHRASES` wording of a phantom finding.

    Args:
        finding (str): A phantom finding (not ``"normal"``).
        laterality (str or None): ``"left"``, ``"right"``, ``"bilateral"`` or None.
        zone (str): ``"upper"``, ``"mid"`` or ``"lower"``.
        size (str): The size word.
        rng (numpy.random.Generator): Picks the wording.

    Returns:
        str: The phrase, naming the same side and zone.
    """
    key = "effusion_bilateral" if finding == "effusion" and laterality == "bilateral" else finding
    table = PARAPHRASES[key]
    return _fill(table[int(rng.integers(0, len(table)))], laterality, zone, size or "small")


def _paraphrase_samples(limit: int | None, seed: int, base: str = BASE_SPLIT) -> list[EvalSample]:
    samples = []
    for index, sample in islice(_base(seed, base), limit):
        record = sample.findings[0]
        phrase = paraphrase(record.finding, record.laterality, record.zone, record.size,
                            _rng("paraphrase", seed, index))
        samples.append(phantom_sample(_id("paraphrase", seed, index, base), sample,
                                      f"phantom:paraphrase:{index}", phrase=phrase))
    return samples


# ----------------------------------------------------------------------------- side swap
def _stated_side(laterality: str, size: tuple[int, int]) -> list[Box]:
    r"""The half of a PA film on the patient's ``laterality`` side (patient left
    is image right)."""
    height, width = size
    return [(width / 2, 0.0, width / 2, float(height))] if laterality == "left" else \
        [(0.0, 0.0, width / 2, float(height))]


def _side_swap_samples(limit: int | None, seed: int, base: str = BASE_SPLIT) -> list[EvalSample]:
    lateral = ((i, s) for i, s in _base(seed, base) if s.laterality in ("left", "right"))
    samples = []
    for index, sample in islice(lateral, limit):
        stated = "right" if sample.laterality == "left" else "left"
        regions = {"empty_side_peak": _stated_side(stated, tuple(sample.image.shape[-2:]))}
        samples.append(phantom_sample(_id("side_swap", seed, index, base), sample,
                                      f"phantom:side_swap:{index}",
                                      phrase=swap_laterality(sample.phrase), regions=regions))
    return samples


# ----------------------------------------------------------------------------- markers
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 6))


def _forbidden(boxes: Sequence[Box], size: tuple[int, int], margin: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    for x, y, w, h in boxes:
        x0, y0 = max(int(math.floor(x)) - margin, 0), max(int(math.floor(y)) - margin, 0)
        mask[y0 : int(math.ceil(y + h)) + margin, x0 : int(math.ceil(x + w)) + margin] = True
    return mask


def _at_corner(draw: ImageDraw.ImageDraw, size: tuple[int, int], text: str,
               font: ImageFont.ImageFont, corner: int) -> None:
    r"""Draw ``text`` in corner ``corner`` (0 top left, 1 top right, 2 bottom
    left, 3 bottom right), 3% of the width in from the edges."""
    height, width = size
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font)
    pad = round(0.03 * width)
    x = pad - x0 if corner % 2 == 0 else width - pad - x1
    y = pad - y0 if corner < 2 else height - pad - y1
    draw.multiline_text((x, y), text, fill=255, font=font)


def _letter(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator,
            corner: int) -> None:
    letter = "L" if rng.random() < 0.5 else "R"
    _at_corner(draw, size, letter, _font(round(0.11 * size[0])), corner)


def _text_block(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator,
                corner: int) -> None:
    text = _TEXT_BLOCKS[int(rng.integers(0, len(_TEXT_BLOCKS)))]
    _at_corner(draw, size, text, _font(round(0.045 * size[0])), corner)


def _ruler(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator,
           edge: int) -> None:
    height, width = size
    vertical = edge in (0, 1)  # 0 left, 1 right, 2 top, 3 bottom
    length = (height if vertical else width) * rng.uniform(0.35, 0.6)
    start = rng.uniform(0.05, 0.95) * ((height if vertical else width) - length)
    base = 3 if edge in (0, 2) else (width if vertical else height) - 4
    inward = 1 if edge in (0, 2) else -1
    step = max(round(0.035 * width), 4)
    end = start + length
    draw.line([(base, start), (base, end)] if vertical else [(start, base), (end, base)],
              fill=255, width=1)
    for k, t in enumerate(np.arange(start, end + 1e-6, step)):
        tick = (7 if k % 5 == 0 else 4) * inward
        draw.line([(base, t), (base + tick, t)] if vertical else [(t, base), (t, base + tick)],
                  fill=255, width=1)


def draw_markers(pixels: np.ndarray, boxes: Sequence[Box], rng: np.random.Generator,
                 margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    r"""Burn a laterality letter, a text block and a ruler into a film, away
    from its boxes.

    Each marker tries its places (corners for the letter and the text block,
    edges for the ruler) in a random order and takes the first whose pixels
    stay ``margin`` pixels clear of every box and of the markers already
    drawn; a marker with no such place is left out.

    Args:
        pixels (numpy.ndarray): ``(H, W)`` film in [0, 1].
        boxes (sequence of tuple): ``(x, y, w, h)`` boxes to keep clear.
        rng (numpy.random.Generator): Picks letters, texts and places.
        margin (int, optional): Clearance around the boxes in pixels. Default: 3.

    Returns:
        tuple: The film with the markers (drawn at the film's maximum
        brightness, at least 1) and the ``(H, W)`` bool mask of the pixels
        they cover.
    """
    size = pixels.shape
    taken = _forbidden(boxes, size, margin)
    covered = np.zeros(size, np.float32)
    for draw_one, places in ((_letter, 4), (_text_block, 4), (_ruler, 4)):
        for place in rng.permutation(places):
            layer = Image.new("L", (size[1], size[0]), 0)
            draw_one(ImageDraw.Draw(layer), size, rng, int(place))
            alpha = np.asarray(layer, np.float32) / 255
            if not (alpha > 0).any() or (taken & (alpha > 0)).any():
                continue
            covered = np.maximum(covered, alpha)
            taken |= _forbidden([_bounds(alpha > 0)], size, margin)
            break
    bright = max(float(pixels.max()), 1.0)
    return pixels * (1 - covered) + bright * covered, covered > 0


def _bounds(mask: np.ndarray) -> Box:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1))


def _marker_samples(limit: int | None, seed: int, base: str = BASE_SPLIT) -> list[EvalSample]:
    samples = []
    for index, sample in islice(_base(seed, base), limit):
        film, _ = draw_markers(sample.image[0].numpy(), sample.boxes, _rng("markers", seed, index))
        samples.append(phantom_sample(_id("markers", seed, index, base), sample,
                                      f"phantom:markers:{index}", film))
    return samples


# ----------------------------------------------------------------------------- two findings
def _overlap(a: Sequence[Box], b: Sequence[Box]) -> bool:
    return any(ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
               for ax, ay, aw, ah in a for bx, by, bw, bh in b)


def _two_finding_samples(limit: int | None, seed: int, base: str = BASE_SPLIT) -> list[EvalSample]:
    films = (
        (index, sample) for index, sample in phantom_films(base, seed, p_second=1.0)
        if len(sample.findings) >= 2 and sample.findings[1].boxes
        and sample.findings[0].phrase != sample.findings[1].phrase
        and not _overlap(sample.findings[0].boxes, sample.findings[1].boxes)
    )
    samples = []
    for index, sample in islice(films, None if limit is None else limit // 2):
        for k, record in enumerate(sample.findings[:2]):
            samples.append(phantom_sample(
                f"{_id('two_finding', seed, index, base)}-{k}", sample, f"phantom:two_finding:{index}",
                phrase=record.phrase, finding=record.finding, laterality=record.laterality,
                boxes=[tuple(map(float, b)) for b in record.boxes]))
    return samples


def film_discrimination(rows: list[dict]) -> list[dict]:
    r"""Rows of a ``two_finding`` study with a ``discrimination`` column.

    A film's two rows (ids ``<film>-0`` and ``<film>-1``) of one method both
    get 1.0 when both have a pointing-game hit, 0.0 when either misses and
    None when either is missing or undefined; the column's mean is thus the
    share of films where each phrase points at its own finding (each film
    counted twice, so its bootstrap interval is somewhat too narrow).

    Args:
        rows (list of dict): Merged benchmark rows with ``pointing_game``.

    Returns:
        list of dict: New rows, in the same order.
    """
    films: dict[tuple[str, str], list[float | None]] = {}
    for row in rows:
        films.setdefault((row["method"], _film(row["sample"])), []).append(row.get("pointing_game"))
    out = []
    for row in rows:
        hits = films[(row["method"], _film(row["sample"]))]
        defined = len(hits) == 2 and all(h is not None and math.isfinite(h) for h in hits)
        out.append({**row, "discrimination": float(min(hits)) if defined else None})
    return out


def _film(sample_id: str) -> str:
    return sample_id.rsplit("-", 1)[0]


#: The robustness splits by ``--split`` name.
SPLITS: dict[str, RobustnessSplit] = {
    split.name: split for split in (
        RobustnessSplit("geometry", "rotated, shifted, zoomed films, some on portrait or "
                        "landscape canvases", _geometry_samples),
        RobustnessSplit("paraphrase", "phrases reworded beyond the phantom's templates",
                        _paraphrase_samples),
        RobustnessSplit("side_swap", "phrases naming the side opposite the finding",
                        _side_swap_samples, metrics=("empty_side_peak",)),
        RobustnessSplit("markers", "burned-in laterality letters, text and rulers",
                        _marker_samples),
        RobustnessSplit("two_finding", "two findings per film, one sample per phrase",
                        _two_finding_samples, needs=("pointing_game",),
                        derived=("discrimination",), derive=film_discrimination),
    )
}
