"""Sphinx configuration of the fastrnn documentation site: `sphinx-build -W -b html docs <out>`.

The Markdown pages of docs/ are read by myst-parser; api.rst documents the public API from its
numpydoc docstrings and type hints. The package is imported from the source tree (its compiled
kernels are not needed: autodoc only reads signatures and docstrings).
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import fastrnn  # noqa: E402  (after the path is set)

project = "fastrnn"
author = "the fastrnn developers"
copyright = "the fastrnn developers, BSD-3-Clause"
release = version = fastrnn.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# index.md is the Markdown contents page of docs/; the site's root is contents.rst.
root_doc = "contents"
exclude_patterns = ["_build"]

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"fastrnn {release}"
