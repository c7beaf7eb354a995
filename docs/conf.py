"""Sphinx configuration of the lab's site. Build it with `make site` (or `labkit course site`): that assembles the
sources (this folder's pages and the executed student versions of the notebooks) and runs Sphinx with this file.

Offline by construction: MyST-NB does not execute (the notebooks come executed), plotly.js is embedded once per page
by the notebooks' own renderer (`labkit.plots.setup_notebook`), no widget state is kept, and MathJax is served from
the site itself (the copy that the `jupyter-server-mathjax` package ships) instead of a CDN.
"""
from __future__ import annotations

import shutil
from pathlib import Path

try:
    from labkit.course import REPOSITORY
except ImportError:  # building without labkit installed
    REPOSITORY = "labkit-lab/labkit"

project = "labkit"
author = "the labkit maintainers"
copyright = "the labkit maintainers"
html_title = "labkit: a lab for learning to teach"

extensions = ["myst_nb"]
nb_execution_mode = "off"                  # the notebooks were executed by `make site` (papermill)
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header", "myst.xref_missing", "misc.highlighting_failure",
                    "mystnb.unknown_mime_type"]   # plotly JSON beside its HTML: the HTML is shown

html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": f"https://github.com/{REPOSITORY}",
    "use_repository_button": True,         # a link, not a fetch
    "use_download_button": False,          # the sources are not copied (html_copy_source)
    "show_navbar_depth": 1,
    "home_page_in_toc": True,
}
html_last_updated_fmt = None
html_copy_source = False                  # no _sources/ copies of the (large) executed notebooks
html_show_sourcelink = False

# MathJax 2 from the site's own _static/mathjax (see `_copy_mathjax`), never from a CDN.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                               "processEscapes": True, "ignoreClass": "document", "processClass": "math|output_area"},
                    # the package ships the STIX-Web fonts only (as Jupyter's classic notebook configures them)
                    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
                    "SVG": {"font": "STIX-Web"}}


def _mathjax_dir() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise RuntimeError("the site serves MathJax itself: pip install 'labkit[docs]' (jupyter-server-mathjax)") \
            from exc
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copytree(_mathjax_dir(), Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app) -> None:
    _mathjax_dir()   # fail early, not after the whole build
    app.connect("build-finished", _copy_mathjax)
