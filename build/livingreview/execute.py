"""Stage "execute": run stale analyses with Papermill, in parallel, into ``output/analyses/``.

Each analysis runs in its own worker process and writes into a staging folder. Only a
notebook that ran to the end, with well-formed records, becomes a result (see
``results.commit``). A failure is reported with the analysis, the cell, the exception
and the saved partial notebook, after the other analyses have finished and been kept.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from livingreview import notebook as nb
from livingreview import results
from livingreview.errors import AnalysisError, Location, Problem
from livingreview.plan import Task, device_class, sha256_file
from livingreview.record import RECORD_DIR_ENV

PACKAGES = ("livingreview", "papermill", "nbformat", "jupytext", "numpy", "scipy", "torch", "matplotlib", "pandas")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    problem: Problem | None = None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _cell_of(executed: nbformat.NotebookNode, count: int | None) -> tuple[int | None, str | None]:
    for index, cell in enumerate(executed.cells):
        if cell.cell_type == "code" and count is not None and cell.get("execution_count") == count:
            return index, cell.get("id")
    return None, None


def _manifest(task: Task, project_root: Path, staging: Path, notebook_name: str, seconds: float,
              started: str, revision: dict[str, Any] | None) -> dict[str, Any]:
    executed = nbformat.read(staging / notebook_name, as_version=4)
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
    return {
        "analysis": task.name,
        "notebook": os.path.relpath(task.notebook_path, project_root),
        "executed_notebook": notebook_name,
        "key": task.key,
        "profile": task.profile,
        "parameters": task.parameters,
        "inputs": task.inputs,
        "modules": task.modules,
        "git": revision,
        "packages": _versions(),
        "device": {"class": dev_class, "name": dev_name, "host": platform.node()},
        "started": started,
        "wall_time_s": round(seconds, 3),
        "records": records,
        "files": files,
    }


def run_one(task: Task, project_root: Path, output_dir: Path, threads: int, revision: dict[str, Any] | None) -> Outcome:
    """Execute one analysis (in a worker process) and commit its result folder."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    base = output_dir / "analyses"
    staging = base / f".staging-{task.name}-{uuid.uuid4().hex[:8]}"
    (staging / "figures").mkdir(parents=True)
    os.environ[RECORD_DIR_ENV] = str(staging)
    # The kernel imports the analyses' local modules: no bytecode is written next to them
    # (the build writes nothing into the sources). Not PYTHONPYCACHEPREFIX: it would also
    # hide site-packages' compiled bytecode and recompile torch on every run.
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    notebook_name = f"{task.name}.ipynb"
    source = staging / f".{task.name}.input.ipynb"
    nbformat.write(nb.read(task.notebook_path), source)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source), str(staging / notebook_name), parameters=task.parameters, kernel_name="python3",
            language="python", progress_bar=False, cwd=str(task.notebook_path.parent),
        )
        source.unlink()
        seconds = time.perf_counter() - start
        manifest = _manifest(task, project_root, staging, notebook_name, seconds, started, revision)
        (staging / results.MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        results.commit(staging, base / task.name)
        (base / f"{task.name}.failed.ipynb").unlink(missing_ok=True)
        return Outcome(task.name, True, seconds)
    except PapermillExecutionError as exc:
        partial = base / f"{task.name}.failed.ipynb"
        if (staging / notebook_name).exists():
            shutil.copyfile(staging / notebook_name, partial)
        problem = Problem(
            Location(os.path.relpath(task.notebook_path, project_root), key=f"cell {exc.cell_index}"),
            f"analysis {task.name!r} raised {exc.ename}: {exc.evalue}",
            f"partial notebook with the traceback: {os.path.relpath(partial, project_root)}",
        )
        return Outcome(task.name, False, time.perf_counter() - start, problem)
    except Exception as exc:  # a kernel that died, a bad record: never a result
        problem = Problem(
            Location(os.path.relpath(task.notebook_path, project_root)),
            f"analysis {task.name!r} failed: {type(exc).__name__}: {exc}",
        )
        return Outcome(task.name, False, time.perf_counter() - start, problem)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def execute(project, tasks: list[Task], jobs: int | None = None, report=print) -> list[Outcome]:
    """Run ``tasks``, ``jobs`` at a time; raise one AnalysisError listing every failure."""
    results.clean_stale_staging(project)
    if not tasks:
        return []
    jobs = max(1, min(jobs or project.config.jobs or os.cpu_count() or 1, len(tasks)))
    # Split the cores between concurrent kernels so BLAS/torch threads do not oversubscribe.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    revision = None
    if project.revision:
        revision = {"commit": project.revision.commit, "dirty": project.revision.dirty}
    outcomes = []
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(run_one, task, project.root, project.output_dir, threads, revision): task for task in tasks
        }
        started = time.perf_counter()
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=10)
            for future in done:
                outcome = future.result()
                outcomes.append(outcome)
                mark = "ran" if outcome.ok else "FAILED"
                report(f"  {outcome.name}: {mark} in {outcome.seconds:.1f} s")
            if pending:
                running = ", ".join(
                    f"{futures[f].name} ({_executed_cells(project.output_dir, futures[f].name)})" for f in pending
                )
                report(f"  still running after {time.perf_counter() - started:.0f} s: {running}")
    failures = [o.problem for o in outcomes if not o.ok and o.problem]
    if failures:
        raise AnalysisError(failures)
    return outcomes
