"""Where `labkit reproduce` runs its notebooks: in this process, on a Dask LocalCluster, or on a Dask cluster.

    Dispatch()                          one run after another in this process (no Dask server: today's default)
    Dispatch(workers=4)                 a LocalCluster of 4 worker processes on this machine
    Dispatch(scheduler="tcp://h:8786")  an existing cluster (dask-jobqueue's SLURMCluster / PBSCluster, Kubernetes)

Each (notebook, preset, seed) run is one task, `task(spec)`: the worker executes the notebook with papermill in a
kernel it starts itself. A run that needs a GPU (the `paper` preset, or `gpus`) asks for it as the Dask resource
`GPU`, so a cluster whose workers declare `--resources GPU=1` runs one such run per GPU.

Files. A worker that sees the client's runs folder (the same path holds the same files: checked per task with a
probe file the client writes at start) writes the run's files in place, checkpoints included, so a retry after a
killed worker resumes from the notebook's last checkpoint. A worker that does not see it runs the notebook in a
scratch folder and sends the run's files (all but `checkpoints/`) back through Dask; the client writes them, the
executed notebook last, so a run is complete only when everything is there. Neither set-up is required; the
client says at start which workers share the folder.

Locks. The client holds an flock on `<run>/.lock` from the moment it queues a run until its files are in place;
the kernel releases an flock when its holder dies, so a killed `labkit reproduce` never leaves a run locked. A
second `labkit reproduce` on the same folder waits for runs it finds locked, then counts them as done (or failed)
elsewhere, or runs them itself if their holder died before finishing. A worker writing in place also holds
`<run>/.running` while it executes, so an attempt orphaned by a dead client and a new attempt never write the same
folder at once. flock is reliable between processes of one machine; across machines only where the filesystem
makes it coherent (NFSv4, Lustre mounted with `-o flock`, BeeGFS, GPFS): run concurrent calls from one machine.

Threads. Every kernel gets OMP_NUM_THREADS = MKL_NUM_THREADS = `threads` (default: this machine's cores //
workers; on a cluster, the cores the worker may use // the runs it can hold at once), so that parallel runs do not
oversubscribe the cores. A run is a pure function of its notebook, preset and seed at a given thread count:
compare numbers at equal `threads`.
"""
from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import repro
from .checks import check_int
from .repro import ERROR_FILE, FAILED_SUFFIX, RunResult, Summary, describe_error, is_complete
from .trace import atomic_write_bytes

CLIENT_LOCK = ".lock"       # held by the `labkit reproduce` that queued the run
WORKER_LOCK = ".running"    # held by the worker executing the run in place
PROBE_PREFIX = ".labkit-probe-"


@dataclass(frozen=True)
class Dispatch:
    """How `repro.reproduce` dispatches its runs (see the module docstring).

    workers: 1 runs in this process; N > 1 starts a LocalCluster of N worker processes (one run each at a time).
    scheduler: the address of a running Dask scheduler ("tcp://host:8786"), or a cluster object with a
      `scheduler_address` (a dask-jobqueue SLURMCluster); None: no external cluster.
    threads: torch threads per run (the kernel's OMP_NUM_THREADS); None: cores // workers.
    gpus: GPUs per run, asked for as the Dask resource "GPU"; None: 1 for the paper preset, else 0.
    """

    workers: int = 1
    scheduler: Any = None
    threads: int | None = None
    gpus: int | None = None

    def check(self) -> "Dispatch":
        check_int("workers", self.workers, 1)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        if self.gpus is not None:
            check_int("gpus", self.gpus, 0)
        if self.scheduler is not None:
            address = getattr(self.scheduler, "scheduler_address", self.scheduler)
            if not isinstance(address, str) or not address:
                raise ValueError(f"scheduler={self.scheduler!r} is not allowed: give a scheduler address such as "
                                 "'tcp://host:8786' or a cluster object with a scheduler_address")
            if self.workers != 1:
                raise ValueError(f"workers={self.workers} with a scheduler is not allowed: the cluster's own "
                                 "workers run the runs (give one or the other)")
        return self

    def gpus_for(self, preset: str) -> int:
        return self.gpus if self.gpus is not None else int(preset == "paper")


def cores() -> int:
    """The cores this process may use (its CPU affinity, which SLURM and taskset restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- locks

class RunLock:
    """An exclusive flock on a run's lock file, held until `release()` or until this process dies."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, name: str = CLIENT_LOCK, *, wait: bool = False) -> "RunLock | None":
        """The lock, or None when another holder has it (wait=True blocks until it is free)."""
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by kernels (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing the file drops the flock
            self.fd = None

    def __del__(self) -> None:   # a lock nobody holds on to is released, not leaked with its descriptor
        self.release()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- the task (runs on a worker, or here)

def task(spec: dict) -> dict:
    """Run one notebook; returns {"status", "seconds", "error"} and, when this worker does not see the client's
    runs folder, "files": {path relative to the run folder: bytes}. spec: see `Pool.spec`."""
    env = kernel_env(spec)
    with _notebook_copy(spec) as (notebook, cwd):
        if sees_out(spec["out"], spec["token"]):
            return _run_in_place(spec, notebook, cwd, env)
        return _run_in_scratch(spec, notebook, cwd, env)


def kernel_env(spec: dict) -> dict[str, str]:
    """The kernel's thread count and, on a LocalCluster with GPUs, its own GPU(s) (by the worker's name 0..N-1)."""
    threads = spec["threads"] or _worker_threads(spec["gpus"])
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if spec.get("gpu_ids"):
        from distributed import get_worker

        k, per_run = int(get_worker().name), spec["gpus"]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(spec["gpu_ids"][k * per_run:(k + 1) * per_run])
    return env


def _worker_threads(gpus: int) -> int:
    """On a cluster worker: its cores shared among the runs it can hold at once (its task slots, or fewer when
    each run takes GPUs: a 1-GPU, 8-core job runs one GPU run at a time, with 8 threads)."""
    from distributed import get_worker

    state = get_worker().state
    at_once = state.nthreads if not gpus else min(state.nthreads, int(state.total_resources.get("GPU", 0) // gpus))
    return max(1, cores() // max(1, at_once))


def sees_out(out: str, token: str | None) -> bool:
    """Whether this process sees the client's runs folder (token None: the client itself)."""
    if token is None:
        return True
    try:
        return (Path(out) / f"{PROBE_PREFIX}{token}").read_text() == token
    except OSError:
        return False


@contextmanager
def _notebook_copy(spec: dict) -> Iterator[tuple[Path, str]]:
    """The notebook to execute: the client's file where this worker sees the same bytes, else the bytes the
    client sent, in a scratch folder. The kernel's working folder is the notebooks folder when it exists here."""
    original = Path(spec["path"])
    if original.is_file() and original.read_bytes() == spec["source"]:
        yield original, str(original.parent)
        return
    with tempfile.TemporaryDirectory(prefix="labkit-nb-") as tmp:
        copy = Path(tmp) / original.name
        copy.write_bytes(spec["source"])
        yield copy, str(original.parent) if original.parent.is_dir() else tmp


def _outcome(result: RunResult, **more) -> dict:
    return dict(status=result.status, seconds=result.seconds, error=result.error, host=socket.gethostname(), **more)


def _run_in_place(spec: dict, notebook: Path, cwd: str, env: dict) -> dict:
    directory = repro.run_dir(spec["out"], spec["stem"], spec["preset"], spec["seed"])
    with RunLock.acquire(directory, WORKER_LOCK, wait=True):
        if is_complete(directory, spec["stem"]):
            # an attempt orphaned by a client that died finished it while we waited for .running
            return dict(status="elsewhere", seconds=0.0, error="", host=socket.gethostname())
        result = repro.run_one(notebook, spec["preset"], spec["seed"], spec["out"], kernel=spec["kernel"],
                               html=spec["html"], env=env, cwd=cwd)
    return _outcome(result)


def _run_in_scratch(spec: dict, notebook: Path, cwd: str, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="labkit-run-") as scratch:
        result = repro.run_one(notebook, spec["preset"], spec["seed"], scratch, kernel=spec["kernel"],
                               html=spec["html"], env=env, cwd=cwd)
        root = result.directory
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                 if p.is_file() and not p.name.startswith(".") and "checkpoints" not in p.relative_to(root).parts}
    return _outcome(result, files=files)


def write_back(directory: Path, stem: str, files: dict[str, bytes]) -> None:
    """Write a run's files sent by a worker into its run folder, the executed notebook last (it marks the run
    complete), each atomically."""
    repro.clear_stale(directory, stem)
    for name in sorted(files, key=lambda n: n == f"{stem}.ipynb"):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"a worker sent the file {name!r}, outside the run folder")
        atomic_write_bytes(directory / name, files[name])
        (directory / name).chmod(0o644)


# ---------------------------------------------------------------- pools: where tasks go

class Pool:
    """Runs here, one at a time: `submit` returns a finished Future (no Dask)."""

    token: str | None = None   # None: runs see the runs folder (they run in this process)

    def __init__(self, *, out: Path, kernel: str, html: bool, threads: int, gpus: int = 0):
        self.out, self.kernel, self.html, self.threads, self.gpus = out, kernel, html, threads, gpus
        self.gpu_ids: list[str] | None = None

    def describe(self, n: int) -> str:
        why = f" (OMP_NUM_THREADS = this machine's {cores()} cores)" if self.threads == cores() else ""
        return f"{n} runs, one after another in this process, {self.threads} torch thread(s) each{why}"

    def spec(self, notebook: Path, preset: str, seed: int) -> dict:
        return dict(stem=notebook.stem, path=str(notebook.resolve()), source=notebook.read_bytes(),
                    preset=preset, seed=int(seed), out=str(self.out), kernel=self.kernel, html=self.html,
                    threads=self.threads, token=self.token, gpus=self.gpus, gpu_ids=self.gpu_ids)

    def submit(self, spec: dict) -> Any:
        future: Future = Future()
        future.set_result(task(spec))   # an exception in the runner itself propagates: it is a bug, not a run's
        return future

    def close(self) -> None:
        pass


@contextmanager
def pool(settings: Dispatch, *, preset: str, out: Path, kernel: str, html: bool,
         log: Callable[[str], None]) -> Iterator[Pool]:
    """The pool `settings` asks for, closed (its LocalCluster stopped) on the way out."""
    gpus = settings.gpus_for(preset)
    if settings.workers == 1 and settings.scheduler is None:
        chosen: Pool = Pool(out=out, kernel=kernel, html=html, threads=settings.threads or cores(), gpus=gpus)
    else:
        from .cluster import DaskPool

        chosen = DaskPool(settings, out=out, kernel=kernel, html=html, gpus=gpus, log=log)
    try:
        yield chosen
    finally:
        chosen.close()


# ---------------------------------------------------------------- the client's loop

POLL_S = 0.2   # how often the client looks at its running tasks and at runs another call holds


@dataclass(eq=False)
class Job:
    notebook: Path
    preset: str
    seed: int
    directory: Path
    waiting_since: float | None = None   # when we found it locked by another `labkit reproduce`

    def __str__(self) -> str:
        return f"{self.notebook.stem} {self.preset} seed {self.seed}"


def drive(jobs: list[Job], runner: Pool, summary: Summary, bar: Any, write: Callable[[str], None]) -> None:
    """Queue every run this call can lock; wait for the others (locked by another call); record each as it ends."""
    queue, running, locks = list(jobs), {}, {}

    def collect() -> None:
        for future in [f for f in running if f.done()]:
            job = running.pop(future)
            try:
                result = _settle(job, future.result())
            except Exception as exc:  # noqa: BLE001 - the task itself failed (its worker died too often ...)
                result = RunResult(job.notebook.stem, job.preset, job.seed, job.directory, "failed",
                                   error=describe_error(exc))
            _record(result, summary, bar, write)   # before the release: error.txt is there for a waiting call
            locks.pop(job).release()

    try:
        while queue or running:
            for job in list(queue):
                lock = RunLock.acquire(job.directory)
                if lock is None:
                    if job.waiting_since is None:
                        job.waiting_since = time.time()
                        write(f"wait  {job}: another labkit reproduce is running it")
                    continue
                queue.remove(job)
                settled = _settled_elsewhere(job)
                if settled is not None:
                    lock.release()
                    _record(settled, summary, bar, write)
                    continue
                locks[job] = lock
                running[runner.submit(runner.spec(job.notebook, job.preset, job.seed))] = job
                collect()   # in this process the run has ended already: report it and unlock it now
            collect()
            bar.set_postfix_str(f"{len(running)} running" + (f", {len(queue)} waiting" if queue else ""))
            if queue or running:
                time.sleep(POLL_S)
    finally:   # interrupted: let another call have the runs at once (a dead process drops its flocks anyway)
        for lock in locks.values():
            lock.release()


def _settled_elsewhere(job: Job) -> RunResult | None:
    """A run that needs no attempt here: complete already, or failed in the call we waited for."""
    stem = job.notebook.stem
    if is_complete(job.directory, stem):
        status = "skipped" if job.waiting_since is None else "elsewhere"
        return RunResult(stem, job.preset, job.seed, job.directory, status)
    error = job.directory / ERROR_FILE
    if job.waiting_since is not None and error.is_file() and error.stat().st_mtime >= job.waiting_since - 1:
        return RunResult(stem, job.preset, job.seed, job.directory, "failed",
                         error="failed in another labkit reproduce: " + error.read_text().strip())
    return None   # never run, or its holder died before the end: run it here


def _settle(job: Job, outcome: dict) -> RunResult:
    """The RunResult of a finished task, its files written here first when the worker sent them."""
    if outcome.get("files") is not None:
        write_back(job.directory, job.notebook.stem, outcome["files"])
    result = RunResult(job.notebook.stem, job.preset, job.seed, job.directory, outcome["status"],
                       outcome["seconds"], outcome["error"])
    if result.status == "failed":
        atomic_write_bytes(job.directory / ERROR_FILE, (result.error + "\n").encode())
    return result


def _record(result: RunResult, summary: Summary, bar: Any, write: Callable[[str], None]) -> None:
    summary.results.append(result)
    bar.update(1)
    what = f"{result.notebook} {result.preset} seed {result.seed}"
    if result.status == "done":
        write(f"done  {what} in {result.seconds:.0f} s -> {result.directory}")
    elif result.status == "skipped":
        write(f"skip  {what}: already complete in {result.directory}")
    elif result.status == "elsewhere":
        write(f"skip  {what}: completed by another labkit reproduce -> {result.directory}")
    else:
        failed = result.directory / f"{result.notebook}{FAILED_SUFFIX}"
        write(f"FAIL  {what} after {result.seconds:.0f} s: {result.error}"
              + (f"\n      the executed notebook, stopped at the error: {failed}" if failed.exists() else ""))
