"""AtlasRegistration: the anatomical prior follows the film's own lung fields."""

import math

import numpy as np
import pytest
import torch

from captum_matex import MATEX
from captum_matex.baselines.prior_only import AnatomyPriorOnly
from captum_matex.data import PhantomCXR
from captum_matex.evaluation.robustness import affine_film
from captum_matex.stages import AnatomicalPrior, AtlasRegistration, ChestAtlas, lung_fields
from captum_matex.stages.registration import _frames
from captum_matex.zoo import phantom_atlas, phantom_clip, phantom_prior

POSES = [(8.0, 1.1, (0.08, -0.05)), (-6.0, 0.9, (-0.1, 0.1))]


@pytest.fixture(scope="module")
def films():
    data = PhantomCXR(split="val", seed=0)
    return [data[i].image[0].numpy() for i in range(4)]


def _pose(film: np.ndarray) -> tuple:
    centre, angle, width, height, paired = _frames(lung_fields(torch.from_numpy(film)[None, None]))
    assert bool(paired[0])
    return centre[0].numpy(), math.degrees(float(angle[0])), float(width[0]), float(height[0])


@pytest.mark.parametrize("angle,zoom,shift", POSES)
def test_lung_frame_follows_a_known_pose(films, angle, zoom, shift):
    for film in films:
        moved, _ = affine_film(film, [], angle, zoom, shift, film.shape)
        (c0, a0, w0, h0), (c1, a1, w1, h1) = _pose(film), _pose(moved)
        # where the lungs' centre must go under the pose (y down, clockwise positive)
        size = np.array(film.shape[::-1], dtype=float)
        t = math.radians(angle)
        offset = (c0 - size / 2) * zoom
        expected = size / 2 + np.array(shift) * size + np.array(
            [math.cos(t) * offset[0] - math.sin(t) * offset[1],
             math.sin(t) * offset[0] + math.cos(t) * offset[1]])
        # tolerances: the fields are thresholded on a resampled 224-px film, so
        # their edges move by about a pixel (lungs ~85 px wide, ~26 px spread)
        assert np.abs(c1 - expected).max() < 3.0
        assert abs((a1 - a0) - angle) < 2.0
        assert w1 / w0 == pytest.approx(zoom, rel=0.05)
        assert h1 / h0 == pytest.approx(zoom, rel=0.08)


def test_registered_prior_moves_with_the_film(films):
    registration, prior = AtlasRegistration(phantom_atlas()), phantom_prior()
    grid = (28, 28)
    phrase = ["right lower lobe consolidation"]
    atlas_prior = prior(phrase, grid)
    for film in films:
        moved, _ = affine_film(film, [], 0.0, 1.0, (0.12, 0.0), film.shape)
        here = registration(atlas_prior, torch.from_numpy(film)[None, None], grid).view(grid)
        there = registration(atlas_prior, torch.from_numpy(moved)[None, None], grid).view(grid)
        # a 12% shift of a 28-cell grid is 3.4 cells: the prior's mass centre follows
        xs = torch.arange(grid[1], dtype=torch.float32)
        centre = [float((p.sum(0) * xs).sum() / p.sum()) for p in (here, there)]
        assert centre[1] - centre[0] == pytest.approx(0.12 * grid[1], abs=0.75)
        assert float(here.max()) == pytest.approx(1.0) and float(there.max()) == pytest.approx(1.0)


def test_no_lung_fields_leaves_the_prior_unchanged():
    registration = AtlasRegistration()
    prior = AnatomicalPrior()(["left pleural effusion", "right apical pneumothorax"], (14, 14))
    flat = torch.full((2, 3, 112, 112), 0.3)
    noise = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    for images in (flat, noise):
        assert not registration.transforms(images)[1].any()
        assert torch.equal(registration(prior, images, (14, 14)), prior)


def test_a_batch_registers_each_film_on_its_own(films):
    registration, grid = AtlasRegistration(phantom_atlas()), (14, 14)
    prior = phantom_prior()(["left lower zone consolidation"] * 3, grid)
    moved = affine_film(films[1], [], 7.0, 0.9, (-0.1, 0.05), films[1].shape)[0]
    batch = torch.stack([torch.from_numpy(f) for f in (films[0], moved)])[:, None]
    batch = torch.cat([batch, torch.full_like(batch[:1], 0.3)])  # a flat film: no fit
    together = registration(prior, batch, grid)
    alone = torch.cat([registration(prior[i:i + 1], batch[i:i + 1], grid) for i in range(3)])
    # the same arithmetic per film, batched or not (float32 warps: a few ulps)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    assert torch.equal(together[2], prior[2])
    assert registration(prior[:0], batch[:0], grid).shape == (0, 196)


def test_the_builtin_atlas_registers_the_phantoms_squat_lungs(films):
    # phantom lungs are squat against the built-in atlas's clinical proportions
    # (0.54-0.90 of its height on 1000 test films): every film must get its fit
    images = torch.stack([torch.from_numpy(f) for f in films])[:, None]
    assert bool(AtlasRegistration().transforms(images)[1].all())
    data = PhantomCXR(split="val", seed=0)
    samples = [data[i] for i in range(80)]
    samples = [s for s in samples if s.finding in ("atelectasis", "effusion")][:12]
    grid, prior, registration = (28, 28), AnatomicalPrior(), AtlasRegistration()
    inside = {"registered": 0.0, "not": 0.0}
    for sample in samples:
        atlas_prior = prior([sample.phrase], grid)
        mask = torch.zeros(sample.image.shape[-2:], dtype=torch.bool)
        for x, y, w, h in sample.boxes:
            mask[int(y):int(y + h), int(x):int(x + w)] = True
        for label, p in (("registered", registration(atlas_prior, sample.image[None], grid)),
                         ("not", atlas_prior)):
            up = torch.nn.functional.interpolate(p.view(1, 1, *grid), size=mask.shape, mode="bilinear")
            inside[label] += float(up[0, 0][mask].mean()) / len(samples)
    # measured: mean prior inside these lower-zone boxes 0.44 registered, 0.12 not
    # (unregistered, the built-in bases lie below the phantom's diaphragm)
    assert inside["registered"] > 2 * inside["not"], inside


def test_a_real_radiograph_registers_near_the_builtin_atlas():
    # the built-in atlas has clinical proportions: on the real PA film RG1_UNCI
    # the fit asks for a zoom of about 0.98 (width) and 0.93 (height), far inside
    # either zoom limit (the raised one changes nothing for such a film)
    affines, plausible = AtlasRegistration().transforms(_real_film())
    assert bool(plausible[0])
    # the film-to-atlas map scales by atlas / film size along each axis (up to
    # rotations): its singular values are the inverse zooms; a pixel more or
    # less of thresholded lung field moves a zoom by under 0.02
    zooms = 1 / torch.linalg.svdvals(affines[0, :, :2])
    assert 0.8 < float(zooms.min()) and float(zooms.max()) < 1.0, zooms


def _real_film() -> torch.Tensor:
    r"""The real PA film RG1_UNCI as a 224-px, 3-channel input in [0, 1]."""
    pydicom_data = pytest.importorskip("pydicom.data")
    from captum_matex.data import read_image

    pixels = torch.as_tensor(read_image(pydicom_data.get_testdata_file("RG1_UNCI.dcm")).pixels)
    film = torch.nn.functional.interpolate(pixels.float()[None, None], size=(224, 224), mode="area")
    return ((film - film.min()) / (film.max() - film.min())).expand(1, 3, 224, 224)


def _lungs(atlas: ChestAtlas) -> torch.Tensor:
    r"""``(2, 224 * 224)`` priors of the atlas's right and left lung."""
    return torch.stack([atlas.render([lung], (224, 224)).flatten() for lung in ("right lung", "left lung")])


def _lowest_lung_rows(prior: torch.Tensor) -> list[int]:
    r"""The lowest row of each lung (right, left) where the prior reaches 0.5."""
    return [int(torch.nonzero((lung.view(224, 224) >= 0.5).any(1)).max()) for lung in prior]


#: Rows of RG1_UNCI's lung bases at 224 px, read off the film by eye on a
#: 10-px grid: the right costophrenic angle near row 178, the left near 185
#: (the right hemidiaphragm's dome near 160); a reading is good to about 8 px.
_RG1_BASES = (178, 185)


def test_the_builtin_atlas_fits_a_real_film_as_drawn():
    # the built-in atlas's clinical proportions: its lung bases (rows 174 / 174)
    # fall on the real film's within 15 px, the reading's 8 px plus margin
    atlas = ChestAtlas()
    prior = _lungs(atlas)
    for row, base in zip(_lowest_lung_rows(prior), _RG1_BASES):
        assert abs(row - base) <= 15, (row, base)


@pytest.mark.xfail(strict=True, reason=(
    "known defect: intensity-only lung fields miss a real film's lower lungs, which soft "
    "tissue makes brighter than the body threshold; the fit moves the atlas up (RG1_UNCI: "
    "bases at rows 133 / 148 against about 178 / 185)"))
def test_registration_keeps_a_real_films_lung_bases():
    atlas = ChestAtlas()
    prior = _lungs(atlas)
    registered = AtlasRegistration(atlas)(prior, _real_film().expand(2, 3, 224, 224), (224, 224))
    for row, base in zip(_lowest_lung_rows(registered), _RG1_BASES):
        assert abs(row - base) <= 15, (row, base)


def test_a_given_lung_segmenter_is_what_the_fit_follows(films):
    images = torch.from_numpy(np.stack(films))[:, None].expand(-1, 3, -1, -1)

    def lower(batch: torch.Tensor) -> torch.Tensor:  # the intensity fields, 10 px further down
        fields = lung_fields(batch)
        return torch.cat([torch.zeros_like(fields[:, :10]), fields[:, :-10]], 1)

    affines, plausible = AtlasRegistration().transforms(images)
    moved, still = AtlasRegistration(fields=lower).transforms(images)
    assert bool(plausible.all()) and bool(still.all())
    # film -> atlas maps A x + t: fields 10 px lower give the same A and t - 10 A e_y
    # (the phantom's lungs end far above the bottom edge, so nothing is cut off)
    assert torch.allclose(moved[..., :2], affines[..., :2], atol=1e-9)
    assert torch.allclose(moved[..., 2], affines[..., 2] - 10 * affines[..., 1], atol=1e-6)


def test_a_segmentation_of_the_whole_lungs_registers_a_real_film():
    # lung fields as a segmenter would give them (ellipses through the film's
    # lung edges as read by eye): the fit then keeps the bases on the film's
    film = _real_film()
    ys, xs = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")

    def whole_lungs(batch: torch.Tensor) -> torch.Tensor:
        right = ((xs - 63) / 42) ** 2 + ((ys - 103) / 76) ** 2 <= 1  # x 21-105, y 27-179
        left = ((xs - 165) / 40) ** 2 + ((ys - 106) / 79) ** 2 <= 1  # x 125-205, y 27-185
        return (right | left).float().expand(len(batch), -1, -1)

    atlas = ChestAtlas()
    prior = _lungs(atlas)
    registration = AtlasRegistration(atlas, fields=whole_lungs, overlying=())  # whole lungs
    registered = registration(prior, film.expand(2, 3, 224, 224), (224, 224))
    for row, base in zip(_lowest_lung_rows(registered), _RG1_BASES):
        assert abs(row - base) <= 15, (row, base)
    with pytest.raises(ValueError, match="fields must give"):
        AtlasRegistration(fields=lambda batch: whole_lungs(batch)[:, :100]).transforms(film)


@pytest.mark.parametrize("angle,zoom,shift", [(0.0, 0.85, (0.1, 0.08)), (6.0, 1.05, (-0.03, 0.03))])
def test_whole_lung_fields_register_exactly_without_the_overlying_regions(angle, zoom, shift):
    # the atlas's own whole lungs, moved by a known pose, given as the film's lung
    # fields (as a whole-lung segmenter gives them): matched against the whole
    # atlas lungs the fit recovers the pose; matched against the lungs with the
    # heart and mediastinum taken out (the default, for dark lung fields) it is
    # biased (measured: Dice 0.999 for both poses, against 0.88)
    atlas, size = ChestAtlas(), (224, 224)
    whole = atlas.render(["right lung", "left lung"], size)
    moved = torch.from_numpy(affine_film(whole.numpy(), [], angle, zoom, shift, size)[0])
    fields = (moved > 0.5).float()

    def overlap(overlying) -> float:
        registration = AtlasRegistration(
            atlas, fields=lambda batch: fields.expand(len(batch), -1, -1), overlying=overlying)
        warped = registration(whole.flatten()[None], fields.expand(1, 3, *size), size).view(size)
        a, b = warped > 0.5, moved > 0.5
        return float(2 * (a & b).sum() / (a.sum() + b.sum()))

    assert overlap(()) > 0.99
    assert overlap(("heart", "mediastinum")) < 0.95


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_zoom"):
        AtlasRegistration(max_zoom=1.0)


def _model_input(film: np.ndarray) -> torch.Tensor:
    r"""A 224-px phantom film as the embedded CLIP's 112-px, 3-channel input."""
    half = torch.nn.functional.avg_pool2d(torch.from_numpy(film)[None, None], 2)
    return half.expand(1, 3, *half.shape[-2:]).contiguous()


def test_prior_only_points_better_on_moved_films_when_registered(films):
    model, tokenizer = phantom_clip()
    data = PhantomCXR(split="val", seed=0)
    samples = [data[i] for i in range(60)]
    samples = [s for s in samples if s.boxes][:40]
    hits, energy = {"on": 0, "off": 0}, {"on": 0.0, "off": 0.0}
    rng = np.random.default_rng(0)
    for sample in samples:
        angle, zoom = rng.uniform(-10, 10), rng.uniform(0.85, 1.15)
        shift = tuple(rng.uniform(-0.15, 0.15, 2))
        film, boxes = affine_film(sample.image[0].numpy(), sample.boxes, angle, zoom, shift,
                                  sample.image.shape[-2:])
        images = _model_input(film)
        mask = torch.zeros(images.shape[-2:], dtype=torch.bool)
        for x, y, w, h in (tuple(v / 2 for v in box) for box in boxes):
            mask[int(y):int(math.ceil(y + h)), int(x):int(math.ceil(x + w))] = True
        for label, kwargs in (("on", {}), ("off", {"registration": None})):
            explainer = AnatomyPriorOnly(model, tokenizer, anatomical_prior=phantom_prior(), **kwargs)
            heat = explainer.attribute(images, ([sample.phrase],))[0, 0]
            peak = int(heat.flatten().argmax())
            hits[label] += bool(mask.flatten()[peak])
            energy[label] += float(heat[mask].sum() / heat.sum()) / len(samples)
    # measured on 200 moved validation films: pointing game 0.72 registered, 0.41 not;
    # here 28 against 23 of 40 and energy 0.52 against 0.37 (margins leave room for a
    # peak or two that another CPU's rounding may move)
    assert hits["on"] >= hits["off"] + 3, hits
    assert energy["on"] > 1.2 * energy["off"], energy


def test_region_masks_are_never_moved(films):
    model, tokenizer = phantom_clip()
    images = _model_input(affine_film(films[0], [], 5.0, 1.1, (0.1, 0.05), films[0].shape)[0])
    images = images.expand(2, -1, -1, -1).contiguous()
    masks = [torch.zeros(images.shape[-2:]), None]
    masks[0][:, :60] = 1
    phrases = (["left lower lobe consolidation"] * 2,)
    on = AnatomyPriorOnly(model, tokenizer).attribute(images, phrases, output="grid",
                                                       anatomy_masks=masks)
    off = AnatomyPriorOnly(model, tokenizer, registration=None).attribute(
        images, phrases, output="grid", anatomy_masks=masks)
    assert torch.equal(on[0], off[0]), "a user's mask was moved"
    assert not torch.allclose(on[1], off[1]), "the atlas prior was not registered"
    explainer = MATEX(model, tokenizer)
    assert isinstance(explainer.registration, AtlasRegistration)
    assert explainer.registration.atlas is explainer.anatomical_prior.atlas
    with pytest.raises(TypeError, match="RegistrationStage"):
        MATEX(model, tokenizer, registration=object())
