"""The course site (`make site`, labkit.course.build_site) as built: offline, every notebook a page, the exercises
unsolved and their solutions absent, no widget shown as a bare text repr, and a scrubber that moves in headless
Chromium with every non-file request blocked.

The site is built before the tests (`.ci/run`: `make site PRESET=smoke`); LABKIT_SITE names another build. Where it
is missing the tests skip, and under CI they fail.
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import REPO
from labkit.repro import remote_references
from test_browser import FIND_SCRUBBER, offline_page, scrub, z_array

SITE = Path(os.environ.get("LABKIT_SITE", REPO / "build" / "site"))
WORK = SITE.parent / "site-work"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
BARE_REPRS = ("VBox(children", "HBox(children", "FigureWidget(", "Box(children", "Output()")


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no site at {SITE}: run `make site PRESET=smoke` before the tests")
        pytest.skip(f"no site at {SITE} (make site PRESET=smoke builds one)")
    return SITE


def _pages(site: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (site / "notebooks").glob("*.html")}


def _text(page: str) -> str:
    """A page's text as a reader sees it (tags removed: highlighted code is split into spans), spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


def _solution_lines(path: Path) -> list[str]:
    """The lines inside the notebook's solution blocks (what a student must not be given)."""
    lines = []
    for cell in nbformat.read(path, as_version=4).cells:
        for block in re.findall(r"# BEGIN SOLUTION:[^\n]*\n(.*?)# END SOLUTION", cell.source, re.S):
            lines += [line.strip() for line in block.splitlines() if line.strip()]
    return lines


def test_every_notebook_is_a_page_linked_from_the_index(site):
    pages, index = _pages(site), (site / "index.html").read_text()
    built = [p for p in NOTEBOOKS if p.stem in pages]
    assert built, f"no notebook pages in {site / 'notebooks'}"
    if os.environ.get("CI"):
        assert [p.stem for p in built] == [p.stem for p in NOTEBOOKS], "CI builds every notebook"
    for path in built:
        assert f'href="notebooks/{path.stem}.html"' in index, f"{path.stem} is not linked from the index"
        assert "Open in Colab" in pages[path.stem], f"{path.stem}: the Colab badge is missing"


def test_the_site_fetches_nothing(site):
    for page in site.rglob("*.html"):
        assert remote_references(page.read_text()) == [], f"{page.relative_to(site)} references remote resources"
    for css in site.rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?https?://", css.read_text(errors="replace")), f"{css.name} fetches"
    assert (site / "_static" / "mathjax" / "MathJax.js").is_file(), "MathJax must be served by the site itself"


def test_no_widget_shows_as_a_bare_repr(site):
    for stem, text in _pages(site).items():
        for bare in BARE_REPRS:
            assert bare not in text, f"{stem}: a widget shows as its text repr {bare!r}"
        if "js-plotly-plot" in text or "plotly-graph-div" in text:
            assert text.count("plotly.js v") == 1, f"{stem}: plotly.js must be embedded exactly once"


def test_the_exercises_are_unsolved_and_their_solutions_absent(site):
    pages = _pages(site)
    for path in NOTEBOOKS:
        if path.stem not in pages:
            continue
        solution = _solution_lines(path)
        nb = nbformat.read(path, as_version=4)
        expected = sum("exercise" in c.metadata.get("tags", []) for c in nb.cells)
        run = WORK / "runs" / path.stem
        executed = next(run.glob(f"*/seed-0/{path.name}"), None) if run.is_dir() else None
        if executed is not None:   # the executed student version: every check says "unsolved", none crashed
            checks = [c for c in nbformat.read(executed, as_version=4).cells if "check" in c.metadata.get("tags", [])]
            assert len(checks) == expected
            for cell in checks:
                text = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
                assert text.startswith("unsolved:"), f"{path.stem}: {cell.source!r} printed {text!r}"
        page, text = pages[path.stem], _text(pages[path.stem])
        assert page.count("labkit-check-unsolved") == expected, f"{path.stem}: every check reports 'unsolved'"
        for line in solution:
            assert " ".join(line.split()) not in text, f"{path.stem}: the solution line {line!r} is on the site"


@pytest.mark.browser
def test_a_scrubber_moves_on_the_site_with_the_network_blocked(site, tmp_path, chromium):
    page_path = site / "notebooks" / "00_tour.html"
    if not page_path.is_file():
        pytest.skip("the site has no 00_tour page")
    with offline_page(chromium, width=1300) as (page, requested, errors):
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .slider-rail-touch-rect", timeout=60_000)
        assert page.evaluate(FIND_SCRUBBER), "no figure with a step slider on the page"
        before, after = scrub(page, page.locator('[data-test-scrubber="1"]'), tmp_path, "site")
        assert after["active"] != before["active"], "the slider did not move"
        change = np.nanmax(np.abs(z_array(after) - z_array(before)))   # the tour hides the diagonal (NaN)
        assert change > 0 and after["image"] != before["image"], "the slider moved but the heatmap did not change"
        math = site / "notebooks" / "02_l2t_dlf_dynamic_loss.html"
        if math.is_file():   # the formulas are typeset by the site's own MathJax
            page.goto(math.as_uri())
            page.wait_for_function("() => document.querySelectorAll('.MathJax').length > 10 && "
                                   "!document.querySelector('.MathJax_Processing')", timeout=60_000)
    assert requested == [], f"the site tried to fetch {requested}"
    assert errors == [], f"javascript errors: {errors}"
