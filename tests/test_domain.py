"""Phantom-likeness: phantom films are accepted, real radiographs and other images are not."""

import io
import os

import matplotlib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from captum_matex.data import PhantomCXR
from captum_matex.data.domain import (
    FEATURES,
    PHANTOM_CENTER,
    PHANTOM_DISTANCE_MAX,
    PHANTOM_SCALE,
    image_statistics,
    is_phantom_like,
    phantom_distance,
    phantom_reference,
)
from captum_matex.data.images import read_image

# Films that did not derive PHANTOM_CENTER / PHANTOM_SCALE (train split, seed 0).
HELD_OUT = [("test", 0, i) for i in range(8)] + [("val", 1, i) for i in range(8)] + [
    ("train", 5, i) for i in range(8)
]


def _png(pixels: np.ndarray) -> np.ndarray:
    r"""``pixels`` through an 8-bit PNG file, as tests/test_cli.py saves a film."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255


def _film(split: str, seed: int, index: int) -> np.ndarray:
    return PhantomCXR(split=split, seed=seed)[index].image[0].numpy()


@pytest.fixture(scope="module")
def real_chest():
    radiograph = read_image(get_testdata_file("RG1_UNCI.dcm"))
    assert radiograph.metadata["photometric_interpretation"] == "MONOCHROME1"
    return radiograph


def test_held_out_phantom_films_are_phantom_like_raw_and_as_png():
    distances = [phantom_distance(f(_film(*key))) for key in HELD_OUT for f in (np.asarray, _png)]
    assert len(distances) == 2 * 24
    assert max(distances) <= PHANTOM_DISTANCE_MAX
    assert np.median(distances) < PHANTOM_DISTANCE_MAX / 2  # typical films sit well inside


def test_a_cropped_phantom_film_is_phantom_like():
    assert is_phantom_like(_png(_film("test", 0, 1)[:, 32:192]))


def test_the_real_chest_radiograph_is_not_phantom_like(real_chest):
    assert not is_phantom_like(real_chest)
    assert not is_phantom_like(_png(real_chest.pixels))
    small = np.asarray(Image.fromarray((real_chest.pixels * 255).astype(np.uint8))
                       .resize((224, 224), Image.LANCZOS), dtype=np.float32) / 255
    assert not is_phantom_like(small)  # the phantom's size does not make it a phantom


@pytest.mark.parametrize("gamma", [1.5, 2.5, 4.0])
def test_a_real_film_remapped_to_phantom_intensities_is_not_phantom_like(real_chest, gamma):
    pixels = real_chest.pixels ** gamma  # gamma 4 puts its median on the phantom's
    assert phantom_distance(pixels) > 2 * PHANTOM_DISTANCE_MAX


def _natural() -> np.ndarray:
    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    grey = Image.open(os.path.join(folder, "grace_hopper.jpg")).convert("L")
    return np.asarray(grey, dtype=np.float32) / 255


def _others() -> dict:
    rng = np.random.default_rng(0)
    return {
        "black": np.zeros((224, 224)),
        "grey": np.full((224, 224), 0.5),
        "white": np.ones((224, 224)),
        "uniform noise": rng.random((224, 224)),
        "gaussian noise": np.clip(rng.normal(0.5, 0.15, (224, 224)), 0, 1),
        "ramp": np.tile(np.linspace(0, 1, 224), (224, 1)),
        "photograph": _natural(),
        "inverted phantom": 1 - _film("test", 0, 0),
    }


@pytest.mark.parametrize("name", list(_others()))
def test_other_images_are_not_phantom_like(name):
    assert not is_phantom_like(_others()[name])


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG3_UNCI.dcm"])
def test_other_modalities_are_not_phantom_like(name):
    assert not is_phantom_like(read_image(get_testdata_file(name)))


def test_stored_constants_match_a_recomputation():
    center, scale = phantom_reference(count=48)
    assert center.shape == scale.shape == (len(FEATURES),)
    assert (PHANTOM_SCALE > 0).all()
    np.testing.assert_array_less(np.abs(center - PHANTOM_CENTER), 0.5 * PHANTOM_SCALE)
    np.testing.assert_allclose(scale, PHANTOM_SCALE, rtol=0.5)


def test_statistics_of_a_radiograph_and_its_pixels_agree(real_chest):
    np.testing.assert_allclose(image_statistics(real_chest), image_statistics(real_chest.pixels))


@pytest.mark.parametrize("shape", [(224,), (2, 2), (3, 224, 224)])
def test_non_grey_images_are_refused(shape):
    with pytest.raises(ValueError, match="grey"):
        image_statistics(np.zeros(shape))
