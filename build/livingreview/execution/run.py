"""Stages plan and execute, as one call: bring the selected analyses' results up to date.

``execute.py`` runs one notebook (in a worker process, here or on a Dask worker);
``executors.py`` decides where the workers are; this module plans, hands the stale
analyses to the executor, and reports every failure together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from livingreview.execution.plan import Selection, Task, plan
from livingreview.load import results
from livingreview.load.project import Project
from livingreview.util.errors import AnalysisError
from livingreview.util.progress import Progress
from livingreview.util.words import counted

if TYPE_CHECKING:
    from livingreview.execution.execute import Outcome


def run_analyses(project: Project, progress: Progress, selection: Selection | None = None) -> None:
    """Stages plan and execute: bring every selected analysis's results up to date."""
    selection = selection or Selection()
    with progress.stage("plan", "which analyses are stale"):
        todo = plan(project, selection)
    for task in todo.tasks:
        state = f"run ({task.reason})" if task.stale else "cached"
        progress.console.print(f"  {task.name} [{task.profile}]: {state}", highlight=False, markup=False)
    if todo.stale:
        with progress.stage("execute", f"papermill: {counted(len(todo.stale), 'analysis')}"):
            execute(
                project, todo.stale, selection.jobs, report=lambda line: progress.console.print(line, highlight=False)
            )


def execute(project: Project, tasks: list[Task], jobs: int | None = None, report=print) -> list[Outcome]:
    """Run ``tasks`` with the configured executor; raise one AnalysisError listing every failure."""
    # Imported only now: the runner and the executors bring nbformat, Jupyter's client
    # and multiprocessing, which a build whose analyses are all cached should not pay for.
    from livingreview.execution import executors
    from livingreview.execution.execute import Runner, time_limit

    results.clean_stale_staging(project)
    if not tasks:
        return []
    revision = None
    if project.revision:
        revision = {"commit": project.revision.commit, "dirty": project.revision.dirty}
    runner = Runner(project.root, project.output_dir, revision, {t.name: time_limit(project.config, t) for t in tasks})
    executor = executors.create(project.config.executor, jobs or project.config.jobs)
    try:
        outcomes = executor.run(tasks, runner, report)
    except BaseException:
        # Interrupted: the workers have been stopped, and nothing they were writing will be used.
        results.clean_stale_staging(project)
        raise
    failures = [o.problem for o in outcomes if not o.ok and o.problem]
    if failures:
        raise AnalysisError(failures)
    return outcomes
