"""Where analyses run: worker processes on this machine, or a Dask cluster.

An executor takes the stale tasks and a ``Runner`` (``execute.py``: how one analysis
runs, here or shipped to a worker) and returns one ``Outcome`` per task, reporting each
as it finishes and, every ``POLL`` seconds, what still runs. What an analysis computes,
its cache key, manifest and error reporting do not depend on the executor.

- ``LocalExecutor``: a pool of forked processes, ``jobs`` at a time, the CPU cores split
  between their kernels.
- ``DaskExecutor``: each analysis is a task on a ``dask.distributed`` cluster, given by
  its scheduler's address or, without one, a ``LocalCluster`` started here for the run.
  Workers need not share this machine's files: the task carries them, and only this
  process commits results. A task that needs a GPU asks for one unit of the configured
  worker resource; a worker that dies makes the scheduler run the task elsewhere, up to
  ``retries`` times, after which the analysis fails with nothing recorded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from livingreview.config import CONFIG_NAME, ExecutorConfig
from livingreview.errors import ConfigError, Location, Problem, SchedulingError, ToolError
from livingreview.plan import Task, device_class

if TYPE_CHECKING:
    from livingreview.execute import Outcome, Runner

POLL = 10  # seconds between "still running" lines
WORKER_WAIT = 60  # seconds to wait for a first worker of an external cluster

Report = Callable[[str], None]


class Executor(Protocol):
    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        """Run every task; return their outcomes (failures included) once all have finished."""


def override(config: ExecutorConfig, kind: str | None, scheduler: str | None) -> ExecutorConfig:
    """The configured executor with the command line's ``--executor`` / ``--scheduler`` applied."""
    if scheduler and kind == "local":
        raise ConfigError(Problem(Location("command line", key="--scheduler"), "a scheduler address needs --executor dask"))
    if scheduler:
        return config.model_copy(update={"kind": "dask", "scheduler": scheduler})
    if kind:
        return config.model_copy(update={"kind": kind, "scheduler": config.scheduler if kind == "dask" else None})
    return config


def create(config: ExecutorConfig, jobs: int | None) -> Executor:
    return DaskExecutor(config, jobs) if config.kind == "dask" else LocalExecutor(jobs)


def _drain(futures: dict[Any, Task], wait: Callable[[list[Any]], list[Any]], finish: Callable[[Any, Task], Outcome],
           running: Callable[[Task], str], report: Report) -> list[Outcome]:
    """Collect the outcomes as the futures finish, reporting each one and, between them, what still runs."""
    outcomes = []
    started = time.perf_counter()
    pending = dict(futures)
    while pending:
        for future in wait(list(pending)):
            outcome = finish(future, pending.pop(future))
            outcomes.append(outcome)
            mark = "ran" if outcome.ok else "FAILED"
            where = f" on {outcome.where}" if outcome.where else ""
            report(f"  {outcome.name}: {mark} in {outcome.seconds:.1f} s{where}")
        if pending:
            still = ", ".join(f"{task.name} ({running(task)})" for task in pending.values())
            report(f"  still running after {time.perf_counter() - started:.0f} s: {still}")
    return outcomes


class LocalExecutor:
    """Forked worker processes on this machine, ``jobs`` at a time (default: the CPU cores)."""

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs

    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        jobs = max(1, min(self.jobs or os.cpu_count() or 1, len(tasks)))
        # Split the cores between concurrent kernels so BLAS/torch threads do not oversubscribe.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(runner.here, task, threads): task for task in tasks}
            return _drain(
                futures,
                lambda fs: concurrent.futures.wait(fs, timeout=POLL).done,
                lambda future, task: future.result(),
                runner.progress,
                report,
            )


class DaskExecutor:
    """Each analysis a task on a Dask cluster: ``config.scheduler``'s, or a LocalCluster of ``jobs`` processes."""

    def __init__(self, config: ExecutorConfig, jobs: int | None = None):
        self.config = config
        self.jobs = jobs

    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        from distributed import wait

        def done(futures: list[Any]) -> list[Any]:
            try:
                wait(futures, timeout=POLL, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            return [future for future in futures if future.done()]

        with self._client(len(tasks), report) as (client, threads):
            self._check_gpu(client, tasks)
            futures = {}
            for task in tasks:
                resources = {self.config.gpu_resource: 1} if task.gpu else None
                future = client.submit(
                    runner.remote, runner.ship(task, threads), key=f"analysis-{task.name}-{uuid.uuid4().hex[:8]}",
                    pure=False, retries=self.config.retries, resources=resources,
                )
                futures[future] = task
            keys = {task.name: future.key for future, task in futures.items()}
            submitted = time.perf_counter()

            def running(task: Task) -> str:
                workers = [w for w, held in client.processing().items() if keys[task.name] in held]
                return f"on {workers[0]}" if workers else "waiting for a worker"

            def finish(future: Any, task: Task) -> Outcome:
                try:
                    return self._finish(future, task, runner, time.perf_counter() - submitted)
                finally:
                    # Not kept in the cluster's memory: a worker that dies later would make it run again.
                    future.release()

            return _drain(futures, done, finish, running, report)

    @contextlib.contextmanager
    def _client(self, count: int, report: Report) -> Iterator[tuple[Any, int | None]]:
        """A client of the configured cluster (left running), or of a LocalCluster for this run (closed after)."""
        import dask
        from distributed import Client, LocalCluster

        address = self.config.scheduler
        if address is None:
            workers = max(1, min(self.jobs or os.cpu_count() or 1, count))
            # This machine's GPU, if it has one, is shared by its workers as local runs share it.
            resources = {self.config.gpu_resource: 1} if device_class()[0] == "cuda" else None
            with dask.config.set({"distributed.scheduler.allowed-failures": self.config.retries}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                       resources=resources)
            plural = "es" if workers > 1 else ""
            report(f"  Dask LocalCluster {cluster.scheduler_address}: {workers} worker process{plural}")
            with cluster, Client(cluster) as client:
                yield client, max(1, (os.cpu_count() or 1) // workers)
            return
        try:
            client = Client(address)
        except OSError as exc:
            raise ToolError(
                Problem(Location("Dask scheduler", key=address), f"cannot be reached: {exc}",
                        "start the cluster first and pass its scheduler_address (--scheduler or executor.scheduler)")
            ) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, OSError):
                raise SchedulingError(
                    Problem(Location("Dask scheduler", key=address), f"no worker connected within {WORKER_WAIT} s",
                            "start workers ('dask worker ADDRESS') or scale the cluster (cluster.scale(jobs=N))")
                ) from None
            count = len(client.scheduler_info(n_workers=-1)["workers"])
            report(f"  Dask scheduler {address}: {count} worker{'s' if count > 1 else ''}")
            yield client, None

    def _check_gpu(self, client: Any, tasks: list[Task]) -> None:
        """Fail before anything runs if a task needs a GPU and no connected worker advertises one."""
        needing = [task for task in tasks if task.gpu]
        if not needing:
            return
        resource = self.config.gpu_resource
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if any(info.get("resources", {}).get(resource, 0) >= 1 for info in workers.values()):
            return
        raise SchedulingError(
            [
                Problem(
                    Location(CONFIG_NAME, key=f"analyses.{task.name}.gpu_profiles"),
                    f"analysis {task.name!r} needs a GPU (profile {task.profile!r} is in its gpu_profiles), but none of "
                    f"the {len(workers)} Dask workers advertises the resource {resource!r}",
                    f"start GPU workers with 'dask worker ADDRESS --resources {resource}=1', or build with --profile ci",
                )
                for task in needing
            ]
        )

    def _finish(self, future: Any, task: Task, runner: Runner, seconds: float) -> Outcome:
        from distributed.scheduler import KilledWorker

        try:
            returned = future.result()
        except KilledWorker as exc:
            last = getattr(exc.last_worker, "address", exc.last_worker)
            return runner.failed(
                task, f"failed: its Dask worker died {exc.allowed_failures + 1} times (last on {last})",
                "the analysis may exhaust the worker's memory or crash its process (see the worker's log); "
                "raise the worker memory limit, or executor.retries", seconds,
            )
        except Exception as exc:  # raised by the task itself (not by the notebook), after its retries
            return runner.failed(
                task, f"failed on a Dask worker: {type(exc).__name__}: {exc}",
                "workers need this machine's environment: ci/requirements.lock and this project installed "
                "(docs/reviewing.md)", seconds,
            )
        return runner.land(task, returned)
