"""The scrubbers proven in a real browser: headless Chromium (Debian's package) driven by Playwright.

1. The offline HTML page of an executed notebook: opened from file:// with every other request blocked, its
   heatmap scrubber's slider changes the heatmap; a figure whose frames are all equal is caught by the same check.
2. JupyterLab on 127.0.0.1: the L2T-DLF notebook (or the tour, until it exists) with preset smoke, Run All in
   the page, then the step slider of the heatmap scrubber is moved and the heatmap must change.

Set LABKIT_BROWSER_FREEZE=1 to sabotage test 2 (all frames of every heatmap scrubber made equal): it must fail.
Screenshots go to the test's tmp_path and to runs/browser-test/ when writable.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Marks the first plotly figure with an animation slider and returns what the slider should change.
FIND_SCRUBBER = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout && g.layout.sliders && g.layout.sliders.length);
  if (!gd) return false;
  gd.setAttribute('data-test-scrubber', '1');
  return true;
}"""
STATE = """gd => ({z: JSON.stringify(gd.data[0].z),
  image: (gd.querySelector('.hm image') || {getAttribute: () => null}).getAttribute('href'),
  active: gd.layout.sliders[0].active, steps: gd.layout.sliders[0].steps.length})"""

FREEZE_CELL = """# test sabotage: every heatmap scrubber gets frames that are all equal (the browser test must fail)
import numpy as _np
import labkit.plots as _plots
_heatmap_scrubber = _plots.heatmap_scrubber
def _frozen(steps, values, **kwargs):
    values = _np.asarray(values, dtype=float)
    return _heatmap_scrubber(steps, _np.repeat(values[-1:], len(values), axis=0), **kwargs)
_plots.heatmap_scrubber = _frozen"""


def keep_screenshots(paths: list[Path]) -> None:
    """Copy screenshots to runs/browser-test/ when that folder is writable (never fails the test)."""
    try:
        target = ROOT / "runs" / "browser-test"
        target.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, target / p.name)
    except OSError:
        pass


@contextmanager
def offline_page(executable: str, width: int = 1200) -> Iterator[tuple[object, list[str], list[str]]]:
    """A headless Chromium page that may load file:// URLs only: yields (page, the other URLs it asked for and
    was refused, its javascript errors); the browser is closed on exit."""
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    errors: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.route("**/*", only_files)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, requested, errors
        finally:
            browser.close()


def scrub(page, gd, shots: Path, name: str) -> tuple[dict, dict]:
    """Click the left end of the step slider's rail (the first step; the figure starts at the last one).
    Returns the scrubber's state before and after; saves screenshots `<name>-before.png`, `<name>-after.png`."""
    rail = gd.locator(".slider-rail-touch-rect").first
    rail.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    before = gd.evaluate(STATE)
    gd.screenshot(path=str(shots / f"{name}-before.png"))
    box = rail.bounding_box()
    assert box is not None, "the slider's rail is not visible"
    page.mouse.click(box["x"] + 4, box["y"] + box["height"] / 2)
    page.wait_for_timeout(800)
    after = gd.evaluate(STATE)
    gd.screenshot(path=str(shots / f"{name}-after.png"))
    keep_screenshots([shots / f"{name}-before.png", shots / f"{name}-after.png"])
    return before, after


def z_array(state: dict) -> np.ndarray:
    """The heatmap's z from the page: nested lists, or plotly's typed-array form {dtype, bdata (base64)}."""
    z = json.loads(state["z"])
    if isinstance(z, dict):
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).astype(float)
    return np.asarray(z, dtype=float).ravel()


def assert_heatmap_changed(before: dict, after: dict) -> float:
    """Assert that moving the slider changed the heatmap (its data and its drawn image); return max |Δz|."""
    assert before["steps"] > 1, f"the scrubber has {before['steps']} step(s): nothing to scrub"
    assert after["active"] != before["active"], f"the slider did not move (active step {before['active']})"
    change = float(np.max(np.abs(z_array(after) - z_array(before))))
    assert change > 0, (f"the slider moved (step {before['active']} -> {after['active']}) "
                        "but the heatmap's z did not change")
    assert after["image"] != before["image"], "the heatmap's z changed but its drawn image did not"
    print(f"slider step {before['active']} -> {after['active']}: max |Δz| = {change:.3g}")
    return change


# ---------------------------------------------------------------- 1. offline HTML

def _tiny_notebook(path: Path) -> None:
    """A notebook with two scrubbers: one whose frames differ, and one whose frames are all equal."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Offline scrubber check, with $x^2$ in LaTeX"),
        nbformat.v4.new_code_cell('preset = "smoke"\nseed = 0\ndevice = "auto"\nout_dir = "."',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import numpy as np\nfrom pathlib import Path\nfrom labkit import plots\nfrom labkit.trace import write_json\n"
            "plots.setup_notebook()\nrng = np.random.default_rng(seed)\nv = rng.random((6, 4, 4))\n"
            "plots.heatmap_scrubber(list(range(0, 60, 10)), v, title='changing').show()\n"
            "plots.heatmap_scrubber(list(range(0, 60, 10)), np.repeat(v[:1], 6, axis=0), title='frozen').show()\n"
            "write_json(Path(out_dir) / 'metrics.json', {'notebook': 'tiny', 'preset': preset, 'seed': seed})"),
        # a tqdm.auto bar is an ipywidget in a kernel: its saved state must not make the page fetch a widget manager
        nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3)):\n    pass"),
    ]
    nbformat.write(nb, path)


def test_exported_html_scrubs_with_network_off(tmp_path, chromium):
    from labkit import repro

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _tiny_notebook(nb_dir / "00_offline.ipynb")
    result = repro.run_one(nb_dir / "00_offline.ipynb", "smoke", 0, tmp_path / "runs")
    assert result.status == "done", result.error
    page_path = result.directory / "00_offline.html"
    text = page_path.read_text()
    assert repro.remote_references(text) == [], "the page references remote resources"
    assert text.count("plotly.js v") == 1, "plotly.js must be embedded exactly once"

    with offline_page(chromium) as (page, requested, errors):
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .slider-rail-touch-rect", timeout=60_000)
        plots = page.locator(".js-plotly-plot")
        assert plots.count() == 2
        before, after = scrub(page, plots.nth(0), tmp_path, "offline-html")
        assert_heatmap_changed(before, after)
        # The same check on the frozen figure: the slider moves, the heatmap does not, the check fails.
        before, after = scrub(page, plots.nth(1), tmp_path, "offline-html-frozen")
        with pytest.raises(AssertionError, match="heatmap's z did not change"):
            assert_heatmap_changed(before, after)
    assert requested == [], f"the page tried to fetch {requested}"
    assert errors == [], f"javascript errors: {errors}"


# ---------------------------------------------------------------- 2. JupyterLab

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_notebook() -> Path:
    for name in ("02_l2t_dlf_dynamic_loss.ipynb", "00_tour.ipynb"):
        if (ROOT / "notebooks" / name).exists():
            return ROOT / "notebooks" / name
    pytest.fail("neither notebooks/02_l2t_dlf_dynamic_loss.ipynb nor notebooks/00_tour.ipynb exists")


def _prepare(source: Path, target: Path, freeze: bool) -> None:
    """Copy the notebook with preset = "smoke" appended to its parameters cell (and the sabotage cell)."""
    nb = nbformat.read(source, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells[index].source += '\npreset = "smoke"  # set by tests/test_browser.py'
    if freeze:
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(FREEZE_CELL))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, target)


def _settings(directory: Path) -> None:
    """JupyterLab user settings: every cell in the DOM (no windowing), no news or update checks."""
    files = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
             "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                "checkForUpdates": False}}
    for name, value in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(json.dumps(value))


def test_jupyterlab_run_all_then_slider_changes_heatmap(tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    freeze = bool(os.environ.get("LABKIT_BROWSER_FREEZE"))
    source = _lab_notebook()
    root = tmp_path / "lab"
    root.mkdir()
    _prepare(source, root / source.name, freeze)
    _settings(tmp_path / "settings")
    port, token = _free_port(), os.urandom(16).hex()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    env.setdefault("LABKIT_DATA", str(Path("/work/shared/data")) if Path("/work/shared/data").is_dir()
                   else str(ROOT / "data"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/lab/tree/{source.name}?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                page.wait_for_timeout(2000)
                # Run All, as a reader would: the Run menu, "Run All Cells".
                page.locator(".lm-MenuBar-item", has_text="Run").first.click()
                page.locator('.lm-Menu-item[data-command="runmenu:run-all"]', has_text="Run All Cells").first.click()
                deadline = time.monotonic() + 900
                while not page.evaluate(FIND_SCRUBBER):
                    error = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] '
                                         '>> text=Traceback')
                    if page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() or \
                            error.count():
                        page.screenshot(path=str(tmp_path / "lab-error.png"))
                        keep_screenshots([tmp_path / "lab-error.png"])
                        pytest.fail("a cell raised: " + page.locator(".jp-RenderedText[data-mime-type="
                                    "'application/vnd.jupyter.error']").first.inner_text()[-1500:])
                    if time.monotonic() > deadline:
                        page.screenshot(path=str(tmp_path / "lab-timeout.png"))
                        keep_screenshots([tmp_path / "lab-timeout.png"])
                        pytest.fail("no heatmap scrubber appeared within 15 minutes of Run All")
                    page.wait_for_timeout(2000)
                gd = page.locator('[data-test-scrubber="1"]')
                name = "jupyterlab" + ("-frozen" if freeze else "")
                before, after = scrub(page, gd, tmp_path, name)
                page.screenshot(path=str(tmp_path / f"{name}-page.png"))
                keep_screenshots([tmp_path / f"{name}-page.png"])
                assert_heatmap_changed(before, after)
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
