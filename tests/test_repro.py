"""labkit reproduce / report: names, resume after a kill, failures reported while others go on, exit codes, a clean
terminal (the kernel's own stderr goes to kernel.log). The Dask side (LocalCluster, clusters, locks) is test_dask.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit import cli, repro, stats
from labkit.report import report


def write_notebook(path: Path, body: str) -> None:
    """A tiny notebook (no torch in the kernel, so it runs in seconds) with the standard parameters cell;
    `body` runs after it and should write metrics.json (the helper cell `finish()` does)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('preset = "cpu"\nseed = 0\ndevice = "auto"\nout_dir = "."',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import json, os, uuid\nfrom pathlib import Path\n"
            "def finish(**extra):\n"
            "    m = dict(preset=preset, seed=seed, run_id=uuid.uuid4().hex,\n"
            "             static=os.environ.get('LABKIT_STATIC'), test_acc=0.1 * (seed + 1), **extra)\n"
            "    Path(out_dir, 'metrics.json').write_text(json.dumps(m))"),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)


def metrics(out: Path, stem: str, seed: int, preset: str = "smoke") -> dict:
    return json.loads((repro.run_dir(out, stem, preset, seed) / "metrics.json").read_text())


def test_names_and_presets(tmp_path):
    for stem in ("00_tour", "01_l2t_data_teaching", "02_l2t_dlf_dynamic_loss"):
        write_notebook(tmp_path / f"{stem}.ipynb", "finish()")
    nbs = repro.discover(tmp_path)
    assert [p.stem for p in nbs] == ["00_tour", "01_l2t_data_teaching", "02_l2t_dlf_dynamic_loss"]
    stems = lambda names: [p.stem for p in repro.resolve(names, nbs)]  # noqa: E731
    assert stems([]) == [p.stem for p in nbs]
    assert stems(["tour"]) == ["00_tour"]
    assert stems(["02", "00"]) == ["00_tour", "02_l2t_dlf_dynamic_loss"]      # notebook order
    assert stems(["l2t_dlf"]) == ["02_l2t_dlf_dynamic_loss"]
    assert stems(["01_l2t_data_teaching"]) == ["01_l2t_data_teaching"]
    with pytest.raises(ValueError, match="'nope' is not known: choose from 00_tour, 01_l2t_data_teaching"):
        repro.resolve(["nope"], nbs)
    with pytest.raises(ValueError, match="'l2t' is ambiguous"):
        repro.resolve(["l2t"], nbs)
    with pytest.raises(ValueError, match="preset='fast' is not known: choose one of smoke, cpu, paper"):
        repro.check_preset("fast")
    assert cli.main(["reproduce", "--preset", "fast", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["reproduce", "nope", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["reproduce", "--seeds", "0", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    for bad in (["--workers", "0"], ["--threads", "0"], ["--gpus", "-1"],
                ["--scheduler", "tcp://h:8786", "--workers", "2"]):
        assert cli.main(["reproduce", *bad, "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.notebook   # executes tiny notebooks with papermill (about 15 s)
def test_failure_reported_others_go_on_then_resume(tmp_path, capfd):
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_good.ipynb", "os.write(2, b'noise from the kernel process\\n')\nimport sys\n"
                   "finish(skipped=sys.modules.get('rfc3987_syntax', 'absent') is None)")
    write_notebook(nbs / "01_bad.ipynb", "x = 1\nraise RuntimeError('boom at seed %d' % seed)")
    write_notebook(nbs / "02_silent.ipynb", "pass  # runs to the end but writes no metrics.json")
    write_notebook(nbs / "03_good.ipynb", "finish()")
    args = ["reproduce", "--preset", "smoke", "--seeds", "2", "--out", str(out), "--notebooks", str(nbs)]

    assert cli.main(args) == 1                       # some runs failed
    err = capfd.readouterr().err                     # what the terminal shows, kernels' own stderr included
    assert "without encryption" not in err and "noise from the kernel process" not in err
    assert "noise from the kernel process" in (repro.run_dir(out, "00_good", "smoke", 0) / "kernel.log").read_text()
    assert not (repro.run_dir(out, "03_good", "smoke", 0) / "kernel.log").exists()     # silent kernel: no log
    assert "FAILED 01_bad smoke seed 0: cell 3 of the executed notebook (execution count 4), starting 'x = 1'" in err
    assert "RuntimeError: boom at seed 0" in err
    assert "FAILED 02_silent smoke seed 1" in err and "wrote no metrics.json" in err
    for stem in ("00_good", "03_good"):              # the notebook after the failures ran too
        for seed in (0, 1):
            d = repro.run_dir(out, stem, "smoke", seed)
            assert repro.is_complete(d, stem)
            assert (d / f"{stem}.html").is_file() and not list(d.glob("*.partial.ipynb"))
            m = metrics(out, stem, seed)
            assert (m["preset"], m["seed"], m["static"]) == ("smoke", seed, "1")   # parameters and env passed
            assert m.get("skipped", stem == "03_good") is True   # the runner's kernel blocks SKIPPED_IMPORTS
    for stem in ("01_bad", "02_silent"):
        d = repro.run_dir(out, stem, "smoke", 0)
        assert not repro.is_complete(d, stem) and not (d / "metrics.json").exists()
        assert (d / f"{stem}.failed.ipynb").is_file()    # kept, stopped at the error, for reading
        assert (d / "error.txt").read_text().strip() in err

    # A run killed after its last cell but before the rename: metrics.json, a partial notebook, no notebook.
    killed = repro.run_dir(out, "00_good", "smoke", 1)
    os.replace(killed / "00_good.ipynb", killed / "00_good.partial.ipynb")
    kept = {(s, k): metrics(out, s, k)["run_id"] for s in ("00_good", "03_good") for k in (0, 1)}
    assert cli.main(args[:1] + ["00_good", "03"] + args[1:]) == 0
    err = capfd.readouterr().err
    assert "1 done, 3 already complete, 0 failed" in err
    assert repro.is_complete(killed, "00_good") and not (killed / "00_good.partial.ipynb").exists()
    assert metrics(out, "00_good", 1)["run_id"] != kept[("00_good", 1)]          # redone
    for key, run_id in kept.items():
        if key != ("00_good", 1):
            assert metrics(out, *key)["run_id"] == run_id                         # not redone

    text = report(out)
    assert (out / "report.md").read_text() == text and (out / "report.html").is_file()
    assert "01_bad/smoke/seed-0/01_bad.failed.ipynb" in text.split("Failed runs")[1]


@pytest.mark.notebook   # executes a tiny notebook with papermill (about 5 s)
def test_the_runners_own_process_never_imports_torch(tmp_path):
    """Only the notebooks' kernels need torch: `labkit reproduce` and `labkit report` start without its import."""
    write_notebook(tmp_path / "00_tiny.ipynb", "finish()")
    runs = str(tmp_path / "runs")
    code = ("import sys\nfrom labkit import cli\n"
            f"assert cli.main(['reproduce', '--preset', 'smoke', '--seeds', '1', '--out', {runs!r}, "
            f"'--notebooks', {str(tmp_path)!r}]) == 0\n"
            f"assert cli.main(['report', {runs!r}]) == 0\n"
            "print('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "torch imported: False"
    assert repro.is_complete(repro.run_dir(Path(runs), "00_tiny", "smoke", 0), "00_tiny")


@pytest.mark.notebook   # executes a tiny notebook with papermill, twice (about 10 s)
def test_the_runner_saves_the_executed_notebook_at_its_start_and_end_not_at_every_cell(tmp_path, monkeypatch):
    import papermill as pm
    from papermill import engines

    writes: list[int] = []
    real_write = engines.write_ipynb
    monkeypatch.setattr(engines, "write_ipynb", lambda nb, path: writes.append(
        sum(bool(c.get("outputs")) for c in nb.cells)) or real_write(nb, path))
    write_notebook(tmp_path / "nb.ipynb", "finish()\n" + "\n".join(f"print({i})" for i in range(3)))
    nb = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(f"print({i})") for i in range(8)]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    for engine in ("nbclient", repro._engine()):
        writes.clear()
        with repro.quiet_kernel(tmp_path / "kernel.log", tmp_path) as manager:
            pm.execute_notebook(str(tmp_path / "nb.ipynb"), str(tmp_path / f"{engine}.ipynb"), kernel_name="python3",
                                kernel_manager_class=manager, progress_bar=False, engine_name=engine,
                                parameters=dict(out_dir=str(tmp_path)))
        done = nbformat.read(tmp_path / f"{engine}.ipynb", as_version=4)
        assert sum(bool(c.get("outputs")) for c in done.cells) == 9 == writes[-1]   # the last write is complete
        if engine == "nbclient":
            assert len(writes) >= 2 * len(nb.cells)      # papermill's engine: at every cell's start and end
        else:
            assert len(writes) == 2                      # ours, on a run shorter than SAVE_EVERY_S: start and end


@pytest.mark.notebook   # executes a tiny notebook with papermill, twice (about 20 s)
def test_killed_process_resumes(tmp_path):
    """SIGKILL `labkit reproduce` while seed 1 runs; the rerun does only seed 1."""
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    hold = tmp_path / "HOLD"
    hold.touch()
    write_notebook(nbs / "00_slow.ipynb", f"import time\nwhile seed == 1 and Path({str(hold)!r}).exists():\n"
                                          "    time.sleep(0.2)\nfinish()")
    cmd = [sys.executable, "-m", "labkit.cli", "reproduce", "--preset", "smoke", "--seeds", "2", "--out", str(out),
           "--notebooks", str(nbs)]
    seed0, seed1 = (repro.run_dir(out, "00_slow", "smoke", k) for k in (0, 1))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, CI="1"))
    try:
        deadline = time.monotonic() + 120
        while not (repro.is_complete(seed0, "00_slow") and (seed1 / "00_slow.partial.ipynb").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not repro.is_complete(seed1, "00_slow") and not (seed1 / "metrics.json").exists()
    run_id = metrics(out, "00_slow", 0)["run_id"]
    hold.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skip  00_slow smoke seed 0" in done.stderr and "done  00_slow smoke seed 1" in done.stderr
    assert repro.is_complete(seed1, "00_slow") and metrics(out, "00_slow", 0)["run_id"] == run_id


def _run_with_metrics(out: Path, seed: int, values: dict, complete: bool = True) -> None:
    """A run folder as a notebook leaves it: metrics.json through write_metrics, the executed notebook if complete."""
    d = repro.run_dir(out, "00_tour", "smoke", seed)
    d.mkdir(parents=True)
    exp = repro.experiment(stats.summarize(values, [1000 * seed, 1000 * seed + 1], baseline="ce"), metric="test_acc",
                           dataset="mnist", model="mlp", setting="smoke")
    repro.write_metrics(d, notebook="00_tour", preset="smoke", seed=seed, experiments={"mnist_mlp": exp})
    if complete:
        (d / "00_tour.ipynb").write_text("{}")


def test_report_pools_complete_runs_only(tmp_path, capsys):
    out = tmp_path / "runs"
    _run_with_metrics(out, 0, {"ce": [0.9, 0.92], "dlf": [0.91, 0.95]})
    _run_with_metrics(out, 1, {"ce": [0.93, 0.9], "dlf": [0.95, 0.94]})
    _run_with_metrics(out, 2, {"ce": [0.1, 0.1], "dlf": [0.1, 0.1]}, complete=False)    # killed before the rename
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 00_tour | smoke | mnist_mlp | test_acc | ce | 91.25 ± 2.39 % (n = 4), 2 runs | (baseline) |" in text
    assert "| dlf | 93.75 ± 3.01 % (n = 4), 2 runs | 2.50 ± 2.05 points (n = 4) helps (4 of 4) |" in text
    assert (out / "report.md").read_text() == text.rstrip("\n") + "\n" and (out / "report.html").is_file()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_report_names_why_a_value_is_missing():
    """A run that never reached the threshold is 'not reached' in both columns, never 'diverged'."""
    from labkit.report import experiment_rows, pooled

    summary = stats.summarize({"ce": [300.0, 320.0, 280.0], "slow": [None, 400.0, 380.0]}, [0, 1, 2], baseline="ce",
                              higher_is_better=False, missing="not reached")
    exp = repro.experiment(summary, metric="steps_to_dev_acc", dataset="mnist", model="mlp")
    runs = [dict(notebook="05_arena", preset="smoke", seed=0, experiments={"x": exp})]
    row = {r[4]: r for r in experiment_rows("05_arena", "smoke", "x", pooled(runs)["x"])}["slow"]
    assert "1 not reached" in row[5] and "1 not reached" in row[6], row
    assert "diverged" not in " ".join(row)


@pytest.mark.notebook   # notebook 04 three times at the smoke preset (about two minutes on 2 cores)
def test_reproduce_three_seeds_of_04_deploys_three_disjoint_seed_sets(tmp_path, monkeypatch):
    """The seed contract end to end: `labkit reproduce 04 --seeds 3` gives runs 0, 1, 2 whose deployment students
    share no seed (before the contract, seeds {0,1,2} and {1,2,3} overlapped)."""
    monkeypatch.setenv("LABKIT_CARDS", str(tmp_path / "cards"))   # the kernels inherit it: no cards in the package
    out = tmp_path / "runs"
    args = ["reproduce", "04", "--preset", "smoke", "--seeds", "3", "--out", str(out), "--no-html"]
    assert cli.main(args) == 0
    stem = "04_lot_learning_from_teaching"
    runs = [metrics(out, stem, k) for k in range(3)]
    assert [m["seed"] for m in runs] == [0, 1, 2]
    deployed = [{s for e in m["experiments"].values() for s in e["seeds"]} for m in runs]
    assert all(deployed)
    assert all(a.isdisjoint(b) for i, a in enumerate(deployed) for b in deployed[i + 1:]), deployed
