"""Executors: who runs a build's render jobs and its analysis.

- ``LocalExecutor`` (the default, no dependencies): everything in this process, jobs in plan order.
- ``RayExecutor`` (``--executor ray``, ``pip install 'reportgen[ray]'``): jobs go to Ray actors,
  one per GPU (``num_gpus=1``) or per ``CPUS_PER_WORKER`` CPUs, each holding the model from its
  start to the end of the build. Plain Ray GPU tasks would start a new process, and load torch
  and the model again, for every task. A worker that dies is restarted and its jobs are retried
  (``max_restarts``, ``max_task_retries``); the driver stores every result, so nothing a worker
  did half is ever seen.

Both run ``renders.run_job``, the same function on the same chunks, so they make the same images.
``run(loaded, jobs, magnitude, progress, on_result)`` calls ``on_result(job, results, seconds)``
in the driver for each finished job; ``analyze(function, *args)`` runs the analysis stage, a
function of the model and its arguments, where the renders run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

from .errors import UsageError
from .renders import RenderJob, job_steps, job_work, run_timed

CPUS_PER_WORKER = 2  # a CPU worker's torch threads (a CPU render gains little beyond two)
WORKER_RESTARTS = 3  # times Ray restarts a dead worker; its unfinished jobs are retried on the new one
IN_FLIGHT_PER_WORKER = 2  # jobs queued on each worker, so it never waits for the driver


class LocalExecutor:
    """Every job in this process, in plan order; progress advances with each optimizer step."""

    name = "local"

    def analyze(self, loaded, function: Callable, *args, progress=None):
        return function(loaded, *args, progress=progress)

    def run(self, loaded, jobs: Sequence[RenderJob], magnitude, progress, on_result: Callable) -> None:
        for job in jobs:
            progress.stage(f"{loaded.name} · {job.kind} · {job.layer}")
            share = job_work(job) / job_steps(job)
            results, seconds = run_timed(loaded, job, magnitude, lambda _step: progress.advance(share))
            on_result(job, results, seconds)

    def close(self) -> None:
        pass


class RayExecutor:
    """Jobs on Ray actors (see the module docstring).

    Args:
        address: a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); ``None``
            starts a local one on this machine.
        workers: how many actors; default one per GPU of the cluster, else one per
            ``CPUS_PER_WORKER`` CPUs.
    Raises:
        UsageError: Ray is not installed, or the cluster cannot be reached.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'reportgen[ray]' (or pip install ray), "
                             "or use --executor local") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                # A cluster started here runs its workers at the priority of a local build: Ray's default
                # (worker_niceness 15) lets any other process on the machine take their CPU first.
                joining = address or os.environ.get("RAY_ADDRESS")
                system = None if joining else {"worker_niceness": 0}
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=False, _system_config=system)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"--ray-address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]}); "
                                 "start one with `ray start --head`, or leave out --ray-address for a local one") from None
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        self.workers = workers or (self.gpus or max(1, cpus // CPUS_PER_WORKER))
        self.cpus_per_worker = 1 if self.gpus else max(1, min(CPUS_PER_WORKER, cpus // self.workers))
        self._actors: list = []
        self._model_key = self._model_ref = None

    def _pool(self, loaded) -> list:
        """The actors for ``loaded``, made once per model; a restarted actor gets the model again."""
        key = (loaded.name, loaded.weights.digest)
        if self._model_key != key:
            self._kill()
            cpu = dataclasses.replace(loaded, module=loaded.module.cpu(), device=_cpu())
            self._model_ref = model_ref = self.ray.put(cpu)  # kept: a restarted actor is made from it again
            loaded.module.to(loaded.device)
            options = {"max_restarts": WORKER_RESTARTS, "max_task_retries": WORKER_RESTARTS,
                       "num_cpus": self.cpus_per_worker, "num_gpus": 1 if self.gpus else 0}
            actor = self.ray.remote(RenderWorker).options(**options)
            self._actors = [actor.remote(model_ref, self.cpus_per_worker) for _ in range(self.workers)]
            self._model_key = key
        return self._actors

    def analyze(self, loaded, function: Callable, *args, progress=None):
        """``function(loaded, *args)`` on a worker, which reads and writes the store itself."""
        if progress is not None:
            progress.stage(f"{loaded.name}: analysis on a Ray worker")
        actor = self._pool(loaded)[0]
        return self.ray.get(actor.call.remote(function, *args))

    def run(self, loaded, jobs: Sequence[RenderJob], magnitude, progress, on_result: Callable) -> None:
        if not jobs:
            return
        actors = self._pool(loaded)
        magnitude_ref = self.ray.put(magnitude)  # sent once; every job's task reads it from Ray's object store
        queue = list(jobs)
        running: dict = {}  # object ref -> (job, actor)

        def submit(actor):
            job = queue.pop(0)
            running[actor.run.remote(job, magnitude_ref)] = (job, actor)

        progress.stage(f"{loaded.name}: {len(jobs)} jobs on {len(actors)} Ray worker(s)")
        for actor in actors:
            for _ in range(IN_FLIGHT_PER_WORKER):
                if queue:
                    submit(actor)
        while running:
            done, _ = self.ray.wait(list(running), num_returns=1)
            job, actor = running.pop(done[0])
            results, seconds = self.ray.get(done[0])
            on_result(job, results, seconds)
            progress.advance(job_work(job))
            if queue:
                submit(actor)

    def _kill(self) -> None:
        for actor in self._actors:
            self.ray.kill(actor, no_restart=True)
        self._actors, self._model_key = [], None

    def close(self) -> None:
        self._kill()
        if self.started_here:
            self.ray.shutdown()


class RenderWorker:
    """A Ray actor: one model on its device for the whole build; runs jobs with ``run_job``."""

    def __init__(self, loaded, threads: int):
        import torch

        from .models import resolve_device

        torch.set_num_threads(threads)
        device = resolve_device("auto")  # Ray shows an actor only the GPU it was given
        self.loaded = dataclasses.replace(loaded, module=loaded.module.to(device), device=device)

    def run(self, job: RenderJob, magnitude):
        return run_timed(self.loaded, job, magnitude)

    def call(self, function: Callable, *args):
        return function(self.loaded, *args)


def _cpu():
    import torch

    return torch.device("cpu")


def make_executor(name: str, address: str | None = None):
    """The executor ``--executor NAME`` asks for (``local`` or ``ray``, as ``config`` checked).

    Raises:
        UsageError: Ray is missing or its cluster unreachable.
    """
    return RayExecutor(address) if name == "ray" else LocalExecutor()
