"""Sphinx configuration: offline build, API reference through autodoc."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "captum_matex"
author = "captum_matex developers"
copyright = "2026, captum_matex developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
suppress_warnings = ["autodoc.import_object"]
