"""`labkit reproduce` on Dask: a LocalCluster gives the numbers of the one-process runner; a worker killed mid-run
and the run still completes; two concurrent calls on one folder run each run once; a cluster's GPU resource; the
per-run locks; workers that do not see the runs folder send the files back."""
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

from labkit import cli, dispatch, repro
from labkit.dispatch import Dispatch, RunLock

CMD = [sys.executable, "-m", "labkit.cli", "reproduce", "--preset", "smoke"]
ENV = dict(os.environ, CI="1")   # CI: no progress bar


def write_notebook(path: Path, body: str) -> None:
    """A notebook with the standard parameters cell, then `body`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('preset = "cpu"\nseed = 0\ndevice = "auto"\nout_dir = "."',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


# A real (tiny) reproduction: students trained by the engine, compared by stats, written by write_metrics.
TRAIN = """import os, torch
from labkit import data, engine, repro, stats
from labkit.seeds import deployment_seeds
from labkit.student import StudentConfig
g = torch.Generator().manual_seed(7)
y = torch.arange(400) % 10
x = 0.5 * torch.randn(400, 64, generator=g) + torch.nn.functional.one_hot(y, 64).float()
splits = data.from_tensors(x[:300], y[:300], dev_size=60, test=(x[300:], y[300:]), seed=seed)
seeds = deployment_seeds(seed, 3)
traces = {lr: engine.train(engine.Run(splits, StudentConfig(steps=LR_STEPS, batch_size=32, lr=lr), seeds),
                           progress_bar=False) for lr in (0.05, 0.2)}
values = {f"lr{lr}": [t.metrics["test_acc"] for t in ts] for lr, ts in traces.items()}
exp = repro.experiment(stats.summarize(values, seeds, baseline="lr0.05"), metric="test_acc", dataset="synthetic",
                       model="mlp")
repro.write_metrics(out_dir, notebook=NAME, preset=preset, seed=seed, experiments={"synthetic_mlp": exp},
                    extras=dict(test_loss=[t.metrics["test_loss"] for ts in traces.values() for t in ts],
                                kernel_parent=os.getppid(), threads=torch.get_num_threads()))
"""


def numbers(out: Path, stem: str, seed: int) -> dict:
    m = json.loads((repro.run_dir(out, stem, "smoke", seed) / "metrics.json").read_text())
    return dict(values={k: v["values"] for k, v in m["experiments"]["synthetic_mlp"]["methods"].items()},
                loss=m["extras"]["test_loss"], threads=m["extras"]["threads"], parent=m["extras"]["kernel_parent"])


@pytest.mark.notebook
@pytest.mark.slow   # 8 runs that import torch, and a LocalCluster (about a minute on 2 cores)
def test_a_local_cluster_gives_the_numbers_of_the_local_runner(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem, steps in (("00_short", 30), ("01_long", 60)):
        write_notebook(nbs / f"{stem}.ipynb", TRAIN.replace("LR_STEPS", str(steps)).replace("NAME", repr(stem)))
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = repro.reproduce(preset="smoke", seeds=[0, 1], out=out, notebook_dir=nbs, html=False,
                                  dispatch=Dispatch(workers=workers, threads=1), progress=False)
        assert summary.ok and [r.status for r in summary.results] == ["done"] * 4
        runs[workers] = {(s, k): numbers(out, s, k) for s in ("00_short", "01_long") for k in (0, 1)}
    for key, local in runs[1].items():
        cluster = runs[2][key]
        assert (cluster["values"], cluster["loss"]) == (local["values"], local["loss"]), key   # bit for bit
        assert cluster["threads"] == local["threads"] == 1
        assert local["parent"] == os.getpid() and cluster["parent"] != os.getpid()   # here / in a worker process
    assert runs[1][("00_short", 0)]["values"] != runs[1][("00_short", 1)]["values"]   # the seed matters


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first: {proc.communicate()[0]}")
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


HOLD = """import json, os, time
from pathlib import Path
if seed == 1 and Path({hold!r}).exists():
    Path({pids!r}).write_text(json.dumps(dict(kernel=os.getpid(), worker=os.getppid())))
    while Path({hold!r}).exists():
        time.sleep(0.2)
with open({log!r}, "a") as f:
    f.write(f"{{seed}} {{os.getpid()}}\\n")
Path(out_dir, "metrics.json").write_text(json.dumps(dict(seed=seed, worker=os.getppid())))
"""


@pytest.mark.notebook
@pytest.mark.slow   # a LocalCluster, a worker killed and restarted (about 30 s)
def test_a_worker_killed_mid_run_and_the_run_still_completes(tmp_path):
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    hold, pids, log = tmp_path / "HOLD", tmp_path / "pids.json", tmp_path / "executions.log"
    hold.touch()
    write_notebook(nbs / "00_hold.ipynb", HOLD.format(hold=str(hold), pids=str(pids), log=str(log)))
    proc = subprocess.Popen(CMD + ["--seeds", "2", "--out", str(out), "--notebooks", str(nbs), "--workers", "2",
                                   "--threads", "1", "--no-html"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV)
    try:
        _wait_for(pids.exists, "seed 1 did not start", proc)
        killed = json.loads(pids.read_text())
        os.kill(killed["worker"], signal.SIGKILL)                    # the worker process running seed 1
        _wait_for(lambda: not _alive(killed["kernel"]), "the killed worker's kernel lived on", timeout=60)
        hold.unlink()                                                # the retry runs through
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "2 runs: 2 done, 0 already complete, 0 failed" in output
    run = repro.run_dir(out, "00_hold", "smoke", 1)
    assert repro.is_complete(run, "00_hold")
    assert json.loads((run / "metrics.json").read_text())["worker"] != killed["worker"]   # another worker did it
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["0", "1"]  # each ran to the end once


@pytest.mark.notebook
@pytest.mark.slow   # two reproduce processes, one with a LocalCluster (about 40 s)
def test_two_concurrent_calls_on_one_folder_run_each_run_once(tmp_path):
    """A runs seed 0, then holds seed 1; B (a LocalCluster) starts, skips 0, runs 2 and 3 and waits for 1; A then
    finds 2 and 3 complete. Every run executes once, both calls exit 0."""
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    hold, pids, log = tmp_path / "HOLD", tmp_path / "pids.json", tmp_path / "executions.log"
    hold.touch()
    write_notebook(nbs / "00_hold.ipynb", HOLD.format(hold=str(hold), pids=str(pids), log=str(log)))
    args = ["--seeds", "4", "--out", str(out), "--notebooks", str(nbs), "--no-html", "--threads", "1"]
    a = subprocess.Popen(CMD + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    b = None
    try:
        _wait_for(pids.exists, "A did not reach seed 1", a)
        b = subprocess.Popen(CMD + args + ["--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=ENV)
        done = [repro.run_dir(out, "00_hold", "smoke", k) for k in (2, 3)]
        _wait_for(lambda: all(repro.is_complete(d, "00_hold") for d in done), "B did not run 2 and 3", b)
        hold.unlink()
        out_a, _ = a.communicate(timeout=120)
        out_b, _ = b.communicate(timeout=120)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert a.returncode == 0 and b.returncode == 0, (out_a, out_b)
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["0", "1", "2", "3"]   # once each
    assert "4 runs: 2 done, 2 already complete, 0 failed" in out_a       # 0 and 1 done here, 2 and 3 by B
    assert "wait  00_hold smoke seed 1: another labkit reproduce is running it" in out_b
    assert "skip  00_hold smoke seed 1: completed by another labkit reproduce" in out_b
    assert "4 runs: 2 done, 1 already complete, 0 failed, 1 done by another labkit reproduce" in out_b


@pytest.mark.notebook
@pytest.mark.slow   # a LocalCluster started here stands for a cluster at an address (about 20 s)
def test_a_cluster_at_an_address_and_its_gpu_resource(tmp_path):
    from distributed import LocalCluster

    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_env.ipynb", "import json, os\nfrom pathlib import Path\nPath(out_dir, 'metrics.json')"
                                         ".write_text(json.dumps(dict(omp=os.environ['OMP_NUM_THREADS'])))")
    lines: list[str] = []
    with LocalCluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}, dashboard_address=":0") as gpu_cluster:
        summary = repro.reproduce(preset="paper", seeds=[0], out=out, notebook_dir=nbs, html=False, log=lines.append,
                                  dispatch=Dispatch(scheduler=gpu_cluster.scheduler_address), progress=False)
    assert summary.ok, lines
    assert "1 GPU(s) per run" in lines[0] and "1 see " in lines[0] and "(files written in place)" in lines[0]
    cores = dispatch.cores()
    assert json.loads((repro.run_dir(out, "00_env", "paper", 0) / "metrics.json").read_text()) == \
        dict(omp=str(cores))     # 2 task slots but 1 GPU: one run at a time gets all the worker's cores
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cpu_cluster:
        with pytest.raises(ValueError, match="no worker declares one: start workers with --resources GPU=1"):
            repro.reproduce(preset="paper", seeds=[0], out=out, notebook_dir=nbs, html=False, log=lines.append,
                            dispatch=Dispatch(scheduler=cpu_cluster.scheduler_address), progress=False)
    assert not list(out.glob(".labkit-probe-*"))   # the probe file is removed, whatever happened


@pytest.mark.notebook
@pytest.mark.slow   # a LocalCluster of 3 workers (about 20 s)
def test_a_local_cluster_gives_each_worker_its_own_gpu(tmp_path, monkeypatch):
    from labkit import cluster

    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0", "1", "2"])      # as on a machine with 3 GPUs
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_gpu.ipynb", "import json, os\nfrom pathlib import Path\nPath(out_dir, 'metrics.json')"
                                         ".write_text(json.dumps(dict(gpu=os.environ.get('CUDA_VISIBLE_DEVICES'), "
                                         "worker=os.getppid())))")
    lines: list[str] = []
    summary = repro.reproduce(preset="paper", seeds=[0, 1, 2, 3, 4, 5], out=out, notebook_dir=nbs, html=False,
                              log=lines.append, dispatch=Dispatch(workers=4, threads=1), progress=False)
    assert summary.ok, lines
    assert "3 worker(s): one per 1 GPU(s) of this machine" in lines                 # 4 asked, 3 GPUs
    gpus_of: dict[int, set[str]] = {}
    for seed in range(6):
        m = json.loads((repro.run_dir(out, "00_gpu", "paper", seed) / "metrics.json").read_text())
        gpus_of.setdefault(m["worker"], set()).add(m["gpu"])
    assert all(len(g) == 1 for g in gpus_of.values())                                 # a worker keeps its GPU
    assert len(set.union(*gpus_of.values())) == len(gpus_of) and set.union(*gpus_of.values()) <= {"0", "1", "2"}


@pytest.mark.notebook   # one tiny notebook, no Dask (a few seconds)
def test_a_worker_that_does_not_see_the_runs_folder_sends_the_files_back(tmp_path):
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_tiny.ipynb", "import json\nfrom pathlib import Path\n"
                                          "Path(out_dir, 'checkpoints').mkdir()\n"
                                          "Path(out_dir, 'checkpoints', 'c.pt').write_text('x')\n"
                                          "Path(out_dir, 'metrics.json').write_text(json.dumps(dict(seed=seed)))")
    pool = dispatch.Pool(out=out, kernel="python3", html=True, threads=1)
    pool.token = "a-token-whose-probe-file-does-not-exist"     # as a worker on another filesystem sees it
    outcome = dispatch.task(pool.spec(nbs / "00_tiny.ipynb", "smoke", 3))
    run = repro.run_dir(out, "00_tiny", "smoke", 3)
    assert outcome["status"] == "done" and not run.exists()      # nothing written here by the worker
    assert sorted(outcome["files"]) == ["00_tiny.html", "00_tiny.ipynb", "metrics.json"]   # no checkpoints
    job = dispatch.Job(nbs / "00_tiny.ipynb", "smoke", 3, run)
    result = dispatch._settle(job, outcome)
    assert result.status == "done" and repro.is_complete(run, "00_tiny")
    assert json.loads((run / "metrics.json").read_text()) == dict(seed=3)
    with pytest.raises(ValueError, match="outside the run folder"):
        dispatch.write_back(run, "00_tiny", {"../../escape.txt": b"x"})


def test_a_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    lock = RunLock.acquire(tmp_path / "run")
    assert lock is not None and RunLock.acquire(tmp_path / "run") is None     # one holder at a time
    lock.release()
    assert RunLock.acquire(tmp_path / "run") is not None                       # released (and dropped again here)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from labkit.dispatch import RunLock\nlock = RunLock.acquire(Path(sys.argv[1]))\n"
                               "print('held', flush=True)\ntime.sleep(600)", str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert RunLock.acquire(tmp_path / "run") is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert RunLock.acquire(tmp_path / "run") is not None                       # a killed holder leaves it free


def test_a_waiting_call_reports_what_happened_elsewhere(tmp_path):
    nb = tmp_path / "00_x.ipynb"
    run = repro.run_dir(tmp_path / "runs", "00_x", "smoke", 0)
    run.mkdir(parents=True)
    never_waited = dispatch.Job(nb, "smoke", 0, run)
    waited = dispatch.Job(nb, "smoke", 0, run, waiting_since=time.time())
    assert dispatch._settled_elsewhere(waited) is None                # its holder died: run it here
    (run / "error.txt").write_text("cell 3: RuntimeError: boom\n")
    result = dispatch._settled_elsewhere(waited)                       # it failed in the call we waited for
    assert result.status == "failed"
    assert result.error == "failed in another labkit reproduce: cell 3: RuntimeError: boom"
    assert dispatch._settled_elsewhere(never_waited) is None           # an old failure: try again
    (run / "metrics.json").write_text("{}")
    (run / "00_x.ipynb").write_text("{}")
    assert dispatch._settled_elsewhere(waited).status == "elsewhere"
    assert dispatch._settled_elsewhere(never_waited).status == "skipped"


def test_dispatch_settings_are_checked():
    assert Dispatch().check() == Dispatch() and Dispatch(workers=3, threads=2, gpus=0).check().workers == 3
    for bad, name in ((dict(workers=0), "workers=0"), (dict(threads=0), "threads=0"), (dict(gpus=-1), "gpus=-1"),
                      (dict(workers=1.5), "workers=1.5"), (dict(scheduler=""), "scheduler=''"),
                      (dict(scheduler="tcp://h:8786", workers=2), "workers=2 with a scheduler")):
        with pytest.raises(ValueError, match=name):
            Dispatch(**bad).check()
    assert Dispatch().gpus_for("paper") == 1 and Dispatch().gpus_for("cpu") == 0
    assert Dispatch(gpus=0).gpus_for("paper") == 0
    assert cli.main(["reproduce", "--workers", "0", "--out", "/nonexistent/x"]) == 2
