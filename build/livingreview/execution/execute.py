"""Stage "execute": run stale analyses with Papermill, in parallel, into ``output/analyses/``.

Each analysis runs in its own worker process and writes into a staging folder. Only a
notebook that ran to the end, with well-formed records, becomes a result (see
``results.commit``). A failure is reported with the analysis, the cell, the exception
and the saved partial notebook, after the other analyses have finished and been kept.

Where the worker processes are is the executor's business (``executors.py``): here, or
on a Dask cluster. On a cluster the notebook, its local modules and inputs are shipped
to the worker (``Shipment``), run there by the same ``_run_notebook`` into a scratch
folder, and the folder comes back (``Returned``) to be committed here, by this process
only, exactly as a local run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from livingreview.execution import notebook as nb
from livingreview.execution.plan import Task, device_class, usable_cores
from livingreview.load import results
from livingreview.load.config import Config
from livingreview.record import RECORD_DIR_ENV
from livingreview.util import children
from livingreview.util.errors import Location, Problem
from livingreview.util.hashing import sha256_file

PACKAGES = ("livingreview", "papermill", "nbformat", "jupytext", "numpy", "scipy", "torch", "matplotlib", "pandas")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _Reported(logging.Filter):
    """Drops nbclient's lines about a timeout or a dead kernel: the analysis's failure says it, with the cell."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Timeout waiting for execute reply", "Kernel died while waiting"))


logging.getLogger("papermill").addFilter(_Reported())


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    problem: Problem | None = None
    where: str = ""  # the Dask worker that ran it; empty for a local run


@dataclass
class Attempt:
    """How running a notebook into a folder went; on failure, why, in which cell, and what to do about it."""

    ok: bool
    seconds: float
    error: str | None = None  # "raised RuntimeError: ...", "failed: ValueError: ...", "exceeded its time limit ..."
    cell: int | None = None  # the executed notebook's cell that raised, or was running when the kernel stopped
    hint: str | None = None
    traceback: bool = True  # whether the partial notebook shows a traceback


@dataclass(frozen=True)
class Limit:
    """How long an analysis may run, and the manuscript.yaml key that says so."""

    seconds: float
    key: str


def time_limit(config: Config, task: Task) -> Limit:
    """The most specific of analyses.<name>.profile_timeouts.<profile>, analyses.<name>.timeout, executor.timeout."""
    analysis = config.analyses.get(task.name)
    if analysis is not None and task.profile in analysis.profile_timeouts:
        return Limit(analysis.profile_timeouts[task.profile], f"analyses.{task.name}.profile_timeouts.{task.profile}")
    if analysis is not None and analysis.timeout is not None:
        return Limit(analysis.timeout, f"analyses.{task.name}.timeout")
    return Limit(config.executor.timeout, "executor.timeout")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def _cell_of(executed: nbformat.NotebookNode, count: int | None) -> tuple[int | None, str | None]:
    for index, cell in enumerate(executed.cells):
        if cell.cell_type == "code" and count is not None and cell.get("execution_count") == count:
            return index, cell.get("id")
    return None, None


def _manifest(
    task: Task,
    project_root: Path,
    staging: Path,
    notebook_name: str,
    seconds: float,
    started: str,
    revision: dict[str, Any] | None,
    executor: dict[str, str],
) -> results.Manifest:
    executed = nbformat.read(staging / notebook_name, as_version=4)
    # Jupytext and Papermill give cells random ids, which would make values.json and the
    # executed notebook differ on every run of the same code: ids follow the cell's place.
    for index, cell in enumerate(executed.cells):
        cell["id"] = f"cell-{index}"
    nbformat.write(executed, staging / notebook_name)
    records: dict[str, dict[str, Any]] = {}
    record_file = staging / "records.jsonl"
    lines = record_file.read_text(encoding="utf-8").splitlines() if record_file.exists() else []
    for line in lines:
        entry = json.loads(line)
        if entry["key"] in records:
            raise ValueError(f"key {entry['key']!r} was recorded twice")
        entry["cell"], entry["cell_id"] = _cell_of(executed, entry.pop("cell_execution_count"))
        records[entry["key"]] = entry
    record_file.unlink(missing_ok=True)
    dev_class, dev_name = device_class()
    files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    return results.Manifest(
        analysis=task.name,
        notebook=os.path.relpath(task.notebook_path, project_root),
        executed_notebook=notebook_name,
        key=task.key,
        profile=task.profile,
        parameters=task.parameters,
        inputs=task.inputs,
        modules=task.modules,
        key_parts=task.parts,
        git=results.GitInfo(**revision) if revision is not None else None,
        packages=_versions(),
        device=results.Device.model_validate({"class": dev_class, "name": dev_name, "host": platform.node()}),
        executor=results.ExecutorInfo(**executor),
        started=started,
        wall_time_s=round(seconds, 3),
        records=results.parse_records(records),
        files=files,
    )


@dataclass
class _Kernel:
    """The kernel process of one run, once started: to stop its process group with the worker, to tell how it died."""

    process: subprocess.Popen | None = None
    group: int | None = None


# ipykernel_launcher, less the debugger. ipykernel imports debugpy at every start, so that a
# Jupyter frontend could attach one: half the CPU a kernel takes to start (0.3 of 0.6 s) and a
# quarter of a second of each analysis's run. Nothing attaches to an analysis's kernel, and
# with debugpy unimportable ipykernel runs as where it is not installed. Like the launcher, it
# drops the working folder from sys.path until IPython puts it back for the notebook, so no
# file beside the notebook can stand in for ipykernel.
_KERNEL_WITHOUT_DEBUGGER = """\
import sys
if sys.path[0] == "":
    del sys.path[0]
sys.modules["debugpy"] = None
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


def _kernel_manager(env: dict[str, str], kernel: _Kernel, sockets: Path):
    """A kernel manager class that starts the kernel with ``env`` added to this process's environment.

    The environment is given to the kernel, never set in this process: a Dask worker runs
    several analyses at once in threads of one process. The kernel is spoken to over Unix
    sockets in the private folder ``sockets``.
    """
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def __init__(self, **kw: Any):
            super().__init__(**kw)
            # Not TCP: the kernel is on this machine, and over TCP every kernel warns that
            # its traffic is unencrypted, and picks ports that parallel kernels may race for.
            # The socket files go in a short private path: Unix socket paths are limited to ~100 bytes.
            self.transport = "ipc"
            self.ip = str(sockets / "kernel")
            self.cache_ports = False

        async def _async_interrupt_kernel(self) -> None:
            # shutdown_kernel interrupts the kernel before it kills it; "immediate" kills at
            # once, so the interrupt would only make the kernel print "KeyboardInterrupt
            # caught in kernel" as it dies.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            for at in range(len(cmd) - 1):
                if cmd[at : at + 2] == ["-m", "ipykernel_launcher"]:
                    return [*cmd[:at], "-c", _KERNEL_WITHOUT_DEBUGGER, *cmd[at + 2 :]]
            return cmd  # a kernel spec of the project's own: started as it says

        async def start_kernel(self, **kw: Any) -> Any:  # type: ignore[override]  # the base is sync in KernelManager's stubs
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            # Killed when this worker (or its Dask task thread) dies, even by SIGKILL.
            kw["preexec_fn"] = children.preexec()
            started = await super().start_kernel(**kw)
            # The local provisioner (the only one papermill uses) knows the process and its group.
            provisioner: Any = self.provisioner
            kernel.process = provisioner.process
            # jupyter_client starts the kernel in a session of its own: its group is the kernel and its children.
            kernel.group = provisioner.pgid or kernel.process.pid
            children.track_group(kernel.group)
            return started

    return Manager


def _socket_folder() -> Path:
    """A private folder for one kernel's sockets, named after this process.

    A run that is killed (kill -9, a stopped worker) leaves its folder behind: those of
    processes that no longer exist are removed here.
    """
    base = Path(tempfile.gettempdir())
    for stale in base.glob("lr-kernel-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"lr-kernel-{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _running_cell(path: Path) -> tuple[int | None, str]:
    """The cell papermill started last in the saved notebook, and its first line of code."""
    try:
        executed = nbformat.read(path, as_version=4)
    except Exception:
        return None, ""
    started = [i for i, c in enumerate(executed.cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return None, ""
    lines = [line.strip() for line in executed.cells[started[-1]].source.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return started[-1], first if len(first) <= 80 else first[:77] + "..."


def _died(process: subprocess.Popen | None) -> str:
    """'killed by SIGKILL', 'exited with code 1', or '' if unknown."""
    if process is None:
        return ""
    try:
        code = process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _cancel_leftover_tasks() -> None:
    """Cancel what nbclient left pending in this thread's event loop after a timeout (its output poller).

    Otherwise asyncio reports "Task was destroyed but it is pending!" when the loop goes.
    """
    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _kernel_stopped(
    exc: BaseException, staging: Path, notebook_name: str, limit: Limit, kernel: _Kernel, seconds: float
) -> Attempt:
    """The attempt of a run whose kernel ran out of time or died under it, naming the cell it was running."""
    from nbclient.exceptions import CellTimeoutError

    cell, line = _running_cell(staging / notebook_name)
    # The location names the cell by its index; its first line says which one it is.
    where = f"while running {line!r}" if cell is not None else "before its first cell"
    if isinstance(exc, CellTimeoutError):
        _cancel_leftover_tasks()
        return Attempt(
            False,
            seconds,
            f"exceeded its time limit of {limit.seconds:g} s {where}; its kernel was killed",
            cell,
            f"raise {limit.key} in manuscript.yaml if it needs longer, or run it with a smaller profile",
            traceback=False,
        )
    how = _died(kernel.process)
    if how == "killed by SIGKILL":
        hint = (
            "the system kills a process with SIGKILL most often when it runs out of memory: give it more "
            "memory, run fewer analyses at once (--jobs), or use a smaller profile"
        )
    else:
        hint = "the kernel process crashed: a native library may have failed (see the partial notebook's last output)"
    return Attempt(False, seconds, f"lost its kernel ({how or 'it died'}) {where}", cell, hint, traceback=False)


def _run_notebook(
    task: Task,
    project_root: Path,
    staging: Path,
    threads: int,
    revision: dict[str, Any] | None,
    executor: dict[str, str],
    limit: Limit,
) -> Attempt:
    """Execute ``task``'s notebook into ``staging`` and, if it ran to the end, write its manifest there.

    ``project_root`` holds the notebook, its modules and inputs: the project itself, or
    their copy on a Dask worker. Nothing is committed here. The whole notebook must finish
    within ``limit``, counted from now.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    env = {variable: str(threads) for variable in THREAD_VARIABLES}
    # OpenMP threads (torch's, numpy's BLAS) that wait for work spin on a core by default:
    # when the machine is busy with anything else (another kernel, a CI neighbour) they take
    # the cores from the threads that have work. Appendix A's ci profile took 207 s instead of
    # 19 s beside one busy process; waiting passively it takes 23 s, and alone no longer.
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    env[RECORD_DIR_ENV] = str(staging)
    # The kernel imports the analyses' local modules: no bytecode is written next to them
    # (the build writes nothing into the sources). Not PYTHONPYCACHEPREFIX: it would also
    # hide site-packages' compiled bytecode and recompile torch on every run.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    notebook_name = f"{task.name}.ipynb"
    source = staging / f".{task.name}.input.ipynb"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    deadline = time.monotonic() + limit.seconds
    kernel = _Kernel()

    def remaining(cell) -> float:
        # nbclient's limit for the cell about to run: what is left of the notebook's (0 would mean none).
        return max(deadline - time.monotonic(), 0.001)

    try:
        nbformat.write(nb.read(task.notebook_path), source)
        sockets = _socket_folder()
        try:
            papermill.execute_notebook(
                str(source),
                str(staging / notebook_name),
                parameters=task.parameters,
                kernel_name="python3",
                language="python",
                progress_bar=False,
                kernel_manager_class=_kernel_manager(env, kernel, sockets),
                # The kernel's working folder (papermill's own cwd= would chdir this whole process).
                resources={"metadata": {"path": str(task.notebook_path.parent)}},
                timeout_func=remaining,
                # SIGKILL to the kernel's process group, also after a timeout, when it is still busy.
                shutdown_kernel="immediate",
                # No IPython history database: a kernel would write every cell to ~/.ipython,
                # outside the project, and spend 0.05 s of CPU on it.
                extra_arguments=["--HistoryManager.enabled=False"],
            )
        finally:
            source.unlink(missing_ok=True)
            children.forget_group(kernel.group)
            shutil.rmtree(sockets, ignore_errors=True)
        seconds = time.perf_counter() - start
        manifest = _manifest(task, project_root, staging, notebook_name, seconds, started, revision, executor)
        (staging / results.MANIFEST).write_text(json.dumps(results.dump(manifest), indent=2, ensure_ascii=False) + "\n")
        return Attempt(True, seconds)
    except PapermillExecutionError as exc:
        return Attempt(False, time.perf_counter() - start, f"raised {exc.ename}: {exc.evalue}", exc.cell_index)
    except (CellTimeoutError, DeadKernelError) as exc:
        return _kernel_stopped(exc, staging, notebook_name, limit, kernel, time.perf_counter() - start)
    except Exception as exc:  # a bad record, a kernel that did not start: never a result
        return Attempt(False, time.perf_counter() - start, f"failed: {type(exc).__name__}: {exc}")


def _new_staging(output_dir: Path, name: str) -> Path:
    staging = output_dir / "analyses" / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    (staging / "figures").mkdir(parents=True)
    return staging


def _settle(task: Task, project_root: Path, output_dir: Path, staging: Path, attempt: Attempt) -> Outcome:
    """Commit a successful run's folder; for a failed one keep the partial notebook and say why."""
    base = output_dir / "analyses"
    partial = base / f"{task.name}.failed.ipynb"
    if attempt.ok:
        results.commit(staging, base / task.name)
        partial.unlink(missing_ok=True)
        return Outcome(task.name, True, attempt.seconds)
    notebook = os.path.relpath(task.notebook_path, project_root)
    if attempt.cell is None:
        problem = Problem(Location(notebook), f"analysis {task.name!r} {attempt.error}", attempt.hint)
    else:
        if (staging / f"{task.name}.ipynb").exists():
            shutil.copyfile(staging / f"{task.name}.ipynb", partial)
        shown = f"partial notebook{' with the traceback' if attempt.traceback else ''}: {os.path.relpath(partial, project_root)}"
        problem = Problem(
            Location(notebook, key=f"cell {attempt.cell}"),
            f"analysis {task.name!r} {attempt.error}",
            f"{attempt.hint}; {shown}" if attempt.hint else shown,
        )
    return Outcome(task.name, False, attempt.seconds, problem)


def run_one(
    task: Task, project_root: Path, output_dir: Path, threads: int, revision: dict[str, Any] | None, limit: Limit
) -> Outcome:
    """Execute one analysis here (in a worker process) and commit its result folder."""
    staging = _new_staging(output_dir, task.name)
    try:
        attempt = _run_notebook(task, project_root, staging, threads, revision, {"kind": "local"}, limit)
        return _settle(task, project_root, output_dir, staging, attempt)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Shipment:
    """Everything a worker without the project's files needs to run one analysis."""

    task: Task
    notebook: str  # the notebook, relative to the project root
    files: dict[str, bytes]  # the notebook, its local modules and declared inputs, by path relative to the root
    threads: int | None  # kernel threads; None: the worker's cores divided by its threads
    revision: dict[str, Any] | None
    limit: Limit


@dataclass
class Returned:
    """What a worker sends back: how the run went, and its result folder as bytes by relative path."""

    attempt: Attempt
    files: dict[str, bytes]
    worker: str


def _pack(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _unpack(files: dict[str, bytes], folder: Path) -> None:
    for relative, data in files.items():
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise ValueError(f"{relative} lies outside the project, so it cannot be shipped to a worker")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _worker_threads(nthreads: int) -> int:
    """A worker runs up to ``nthreads`` analyses at once: each kernel gets an equal share of its cores."""
    return max(1, usable_cores() // max(1, nthreads))


def run_shipped(shipment: Shipment) -> Returned:
    """On a Dask worker: recreate the shipped files in a scratch folder, run there, send the result back."""
    from distributed import get_worker

    worker = get_worker()
    threads = shipment.threads or _worker_threads(worker.state.nthreads)
    with tempfile.TemporaryDirectory(prefix="livingreview-", dir=worker.local_directory) as scratch:
        root = Path(scratch) / "project"
        _unpack(shipment.files, root)
        staging = Path(scratch) / "result"
        (staging / "figures").mkdir(parents=True)
        task = dataclasses.replace(shipment.task, notebook_path=root / shipment.notebook)
        attempt = _run_notebook(
            task, root, staging, threads, shipment.revision, {"kind": "dask", "worker": worker.address}, shipment.limit
        )
        return Returned(attempt, _pack(staging), worker.address)


@dataclass
class Runner:
    """How one analysis of a project runs, here or shipped to a worker: what the executors call."""

    project_root: Path
    output_dir: Path
    revision: dict[str, Any] | None
    limits: dict[str, Limit]  # by analysis name

    remote = staticmethod(run_shipped)

    def here(self, task: Task, threads: int) -> Outcome:
        return run_one(task, self.project_root, self.output_dir, threads, self.revision, self.limits[task.name])

    def ship(self, task: Task, threads: int | None) -> Shipment:
        notebook = task.notebook_path.relative_to(self.project_root).as_posix()
        paths = dict.fromkeys([notebook, *task.modules, *task.inputs])
        return Shipment(
            task,
            notebook,
            {p: (self.project_root / p).read_bytes() for p in paths},
            threads,
            self.revision,
            self.limits[task.name],
        )

    def land(self, task: Task, returned: Returned) -> Outcome:
        """Back here: write a worker's result folder into staging and settle it as a local run would."""
        staging = _new_staging(self.output_dir, task.name)
        try:
            _unpack(returned.files, staging)
            outcome = _settle(task, self.project_root, self.output_dir, staging, returned.attempt)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        outcome.where = returned.worker
        return outcome

    def failed(self, task: Task, message: str, hint: str | None = None, seconds: float = 0.0) -> Outcome:
        """An analysis that ran nowhere to the end, for a reason outside its notebook (a worker that died)."""
        location = Location(os.path.relpath(task.notebook_path, self.project_root))
        return Outcome(task.name, False, seconds, Problem(location, f"analysis {task.name!r} {message}", hint))

    def progress(self, task: Task) -> str:
        return _executed_cells(self.output_dir, task.name)


def _executed_cells(output_dir: Path, name: str) -> str:
    """'cell 3/12' from the notebook papermill saves after every cell."""
    for staging in (output_dir / "analyses").glob(f".staging-{name}-*"):
        try:
            executed = nbformat.read(staging / f"{name}.ipynb", as_version=4)
        except Exception:
            continue
        code = [c for c in executed.cells if c.cell_type == "code"]
        done = sum(1 for c in code if c.get("execution_count"))
        return f"cell {done}/{len(code)}"
    return "starting"
