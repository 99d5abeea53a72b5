"""Sphinx configuration: offline build, API reference through autodoc, tutorials executed by myst-nb."""

import filecmp
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.abspath(".."))

DOCS = Path(__file__).resolve().parent
TUTORIALS = DOCS.parent / "tutorials"  # the notebooks live at the top of the repository


def _mirror_tutorials() -> None:
    r"""Copy ``../tutorials/*.ipynb`` into ``docs/tutorials/`` (git-ignored).

    Sphinx only reads sources under its source directory, and a symlink would
    not survive every checkout, so the notebooks are mirrored here at build
    time. A file is rewritten only when it changed (atomically, so two
    builds at once never see half a notebook); notebooks deleted upstream are
    removed from the mirror.
    """
    mirror = DOCS / "tutorials"
    mirror.mkdir(exist_ok=True)
    sources = {p.name: p for p in sorted(TUTORIALS.glob("*.ipynb"))}
    for stale in mirror.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, source in sources.items():
        target = mirror / name
        if target.exists() and filecmp.cmp(source, target, shallow=False):
            continue
        partial = mirror / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source, partial)
        os.replace(partial, target)


_mirror_tutorials()


def _write_support_matrix() -> None:
    r"""Write ``_generated/support_matrix.rst`` (git-ignored) from the registry:
    which method runs on which model family is computed, never hand-written."""
    from captum_matex.support import support_table

    target = DOCS / "_generated" / "support_matrix.rst"
    target.parent.mkdir(exist_ok=True)
    text = support_table()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


_write_support_matrix()

# The notebook kernels inherit this environment. transformers' weight-loading
# progress bars and tqdm's "IProgress not found" notice (no ipywidgets here)
# would otherwise appear as stderr noise in every rendered notebook; real
# warnings still show.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"])
)

project = "captum_matex"
author = "captum_matex developers"
copyright = "2026, captum_matex developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build", "_generated", "jupyter_execute", "**.ipynb_checkpoints"]

# --- tutorials (myst-nb) ------------------------------------------------------------
# Every build executes every notebook from a fresh kernel (the notebooks are
# stored without outputs), so the docs build is also the tutorials' test: a
# failing cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 300  # seconds per cell
nb_merge_streams = True
nb_render_markdown_format = "gfm"  # markdown tables printed by the notebooks
