"""Geometry-preserving preprocessing: pixels match the processor, maps and boxes round-trip."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from captum_matex.data import Radiograph
from captum_matex.data.geometry import (
    Geometry,
    compute_geometry,
    input_spec,
    maps_to_original,
    prepare,
)
from captum_matex.metrics import boxes_to_mask

SHAPES = [(150, 130), (130, 171), (112, 112), (90, 60), (301, 113)]


@pytest.fixture(scope="module")
def processor():
    from captum_matex.zoo.phantom_clip import build_processor

    return build_processor()


def smooth_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    noise = (rng.random(shape) * 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.5)))
    return Radiograph(blurred.astype(np.float32) / 255, "synthetic")


def marker_image(shape, box):
    x, y, w, h = box
    pixels = np.zeros(shape, np.float32)
    pixels[y:y + h, x:x + w] = 1.0
    return Radiograph(pixels, "marker")


def bright_box(channel, threshold):
    rows = torch.nonzero((channel > threshold).any(1))[:, 0]
    cols = torch.nonzero((channel > threshold).any(0))[:, 0]
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def test_input_spec_reads_the_clip_processor(processor):
    spec = input_spec(processor)
    assert spec.size == {"shortest_edge": 112} and spec.crop_size == (112, 112)
    assert spec.input_size == (112, 112) and spec.resample == "bicubic"
    assert spec.mean == (0.45,) * 3 and spec.std == (0.25,) * 3 and spec.rescale == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_torch_engine_matches_the_processor_pixels(processor, shape):
    radiograph = smooth_image(shape)
    reference = processor(images=[radiograph.to_pil()], return_tensors="pt")["pixel_values"]
    pixels, (geometry,) = prepare([radiograph], processor, mode="processor")
    assert pixels.shape == reference.shape == (1, 3, 112, 112)
    # within one 8-bit grey level (PIL and torch round differently), normalised by std 0.25
    assert (pixels - reference).abs().max() <= 1.01 / 255 / 0.25
    assert (pixels - reference).abs().mean() < 0.3 / 255 / 0.25
    exact, _ = prepare([radiograph], processor, mode="processor", engine="processor")
    assert torch.equal(exact, reference)
    assert geometry.mode == "processor" and geometry.input_size == (112, 112)


def test_processor_geometry_is_the_shortest_edge_resize_and_centre_crop(processor):
    g = compute_geometry((301, 113), processor, mode="processor")
    assert g.resized_size == (298, 112)  # int(112 * 301 / 113) = 298
    assert g.offset == (-93.0, 0.0)  # (298 - 112) // 2
    assert g.scale == (298 / 301, 112 / 113)
    assert 0.3 < g.visible_fraction < 0.4


@pytest.mark.parametrize("mode", ["processor", "letterbox"])
@pytest.mark.parametrize("engine", ["torch", "processor"])
def test_boxes_to_input_finds_a_marker_in_the_model_input(processor, mode, engine):
    box = (30, 60, 40, 50)
    radiograph = marker_image((200, 150), box)
    pixels, (geometry,) = prepare([radiograph], processor, mode=mode, engine=engine)
    grey = pixels[0, 0] * 0.25 + 0.45  # undo the normalisation
    found = bright_box(grey, 0.5)
    x, y, w, h = geometry.boxes_to_input([box])[0]
    assert found == pytest.approx((x, y, x + w, y + h), abs=1.0)
    # and back again
    back = geometry.boxes_to_original([(x, y, w, h)])[0]
    assert back == pytest.approx(box, abs=1e-6)


def test_letterbox_keeps_everything_and_pads_black(processor):
    radiograph = smooth_image((200, 100))
    pixels, (geometry,) = prepare([radiograph], processor)
    assert geometry.mode == "letterbox" and geometry.resized_size == (112, 56)
    assert geometry.offset == (0.0, 28.0)
    assert bool(geometry.visible_mask().all()) and geometry.visible_fraction == 1.0
    black = (0.0 - 0.45) / 0.25
    assert torch.allclose(pixels[0, :, :, :28], torch.tensor(black))
    assert torch.allclose(pixels[0, :, :, 84:], torch.tensor(black))
    whole = geometry.boxes_to_input([(0, 0, 100, 200)])[0]
    assert whole == pytest.approx((28.0, 0.0, 56.0, 112.0))


def test_a_box_in_the_cropped_margin_collapses_and_maps_to_fill(processor):
    g = compute_geometry((300, 100), processor, mode="processor")  # crops 94 rows at each end
    (x, y, w, h), = g.boxes_to_input([(10, 0, 20, 20)])
    assert w > 0 and h == 0
    mask = boxes_to_mask([[(x, y, w, h)]], g.input_size)
    assert not mask.any()
    heat = g.map_to_original(torch.ones(112, 112), fill=float("nan"))
    assert heat.shape == (300, 100)
    visible = g.visible_mask()
    assert torch.isnan(heat[~visible]).all() and torch.allclose(heat[visible], torch.tensor(1.0))
    assert visible[:93].sum() == 0 and visible[150].all()


@pytest.mark.parametrize("mode", ["processor", "letterbox"])
def test_map_to_original_puts_a_box_back_where_it_was(processor, mode):
    box = (40, 30, 50, 70)
    g = compute_geometry((180, 140), processor, mode=mode)
    on_input = boxes_to_mask([g.boxes_to_input([box])], g.input_size).float()  # (1, 112, 112)
    heat = g.map_to_original(on_input[None])  # (1, 1, 180, 140)
    assert heat.shape == (1, 1, 180, 140)
    truth = boxes_to_mask([[box]], (180, 140))[0]
    predicted = heat[0, 0] > 0.5
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou > 0.9
    # a patch-grid map (14 x 14) works the same way
    patches = torch.nn.functional.adaptive_avg_pool2d(on_input[None], 14)
    coarse = g.map_to_original(patches[0, 0])
    assert coarse.shape == (180, 140)
    peak = divmod(int(coarse.argmax()), 140)
    assert truth[peak]


def test_map_to_original_matches_interpolate_when_nothing_is_cropped():
    g = compute_geometry((224, 224), 112, mode="processor")
    maps = torch.rand(2, 1, 14, 14)
    ours = g.map_to_original(maps)
    reference = torch.nn.functional.interpolate(maps, size=(224, 224), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_map_to_input_averages_a_mask_and_round_trips_boxes(processor):
    g = compute_geometry((400, 300), processor)
    mask = torch.zeros(400, 300)
    mask[100:200, 50:150] = 1
    small = g.map_to_input(mask)
    assert small.shape == (112, 112)
    assert small.sum() * (1 / g.scale[0]) * (1 / g.scale[1]) == pytest.approx(100 * 100, rel=0.02)
    tensor_boxes = torch.tensor([[50.0, 100.0, 100.0, 100.0]])
    moved = g.boxes_to_input(tensor_boxes)
    assert isinstance(moved, torch.Tensor)
    assert torch.allclose(g.boxes_to_original(moved), tensor_boxes, atol=1e-4)


def test_batches_of_different_sizes_and_plain_sizes(processor):
    images = [smooth_image((150, 130), 1), smooth_image((90, 60), 2).pixels]
    pixels, geometries = prepare(images, (64, 48), mode="processor", quantize=False)
    assert pixels.shape == (2, 3, 64, 48) and 0 <= pixels.min() and pixels.max() <= 1
    assert [g.resized_size for g in geometries] == [(64, 48), (64, 48)]
    maps = torch.rand(2, 1, 8, 6, requires_grad=True)
    back = maps_to_original(maps, geometries)
    assert [tuple(b.shape) for b in back] == [(1, 150, 130), (1, 90, 60)]
    back[0].sum().backward()  # differentiable
    assert maps.grad is not None
    with pytest.raises(ValueError, match="2 rows but geometries has 1"):
        maps_to_original(maps, geometries[:1])


def test_geometry_round_trips_through_a_dict(processor):
    g = compute_geometry((2544, 3056), processor, mode="processor")
    assert Geometry.from_dict(g.as_dict()) == g


def test_clear_errors(processor):
    with pytest.raises(ValueError, match="mode must be"):
        compute_geometry((10, 10), processor, mode="stretch")
    with pytest.raises(ValueError, match="engine must be"):
        prepare([smooth_image((20, 20))], processor, engine="pil")
    with pytest.raises(ValueError, match="needs a transformers processor"):
        prepare([smooth_image((20, 20))], 32, engine="processor")
    with pytest.raises(ValueError, match="grey"):
        prepare([np.zeros((4, 5, 6, 7))], processor)


def test_a_full_size_radiograph_is_fast_and_float32(processor):
    import time

    radiograph = Radiograph(np.random.default_rng(0).random((1955, 1841), dtype=np.float32), "big")
    start = time.perf_counter()
    pixels, (g,) = prepare(radiograph, processor)
    heat = g.map_to_original(torch.rand(1, 1, 112, 112))
    assert time.perf_counter() - start < 5
    assert pixels.dtype == heat.dtype == torch.float32 and heat.shape == (1, 1, 1955, 1841)
