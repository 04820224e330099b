"""MkDocs hook: the site ships its own MathJax, so the maths renders offline.

MathJax 3 comes from the ``django-static-mathjax`` package (a plain copy of MathJax's ``es5``
build; the docs extra installs it; no Django needed). At build time this hook adds the
files the pages use to the site under ``javascripts/mathjax/``: the TeX-to-CommonHTML
component, its web fonts, the TeX extensions it loads on demand and the menu's
accessibility and speech components. ``mkdocs.yml`` loads
``javascripts/mathjax/tex-chtml.js``, so no page needs a CDN.

Registered in ``mkdocs.yml`` under ``hooks``.
"""

from __future__ import annotations

from importlib.resources import files as package_files
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

# The package installs the import package "mathjax"; a missing one fails here, by name.
SOURCE = Path(str(package_files("mathjax"))) / "static" / "mathjax"
TARGET = "javascripts/mathjax"
# What tex-chtml.js loads, relative to the es5 folder: itself, then, on demand, its fonts,
# TeX extensions (autoload), the menu's assistive MathML, explorer and speech rules.
PARTS = (
    "tex-chtml.js",
    "output/chtml/fonts/woff-v2",
    "input/tex/extensions",
    "a11y",
    "ui",
    "sre",
)


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add MathJax's files to the site, and its licence next to them."""
    es5 = SOURCE / "es5"
    sources = [SOURCE / "LICENSE"]
    for part in PARTS:
        path = es5 / part
        sources += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for path in sources:
        relative = path.relative_to(es5 if path.is_relative_to(es5) else SOURCE).as_posix()
        files.append(
            File.generated(config, f"{TARGET}/{relative}", abs_src_path=str(path)),
        )
    return files
