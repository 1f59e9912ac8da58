"""Where analyses run: worker processes on this machine, or a Dask cluster.

An executor takes the stale tasks and a ``Runner`` (``execute.py``: how one analysis
runs, here or shipped to a worker) and returns one ``Outcome`` per task, reporting each
as it finishes and, every ``POLL`` seconds, what still runs. What an analysis computes,
its cache key, manifest and error reporting do not depend on the executor.

- ``LocalExecutor``: a pool of forked processes, ``jobs`` at a time, the CPU cores split
  between their kernels. The workers die with the build, however it ends, and take
  their kernels with them (``children.py``).
- ``DaskExecutor``: each analysis is a task on a ``dask.distributed`` cluster, given by
  its scheduler's address or, without one, a ``LocalCluster`` started here for the run.
  Workers need not share this machine's files: the task carries them, and only this
  process commits results. A task that needs a GPU asks for one unit of the configured
  worker resource; a worker that dies makes the scheduler run the task elsewhere, up to
  ``retries`` times, after which the analysis fails with nothing recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from livingreview.execution.plan import Task, device_class, usable_cores
from livingreview.load.config import CONFIG_NAME, ExecutorConfig
from livingreview.util import children
from livingreview.util.errors import Location, Problem, SchedulingError, ToolError
from livingreview.util.words import counted

if TYPE_CHECKING:
    from livingreview.execution.execute import Outcome, Runner

POLL = 10  # seconds between "still running" lines
WORKER_WAIT = 60  # seconds to wait for a first worker of an external cluster
STOP_GRACE = 3.0  # seconds a stopped worker process has to kill its kernels and exit before it is killed
CLUSTER_STOP = 0.3  # seconds a stopped LocalCluster worker has to close before its nanny kills it
# What stops a local worker process now. Not SIGTERM or SIGINT: while a notebook runs,
# nbclient catches those in the worker to shut its kernel down, and the worker carries on.
STOP = signal.SIGUSR1

Report = Callable[[str], None]


class Executor(Protocol):
    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        """Run every task; return their outcomes (failures included) once all have finished."""


def create(config: ExecutorConfig, jobs: int | None) -> Executor:
    return DaskExecutor(config, jobs) if config.kind == "dask" else LocalExecutor(jobs)


def _drain(
    futures: dict[Any, Task],
    wait: Callable[[list[Any]], Iterable[Any]],
    finish: Callable[[Any, Task], Outcome],
    running: Callable[[Task], str],
    report: Report,
) -> list[Outcome]:
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


def _worker_started(parent: int) -> None:
    """First thing in each local worker process: stop with the build, however the build ends."""
    signal.signal(STOP, _worker_stop)
    # Ctrl-C in a terminal reaches the whole process group: the build decides, and stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the build's handler, which the fork copied
    children.die_with_parent(parent, STOP)


def _worker_stop(signum: int, frame: Any) -> None:
    # The kernels run in sessions of their own, so their groups are killed first, with what they started.
    children.kill_groups()
    os._exit(128 + signum)


def _stop_workers(processes: list[multiprocessing.Process]) -> None:
    """Stop worker processes now; kill those that have not exited within ``STOP_GRACE``."""
    running = [p for p in processes if p.exitcode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            if process.pid is not None:
                os.kill(process.pid, STOP)
    # Sentinels, not join(): the pool's own thread may be reaping the same processes.
    pending: dict[Any, multiprocessing.Process] = {process.sentinel: process for process in running}
    deadline = time.monotonic() + STOP_GRACE
    while pending and (left := deadline - time.monotonic()) > 0:
        for sentinel in multiprocessing.connection.wait(list(pending), left):
            pending.pop(sentinel)
    for process in pending.values():
        process.kill()
    for sentinel in list(pending):
        multiprocessing.connection.wait([sentinel], 1.0)


class LocalExecutor:
    """Forked worker processes on this machine, ``jobs`` at a time (default: the CPU cores)."""

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs

    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        jobs = max(1, min(self.jobs or usable_cores(), len(tasks)))
        # Split the cores between concurrent kernels so BLAS/torch threads do not oversubscribe.
        threads = max(1, usable_cores() // jobs)
        context = multiprocessing.get_context("fork")
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_worker_started, initargs=(os.getpid(),)
        )

        def stop() -> None:
            # The pool cannot stop a running task (its shutdown waits for the analyses to finish),
            # so its processes are stopped directly.
            _stop_workers(list((pool._processes or {}).values()))

        try:
            with children.stoppable(stop):
                futures = {pool.submit(runner.here, task, threads): task for task in tasks}
                return _drain(
                    futures,
                    lambda fs: concurrent.futures.wait(fs, timeout=POLL).done,
                    lambda future, task: future.result(),
                    runner.progress,
                    report,
                )
        except BaseException:
            stop()
            if children.stopping():
                children.end_thread()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _stop_cluster(cluster: Any) -> None:
    """Stop a LocalCluster's worker processes now, with their kernels.

    Closing it as usual would give each worker 4 s to finish, which a running analysis
    never does.
    """

    async def close() -> None:
        await asyncio.gather(
            *(
                nanny.close(timeout=CLUSTER_STOP, reason="livingreview-stopped")
                for nanny in list(cluster.workers.values())
            )
        )

    with contextlib.suppress(Exception):
        cluster.sync(close)


class DaskExecutor:
    """Each analysis a task on a Dask cluster: ``config.scheduler``'s, or a LocalCluster of ``jobs`` processes."""

    def __init__(self, config: ExecutorConfig, jobs: int | None = None):
        self.config = config
        self.jobs = jobs

    def run(self, tasks: list[Task], runner: Runner, report: Report) -> list[Outcome]:
        # dask.distributed is imported only by a run that uses it: its import takes over half a second.
        from distributed import wait

        def done(futures: list[Any]) -> list[Any]:
            deadline = time.monotonic() + POLL
            # In slices: stop_all (serve's Ctrl-C) leaves these futures pending, with no worker to run them.
            while not children.stopping():
                with contextlib.suppress(TimeoutError):
                    wait(futures, timeout=min(1.0, POLL), return_when="FIRST_COMPLETED")
                finished = [future for future in futures if future.done()]
                if finished or time.monotonic() >= deadline:
                    return finished
            children.end_thread()

        with self._client(len(tasks), report) as (client, threads):
            self._check_gpu(client, tasks)
            futures = {}
            for task in tasks:
                resources = {self.config.gpu_resource: 1} if task.gpu else None
                future = client.submit(
                    runner.remote,
                    runner.ship(task, threads),
                    key=f"analysis-{task.name}-{uuid.uuid4().hex[:8]}",
                    pure=False,
                    retries=self.config.retries,
                    resources=resources,
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
        # Deferred as in run(): only a Dask run imports dask.
        import dask
        from distributed import Client, LocalCluster

        address = self.config.scheduler
        if address is None:
            workers = max(1, min(self.jobs or usable_cores(), count))
            # This machine's GPU, if it has one, is shared by its workers as local runs share it.
            resources = {self.config.gpu_resource: 1} if device_class()[0] == "cuda" else None
            with dask.config.set({"distributed.scheduler.allowed-failures": self.config.retries}):
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, resources=resources
                )
            report(f"  Dask LocalCluster {cluster.scheduler_address}: {counted(workers, 'worker process')}")
            with cluster, Client(cluster) as client, children.stoppable(lambda: _stop_cluster(cluster)):
                try:
                    yield client, max(1, usable_cores() // workers)
                except BaseException:
                    _stop_cluster(cluster)
                    raise
            return
        try:
            client = Client(address)
        except OSError as exc:
            raise ToolError(
                Problem(
                    Location("Dask scheduler", key=address),
                    f"cannot be reached: {exc}",
                    "start the cluster first and pass its scheduler_address (--scheduler or executor.scheduler)",
                )
            ) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, OSError):
                raise SchedulingError(
                    Problem(
                        Location("Dask scheduler", key=address),
                        f"no worker connected within {WORKER_WAIT} s",
                        "start workers ('dask worker ADDRESS') or scale the cluster (cluster.scale(jobs=N))",
                    )
                ) from None
            count = len(client.scheduler_info(n_workers=-1)["workers"])
            report(f"  Dask scheduler {address}: {counted(count, 'worker')}")
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
        none = (
            "the one Dask worker does not advertise"
            if len(workers) == 1
            else f"none of the {len(workers)} Dask workers advertises"
        )
        raise SchedulingError(
            [
                Problem(
                    Location(CONFIG_NAME, key=f"analyses.{task.name}.gpu_profiles"),
                    f"analysis {task.name!r} needs a GPU (profile {task.profile!r} is in its gpu_profiles), but {none} "
                    f"the resource {resource!r}",
                    f"start GPU workers with 'dask worker ADDRESS --resources {resource}=1', or build with --profile ci",
                )
                for task in needing
            ]
        )

    def _finish(self, future: Any, task: Task, runner: Runner, seconds: float) -> Outcome:
        # Deferred as in run(): only a Dask run imports dask.
        from distributed.scheduler import KilledWorker

        try:
            returned = future.result()
        except KilledWorker as exc:
            last = getattr(exc.last_worker, "address", exc.last_worker)
            return runner.failed(
                task,
                f"failed: its Dask worker died {counted(exc.allowed_failures + 1, 'time')} (last on {last})",
                "the analysis may exhaust the worker's memory or crash its process (see the worker's log); "
                "raise the worker memory limit, or executor.retries",
                seconds,
            )
        except Exception as exc:  # raised by the task itself (not by the notebook), after its retries
            return runner.failed(
                task,
                f"failed on a Dask worker: {type(exc).__name__}: {exc}",
                "workers need this machine's environment: ci/requirements.lock and this project installed "
                "(docs/reviewing.md)",
                seconds,
            )
        return runner.land(task, returned)
