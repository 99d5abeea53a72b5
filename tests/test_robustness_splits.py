"""The held-out robustness splits of ``matex benchmark --split`` and their metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from captum_matex.data.phantom import all_phrases
from captum_matex.evaluation import BenchmarkConfig, BenchmarkError, run_benchmark
from captum_matex.evaluation.robustness import (
    PARAPHRASES,
    SPLITS,
    affine_film,
    draw_markers,
    film_discrimination,
)
from captum_matex.evaluation.samples import phantom_samples
from captum_matex.metrics import boxes_to_mask, discrimination, empty_side_peak
from captum_matex.phrases import laterality

pytestmark = pytest.mark.usefixtures("tiny_threads")

N = 8


@pytest.fixture(scope="module")
def splits():
    return {name: split.samples(N, seed=0) for name, split in SPLITS.items()}


@pytest.fixture(scope="module")
def base():
    return {s.id.rsplit("-", 1)[1]: s for s in phantom_samples("test", 5 * N, seed=0)}


def _index(sample) -> str:
    return sample.id.split("-")[3]


def test_every_split_gives_named_samples_with_boxes_inside_the_canvas(splits):
    for name, samples in splits.items():
        assert len(samples) == N, name
        assert len({s.id for s in samples}) == N and all(f"-{name}-" in s.id for s in samples)
        for sample in samples:
            height, width = sample.load().size
            assert sample.boxes, sample.id
            for x, y, w, h in sample.boxes:
                assert 0 <= x and 0 <= y and w > 0 and h > 0, sample.id
                assert x + w <= width + 1e-6 and y + h <= height + 1e-6, sample.id


def test_splits_are_deterministic_and_plain_splits_unchanged(splits):
    again = SPLITS["geometry"].samples(N, seed=0)
    assert [s.boxes for s in again] == [s.boxes for s in splits["geometry"]]
    assert np.array_equal(again[3].load().pixels, splits["geometry"][3].load().pixels)
    other = SPLITS["geometry"].samples(N, seed=1)
    assert [s.boxes for s in other] != [s.boxes for s in again]
    config = BenchmarkConfig(limit=4)
    assert [s.id for s in config.samples()] == [s.id for s in phantom_samples("test", 4)]


def test_geometry_moves_the_boxes_with_the_image():
    film = np.zeros((224, 224), np.float32)
    box = (60.0, 70.0, 40.0, 30.0)
    film[70:100, 60:100] = 1.0  # bright exactly in the box
    for angle, zoom, shift, canvas in ((8.0, 1.1, (0.05, -0.1), (288, 224)),
                                       (-10.0, 0.85, (-0.15, 0.15), (224, 288)),
                                       (3.0, 1.0, (0.0, 0.0), (224, 224))):
        moved, (new_box,) = affine_film(film, [box], angle, zoom, shift, canvas)
        assert moved.shape == canvas
        rows, cols = np.flatnonzero((moved > 0.5).any(1)), np.flatnonzero((moved > 0.5).any(0))
        bright = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        x, y, w, h = new_box
        assert np.allclose(bright, (x, y, x + w, y + h), atol=2), (bright, new_box)


def test_geometry_split_varies_pose_and_canvas():
    samples = SPLITS["geometry"].samples(30, seed=0)
    sizes = {s.load().size for s in samples}
    assert {(224, 224), (288, 224), (224, 288)} <= sizes


def test_paraphrases_are_new_wordings_with_the_same_side(splits, base):
    generated = set(all_phrases())
    for finding, table in PARAPHRASES.items():
        assert len(table) >= 3, finding
        for template in table:
            for side in ("left", "right"):
                for zone in ("upper", "mid", "lower"):
                    for size in ("small", "moderate", "large", "mild"):
                        lobe = "upper" if zone == "upper" else "lower"
                        phrase = template.format(side=side, zone=zone, lobe=lobe, size=size)
                        assert phrase not in generated, phrase
    for sample in splits["paraphrase"]:
        original = base[_index(sample)]
        assert sample.phrase not in generated and sample.boxes == original.boxes
        if original.laterality in ("left", "right"):
            assert original.laterality in sample.phrase.split()
            assert laterality(sample.phrase) == original.laterality
        for zone in ("upper", "lower"):
            if zone in original.phrase.split() and "lobe" not in original.phrase:
                assert zone in sample.phrase.split(), (original.phrase, sample.phrase)


def test_side_swap_states_the_other_side_and_keeps_the_true_boxes(splits, base):
    for sample in splits["side_swap"]:
        original = base[_index(sample)]
        stated = laterality(sample.phrase)
        assert {stated, original.laterality} == {"left", "right"}
        assert sample.boxes == original.boxes
        (x, _, w, _), = sample.regions["empty_side_peak"]
        # patient left is image right on the phantom's PA films
        assert (x > 0) == (stated == "left") and w == 112


def test_empty_side_peak_on_hand_made_maps():
    maps = torch.zeros(3, 1, 20, 40)
    maps[0, 0, 10, 30] = 1.0  # peak on the image right (patient left)
    maps[1, 0, 10, 5] = 1.0  # peak on the image left (patient right)
    stated_left = boxes_to_mask([[(20, 0, 20, 20)]] * 3, (20, 40))
    assert empty_side_peak(maps, stated_left)[:2].tolist() == [1.0, 0.0]
    assert empty_side_peak(maps, stated_left)[2] == 0.0  # a constant map points nowhere


def test_markers_change_pixels_but_never_touch_the_boxes(splits, base):
    for sample in splits["markers"]:
        original = base[_index(sample)]
        changed = np.abs(sample.load().pixels - original.load().pixels) > 1e-6
        assert changed.sum() > 50, sample.id
        boxes = boxes_to_mask([original.boxes], changed.shape)[0].numpy()
        assert not (changed & boxes).any(), sample.id
    film = np.full((224, 224), 0.3, np.float32)
    everywhere_but = [(40.0, 40.0, 144.0, 144.0)]
    marked, mask = draw_markers(film, everywhere_but, np.random.default_rng(0))
    assert mask.any() and marked.max() == pytest.approx(1.0)
    assert not (mask & boxes_to_mask([everywhere_but], (224, 224))[0].numpy()).any()


def test_two_finding_gives_two_samples_per_film_with_disjoint_boxes(splits):
    samples = splits["two_finding"]
    films = {}
    for sample in samples:
        films.setdefault(sample.id.rsplit("-", 1)[0], []).append(sample)
    assert len(films) == N // 2 and all(len(pair) == 2 for pair in films.values())
    for first, second in films.values():
        assert first.phrase != second.phrase
        assert np.array_equal(first.load().pixels, second.load().pixels)
        size = first.load().size
        masks = boxes_to_mask([first.boxes, second.boxes], size)
        assert not (masks[0] & masks[1]).any()


def test_discrimination_on_hand_made_maps_and_rows():
    masks = torch.zeros(2, 2, 10, 10, dtype=torch.bool)
    masks[:, 0, :5, :5] = True  # first finding top left
    masks[:, 1, 5:, 5:] = True  # second finding bottom right
    maps = torch.zeros(2, 2, 10, 10)
    maps[0, 0, 1, 1] = maps[0, 1, 8, 8] = 1.0  # film 0: both phrases point home
    maps[1, 0, 1, 1] = maps[1, 1, 1, 1] = 1.0  # film 1: the second points at the first
    assert discrimination(maps, masks).tolist() == [1.0, 0.0]
    rows = [{"sample": f"film-{f}-{k}", "method": "m", "pointing_game": hit}
            for f, hits in enumerate(((1.0, 1.0), (1.0, 0.0), (1.0, None))) for k, hit in
            enumerate(hits)]
    values = [r["discrimination"] for r in film_discrimination(rows)]
    assert values == [1.0, 1.0, 0.0, 0.0, None, None]


def test_config_names_the_splits_and_their_metrics():
    with pytest.raises(BenchmarkError, match="robustness split: geometry, paraphrase"):
        BenchmarkConfig(split="rotated")
    with pytest.raises(BenchmarkError, match="phantom"):
        BenchmarkConfig(dataset="mscxr", root="x", split="side_swap")
    assert "empty_side_peak" in BenchmarkConfig(split="side_swap").metric_names("localisation")
    assert "empty_side_peak" not in BenchmarkConfig(split="test").metric_names()
    with pytest.raises(BenchmarkError, match="side_swap split only"):
        BenchmarkConfig(split="geometry", metrics=["empty_side_peak"]).metric_names()
    chosen = BenchmarkConfig(split="two_finding", metrics=["miou", "discrimination"])
    assert chosen.metric_names() == ["miou", "pointing_game"]


def test_a_tiny_robustness_study_reports_its_own_metric(tmp_path):
    config = BenchmarkConfig(split="side_swap", limit=4, batch_size=4,
                             methods=["chefer", "prior_only"], faithfulness=False, sanity=False)
    summary = run_benchmark(config, tmp_path, progress=False)
    for method in ("chefer", "prior_only"):
        scores = summary["methods"][method]
        assert scores["empty_side_peak"]["n"] == 4
        assert 0.0 <= scores["empty_side_peak"]["mean"] <= 1.0
    # the prior follows the phrase's words: it peaks on the stated, empty side
    assert summary["methods"]["prior_only"]["empty_side_peak"]["mean"] == 1.0
    assert "empty_side_peak ↓" in (tmp_path / "results.md").read_text()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["config"]["split"] == "side_swap"
    assert {r for r in saved["methods"]["prior_only"]} >= {"pointing_game", "empty_side_peak"}
    two = BenchmarkConfig(split="two_finding", limit=4, batch_size=4, methods=["prior_only"],
                          faithfulness=False, sanity=False, metrics=["miou"])
    summary = run_benchmark(two, tmp_path / "two", progress=False)
    assert summary["methods"]["prior_only"]["discrimination"]["n"] == 4
    assert "discrimination ↑" in (tmp_path / "two" / "results.md").read_text()
