"""Tests for the anatomical prior stage (phrase parser, chest atlas, prior)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_matex.stages.anatomy import (
    ATLAS_REGIONS,
    AnatomicalPrior,
    ChestAtlas,
    PhraseAnatomy,
    parse_phrase,
)

GRID = (14, 14)


def _image_right_share(prior_row: torch.Tensor, grid=GRID) -> float:
    """Share of the prior's mass in the image's right half."""
    grid_map = prior_row.view(grid)
    return float(grid_map[:, grid[1] // 2 :].sum() / grid_map.sum())


def _centroid(grid_map: torch.Tensor) -> tuple[float, float]:
    """(x, y) mass centre in normalised image coordinates."""
    h, w = grid_map.shape
    ys = (torch.arange(h, dtype=grid_map.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=grid_map.dtype) + 0.5) / w
    total = grid_map.sum()
    return float((grid_map.sum(0) * xs).sum() / total), float((grid_map.sum(1) * ys).sum() / total)


# --- parsing ---------------------------------------------------------------

PARSE_TABLE = [
    ("left pleural effusion", "left", ("base", "costophrenic angle"), "effusion"),
    ("Right pleural effusion", "right", ("base", "costophrenic angle"), "effusion"),
    ("bilateral pleural effusions", "bilateral", ("base", "costophrenic angle"), "effusion"),
    ("effusions in both bases", "bilateral", ("base",), "effusion"),
    ("right and left lower lobe opacities", "bilateral", ("mid zone", "lower zone"), "opacity"),
    ("left-sided consolidation", "left", ("lung",), "consolidation"),
    ("lt upper lobe nodule", "left", ("upper zone",), "nodule"),
    ("R apex", "right", ("apex",), None),
    ("right middle lobe pneumonia", "right", ("mid zone",), "pneumonia"),
    ("RLL atelectasis", "right", ("mid zone", "lower zone"), "atelectasis"),
    ("lingular opacity", "left", ("mid zone", "lower zone"), "opacity"),
    ("small right apical pneumothorax", "right", ("apex",), "pneumothorax"),
    ("left pneumothorax", "left", ("apex", "lateral periphery"), "pneumothorax"),
    ("bibasilar atelectasis", "bilateral", ("base",), "atelectasis"),
    ("blunting of the left costophrenic angle", "left", ("costophrenic angle",), None),
    ("right hilar enlargement", "right", ("hilum",), None),
    ("perihilar opacities", None, ("perihilar",), "opacity"),
    ("pulmonary edema", "bilateral", ("perihilar",), "edema"),
    ("mild interstitial edema, right more than left", "bilateral", ("perihilar",), "edema"),
    ("retrocardiac opacity", None, ("retrocardiac",), "opacity"),
    ("cardiomegaly", None, ("heart",), "cardiomegaly"),
    ("enlarged cardiac silhouette", None, ("heart",), None),
    ("widened mediastinum", None, ("mediastinum",), None),
    ("lung opacity", None, ("lung",), "opacity"),
    ("left lung", "left", ("lung",), None),
    ("no acute findings", None, (), None),
    ("", None, (), None),
]


@pytest.mark.parametrize("phrase, laterality, regions, finding", PARSE_TABLE)
def test_parse_phrase_table(phrase, laterality, regions, finding) -> None:
    assert parse_phrase(phrase) == PhraseAnatomy(laterality, regions, finding)


def test_explicit_region_overrides_finding_default() -> None:
    assert parse_phrase("right pneumothorax").regions == ("apex", "lateral periphery")
    assert parse_phrase("right basilar pneumothorax").regions == ("base",)
    assert parse_phrase("left lower zone effusion").regions == ("lower zone",)
    assert parse_phrase("perihilar consolidation").regions == ("perihilar",)
    # edema's bilateral default applies only with its default region
    assert parse_phrase("edema in the lower zones").laterality is None


def test_parse_tolerates_case_punctuation_and_unicode() -> None:
    expected = parse_phrase("left pleural effusion")
    assert parse_phrase("LEFT\u2010SIDED  pleural   effusion!!!") == expected
    assert parse_phrase("  Left pleural effusion. ") == expected
    assert parse_phrase("Rt. CP-angle blunting") == PhraseAnatomy(
        "right", ("costophrenic angle",), None
    )
    assert parse_phrase("peri-hilar opacity").regions == ("perihilar",)
    assert parse_phrase("pulmonary \u0153dema").finding == "edema"
    assert parse_phrase("r\u00e9trocardiac opacity").regions == ("retrocardiac",)


def test_one_letter_sides_need_a_following_place_word() -> None:
    assert parse_phrase("L base").laterality == "left"
    assert parse_phrase("opacity L").laterality is None
    assert parse_phrase("L").regions == ()


def test_atlas_keys_apply_laterality_to_sided_regions_only() -> None:
    assert parse_phrase("left upper lobe").atlas_keys() == ("left upper zone",)
    assert parse_phrase("bibasilar atelectasis").atlas_keys() == ("right base", "left base")
    assert parse_phrase("right heart border").atlas_keys() == ("heart",)
    assert parse_phrase("nothing here").atlas_keys() == ()
    assert set(parse_phrase("right pneumothorax").atlas_keys()) <= set(ATLAS_REGIONS)


# --- atlas geometry --------------------------------------------------------


def test_atlas_geometry_is_plausible() -> None:
    atlas = ChestAtlas()
    heart_x, heart_y = _centroid(atlas.render("heart", GRID))
    assert 0.5 < heart_x < 0.6 and 0.55 < heart_y < 0.75
    mediastinum_x, mediastinum_y = _centroid(atlas.render("mediastinum", GRID))
    assert abs(mediastinum_x - 0.5) < 0.01 and mediastinum_y < 0.4
    right_x, _ = _centroid(atlas.render("right lung", GRID))
    left_x, _ = _centroid(atlas.render("left lung", GRID))
    assert 0.10 < right_x < 0.46 and 0.54 < left_x < 0.90
    hilum_x, hilum_y = _centroid(atlas.render("right hilum", GRID))
    assert abs(hilum_x - 0.38) < 0.02 and 0.40 < hilum_y < 0.55
    _, apex_y = _centroid(atlas.render("left apex", GRID))
    _, base_y = _centroid(atlas.render("left base", GRID))
    assert apex_y < 0.3 < 0.7 < base_y
    cp_x, _ = _centroid(atlas.render("left costophrenic angle", GRID))
    assert cp_x > left_x  # lateral part of the patient's left lung
    retro_x, _ = _centroid(atlas.render("retrocardiac", GRID))
    assert 0.54 < retro_x < heart_x + 0.15


@pytest.mark.parametrize("side", ["right", "left"])
def test_builtin_lungs_have_a_clinical_outline(side) -> None:
    # a frontal film's lung: apex near the mediastinum, the lateral border
    # sloping out to the costophrenic angle at the lateral base, and the
    # diaphragm dome rising towards the midline (the shape of 434 clinical lung
    # masks; an egg with a central apex and a rounded base fails each line)
    lung = ChestAtlas().render(f"{side} lung", (224, 224)) > 0.5
    rows, cols = torch.nonzero(lung, as_tuple=True)
    left, right = int(cols.min()), int(cols.max())
    width = right - left + 1
    # medial-to-lateral fraction of each column: the patient's right lung is on the image left
    medial = (right - cols) / width if side == "right" else (cols - left) / width
    top, bottom = int(rows.min()), int(rows.max())
    assert float(medial[rows == top].mean()) < 0.25  # apex: in the medial quarter
    assert float(medial[rows == bottom].mean()) > 0.75  # lowest point: the lateral quarter
    lowest = [int(rows[(medial > lo) & (medial <= lo + 0.1)].max()) for lo in (0.0, 0.9)]
    # the dome: the medial tenth ends higher than the lateral tenth, by more than
    # 3% of the height (measured 6%, 9 px; the egg's medial tenth ends 3 px lower)
    assert lowest[1] - lowest[0] > 0.03 * (bottom - top + 1), lowest


def test_atlas_renders_soft_values_in_unit_interval() -> None:
    atlas = ChestAtlas()
    for region in ATLAS_REGIONS:
        grid_map = atlas.render(region, GRID)
        assert grid_map.shape == GRID and grid_map.dtype == torch.float32
        assert grid_map.min() >= 0 and grid_map.max() <= 1 and grid_map.max() > 0.5
    lung = atlas.render("left lung", (224, 224))
    edge = ((lung > 0.05) & (lung < 0.95)).sum()
    assert edge > 0  # soft edges, not a binary mask


def test_union_is_pixelwise_max() -> None:
    atlas = ChestAtlas()
    lung, heart = atlas.render("left lung", GRID), atlas.render("heart", GRID)
    union = atlas.render(["left lung", "heart"], GRID)
    assert (union >= torch.maximum(lung, heart) - 1e-6).all()
    assert (union <= lung + heart + 1e-6).all()


def test_render_at_patch_grid_matches_area_downsampled_pixels() -> None:
    atlas = ChestAtlas()
    for regions in (["left lung", "right lung"], ["heart"], ["right apex"], ["left hilum"]):
        pixels = atlas.render(regions, (224, 224))
        patches = atlas.render(regions, GRID)
        downsampled = F.adaptive_avg_pool2d(pixels[None, None], GRID)[0, 0]
        assert (downsampled - patches).abs().max() < 0.02


def test_atlas_orientation_mirrors_builtin_shapes() -> None:
    radiological = ChestAtlas().render("heart", GRID)
    anatomical = ChestAtlas(orientation="anatomical").render("heart", GRID)
    torch.testing.assert_close(anatomical, radiological.flip(-1), atol=1e-5, rtol=0)


def test_custom_region_masks_override_the_atlas() -> None:
    box = torch.zeros(64, 64)
    box[8:56, 32:64] = 1.0  # the image's right half, rows 1/8..7/8
    atlas = ChestAtlas(masks={"Left  Lung": box})
    assert atlas.custom_regions == ("left lung",)
    expected = F.adaptive_avg_pool2d(box[None, None], (16, 16))[0, 0]
    assert (atlas.render("left lung", (16, 16)) - expected).abs().max() < 0.05
    # derived regions follow the user's lung: the upper zone is the box's top third
    upper = atlas.render("left upper zone", (16, 16))
    assert upper[:, :8].sum() < 0.01 * upper.sum()
    assert upper[2:6].sum() > 0.9 * upper.sum()
    torch.testing.assert_close(
        atlas.render("right lung", GRID), ChestAtlas().render("right lung", GRID)
    )


def test_atlas_rejects_bad_masks_and_names() -> None:
    with pytest.raises(ValueError, match="unknown atlas region"):
        ChestAtlas(masks={"left kidney": torch.ones(4, 4)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ChestAtlas(masks={"heart": torch.full((4, 4), 2.0)})
    with pytest.raises(ValueError, match="empty"):
        ChestAtlas(masks={"heart": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="orientation"):
        ChestAtlas(orientation="mirrored")
    with pytest.raises(ValueError, match="unknown atlas region"):
        ChestAtlas().render("spleen", GRID)


# --- the prior stage -------------------------------------------------------


def test_left_effusion_lies_on_the_image_right_in_radiological_view() -> None:
    radiological = AnatomicalPrior()(["left pleural effusion"], GRID)[0]
    anatomical = AnatomicalPrior(orientation="anatomical")(["left pleural effusion"], GRID)[0]
    assert _image_right_share(radiological) > 0.8
    assert _image_right_share(anatomical) < 0.2
    right = AnatomicalPrior()(["right pleural effusion"], GRID)[0]
    assert _image_right_share(right) < 0.2


def test_phrase_without_anatomy_gives_uniform_ones() -> None:
    prior = AnatomicalPrior()(["no acute findings", None, ""], GRID)
    torch.testing.assert_close(prior, torch.ones(3, 196))


def test_output_contract() -> None:
    phrases = ["left upper lobe pneumonia", "cardiomegaly", "normal"]
    prior = AnatomicalPrior()(phrases, (7, 9), dtype=torch.float64)
    assert prior.shape == (3, 63) and prior.dtype == torch.float64
    assert prior.device.type == "cpu" and prior.is_contiguous()
    assert prior.min() >= 0
    torch.testing.assert_close(prior.amax(1), torch.ones(3, dtype=torch.float64))
    assert AnatomicalPrior()([], GRID).shape == (0, 196)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_output_follows_requested_and_mask_devices_on_cuda() -> None:
    prior = AnatomicalPrior()
    assert prior(["heart"], GRID, device="cuda").device.type == "cuda"
    masks = torch.ones(1, 28, 28, device="cuda")
    assert prior(["heart"], GRID, masks=masks).device.type == "cuda"


def test_side_and_zone_intersect() -> None:
    grid_map = AnatomicalPrior()(["left upper lobe"], GRID)[0].view(GRID)
    total = grid_map.sum()
    assert grid_map[:, 7:].sum() > 0.95 * total  # patient left = image right
    assert grid_map[:7].sum() > 0.9 * total  # upper half of the image
    assert grid_map[10:].sum() < 0.01 * total


def test_sample_masks_replace_the_atlas() -> None:
    masks = torch.zeros(2, 1, 28, 28)
    masks[0, :, :14, :14] = 1.0
    masks[1, :, 14:, 21:] = 0.5  # scale does not matter: the prior peaks at 1
    prior = AnatomicalPrior()(["left pleural effusion", None], GRID, masks=masks)
    expected = torch.zeros(2, 14, 14)
    expected[0, :7, :7] = 1.0
    expected[1, 7:, 10:] = 1.0
    expected[1, 7:, 10] = 0.5  # mask column 21 starts mid-patch: half covered
    torch.testing.assert_close(prior, expected.flatten(1))


def test_sample_masks_may_skip_samples() -> None:
    stage = AnatomicalPrior()
    box = torch.zeros(28, 28)
    box[:14] = 1.0
    prior = stage(["cardiomegaly", "cardiomegaly"], GRID, masks=[None, box])
    torch.testing.assert_close(prior[0], stage(["cardiomegaly"], GRID)[0])
    torch.testing.assert_close(prior[1].view(GRID)[:7], torch.ones(7, 14))
    assert prior[1].view(GRID)[7:].sum() == 0


def test_empty_sample_mask_falls_back_to_uniform() -> None:
    prior = AnatomicalPrior()(["heart"], GRID, masks=torch.zeros(1, 28, 28))
    torch.testing.assert_close(prior, torch.ones(1, 196))


def test_prior_rejects_bad_input() -> None:
    stage = AnatomicalPrior()
    with pytest.raises(ValueError, match="masks has 1 rows but phrases has 2"):
        stage(["a", "b"], GRID, masks=torch.ones(1, 14, 14))
    with pytest.raises(ValueError, match="non-negative"):
        stage(["a"], GRID, masks=-torch.ones(1, 14, 14))
    with pytest.raises(ValueError, match="grid"):
        stage(["a"], (14, 0))
    with pytest.raises(TypeError, match="sequence"):
        stage("left effusion", GRID)
    with pytest.raises(TypeError, match="floating"):
        stage(["a"], GRID, dtype=torch.int64)
    with pytest.raises(ValueError, match="orientation"):
        AnatomicalPrior(ChestAtlas(orientation="anatomical"))


def test_describe_reports_parse_and_regions() -> None:
    stage = AnatomicalPrior()
    assert stage.parse("left pleural effusion").laterality == "left"
    text = stage.describe("left pleural effusion")
    assert "left base" in text and "left costophrenic angle" in text
    assert "uniform" in stage.describe("no acute findings")
    assert "uniform" in stage.describe(None)
