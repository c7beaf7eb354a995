"""Every notebook in notebooks/ runs headlessly under papermill with preset="smoke" and writes metrics.json.

Notebooks are discovered, so a new one is covered without editing this file.
"""
from __future__ import annotations

import json

import nbformat
import pytest

from conftest import REPO
from labkit.repro import check_metrics

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    if "install" in code[0].metadata.get("tags", []):  # the Colab install cell (labkit.course) may come first
        code = code[1:]
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), \
        "the first code cell (after the tagged 'install' cell, if any) must be tagged 'parameters'"
    for name in ("preset", "seed", "device", "out_dir"):
        assert f"{name} =" in first.source, f"the parameters cell must define {name}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "start with a title"


# optional cells that the smoke run also goes through (cheap at smoke size)
EXTRA_PARAMETERS = {"02_l2t_dlf_dynamic_loss": dict(tune=True, lenet=True)}


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_smoke_preset(path, tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("LABKIT_STATIC", "1")
    monkeypatch.setenv("LABKIT_CARDS", str(tmp_path / "cards"))  # train the teachers: no card from an earlier run
    monkeypatch.setenv("LABKIT_EXERCISES", "solved")  # the solutions must pass every check (labkit.exercises)
    out_dir = tmp_path / "out"
    pm.execute_notebook(str(path), str(tmp_path / path.name), kernel_name="python3", cwd=str(REPO / "notebooks"),
                        parameters=dict(preset="smoke", seed=0, device="cpu", out_dir=str(out_dir),
                                        **EXTRA_PARAMETERS.get(path.stem, {})),
                        progress_bar=False)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["notebook"] == path.stem and metrics["preset"] == "smoke" and metrics["seed"] == 0
    check_metrics(metrics)  # every experiment: one value per seed, None or a finite number in the metric's range
    assert metrics["experiments"] and all(e["methods"] for e in metrics["experiments"].values())
    assert (out_dir / "trace.npz").is_file()
