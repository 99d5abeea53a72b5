"""benchmarks/atlas_lungs.py: the built-in lungs against masks of known shape."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captum_matex.evaluation.robustness import affine_film
from captum_matex.stages import ChestAtlas

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "atlas_lungs.py"


def _save(folder: Path, name: str, mask: np.ndarray) -> None:
    Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{name}.png")


def _ellipses(size: tuple[int, int]) -> np.ndarray:
    r"""Two upright ellipses in the atlas's lung boxes: no shape of a real lung."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    centre_y, radius_y, radius_x = 0.47 * h, 0.35 * h, 0.18 * w
    return sum(((x - cx * w) / radius_x) ** 2 + ((y - centre_y) / radius_y) ** 2 <= 1
               for cx in (0.28, 0.72)).astype(np.float32)


def _run(folder: Path, monkeypatch, capsys) -> dict:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(folder)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return json.loads(capsys.readouterr().out)


def test_masks_of_the_atlas_itself_match_and_ellipses_do_not(tmp_path, monkeypatch, capsys):
    atlas, size = ChestAtlas(), (224, 224)
    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir()
    other.mkdir()
    lungs = [atlas.render(f"{side} lung", size).numpy() for side in ("right", "left")]
    both = atlas.render(["right lung", "left lung"], size).numpy()
    # the atlas's own lungs on three films, zoomed and shifted (upright, as the
    # outline comparison assumes)
    for i, (zoom, shift) in enumerate([(0.85, (0.1, 0.08)), (1.05, (-0.03, 0.03)),
                                       (0.9, (0.0, -0.06))]):
        moved = affine_film(both, [], 0.0, zoom, shift, size)[0]
        _save(own, f"film{i}", (moved > 0.5).astype(np.float32))
    for shape in ((200, 200), (180, 240), (256, 192)):
        _save(other, f"{shape[0]}x{shape[1]}", _ellipses(shape))
    _save(own, "one lung", (lungs[0] > 0.5).astype(np.float32))  # no pair: skipped
    result = _run(own, monkeypatch, capsys)
    assert (result["masks"], result["two lungs"], result["registered films"]) == (4, 3, 3)
    # the atlas against its own outline, resampled: only edge pixels can differ
    # (measured 0.99 and above)
    for name in ("right lung", "left lung", "both lungs", "both lungs, per film median"):
        assert result[name] > 0.97, result
    # on the films the drawn atlas misses the moved lungs and the registration
    # puts it back on them (measured: median 0.86 drawn, 0.999 registered)
    assert result["on the film, registered, median"] > 0.99, result
    assert result["on the film, as drawn, median"] < 0.9, result
    ellipses = _run(other, monkeypatch, capsys)
    # an ellipse's apex is central and its base round: measured about 0.9
    assert ellipses["two lungs"] == 3
    assert ellipses["right lung"] < result["right lung"] - 0.03, (ellipses, result)


def test_a_folder_without_two_lungs_is_refused(tmp_path, monkeypatch, capsys):
    _save(tmp_path, "blank", np.zeros((64, 64), np.float32))
    with pytest.raises(SystemExit, match="no mask with two lungs"):
        _run(tmp_path, monkeypatch, capsys)
