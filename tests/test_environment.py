"""environment.yml (conda) must install the same thing as pyproject.toml (pip)."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def load():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return project, env


def test_conda_env_installs_the_package_with_every_extra():
    project, env = load()
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    editable = [p for p in pip if p.startswith("-e")]
    assert len(editable) == 1, "environment.yml must install the package itself through pip"
    match = re.fullmatch(r'-e\s+"?\.(?:\[(?P<extras>[\w,\s-]+)\])?"?', editable[0])
    assert match, f"unexpected pip line {editable[0]!r}"
    extras = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
    assert extras == set(project["optional-dependencies"]), "environment.yml must name every extra of pyproject.toml"


def test_no_dependency_is_declared_in_one_place_only():
    project, env = load()
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    names = {re.split(r"[=<>! ]", d)[0] for d in conda}
    assert names == {"python", "pip"}, f"conda-only packages would diverge from pyproject.toml: {names - {'python', 'pip'}}"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert all(p.startswith("-e") for p in pip), "every pip package must come from pyproject.toml"


def test_python_versions_agree():
    project, env = load()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    low = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups()))
    assert (major, minor) >= low


def test_the_chosen_packages_are_declared():
    project, _ = load()
    names = {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in project["dependencies"]}
    for package in ("torch", "torchvision", "numpy", "plotly", "anywidget", "ipywidgets", "jupyterlab", "papermill",
                    "ipykernel", "tqdm"):
        assert package in names
    assert not any(d.replace(" ", "").startswith("torch==") for d in project["dependencies"]), \
        "never pin torch exactly: torch and torchvision must resolve together"
