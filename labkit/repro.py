"""Reproductions from one command: run the notebooks with papermill, gather their metrics, compare with the papers.

Layout of a runs folder (`out`):

    runs/<notebook>/<preset>/seed-<k>/
        <notebook>.ipynb      the executed notebook (written last: its presence marks the run complete)
        <notebook>.html       the same as a standalone page (plotly.js embedded once, no network needed)
        metrics.json          written by the notebook's last cell
        trace.npz             the notebook's Trace
    runs/report.md, runs/report.html   written by `report(out)`

A run is complete only when both `metrics.json` and `<notebook>.ipynb` exist. The runner deletes a stale
`metrics.json` before executing, executes into a temporary name, and renames it at the very end, so a run
killed at any point is redone by the next `reproduce` and a completed one is never redone.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .seeds import check_seeds
from .trace import atomic_write_bytes, write_json

PRESETS = ("smoke", "cpu", "paper")
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
METRICS_FILE = "metrics.json"
PARTIAL_SUFFIX = ".partial.ipynb"   # papermill writes here while executing
FAILED_SUFFIX = ".failed.ipynb"     # kept after a failure, for reading the error in context


# ---------------------------------------------------------------- metrics.json: what every notebook writes

# The metrics an experiment can compare methods on: (unit, higher is better, allowed range)
METRICS = {
    "test_acc": ("fraction", True, (0.0, 1.0)),
    "dev_acc": ("fraction", True, (0.0, 1.0)),
    "effective_examples_to_tau": ("examples", False, (0.0, math.inf)),
    "test_ppl": ("perplexity", False, (1.0, math.inf)),
    "steps_to_dev_acc": ("steps", False, (0.0, math.inf)),
}


def experiment(summary: dict, *, metric: str, dataset: str, model: str, paper: str | None = None,
               setting: str = "") -> dict:
    """One comparison of methods on the same seeds (a `labkit.stats.summarize` result) with what it measured:
    the report reads these keys. paper: the paper whose number this setting can be set against ("l2t", "dlf",
    "dln", "lot"; None: none); setting: the budget in words ("cpu preset: 1500 steps ...")."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not allowed: choose one of {', '.join(METRICS)}")
    unit, higher, _ = METRICS[metric]
    if summary.get("higher_is_better") != higher:
        raise ValueError(f"the summary's higher_is_better={summary.get('higher_is_better')} disagrees with "
                         f"{metric} ({'higher' if higher else 'lower'} is better)")
    return dict(summary, metric=metric, unit=unit, dataset=dataset, model=model, paper=paper, setting=setting)


def check_metrics(metrics: dict) -> None:
    """The invariants of a metrics.json: named notebook, preset and seed; each experiment's values one per seed,
    None (diverged) or a finite number in the metric's range. Raises AssertionError naming what is wrong."""
    for key in ("notebook", "preset", "seed", "experiments"):
        assert key in metrics, f"metrics.json lacks {key!r}"
    for name, exp in metrics["experiments"].items():
        low, high = METRICS[exp["metric"]][2]
        for method, m in exp["methods"].items():
            assert len(m["values"]) == len(exp["seeds"]), f"{name}/{method}: {len(m['values'])} values, " \
                                                         f"{len(exp['seeds'])} seeds"
            for v in m["values"]:
                assert v is None or (isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= high), \
                    f"{name}/{method}: value {v!r} is not None nor a finite {exp['metric']} in [{low}, {high}]"


def write_metrics(out_dir: str | Path, *, notebook: str, preset: str, seed: int, experiments: dict[str, dict],
                  scenario: Sequence[dict] = (), extras: dict | None = None) -> dict:
    """Write `out_dir/metrics.json` atomically after checking its invariants (`check_metrics`); returns it.
    experiments: name -> `experiment(...)`; extras: the notebook's other numbers (JSON-able)."""
    metrics = dict(notebook=notebook, preset=preset, seed=seed, scenario=list(scenario),
                   experiments=experiments, extras=extras or {})
    check_metrics(metrics)
    write_json(Path(out_dir) / METRICS_FILE, metrics)
    return metrics


# ---------------------------------------------------------------- notebooks and names

def discover(notebook_dir: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """Every `*.ipynb` in `notebook_dir`, sorted by name (so 00_tour runs first)."""
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise ValueError(f"notebook_dir={str(notebook_dir)!r} is not a folder")
    return sorted(p for p in notebook_dir.glob("*.ipynb") if not p.name.startswith("."))


def short_name(stem: str) -> str:
    """'02_l2t_dlf_dynamic_loss' -> 'l2t_dlf_dynamic_loss' (the name after the number)."""
    return re.sub(r"^\d+_", "", stem)


def resolve(names: Sequence[str], notebooks: Sequence[Path]) -> list[Path]:
    """The notebooks named by `names` (all of them when `names` is empty), in the notebooks' order.

    A name is a notebook's stem ('00_tour'), the name after its number ('tour'), or a unique prefix of
    either ('00', 'l2t_dlf'). Unknown or ambiguous names raise ValueError listing the valid ones.
    """
    if not names:
        return list(notebooks)
    valid = ", ".join(p.stem for p in notebooks) or "none (the notebook folder is empty)"
    chosen: list[Path] = []
    for name in names:
        exact = [p for p in notebooks if name in (p.stem, short_name(p.stem))]
        matches = exact or [p for p in notebooks if p.stem.startswith(name) or short_name(p.stem).startswith(name)]
        if not matches:
            raise ValueError(f"notebook name {name!r} is not known: choose from {valid}")
        if len(matches) > 1:
            raise ValueError(f"notebook name {name!r} is ambiguous: it matches {', '.join(p.stem for p in matches)}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return [p for p in notebooks if p in chosen]


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not known: choose one of {', '.join(PRESETS)}")
    return preset


def run_dir(out: str | Path, stem: str, preset: str, seed: int) -> Path:
    return Path(out) / stem / preset / f"seed-{seed}"


def is_complete(directory: str | Path, stem: str) -> bool:
    """A run is complete when its metrics.json AND its executed notebook exist."""
    directory = Path(directory)
    return (directory / METRICS_FILE).is_file() and (directory / f"{stem}.ipynb").is_file()


# ---------------------------------------------------------------- offline HTML

_REMOTE_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>\s*', re.IGNORECASE)
_REMOTE_REF = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(https?://[^"]*)"', re.IGNORECASE)


# nbconvert's ipywidgets loader fetches the widget manager from unpkg.com whenever widget state is saved.
# (Its mermaid loader, from cdnjs, runs only when a page has mermaid diagrams; ours have none. The plotly.js
# bundle holds URLs in strings that it never fetches. The browser test checks what a page really fetches.)
_CDN = re.compile(r"""["'](https?://unpkg\.com/[^"']*)["']""")


def remote_references(page: str) -> list[str]:
    """URLs a page would fetch when opened: script/link/img/iframe with an http(s) src or href, and the
    unpkg.com URLs of nbconvert's widget loader."""
    return _REMOTE_REF.findall(page) + _CDN.findall(page)


def export_html(notebook: str | Path, target: str | Path | None = None) -> Path:
    """Export an executed notebook to a standalone HTML page that works with no kernel and no network.

    nbconvert's lab template adds require.js and MathJax from a CDN; neither is needed (plotly.js is
    embedded once by the notebook's first figure, see `labkit.plots.setup_notebook`), so they are removed.
    Cost of removing MathJax: LaTeX in markdown cells shows as its source text.
    Raises RuntimeError if the page would still fetch anything.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    target = Path(target) if target is not None else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    # ipywidgets outputs (e.g. tqdm.auto progress bars) make nbconvert load the widget manager from unpkg.com:
    # drop the widget state and the widget views, so their text/plain form (the bar as text) is shown instead.
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    stem = notebook.name[: -len(PARTIAL_SUFFIX)] if notebook.name.endswith(PARTIAL_SUFFIX) else notebook.stem
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb, resources={"metadata": {"name": stem}})
    body = _REMOTE_SCRIPT.sub("", body)
    remote = remote_references(body)
    if remote:
        raise RuntimeError(f"{target.name} would fetch {remote[:3]} when opened: it is not offline")
    atomic_write_bytes(target, body.encode())
    target.chmod(0o644)   # a page to share (the atomic write creates it private)
    return target


# ---------------------------------------------------------------- running

@dataclass
class RunResult:
    notebook: str
    preset: str
    seed: int
    directory: Path
    status: str            # "done" | "skipped" (already complete) | "failed"
    seconds: float = 0.0
    error: str = ""


@dataclass
class Summary:
    results: list[RunResult] = field(default_factory=list)

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels papermill starts (they inherit ours), then restore."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def describe_error(exc: BaseException) -> str:
    """One paragraph: which cell failed and how (papermill's error carries the cell's index and source)."""
    index = getattr(exc, "cell_index", None)
    if index is None:
        return f"{type(exc).__name__}: {exc}".strip()
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    first = source[0] if source else ""
    return (f"cell {index} of the executed notebook (execution count {getattr(exc, 'exec_count', None)}), "
            f"starting {first!r}: "
            f"{getattr(exc, 'ename', '')}: {getattr(exc, 'evalue', '')}")


def run_one(notebook: Path, preset: str, seed: int, out: str | Path, *, kernel: str = "python3",
            html: bool = True) -> RunResult:
    """Execute `notebook` with parameters preset, seed, out_dir into its run folder (see module docstring)."""
    import papermill as pm

    stem = notebook.stem
    directory = run_dir(out, stem, preset, seed)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{stem}.ipynb"
    partial = directory / f"{stem}{PARTIAL_SUFFIX}"
    failed = directory / f"{stem}{FAILED_SUFFIX}"
    # A metrics.json without the executed notebook is from a run killed after its last cell: not trusted.
    for stale in (directory / METRICS_FILE, final, partial, failed, directory / f"{stem}.html"):
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        with _env(LABKIT_STATIC="1"):
            pm.execute_notebook(str(notebook), str(partial), kernel_name=kernel, cwd=str(notebook.parent),
                                parameters=dict(preset=preset, seed=int(seed), out_dir=str(directory.resolve())),
                                progress_bar=False, log_output=False)
        if not (directory / METRICS_FILE).is_file():
            raise RuntimeError(f"the notebook ran to the end but wrote no {METRICS_FILE} into out_dir")
        if html:
            export_html(partial, directory / f"{stem}.html")
        os.replace(partial, final)   # last: from here on the run counts as complete
        return RunResult(stem, preset, seed, directory, "done", time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one failing notebook must not stop the others
        if partial.exists():
            os.replace(partial, failed)
        (directory / METRICS_FILE).unlink(missing_ok=True)
        return RunResult(stem, preset, seed, directory, "failed", time.perf_counter() - start, describe_error(exc))


def reproduce(names: Sequence[str] = (), *, preset: str = "cpu", seeds: Sequence[int] = (0, 1), out: str | Path = "runs",
              notebook_dir: str | Path = NOTEBOOK_DIR, kernel: str = "python3", html: bool = True,
              log: Callable[[str], None] | None = None, progress: bool | None = None) -> Summary:
    """Run each named notebook (all by default) once per seed in `seeds` (each an independent repetition: its own
    data split, teacher and deployment students); skip runs already complete.

    Returns a Summary; `summary.ok` is False when any run failed (its error cell is in `RunResult.error`).
    """
    from .engine import progress as progress_bar

    check_preset(preset)
    seeds = check_seeds("seeds", seeds)
    notebooks = resolve(names, discover(notebook_dir))
    if not notebooks:
        raise ValueError(f"no notebooks found in {notebook_dir}")
    plan = [(nb, seed) for nb in notebooks for seed in seeds]
    summary = Summary()
    bar = progress_bar(plan, total=len(plan), desc=f"reproduce ({preset})", enabled=progress)
    write = log or (lambda msg: bar.write(msg, file=sys.stderr))
    for nb, seed in bar:
        directory = run_dir(out, nb.stem, preset, seed)
        bar.set_postfix_str(f"{nb.stem} seed {seed}")
        if is_complete(directory, nb.stem):
            result = RunResult(nb.stem, preset, seed, directory, "skipped")
            write(f"skip  {nb.stem} {preset} seed {seed}: already complete in {directory}")
        else:
            result = run_one(nb, preset, seed, out, kernel=kernel, html=html)
            if result.status == "done":
                write(f"done  {nb.stem} {preset} seed {seed} in {result.seconds:.0f} s -> {directory}")
            else:
                write(f"FAIL  {nb.stem} {preset} seed {seed} after {result.seconds:.0f} s: {result.error}\n"
                      f"      the executed notebook, stopped at the error: "
                      f"{directory / (nb.stem + FAILED_SUFFIX)}")
        summary.results.append(result)
    bar.close()
    counts = {s: sum(r.status == s for r in summary.results) for s in ("done", "skipped", "failed")}
    write(f"{len(plan)} runs: {counts['done']} done, {counts['skipped']} already complete, {counts['failed']} failed")
    return summary
