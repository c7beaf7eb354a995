"""`labkit report --figures DIR`: each run's headline figures as PNG and SVG for slides (plotly's kaleido driving
Debian's Chromium). Skipped where Chromium or kaleido is missing, failed under CI.

A tiny runs folder as a DLF notebook leaves it: metrics.json (an experiment with a diverged seed) and the saved
Traces (the deployed student's Φ_t, the teacher's with init_scale). Proven: the comparison bars and Φ_T − Φ_0 are
written as real PNG (16:9, twice the pixels) and SVG files; the still has no slider; a diverged run gives no figure.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from labkit import cli, repro, report, stats
from labkit.trace import Trace

CHROMIUM = report.CHROMIUM


@pytest.fixture(scope="module")
def browser() -> None:
    if not Path(CHROMIUM).exists() and "BROWSER_PATH" not in os.environ:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing and CI is set: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); CI is not set")
    if os.environ.get("CI"):
        import kaleido  # noqa: F401  (fails the test under CI when the figures extra is missing)
    else:
        pytest.importorskip("kaleido")


def _dlf_run(out: Path, seed: int = 0) -> Path:
    d = repro.run_dir(out, "02_l2t_dlf_dynamic_loss", "smoke", seed)
    d.mkdir(parents=True)
    values = {"ce": [0.970, 0.972, 0.969], "l2t-dlf": [0.973, None, 0.971]}   # one diverged seed
    exp = repro.experiment(stats.summarize(values, [0, 1, 2], baseline="ce"), metric="test_acc", dataset="mnist",
                           model="mlp", paper="dlf", setting="smoke")
    repro.write_metrics(d, notebook="02_l2t_dlf_dynamic_loss", preset="smoke", seed=seed, experiments={"mnist_mlp": exp})
    deployed = Trace(config=dict(method="l2t-dlf"))
    for t in range(0, 50, 10):
        phi = 4 * np.eye(10)
        phi[3, 5] = 0.01 * t   # the teacher links 3 to 5 as training goes on
        deployed.log_array(t, phi=phi)
        deployed.log(t, dev_acc=0.9 + 0.001 * t)
    deployed.save(d)
    Trace(config=dict(init_scale=4.0)).save(d / "teacher")
    (d / "02_l2t_dlf_dynamic_loss.ipynb").write_text("{}")   # complete
    return d


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_signature_figures_choose_by_what_the_trace_holds():
    d = Trace()
    d.log_array(0, phi=np.eye(3))
    d.log_array(5, phi=2 * np.eye(3))
    figs = report.signature_figures(d, Trace(config=dict(init_scale=1.0)))
    assert set(figs) == {"phi"} and not figs["phi"].frames and not figs["phi"].layout.sliders
    np.testing.assert_allclose(np.asarray(figs["phi"].data[0].z, dtype=float), np.eye(3))   # Φ_T − Φ_0 = 2I − I
    d.metrics["diverged_at_step"] = 3
    assert report.signature_figures(d) == {}, "a diverged run is not drawn"


def test_report_figures_writes_png_and_svg(tmp_path, browser):
    out = tmp_path / "runs"
    _dlf_run(out)
    assert cli.main(["report", str(out), "--figures", str(tmp_path / "slides")]) == 0
    folder = tmp_path / "slides" / "02_l2t_dlf_dynamic_loss" / "smoke"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["dev_acc.png", "dev_acc.svg", "mnist_mlp-test_acc.png", "mnist_mlp-test_acc.svg", "phi.png",
                     "phi.svg"], names
    for name in ("mnist_mlp-test_acc", "phi"):
        assert _png_size(folder / f"{name}.png") == (1920, 1080)
        svg = (folder / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<svg") and "http://" not in svg.replace("http://www.w3.org", "")
    bars = (folder / "mnist_mlp-test_acc.svg").read_text()
    assert "l2t-dlf (1 diverged)" in bars, "the bars say that a seed diverged"
    assert "Φ_T − Φ_0" in (folder / "phi.svg").read_text()
