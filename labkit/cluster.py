"""Dask pools for `labkit reproduce` (the only module importing `distributed`): a LocalCluster on this machine, or
the cluster a scheduler address names. See `labkit.dispatch` for what a task does, the locks and the threads."""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from .dispatch import PROBE_PREFIX, Dispatch, Pool, cores, sees_out, task
from .trace import atomic_write_bytes


class DaskPool(Pool):
    """Runs as Dask tasks on a LocalCluster it starts, or on the cluster at `scheduler`."""

    def __init__(self, settings: Dispatch, *, out: Path, kernel: str, html: bool, gpus: int,
                 log: Callable[[str], None]):
        from distributed import Client

        super().__init__(out=out, kernel=kernel, html=html, threads=settings.threads, gpus=gpus)
        self.cluster, self.log = None, log
        self.token = uuid.uuid4().hex
        self.probe = out / f"{PROBE_PREFIX}{self.token}"
        atomic_write_bytes(self.probe, self.token.encode())
        try:
            if settings.scheduler is None:
                self.client = Client(self._local_cluster(settings.workers))
            else:
                self.client = Client(getattr(settings.scheduler, "scheduler_address", settings.scheduler),
                                     timeout="60s")
            self.info = self._check_workers()
        except BaseException:
            self.close()
            raise

    def _local_cluster(self, workers: int) -> Any:
        from distributed import LocalCluster

        if self.gpus:
            self.gpu_ids = visible_gpus()
            if len(self.gpu_ids) < self.gpus:
                raise ValueError(f"each run asks for {self.gpus} GPU(s) and this machine has {len(self.gpu_ids)}: "
                                 "give --gpus 0 to run on CPUs")
            if workers > len(self.gpu_ids) // self.gpus:
                workers = len(self.gpu_ids) // self.gpus
                self.log(f"{workers} worker(s): one per {self.gpus} GPU(s) of this machine")
        self.threads = self.threads or max(1, cores() // workers)
        # silence_logs: the scheduler's and workers' INFO chatter off; their warnings (a worker restarted) stay
        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    silence_logs=logging.WARNING, resources={"GPU": self.gpus} if self.gpus else None)
        return self.cluster

    def _check_workers(self) -> dict:
        """Every worker present: can it run the kernel, does it see the runs folder, has it a GPU if runs need one."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        if not info:
            return {}
        try:
            seen = self.client.run(worker_info, str(self.out), self.token, self.kernel)
        except ImportError as exc:
            raise ValueError(f"the Dask workers cannot import labkit ({exc}): install labkit in their "
                             "environment (the same version as here)") from exc
        lacking = [a for a, w in seen.items() if not w["kernel"]]
        if lacking:
            raise ValueError(f"workers {lacking} have no Jupyter kernel {self.kernel!r}: install ipykernel in "
                             f"their environment (python -m ipykernel install --user --name {self.kernel})")
        if self.gpus and not any(w.get("resources", {}).get("GPU", 0) >= self.gpus for w in info.values()):
            raise ValueError(f"each run asks for {self.gpus} GPU(s) (the Dask resource GPU) and no worker declares "
                             "one: start workers with --resources GPU=1, or give --gpus 0 to run on CPUs")
        return seen

    def describe(self, n: int) -> str:
        gpu = f", {self.gpus} GPU(s) per run" if self.gpus else ""
        if self.cluster is not None:
            k = len(self.cluster.workers)
            why = f" (OMP_NUM_THREADS = {cores()} cores // {k} workers)" if self.threads == cores() // k else ""
            where = f"a Dask LocalCluster of {k} worker processes, {self.threads} torch thread(s) per run{why}"
        else:
            threads = self.threads or "a worker's cores // the runs it holds at once"
            where = (f"the Dask cluster at {self.client.scheduler_info()['address']}: {self._sharing()}; torch "
                     f"threads per run: {threads}")
        return f"{n} runs on {where}{gpu}; dashboard: {self._dashboard()}"

    def _sharing(self) -> str:
        if not self.info:
            return "no worker has joined yet (the runs wait for workers)"
        shared = sum(w["shared"] for w in self.info.values())
        hosts = len({w["host"] for w in self.info.values()})
        return (f"{len(self.info)} workers on {hosts} host(s); {shared} see {self.out} (files written in place), "
                f"{len(self.info) - shared} do not (each run's files come back through Dask)")

    def _dashboard(self) -> str:
        if "dashboard" not in self.client.scheduler_info().get("services", {}):
            return "none (the scheduler runs none)"
        if self.cluster is not None and importlib.util.find_spec("bokeh") is None:
            return f"{self.client.dashboard_link} (its pages need bokeh: pip install 'labkit[cluster]')"
        return self.client.dashboard_link

    def submit(self, spec: dict) -> Any:
        key = f"labkit-{spec['stem']}-{spec['preset']}-seed{spec['seed']}-{uuid.uuid4().hex[:8]}"
        # a worker that dies mid-run loses its task and the scheduler gives it to another worker
        # (distributed.scheduler.allowed-failures times); pure=False: never merge two runs into one
        return self.client.submit(task, spec, key=key, pure=False,
                                  resources={"GPU": self.gpus} if self.gpus else None)

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            # a worker still busy exiting (a restarted one importing torch) is killed after 4 s with a WARNING
            # that means nothing once every run is in: keep it off the terminal, keep errors
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(logging.ERROR)
            try:
                self.cluster.close()
            finally:
                nanny.setLevel(level)
        self.probe.unlink(missing_ok=True)


def worker_info(out: str, token: str, kernel: str) -> dict:
    """What a worker tells the client at start (run on every worker with `Client.run`)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return dict(host=socket.gethostname(), shared=sees_out(out, token), cores=cores(),
                kernel=kernel in KernelSpecManager().find_kernel_specs())


def visible_gpus() -> list[str]:
    """The GPU ids CUDA_VISIBLE_DEVICES would name, one per GPU torch sees."""
    import torch

    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else [str(i) for i in range(n)]
    return ids[:n]
