r"""Tests of the synthetic chest-radiograph phantom (captum_matex.data.phantom)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_matex.data import PhantomCXR, PhantomSample
from captum_matex.data.phantom import (
    FINDINGS,
    LATERALISED,
    all_phrases,
    candidate_phrases,
    swap_laterality,
)


@pytest.fixture(scope="module")
def samples() -> list:
    ds = PhantomCXR(split="test", seed=0, length=160)
    return [ds[i] for i in range(len(ds))]


def test_sample_fields_and_range(samples: list) -> None:
    s = samples[0]
    assert isinstance(s, PhantomSample)
    assert s.image.shape == (1, 224, 224) and s.image.dtype == torch.float32
    for s in samples:
        assert float(s.image.min()) >= 0.0 and float(s.image.max()) <= 1.0
        assert s.finding in FINDINGS
        assert s.findings[0].finding == s.finding and s.findings[0].phrase == s.phrase
        assert s.mask.shape == (224, 224) and s.mask.dtype == torch.bool
        assert s.laterality in ("left", "right", "bilateral", None)


def test_every_finding_occurs(samples: list) -> None:
    seen = {s.finding for s in samples}
    assert seen == set(FINDINGS)
    assert any(len(s.findings) > 1 for s in samples), "no sample with a second finding"


def test_deterministic_by_seed() -> None:
    a = PhantomCXR(split="val", seed=3, length=20)
    b = PhantomCXR(split="val", seed=3, length=20)
    c = PhantomCXR(split="val", seed=4, length=20)
    for i in (0, 7, 19):
        sa, sb = a[i], b[i]
        assert torch.equal(sa.image, sb.image)
        assert (sa.phrase, sa.boxes) == (sb.phrase, sb.boxes)
        assert not torch.equal(sa.image, c[i].image)
    assert torch.equal(a[-1].image, a[19].image)
    with pytest.raises(IndexError):
        a[20]


def test_splits_are_disjoint() -> None:
    splits = {s: PhantomCXR(split=s, seed=0, length=10_000) for s in ("train", "val", "test")}
    ranges = {s: {d.sample_seed(0), d.sample_seed(len(d) - 1)} for s, d in splits.items()}
    seeds = {s: set(range(min(r), max(r) + 1)) for s, r in ranges.items()}
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    images = [splits[s][0].image for s in splits]
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])
    with pytest.raises(ValueError, match="split"):
        PhantomCXR(split="training")


def test_boxes_cover_and_are_tight(samples: list) -> None:
    for s in samples:
        for rec in s.findings:
            mask = rec.mask.numpy()
            if rec.finding == "normal":
                assert rec.boxes == [] and not mask.any()
                continue
            assert mask.any(), rec.finding
            covered = np.zeros_like(mask)
            for x, y, w, h in rec.boxes:
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= mask.shape[1] and y + h <= mask.shape[0]
                covered[y : y + h, x : x + w] = True
                box = mask[y : y + h, x : x + w]
                # tight: the mask touches all four sides of each box
                assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            assert not (mask & ~covered).any(), f"{rec.finding}: mask pixels outside boxes"
            expected = 2 if rec.laterality == "bilateral" else 1
            assert len(rec.boxes) == expected, (rec.finding, rec.laterality, rec.boxes)


def test_radiological_side_convention(samples: list) -> None:
    r"""Patient's left is on the image right (PA view)."""
    checked = 0
    for s in samples:
        for rec in s.findings:
            if rec.laterality not in ("left", "right"):
                continue
            cols = np.flatnonzero(rec.mask.numpy().any(0))
            centre = cols.mean() / rec.mask.shape[1]
            assert (centre > 0.5) == (rec.laterality == "left"), (rec.phrase, centre)
            assert rec.laterality in rec.phrase
            checked += 1
    assert checked > 30


def test_findings_at_plausible_places(samples: list) -> None:
    rows = {}
    for s in samples:
        if s.finding in ("effusion", "pneumothorax", "atelectasis", "cardiomegaly"):
            r = np.flatnonzero(s.mask.numpy().any(1)).mean() / 224
            rows.setdefault(s.finding, []).append(r)
    assert min(rows["effusion"]) > 0.5  # dependent fluid at the bases
    assert max(rows["pneumothorax"]) < 0.5  # apical
    assert min(rows["atelectasis"]) > 0.5  # basilar bands
    heart = [s for s in samples if s.finding == "cardiomegaly"]
    normal = [s for s in samples if s.finding == "normal"]
    assert heart and normal
    # cardiomegaly: the cardiac silhouette is wide (CTR above 0.55)
    widths = [s.boxes[0][2] / 224 for s in heart]
    assert min(widths) > 0.3


def test_phrases_and_vocabulary(samples: list) -> None:
    bank = set(all_phrases())
    for s in samples:
        for rec in s.findings:
            assert rec.phrase in bank, rec.phrase
            if rec.finding in LATERALISED and rec.laterality in ("left", "right"):
                assert swap_laterality(rec.phrase) != rec.phrase
                assert swap_laterality(rec.phrase) in bank
    for side in ("left", "right", "bilateral", None):
        cands = candidate_phrases(side)
        assert set(cands) == set(FINDINGS) and len(set(cands.values())) == len(FINDINGS)
        assert set(cands.values()) <= bank
    assert set(PhantomCXR.FINDINGS) == set(FINDINGS)


def test_swap_laterality() -> None:
    assert swap_laterality("small left pleural effusion") == "small right pleural effusion"
    assert swap_laterality("Right upper lobe opacity") == "Left upper lobe opacity"
    assert swap_laterality("enlarged cardiac silhouette") == "enlarged cardiac silhouette"
    assert swap_laterality("leftover brighter") == "leftover brighter"
    p = "opacity at the left base, right apex clear"
    assert swap_laterality(swap_laterality(p)) == p


def test_configurable_size_and_findings() -> None:
    ds = PhantomCXR(split="train", seed=1, length=12, size=128, findings=["nodule"])
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (1, 128, 128)
        assert s.finding == "nodule" and s.laterality in ("left", "right")
        x, y, w, h = s.boxes[0]
        assert x + w <= 128 and y + h <= 128
        # nodules are at least ~1.5 patches of a 14 x 14 grid across
        assert min(w, h) >= 1.5 * 128 / 14 * 0.8
    with pytest.raises(ValueError, match="unknown findings"):
        PhantomCXR(findings=["fracture"])


def test_mean_anatomy_is_the_phantom_population_and_fits_the_atlas() -> None:
    masks = PhantomCXR(split="train").mean_anatomy(count=32)
    assert set(masks) == {"right lung", "left lung", "heart"}
    again = PhantomCXR(split="train").mean_anatomy(count=32)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    for name, mask in masks.items():
        assert mask.shape == (224, 224) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    cols = torch.arange(224.0)
    # the patient's right lung lies on the image left (radiological convention)
    centre = {k: float((m.sum(0) * cols).sum() / m.sum()) for k, m in masks.items()}
    assert centre["right lung"] < 100 < 124 < centre["left lung"]
    rows = torch.nonzero(masks["right lung"] > 0.5)[:, 0]
    assert 30 < int(rows.min()) and int(rows.max()) < 160  # lungs end near 2/3 of the height
    from captum_matex.stages.anatomy import ChestAtlas

    base = ChestAtlas(masks=masks).render("right base", (14, 14))
    generic = ChestAtlas().render("right base", (14, 14))
    lowest = lambda m: int(torch.nonzero(m > 0.3)[:, 0].max())  # noqa: E731
    assert lowest(base) <= 9 < lowest(generic)


def test_a_nodule_lies_in_the_zone_its_phrase_names() -> None:
    # a nodule that finds no room in the drawn zone falls back to the lung's
    # centre; its record (and so its phrase) must then name the centre's zone
    from captum_matex.data._phantom_anatomy import _Anatomy
    from captum_matex.data._phantom_findings import _zone_of

    ds = PhantomCXR(split="test", seed=0, length=300)
    checked, centred = 0, 0
    for index in range(len(ds)):
        for rec in ds[index].findings:
            if rec.finding != "nodule":
                continue
            an = _Anatomy(np.random.default_rng([ds.seed, ds.sample_seed(index)]), ds.size)
            rows = np.flatnonzero(rec.mask.numpy().any(1))
            weights = rec.mask.numpy().sum(1)[rows]
            y = float(((rows + 0.5) * weights).sum() / weights.sum()) / ds.size
            # round nodules: the mask's centroid is the drawn centre to a pixel,
            # and every drawn centre is a quarter zone or more from a boundary
            assert _zone_of(an, y) == rec.zone, (index, rec.phrase, rec.zone, y)
            checked += 1
            centred += abs(y - an.cy) < 1 / ds.size
    assert checked >= 40
    assert centred >= 2  # fallbacks happen in these films, and are named by their own zone


def test_zone_of_inverts_the_zone_bands() -> None:
    from captum_matex.data._phantom_anatomy import _Anatomy
    from captum_matex.data._phantom_findings import _lung_point, _zone_of

    an = _Anatomy(np.random.default_rng(3), 224)
    rng = np.random.default_rng(4)
    for zone in ("upper", "mid", "lower"):
        for _ in range(20):
            x, y, drawn = _lung_point(rng, an, 0, zone, 0.01)
            assert _zone_of(an, y) == drawn
    # no room for a point this far inside the lung: the lung's centre, in its own zone
    x, y, drawn = _lung_point(rng, an, 0, "upper", an.lung_a)
    assert (x, y) == an.lung_center(0) and drawn == _zone_of(an, an.cy) == "mid"


def test_every_zone_a_phrase_names_holds_its_finding() -> None:
    # the generator words a mid-zone finding "lower lobe" (a lower lobe projects
    # over the mid and lower zones of a frontal film): the phrase parser, which
    # the anatomical prior reads, must then name the zone the finding lies in
    from captum_matex.phrases import ZONES, parse_phrase

    ds = PhantomCXR(split="test", seed=1, length=500)
    named, lobes = 0, 0
    for index in range(len(ds)):
        for rec in ds[index].findings:
            zones = [r for r in parse_phrase(rec.phrase).regions if r in ZONES]
            if not zones:
                continue
            assert f"{rec.zone} zone" in zones, (index, rec.phrase, rec.zone)
            named += 1
            lobes += "lower lobe" in rec.phrase and rec.zone == "mid"
    assert named >= 50
    assert lobes >= 5  # the case the parser once missed occurs in these films
