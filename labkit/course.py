"""What a course runs on: the "Open in Colab" badge and the install cell of every notebook (generated from one
constant), the student versions of the notebooks (exercise solutions removed), and the static site.

    labkit course badges            # (re)write the badge and the install cell of every notebook in notebooks/
    labkit course badges --check    # exit 1 if a notebook's course cells are missing or stale (CI)
    labkit exercises OUT_DIR        # the student versions (`write_student_versions`)
    labkit course site --preset smoke   # build/site: the student versions executed, Sphinx + MyST-NB, offline

A fork changes `REPOSITORY` (and `BRANCH`) here, runs `labkit course badges`, and every badge and install cell points
at the fork. The badge is an inline PNG (a data: URI), not colab.research.google.com's image: a page that fetches an
image is not offline (`labkit.repro.remote_references`), and the lab's pages and site fetch nothing. The install
cell imports labkit first, so where labkit is installed (papermill, CI, `make lab`) it does nothing.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Sequence

REPOSITORY = "labkit-lab/labkit"   # owner/name on GitHub: the one place a fork changes (then `labkit course badges`)
BRANCH = "main"
NOTEBOOK_FOLDER = "notebooks"      # the notebooks' folder in the repository
INSTALL_TAG = "install"            # the install cell's tag (tests/test_notebooks.py lets it come before `parameters`)
BADGE_MARK = "<!-- labkit:colab -->"

_BADGE_PNG = (  # 117 x 20 px, drawn once with Pillow and DejaVu Sans; markdown-it (MyST) refuses SVG data: URIs
    "iVBORw0KGgoAAAANSUhEUgAAAHUAAAAUCAYAAACzrHJDAAAELklEQVR42u2ZW0xcRRjHfzPnnN0Ft8i1LEWb1FAUSrAXiqXRqrFBsTxU"
    "2m0fitZ4TXwwMV7iC6GK+oQvfTHRxMYEH3SxaS3VRhNrE2vpYiE2CqWYNCoUlHCxQKDL2TM+LJSuLMsiS7nk/F82OTPfzHzff77/NzMr"
    "mIDX61XEAXX7fNhYHDi9CAAZT0JtLC6u+1AA0iZ05REr7TCsPOhzrZGVn3vtqC1XUmc68Ex+t8mdOxwVYwSOJ0NwLHq/vYpAvYgvqTcT"
    "+l/yJtvq9vnmR6x0om2oQa49gHCmo4baCbbVYHX6llyQw9dtoOVVIdc+iXB5UMPtBNtrsf6oWzKbJ2pNjURavDJU33oEmfEA5g9lBL5M"
    "J9j2NvqWD5HZFbfM+cBR19wIBfSiI8jMRzHP7ydwIh3zfCUysxQcaUuX1FjkdbLt/95JhTsHmb0H85wX9c9FMIewOusJth5Cy6sKkyHt"
    "7jcwyrsxyq4g1+yeGiNtO8YjfhxPjGCU/or0lE3ZrH8Fo/wqxq6uMJtImYrmitlOuNcj7/BintuD6veDOYK69gtm01MQ6AsFNGsXRmkr"
    "jt1D6A9+h3DnRJzbKO/BsVeF+t1/EuFcHdY+k9/zztSFgkjejBr+DTXaGfbd+vs0IvleENrUR1cW46dyCTa/gF70MTgzwJGKvvkDzAsv"
    "Ejiegtn0NNqWj0BLnGArJWRz4Xm0jYfnoMfR7UTypojrvtHu8qAXf0rw4qsEGtag+hrRiyPL8niDh0C9INDgQQ00I+95M7xDJL/jdfpd"
    "bATbakKZ/Ne3WP2NyNRtIATi9kKMnc3hQb3trpDNpfcgOIbV8xW6Mx2kAdb47HPNZieiH15EWglWvx+r5+vQeK3VaLmvgb4KzKHwTMx/"
    "C7nuOYTLA0Ji9Zya1W+r+8TSJVUNtiDcOYiEbNRo15RsZDyEGvwZVHCmsN34tXq/xzzz8Azs3FQnlTWR+eMx7KDodmqgOeK6p69vFqVK"
    "2468cz/mmR2okd+RWY8jc16OZjE/+Y2lXs73WqOGO7CuHkPf9hkiqQD0VcjsCrT8QwQvvRu+o/OqQu2rdyJT78Pqb8TqO4tMKkCue3ZK"
    "cm/FZhzuwOo6il5Sj0gpAi0RkVSAvvUTcKSh+n5EphaH6rvuRsurRg02T8tSoSWAMlHj1xAJWWi5r0+bK5LfcZHfSNeWeD3Ym00H0Ta8"
    "g77jG4QjHTV8GbPlJazO+vCOY90Yj3WANYb50zNwvTdUk86WoxfWom88HCLWHCFwzL3gxJpNB9Hyq9FLvkC4MkNXscu1EOhDAab/AFrh"
    "++iJa7EG/Jj+ymljWL2nkYMtOMquoEb/xOpuQCRvisnvmJRgprff2cibKUvj+S/NfC/h9otSjDJsvyQtY1KXAol2li7Ai5KNZUqqz+ez"
    "02EFwelFSACb2JVDKMC/cwu+g2WPiPoAAAAASUVORK5CYII=")
BADGE_IMAGE = "data:image/png;base64," + _BADGE_PNG


def colab_url(notebook: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """Colab's address of `notebooks/<notebook>` in the GitHub repository (Colab opens it straight from GitHub)."""
    return f"https://colab.research.google.com/github/{repository}/blob/{branch}/{NOTEBOOK_FOLDER}/{notebook}"


def badge(notebook: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The badge's Markdown line (a link around an inline image), marked so that it can be found and replaced."""
    return f"[![Open in Colab]({BADGE_IMAGE})]({colab_url(notebook, repository, branch)}) {BADGE_MARK}"


def install_source(repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The install cell: labkit from the repository where it is missing (Colab), nothing where it is installed."""
    return (f"# Colab, or any Python without labkit: install it from {repository}. Where labkit is installed, this does "
            "nothing.\n"
            "try:\n"
            "    import labkit\n"
            "except ImportError:\n"
            f'    %pip install -q "labkit @ git+https://github.com/{repository}@{branch}"')


def _title_cell(nb: Any):
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        raise ValueError("a notebook must start with a markdown cell holding its '# ' title")
    return first


def with_course_cells(nb: Any, name: str, repository: str = REPOSITORY, branch: str = BRANCH) -> Any:
    """`nb` (nbformat, changed in place and returned) with the badge on the line after its title and the install
    cell (tagged `install`) just before its first code cell. Idempotent: stale ones are replaced."""
    import nbformat

    title = _title_cell(nb)
    lines = [line for line in title.source.split("\n") if BADGE_MARK not in line]
    title.source = "\n".join([lines[0], "", badge(name, repository, branch)] + _drop_blank_head(lines[1:]))
    nb.cells = [c for c in nb.cells if INSTALL_TAG not in c.metadata.get("tags", [])]
    index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    cell = nbformat.v4.new_code_cell(install_source(repository, branch), metadata={"tags": [INSTALL_TAG]})
    cell.pop("id", None)   # a stable cell (no random id): rewriting an unchanged notebook changes nothing
    nb.cells.insert(index, cell)
    return nb


def _drop_blank_head(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    return [""] + lines if lines else []


def _normalised(nb: Any) -> str:
    """A notebook's cells without ids (ids are random per new cell), for comparing two versions."""
    return repr([(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells])


def badges(names: Sequence[str] = (), notebook_dir: str | Path | None = None, *, check: bool = False,
           repository: str = REPOSITORY, branch: str = BRANCH) -> list[Path]:
    """Write the course cells into each named notebook (all by default); returns the notebooks that changed (with
    check=True: that would change, and nothing is written)."""
    import nbformat

    from .repro import NOTEBOOK_DIR, discover, resolve

    changed = []
    for path in resolve(names, discover(notebook_dir or NOTEBOOK_DIR)):
        nb = nbformat.read(path, as_version=4)
        before = _normalised(nb)
        with_course_cells(nb, path.name, repository, branch)
        if _normalised(nb) != before:
            changed.append(path)
            if not check:
                _ids(nb)
                nbformat.validate(nb)
                nbformat.write(nb, path)
    return changed


def _ids(nb: Any) -> None:
    """Give cells without an id a deterministic one (nbformat 4.5 needs ids)."""
    taken = {c.get("id") for c in nb.cells}
    for i, cell in enumerate(nb.cells):
        if not cell.get("id"):
            base = re.sub(r"[^a-z0-9]", "-", "-".join(cell.metadata.get("tags", [])) or cell.cell_type)
            cell["id"] = next(f"{base}-{i}-{k}" for k in range(1000) if f"{base}-{i}-{k}" not in taken)
            taken.add(cell["id"])


# ---------------------------------------------------------------- the student version

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?::[ \t]*(?P<placeholder>.*?))?[ \t]*$")
END = re.compile(r"^[ \t]*# END SOLUTION[ \t]*$")


def strip_solutions(source: str, where: str = "cell") -> tuple[str, int]:
    """(source with every solution block replaced by its placeholder line, number of blocks). A block without its
    END, an END without a BEGIN or a nested BEGIN raises ValueError naming `where`."""
    out, blocks, inside = [], 0, None
    for number, line in enumerate(source.split("\n"), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside is not None:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside the block opened at line {inside}")
            inside, blocks = number, blocks + 1
            placeholder = begin["placeholder"] or "pass"
            out.append(f"{begin['indent']}{placeholder}  # ← your answer")
        elif end:
            if inside is None:
                raise ValueError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ValueError(f"{where}: the BEGIN SOLUTION at line {inside} has no END SOLUTION")
    return "\n".join(out), blocks


def student_notebook(nb: Any, name: str = "notebook") -> tuple[Any, int]:
    """(a copy of nbformat notebook `nb` with the solutions removed and outputs cleared, number of blocks)."""
    nb, total = copy.deepcopy(nb), 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source, count = strip_solutions(cell.source, f"{name}, cell {index}")
            cell.outputs, cell.execution_count, total = [], None, total + count
    nb.metadata.setdefault("labkit", {})["version"] = "student"
    return nb, total


def write_student_versions(out_dir: str | Path, names: Sequence[str] = (),
                           notebook_dir: str | Path | None = None) -> dict[Path, int]:
    """Write the student version of each named notebook (all by default, see `repro.resolve`) to out_dir/<name>;
    returns {written path: solution blocks removed}."""
    import nbformat

    from .repro import NOTEBOOK_DIR, discover, resolve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for path in resolve(names, discover(notebook_dir or NOTEBOOK_DIR)):
        nb, count = student_notebook(nbformat.read(path, as_version=4), path.name)
        nbformat.validate(nb)
        nbformat.write(nb, out_dir / path.name)
        written[out_dir / path.name] = count
    return written


# ---------------------------------------------------------------- the site (`make site`, `labkit course site`)

DOCS = Path(__file__).resolve().parent.parent / "docs"   # conf.py, index.md and the pages the site shows


def _strip_widgets(path: Path, target: Path) -> None:
    """Copy an executed notebook without ipywidgets state or views (a progress bar): with no widget manager they
    cannot render, and MyST-NB would load one from a CDN; their text/plain form (the bar's text) stays."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nbformat.write(nb, target)


def execute_students(work: Path, preset: str, names: Sequence[str] = (), *, seed: int = 0,
                     force: bool = False) -> list[Path]:
    """Write the student versions into work/student/ and execute each with papermill (`repro.run_one`) into
    work/runs/; a run newer than its notebook is kept unless force. A failing student version raises RuntimeError
    (an unsolved exercise must be reported, never crash). Returns the executed notebooks."""
    from .repro import NOTEBOOK_DIR, check_preset, run_dir, run_one

    check_preset(preset)
    executed = []
    for student in write_student_versions(work / "student", names):
        source = NOTEBOOK_DIR / student.name
        done = run_dir(work / "runs", student.stem, preset, seed) / student.name
        if force or not done.is_file() or done.stat().st_mtime < source.stat().st_mtime:
            result = run_one(student, preset, seed, work / "runs", html=False, cwd=NOTEBOOK_DIR)
            if result.status != "done":
                raise RuntimeError(f"the student version of {student.name} failed ({preset}): {result.error}")
        executed.append(done)
    return executed


def _gallery(target: Path) -> None:
    """The gallery page: every shipped teacher card (`labkit.cards.gallery_notebook`), executed."""
    import nbformat
    from nbclient import NotebookClient

    from .cards import gallery_notebook
    from .repro import quiet_kernel

    nb = gallery_notebook()
    log = target.parent.parent / "gallery-kernel.log"   # outside the Sphinx source folder
    with quiet_kernel(log, target.parent) as manager:
        NotebookClient(nb, kernel_name="python3", timeout=600, kernel_manager_class=manager,
                       resources={"metadata": {"path": str(target.parent)}}).execute()
    nbformat.write(nb, target)


def build_site(out: str | Path = "build/site", preset: str = "cpu", names: Sequence[str] = (), *,
               work: str | Path = "build/site-work", force: bool = False) -> Path:
    """The static site: the student versions executed with `preset`, the docs pages, Sphinx + MyST-NB (execution
    off, reading the executed copies) into `out`. Offline: raises RuntimeError if a page references anything remote.
    Returns out/index.html."""
    import shutil
    import subprocess
    import sys

    from .repro import remote_references

    out, work = Path(out).resolve(), Path(work).resolve()
    executed = execute_students(work, preset, names, force=force)
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    (src / "docs").mkdir()
    shutil.copy(DOCS / "index.md", src / "index.md")
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            shutil.copy(page, src / "docs" / page.name)
    for path in executed:
        _strip_widgets(path, src / "notebooks" / path.name)
    _gallery(src / "gallery.ipynb")
    shutil.rmtree(out, ignore_errors=True)   # a clean build: no page or copy left from an earlier one
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(DOCS), str(src), str(out)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"sphinx-build failed:\n{done.stderr[-3000:]}")
    remote = {str(p.relative_to(out)): r for p in out.rglob("*.html") if (r := remote_references(p.read_text()))}
    if remote:
        raise RuntimeError(f"the site is not offline: {dict(list(remote.items())[:3])}")
    return out / "index.html"
