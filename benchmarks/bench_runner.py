"""The fixed costs of one `labkit reproduce` run, each against its alternative, in one run:

- the runner's own start, `import labkit.cli, labkit.repro, labkit.dispatch` in a fresh interpreter, as it is
  (torch is imported only by the kernels) against the same with `import torch` (as it was before);
- `import plotly.io._renderers` in a fresh interpreter (every kernel that shows a figure pays it: it imports
  nbformat, nbformat jsonschema, and jsonschema `rfc3987_syntax`, which compiles Lark grammars at import), with
  `rfc3987_syntax` importable against blocked as `labkit.repro.skip_slow_imports` blocks it;
- a small notebook (imports labkit's plotting, holds `--hold-mb` of tensors, draws one figure) run by papermill in
  labkit's runner kernel, shut down gracefully against immediately: the seconds from its last cell's end to
  papermill's return, and the whole run;
- a notebook of `--cells` quick cells after one that embeds plotly.js in its output (as notebook 01's first figure
  does), run by papermill's own engine (it saves the whole notebook at every cell's start and end) against
  labkit's (at most every `repro.SAVE_EVERY_S` seconds): the whole run.

Rounds interleaved; prints every round and the median of each variant.

    python benchmarks/bench_runner.py [--rounds 5] [--hold-mb 1000] [--cells 30]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from labkit import repro

CELL = """import torch
import labkit
import plotly.graph_objects as go
from labkit import plots
plots.setup_notebook()
held = [torch.randn(1024, 256) for _ in range({blocks})]   # 1 MB each: a trained notebook's heap
go.Figure(go.Scatter(y=[1, 3, 2])).show()"""


def import_seconds(blocked: bool) -> float:
    skip = "import sys; sys.modules['rfc3987_syntax'] = None; " if blocked else ""
    code = f"{skip}import time; t = time.perf_counter(); import plotly.io._renderers; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def start_seconds(with_torch: bool) -> float:
    imports = "import labkit.cli, labkit.repro, labkit.dispatch" + ("; import torch" if with_torch else "")
    code = f"import time; t = time.perf_counter(); {imports}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def notebook(path: Path, hold_mb: int) -> None:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    params = nbformat.v4.new_code_cell("preset = 'smoke'", metadata={"tags": ["parameters"]})
    nb.cells = [params, nbformat.v4.new_code_cell(CELL.format(blocks=hold_mb))]
    nbformat.write(nb, path)


def many_cells(path: Path, cells: int) -> None:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    embed = ("from IPython.display import HTML, display\nimport plotly.offline\n"
             "display(HTML(plotly.offline.get_plotlyjs()))")   # what an offline figure's first output holds
    nb.cells = [nbformat.v4.new_code_cell(embed)] + [nbformat.v4.new_code_cell("x = 1") for _ in range(cells)]
    nbformat.write(nb, path)


def engine_seconds(path: Path, engine: str) -> float:
    """The whole papermill run of `path` with engine `engine` ("nbclient": papermill's; "labkit": labkit's)."""
    import papermill as pm

    start = time.time()
    with repro.quiet_kernel(path.with_name("kernel.log"), path.parent) as manager:
        pm.execute_notebook(str(path), str(path.with_name(f"out-{engine}.ipynb")), kernel_name="python3",
                            kernel_manager_class=manager, progress_bar=False, log_output=False,
                            shutdown_kernel="immediate", engine_name=engine)
    return time.time() - start


def shutdown_seconds(path: Path, mode: str) -> tuple[float, float]:
    """(last cell's end to papermill's return, the whole run) in seconds, shutting the kernel down by `mode`."""
    import papermill as pm

    out = path.with_name(f"out-{mode}.ipynb")
    start = time.time()
    with repro.quiet_kernel(path.with_name("kernel.log"), path.parent) as manager:
        pm.execute_notebook(str(path), str(out), kernel_name="python3", kernel_manager_class=manager,
                            progress_bar=False, log_output=False, shutdown_kernel=mode)
    end = time.time()
    last = nbformat.read(out, as_version=4).cells[-1].metadata.papermill.end_time
    return end - dt.datetime.fromisoformat(last).timestamp(), end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold-mb", type=int, default=1000, help="tensors the notebook's kernel holds, in MB")
    parser.add_argument("--cells", type=int, default=30, help="quick cells after the one that embeds plotly.js")
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, cells = Path(tmp) / "small.ipynb", Path(tmp) / "cells.ipynb"
        notebook(path, args.hold_mb)
        many_cells(cells, args.cells)
        engines = {"nbclient": "papermill's engine", repro._engine(): "labkit's engine"}
        add = lambda name, value: times.setdefault(name, []).append(value)  # noqa: E731
        for r in range(args.rounds):
            for with_torch in (True, False):
                add(f"the runner's start, {'with' if with_torch else 'without'} torch", start_seconds(with_torch))
            for blocked in (False, True):
                add(f"import plotly.io._renderers, rfc3987_syntax {'blocked' if blocked else 'importable'}",
                    import_seconds(blocked))
            for mode in ("graceful", "immediate"):
                gap, whole = shutdown_seconds(path, mode)
                add(f"{mode} shutdown: last cell's end to return", gap)
                add(f"{mode} shutdown: whole run", whole)
            for engine, label in engines.items():
                add(f"{args.cells + 1} cells, {label}: whole run", engine_seconds(cells, engine))
            print(f"round {r + 1}: " + json.dumps({k: round(v[-1], 2) for k, v in times.items()}), flush=True)
    for name, values in times.items():
        print(f"{name:55s} median {statistics.median(values):5.2f} s  (range {min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
