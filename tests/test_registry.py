"""The plugin registry: built-ins, entry-point plugins (methods and metrics) in
``matex benchmark --list`` and in a real run, broken plugins reported by name."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings

import pytest
import torch

from captum_matex import baselines, registry
from captum_matex.cli import main
from captum_matex.metrics import METRICS
from captum_matex.registry import MetricInfo, PluginWarning

#: A third-party package: one method, one metric and one object of the wrong type.
PLUGIN = '''
"""A captum_matex plugin: a fixed centre box as the map, and its mass share in the boxes."""

import torch
from captum.attr import Attribution

from captum_matex import SimilarityForward
from captum_matex.registry import MetricInfo


class CentreBox(Attribution):
    """The centre half of the image, whatever the phrase."""

    def __init__(self, model, processor):
        super().__init__(SimilarityForward(model, processor))

    def attribute(self, inputs, additional_forward_args=None, output="image"):
        batch, channels, height, width = inputs.shape
        maps = torch.zeros(batch, 1, height, width, device=inputs.device)
        maps[..., height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
        return maps if output == "pixel" else maps.expand(-1, channels, -1, -1).contiguous()


def box_mass(maps, masks):
    """Share of the map mass inside the boxes; higher is better."""
    maps = maps.sum(1) if maps.dim() == 4 else maps
    inside = (maps * masks).flatten(1).sum(1)
    return inside / maps.flatten(1).sum(1).clamp_min(1e-12)


BOX_MASS = MetricInfo(box_mass, True, "localisation", (0.0, 1.0), "map mass inside the boxes")
NOT_A_CLASS = 42
'''

ENTRY_POINTS = """
[captum_matex.methods]
centre_box = matex_demo_plugin:CentreBox
broken_import = matex_broken_plugin:Anything
not_a_method = matex_demo_plugin:NOT_A_CLASS
matex = matex_demo_plugin:CentreBox

[captum_matex.metrics]
box_mass = matex_demo_plugin:BOX_MASS
"""

ORIGIN = "matex-demo-plugin 0.3"


@pytest.fixture
def plugin(tmp_path_factory, monkeypatch):
    r"""The plugin "installed" in a folder outside the project put on ``sys.path``:
    its modules beside a ``*.dist-info`` folder, which importlib.metadata reads."""
    site = tmp_path_factory.mktemp("site")
    (site / "matex_demo_plugin.py").write_text(PLUGIN)
    (site / "matex_broken_plugin.py").write_text("raise ImportError('needs a missing library')\n")
    info = site / "matex_demo_plugin-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: matex-demo-plugin\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(site))
    registry.reset_plugins()
    yield site
    monkeypatch.undo()
    for name in ("matex_demo_plugin", "matex_broken_plugin"):
        sys.modules.pop(name, None)
    registry.reset_plugins()


def _quietly(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return call()


# --- built-ins and the old names -------------------------------------------------------------


def test_built_ins_come_from_captum_matex_and_the_old_names_reach_them():
    origins = {e.name: e.origin for e in registry.methods.entries()}
    assert origins["matex"] == origins["m2ib"] == registry.BUILT_IN
    assert baselines.available() == registry.methods.available()
    assert baselines.get("Grad-ECLIP") is registry.methods.get("grad_eclip")
    assert registry.metrics.get("cnr") is METRICS["cnr"]
    families = [cls.family for cls in registry.adapters.objects()]
    assert families[:5] == [
        "transformers-clip", "transformers-siglip", "transformers-siglip2",
        "open_clip-vit", "open_clip-timm-vit",
    ]


def test_metrics_added_to_the_table_are_registered(monkeypatch):
    info = MetricInfo(lambda maps, masks: maps.sum(), True, "localisation", (0.0, 1.0), "sum")
    monkeypatch.setitem(METRICS, "map_sum", info)
    assert registry.metrics.get("map_sum") is info
    assert {e.name: e.origin for e in registry.metrics.entries()}["map_sum"].startswith(
        "registered in")


def test_wrong_objects_and_taken_names_are_refused():
    with pytest.raises(TypeError, match="captum.attr.Attribution"):
        registry.methods.register("not_a_method", object)
    with pytest.raises(ValueError, match="already registered"):
        baselines.register("matex")(baselines.M2IB)
    with pytest.raises(ValueError, match="compares="):
        MetricInfo(torch.sum, True, "sanity", (0.0, 1.0), "no reference maps")
    with pytest.raises(KeyError, match="available: .*matex"):
        registry.methods.get("lime")


# --- plugins ---------------------------------------------------------------------------------


def test_plugins_are_found_with_their_origin_and_broken_ones_are_named(plugin):
    with pytest.warns(PluginWarning) as caught:
        entries = {e.name: e for e in registry.methods.entries()}
    messages = "\n".join(str(w.message) for w in caught)
    assert entries["centre_box"].origin == ORIGIN
    assert entries["matex"].origin == registry.BUILT_IN  # the clashing plugin lost
    assert "broken_import = matex_broken_plugin:Anything" in messages
    assert "ImportError: needs a missing library" in messages
    assert "not_a_method" in messages and "TypeError" in messages
    assert "clashes with the built-in method 'matex'" in messages
    assert {b.name for b in registry.broken_plugins()} == {"broken_import", "not_a_method", "matex"}
    with pytest.raises(KeyError, match="ImportError"):
        registry.methods.get("broken_import")
    assert registry.metrics.get("box_mass").description == "map mass inside the boxes"
    assert _quietly(baselines.available).count("centre_box") == 1


def test_benchmark_list_shows_plugins_with_their_origin_and_the_broken_ones(plugin, capsys):
    assert main(["benchmark", "--list"]) == 0
    out, err = capsys.readouterr()
    assert err.count("matex: warning: captum_matex skipped the plugin") == 3
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert ORIGIN in lines["centre_box"] and ORIGIN in lines["box_mass"]
    assert "built-in" in lines["pointing_game"] and "built-in" in lines["matex"]
    broken = out.split("broken plugins (skipped):")[1]
    assert "broken_import" in broken and "ImportError" in broken
    assert "not_a_method" in broken and "TypeError" in broken


@pytest.mark.slow
def test_a_plugin_method_and_metric_run_in_the_benchmark_like_built_ins(plugin, tmp_path, capsys):
    args = ["benchmark", "--dataset", "phantom", "--split", "test", "--methods", "centre_box,matex",
            "--metrics", "box_mass,pointing_game", "--limit", "4", "--no-progress",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "matex: warning: captum_matex skipped the plugin" in err and "broken_import" in err
    assert "| centre_box |" in out
    table = (tmp_path / "results.md").read_text()
    assert "| centre_box |" in table and "| matex |" in table
    assert "box_mass ↑" in table and "pointing_game ↑" in table
    assert "confidence_drop" not in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    mass = summary["methods"]["centre_box"]["box_mass"]
    assert mass["n"] == 4 and 0.0 <= mass["mean"] <= 1.0
    assert (tmp_path / "figures" / "metrics.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "overlays.png").stat().st_size > 10_000


def test_unknown_and_unusable_metrics_are_named_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "unused"
    assert main(["benchmark", "--metrics", "lime_score", "--out", str(out)]) == 2
    assert "unknown metric(s) lime_score; available:" in capsys.readouterr().err
    assert main(["benchmark", "--metrics", "sensitivity_max", "--out", str(out)]) == 2
    assert "cannot score sensitivity_max" in capsys.readouterr().err
    assert not out.exists()
