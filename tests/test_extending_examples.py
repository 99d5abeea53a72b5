"""The files docs/extending.rst shows run as the page says (public names only)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import PHRASES, make_clip, make_tokenizer

from captum_matex import MATEX, registry
from captum_matex.adapters import get_adapter
from captum_matex.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
DOC = EXAMPLES.parent / "extending.rst"
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_registry():
    """Run-time registrations of an example leave with the test."""
    kinds = (registry.methods, registry.metrics, registry.adapters)
    tables = {r: dict(r.table) for r in kinds if r.available()}  # built-ins loaded first
    yield
    for r, table in tables.items():
        r.table.clear()
        r.table.update(table)
    registry.reset_plugins()


def test_the_page_names_nothing_private_and_every_example_exists():
    text = DOC.read_text()
    code = "\n".join(path.read_text() for path in EXAMPLES.rglob("*.py"))
    private = re.findall(r"(?<![\w.])_[a-z]\w*|\.\_[a-z]\w*", text + code)
    assert not private, f"private names in the extending docs: {sorted(set(private))}"
    for included in re.findall(r"literalinclude:: (\S+)", text):
        assert (DOC.parent / included).is_file(), included


def test_a_new_method_in_one_short_file(clean_registry):
    module = load(EXAMPLES / "last_block_attention.py")
    assert len((EXAMPLES / "last_block_attention.py").read_text().splitlines()) <= 30
    model = make_clip(image_size=32, patch=8)
    explainer = registry.methods.get("last_block_attention")(model, make_tokenizer())
    maps = explainer.attribute(IMAGES, (PHRASES[:2],))
    assert maps.shape == IMAGES.shape and maps.amin() >= 0
    # the map is the last block's CLS row, read here through the adapter by hand
    adapter = get_adapter(model, make_tokenizer())
    with adapter.explaining(), torch.no_grad():
        text = adapter.text_embeddings(adapter.tokenize(PHRASES[:2], IMAGES.device))
        trace = adapter.trace(IMAGES, text)
    row = trace.attentions[-1].mean(1)[:, 0, 1:].reshape(2, 4, 4)
    grid = explainer.attribute(IMAGES, (PHRASES[:2],), output="grid")[:, 0]
    torch.testing.assert_close(grid, row / row.flatten(1).amax(1)[:, None, None])
    assert module.LastBlockAttention.get_name() == "Last-block attention"


def test_a_gradient_method_depends_on_the_phrase():
    module = load(EXAMPLES / "grad_times_attention.py")
    explainer = module.GradTimesAttention(make_clip(image_size=32, patch=8), make_tokenizer())
    a = explainer.attribute(IMAGES, (PHRASES[:2],), output="grid")
    b = explainer.attribute(IMAGES, (PHRASES[2:4],), output="grid")
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_a_new_metric_is_registered_and_scores(clean_registry):
    module = load(EXAMPLES / "mass_ratio_metric.py")
    info = registry.metrics.get("mass_ratio")
    maps = torch.zeros(2, 4, 4)
    maps[:, :2] = 1.0
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # the box holds all the mass: twice the mean
    masks[1, 2:] = True  # the box holds none of it
    torch.testing.assert_close(info.fn(maps, masks), torch.tensor([2.0, 0.0]))
    assert info is module.MASS_RATIO and info.higher_is_better


def test_a_new_adapter_is_found_for_the_users_model(clean_registry):
    module = load(EXAMPLES / "chest_model_adapter.py")
    clip = make_clip(image_size=32, patch=8)
    chest = module.ChestModel(clip)
    maps = MATEX(chest, make_tokenizer()).attribute(IMAGES, (PHRASES[:2],))
    reference = MATEX(clip, make_tokenizer()).attribute(IMAGES, (PHRASES[:2],))
    torch.testing.assert_close(maps, reference)  # same model underneath, same maps


def test_a_stage_variant_plugs_into_matex():
    module = load(EXAMPLES / "sharp_text_prior.py")
    model = make_clip(image_size=32, patch=8)
    _, diag = MATEX(model, make_tokenizer(), text_prior=module.SharpPatchTextPrior(power=3.0)) \
        .attribute(IMAGES, (PHRASES[:2],), return_diagnostics=True)
    prior = diag.priors["text"]
    assert prior.amin() >= 0 and prior.amax() <= 1


def install_plugin(tmp_path: Path, monkeypatch) -> None:
    r"""What ``pip install docs/examples/plugin`` leaves on sys.path: the module and
    a dist-info with the pyproject's entry points."""
    project = tomllib.loads((EXAMPLES / "plugin" / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    site.mkdir()
    (site / "matex_example_plugin.py").write_text(
        (EXAMPLES / "plugin" / "matex_example_plugin.py").read_text())
    info = site / f"matex_example_plugin-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    registry.reset_plugins()


def test_the_plugin_package_appears_in_the_benchmark(tmp_path, monkeypatch, capsys, clean_registry):
    install_plugin(tmp_path, monkeypatch)
    assert main(["benchmark", "--list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"centre_prior\s+matex-example-plugin 0\.1\.0", listing)
    assert re.search(r"peak_in_box\s+matex-example-plugin 0\.1\.0", listing)
    out = tmp_path / "run"
    assert main(["benchmark", "--dataset", "phantom", "--split", "test", "--limit", "4",
                 "--methods", "centre_prior,matex", "--metrics", "peak_in_box,pointing_game",
                 "--no-faithfulness", "--no-sanity", "--no-progress", "--out", str(out)]) == 0
    results = (out / "results.md").read_text()
    assert "| centre_prior |" in results and "peak_in_box" in results
    sys.modules.pop("matex_example_plugin", None)
