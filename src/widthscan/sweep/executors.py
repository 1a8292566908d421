"""Executors: submit a function of a RunSpec, get results back. None contains training code."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from widthscan.config import ExecutorConfig
from widthscan.sweep.plan import RunSpec

RunFn = Callable[[RunSpec], dict]
Results = Iterator[tuple[RunSpec, dict]]
EXECUTORS = ("local", "dask", "submitit")


def run_local(fn: RunFn, specs: list[RunSpec], cfg: ExecutorConfig) -> Results:
    """In-process, one run after another."""
    for spec in specs:
        yield spec, fn(spec)


def run_dask(fn: RunFn, specs: list[RunSpec], cfg: ExecutorConfig) -> Results:
    """dask.distributed: a LocalCluster of ``workers`` single-threaded processes, or the
    cluster at ``scheduler`` (dask-jobqueue, Kubernetes, ...). Tasks lost with a dead
    worker are retried ``retries`` times; runs resume from their checkpoints."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if cfg.scheduler:
        client = Client(cfg.scheduler)
    else:
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {client.submit(fn, s, key=f"widthscan-{s.name}-{os.getpid()}",
                                 retries=cfg.retries, pure=False): s for s in specs}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class _SubmititRun:
    """A submitit callable that requeues itself on preemption; the run resumes from its
    last checkpoint because batches are addressed by step."""

    def __init__(self, fn: RunFn):
        self.fn = fn

    def __call__(self, spec: RunSpec) -> dict:
        return self.fn(spec)

    def checkpoint(self, spec: RunSpec):
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


def run_submitit(fn: RunFn, specs: list[RunSpec], cfg: ExecutorConfig) -> Results:
    """SLURM job arrays through submitit (``cluster="local"`` runs them as local processes)."""
    import submitit

    folder = cfg.folder or str(Path(specs[0].sweep_dir) / "submitit" if specs else "submitit")
    cluster = None if cfg.cluster == "auto" else cfg.cluster
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": cfg.time_min}
    if executor.cluster == "slurm":
        params.update(slurm_array_parallelism=cfg.array_parallelism,
                      gpus_per_node=cfg.gpus_per_task)
        if cfg.partition:
            params["slurm_partition"] = cfg.partition
    executor.update_parameters(**params)
    jobs = executor.map_array(_SubmititRun(fn), specs)
    for spec, job in zip(specs, jobs):
        yield spec, job.result()


def get_executor(kind: str) -> Callable[[RunFn, list[RunSpec], ExecutorConfig], Results]:
    table = {"local": run_local, "dask": run_dask, "submitit": run_submitit}
    if kind not in table:
        raise ValueError(f"executor={kind!r}; allowed: {EXECUTORS}")
    return table[kind]
