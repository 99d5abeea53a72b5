"""The Sphinx site builds offline with warnings as errors, and every public name has a docstring."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = [
    "captum_matex", "captum_matex.adapters", "captum_matex.stages", "captum_matex.baselines",
    "captum_matex.data", "captum_matex.zoo", "captum_matex.metrics", "captum_matex.explainer",
    "captum_matex.targets", "captum_matex.registry", "captum_matex.stages.protocols",
    "captum_matex.support",
]


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "html" / "api.html").stat().st_size > 10_000


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name):
    module = importlib.import_module(module_name)
    assert module.__doc__, module_name
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member) and not inspect.getdoc(member):
                        missing.append(f"{name}.{attr}")
    assert not missing, f"{module_name}: no docstring for {missing}"
