"""Reproductions from one command: run the notebooks with papermill, gather their metrics, compare with the papers.

Layout of a runs folder (`out`):

    runs/<notebook>/<preset>/seed-<k>/
        <notebook>.ipynb      the executed notebook (written last: its presence marks the run complete)
        <notebook>.html       the same as a standalone page (plotly.js embedded once, no network needed)
        metrics.json          written by the notebook's last cell
        trace.npz             the notebook's Trace
        kernel.log            the kernel process's own stderr, only when it wrote any
        error.txt             why the last attempt failed (with <notebook>.failed.ipynb, stopped at the error)
        .lock, .running       the per-run locks (see `labkit.dispatch`)
    runs/report.md, runs/report.html   written by `labkit.report.report(out)`

A run is complete only when both `metrics.json` and `<notebook>.ipynb` exist. The runner deletes a stale
`metrics.json` before executing, executes into a temporary name, and renames it at the very end, so a run
killed at any point is redone by the next `reproduce` and a completed one is never redone. Where the runs go (this
process, a Dask LocalCluster, a Dask cluster) is `labkit.dispatch`'s part.
"""
from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from .seeds import check_seeds
from .trace import atomic_write_bytes, write_json

if TYPE_CHECKING:
    from .dispatch import Dispatch

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
               setting: str = "", scenario: Sequence[dict] = ()) -> dict:
    """One comparison of methods on the same seeds (a `labkit.stats.summarize` result) with what it measured:
    the report reads these keys. paper: the paper whose number this setting can be set against ("l2t", "dlf",
    "dln", "lot"; None: none); setting: the budget in words ("cpu preset: 1500 steps ..."); scenario: what was done
    to the training split (`splits.scenario`): a paper's clean-data number is never set beside it."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not allowed: choose one of {', '.join(METRICS)}")
    unit, higher, _ = METRICS[metric]
    if summary.get("higher_is_better") != higher:
        raise ValueError(f"the summary's higher_is_better={summary.get('higher_is_better')} disagrees with "
                         f"{metric} ({'higher' if higher else 'lower'} is better)")
    return dict(summary, metric=metric, unit=unit, dataset=dataset, model=model, paper=paper, setting=setting,
                scenario=list(scenario))


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


# ---------------------------------------------------------------- running one notebook

KERNEL_LOG = "kernel.log"   # the kernel process's own stdout/stderr (cells' outputs are in the notebook)
ERROR_FILE = "error.txt"    # why the last attempt failed: read by a second `labkit reproduce` that waited for it


@dataclass
class RunResult:
    notebook: str
    preset: str
    seed: int
    directory: Path
    status: str            # "done" | "skipped" (already complete) | "elsewhere" (completed by another call) | "failed"
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

    def counts(self) -> str:
        n = {s: sum(r.status == s for r in self.results) for s in ("done", "skipped", "elsewhere", "failed")}
        elsewhere = f", {n['elsewhere']} done by another labkit reproduce" if n["elsewhere"] else ""
        return (f"{len(self.results)} runs: {n['done']} done, {n['skipped']} already complete, "
                f"{n['failed']} failed{elsewhere}")


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


# Imported by nbformat's jsonschema (papermill, plotly) only to check the "iri" format, which no notebook file or
# figure uses; at import it compiles Lark grammars for 1-2 s (jsonschema issue 1428; benchmarks/bench_runner.py).
# labkit's runner blocks it in its own kernels and in the process that runs them, nowhere else.
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def skip_slow_imports() -> None:
    """Make the modules of SKIPPED_IMPORTS unimportable in this process (jsonschema then skips that check)."""
    for name in SKIPPED_IMPORTS:
        sys.modules.setdefault(name, None)


SAVE_EVERY_S = 10.0   # the executed notebook is saved at most this often between cells (and at the start and end)


@lru_cache(maxsize=1)
def _engine() -> str:
    """The name of papermill's nbclient engine with sparser saves, registered on first use. Why: papermill writes the
    whole executed notebook at every cell's start and end, and once a notebook embeds plotly.js (notebook 01: 7 MB)
    those writes add up: 31 quick cells after one that embeds it took 3.75 s with papermill's engine against 1.16 s
    with this one (benchmarks/bench_runner.py). A partial notebook at most SAVE_EVERY_S old still shows a long run's
    progress, and the last write (the end, or a failure) is kept."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class SparseSaves(NotebookExecutionManager):
        saved = False

        def save(self, **kwargs):
            since = (self.now() - self.last_save_time).total_seconds()
            if not self.saved or self.end_time is not None or since >= SAVE_EVERY_S:
                self.saved = True
                super().save(**kwargs)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):
            # papermill's Engine.execute_notebook with SparseSaves for its NotebookExecutionManager
            manager = SparseSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                  autosave_cell_every=autosave_cell_every)
            manager.notebook_start()
            try:
                cls.execute_managed_notebook(manager, kernel_name, log_output=log_output, **kwargs)
            finally:
                manager.cleanup_pbar()
                manager.notebook_complete()
            return manager.nb

    papermill_engines.register("labkit", Engine)
    return "labkit"


@lru_cache(maxsize=1)
def _kernel_base() -> type:
    from jupyter_client import AsyncKernelManager

    class RunKernel(AsyncKernelManager):
        """The kernel of one run. Why IPC: over TCP, ipykernel warns at every start that its ports are
        unencrypted (any local user could connect to them); a Unix socket in a private folder reaches this user
        only. Why a log file: the kernel process's own stderr (that warning where IPC is missing, C-level
        warnings, a crash's last words) would otherwise interleave with the progress lines; a failed run names
        the file."""

        run_env: dict = {}
        run_cwd: str = "."
        run_log: str = KERNEL_LOG
        ipc_dir: str = ""

        def __init__(self, **kw):
            super().__init__(**kw)
            if os.name == "posix":
                self.transport, self.ip = "ipc", os.path.join(self.ipc_dir, "kernel")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client sends SIGINT before every shutdown request; the kernel of a finished run is idle, and
            # depending on timing the signal makes it log "KeyboardInterrupt caught in kernel". A run that times
            # out is still interrupted: nbclient calls the public interrupt_kernel, which this does not change.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def start_kernel(self, **kw):
            kw.update(env={**os.environ, **self.run_env}, cwd=self.run_cwd)
            skip = "; ".join(f"__import__('sys').modules.setdefault({n!r}, None)" for n in SKIPPED_IMPORTS)
            kw["extra_arguments"] = [*kw.get("extra_arguments", []), f"--IPKernelApp.exec_lines={skip}"]
            with open(self.run_log, "ab") as log:   # the child keeps its own copy of the descriptor
                kw.update(stdout=log, stderr=log)
                return await super().start_kernel(**kw)

    return RunKernel


@contextmanager
def quiet_kernel(log: str | Path, cwd: str | Path, env: dict[str, str] | None = None) -> Iterator[type]:
    """A kernel manager class for papermill or nbclient (`kernel_manager_class=`): IPC in a private folder, the
    kernel's own output appended to `log`, `env` on top of this process's, working folder `cwd`."""
    with tempfile.TemporaryDirectory(prefix="labkit-kernel-", dir=_short_tmp()) as ipc:
        yield type("Kernel", (_kernel_base(),), dict(run_env=dict(env or {}), run_cwd=str(cwd), run_log=str(log),
                                                     ipc_dir=ipc))


def clear_stale(directory: Path, stem: str) -> None:
    """Delete what an earlier attempt left (a metrics.json without its notebook is not trusted); checkpoints stay,
    so the notebook resumes from them."""
    for name in (METRICS_FILE, f"{stem}.ipynb", f"{stem}{PARTIAL_SUFFIX}", f"{stem}{FAILED_SUFFIX}", f"{stem}.html",
                 KERNEL_LOG, ERROR_FILE):
        (directory / name).unlink(missing_ok=True)


def run_one(notebook: Path, preset: str, seed: int, out: str | Path, *, kernel: str = "python3", html: bool = True,
            env: dict[str, str] | None = None, cwd: str | Path | None = None) -> RunResult:
    """Execute `notebook` with parameters preset, seed, out_dir into its run folder (see module docstring).
    env: variables for the kernel on top of this process's (LABKIT_STATIC=1 always); cwd: the kernel's working
    folder (default: the notebook's)."""
    skip_slow_imports()
    import papermill as pm

    stem = notebook.stem
    directory = run_dir(out, stem, preset, seed)
    directory.mkdir(parents=True, exist_ok=True)
    clear_stale(directory, stem)
    final, partial = directory / f"{stem}.ipynb", directory / f"{stem}{PARTIAL_SUFFIX}"
    log = directory / KERNEL_LOG
    start = time.perf_counter()
    try:
        with quiet_kernel(log, cwd or notebook.parent, dict(env or {}, LABKIT_STATIC="1")) as manager:
            # shutdown_kernel: the run's files are written when its last cell ends; a graceful shutdown then waits
            # for the kernel's interpreter to exit (benchmarks/bench_runner.py)
            pm.execute_notebook(str(notebook), str(partial), kernel_name=kernel, kernel_manager_class=manager,
                                parameters=dict(preset=preset, seed=int(seed), out_dir=str(directory.resolve())),
                                progress_bar=False, log_output=False, shutdown_kernel="immediate",
                                engine_name=_engine())
        if not (directory / METRICS_FILE).is_file():
            raise RuntimeError(f"the notebook ran to the end but wrote no {METRICS_FILE} into out_dir")
        if html:
            export_html(partial, directory / f"{stem}.html")
        os.replace(partial, final)   # last: from here on the run counts as complete
        return RunResult(stem, preset, seed, directory, "done", time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one failing notebook must not stop the others
        if partial.exists():
            os.replace(partial, directory / f"{stem}{FAILED_SUFFIX}")
        (directory / METRICS_FILE).unlink(missing_ok=True)
        note = f" (the kernel's own output: {log})" if log.is_file() and log.stat().st_size else ""
        return RunResult(stem, preset, seed, directory, "failed", time.perf_counter() - start,
                         describe_error(exc) + note)
    finally:
        if log.is_file() and not log.stat().st_size:
            log.unlink()


def _short_tmp() -> str | None:
    """A temporary folder whose paths fit a Unix socket address (at most 107 bytes)."""
    return None if len(tempfile.gettempdir()) < 60 or not os.path.isdir("/tmp") else "/tmp"


# ---------------------------------------------------------------- running many: `labkit reproduce`

def reproduce(names: Sequence[str] = (), *, preset: str = "cpu", seeds: Sequence[int] = (0, 1),
              out: str | Path = "runs", notebook_dir: str | Path = NOTEBOOK_DIR, kernel: str = "python3",
              html: bool = True, dispatch: "Dispatch | None" = None, log: Callable[[str], None] | None = None,
              progress: bool | None = None) -> Summary:
    """Run each named notebook (all by default) once per seed in `seeds` (each an independent repetition: its own
    data split, teacher and deployment students); skip runs already complete. dispatch: where the runs go
    (`labkit.dispatch.Dispatch`: this process by default, a LocalCluster, or a Dask cluster).

    Returns a Summary; `summary.ok` is False when any run failed (its error cell is in `RunResult.error`).
    """
    from .dispatch import Dispatch, Job, drive, pool
    from .trace import progress as progress_bar

    check_preset(preset)
    seeds = check_seeds("seeds", seeds)
    settings = (dispatch or Dispatch()).check()
    notebooks = resolve(names, discover(notebook_dir))
    if not notebooks:
        raise ValueError(f"no notebooks found in {notebook_dir}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [Job(nb, preset, seed, run_dir(out, nb.stem, preset, seed)) for nb in notebooks for seed in seeds]
    summary = Summary()
    bar = progress_bar(total=len(jobs), desc=f"reproduce ({preset})", enabled=progress)
    write = log or (lambda msg: bar.write(msg, file=sys.stderr))
    try:
        with pool(settings, preset=preset, out=out, kernel=kernel, html=html, log=write) as runner:
            write(runner.describe(len(jobs)))
            drive(jobs, runner, summary, bar, write)
    finally:
        bar.close()
    write(summary.counts())
    return summary
