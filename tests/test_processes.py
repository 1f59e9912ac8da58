"""Processes: time limits, kernels that die, signals, orphans, one command at a time.

Real builds are started with ``subprocess.Popen`` and sent real signals while a
notebook cell runs. What they started (workers, kernels, Chromium and its helpers) is
listed before the signal, so that whatever survives it can be named.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import GIT_ENV, commit_all, git, replace_in, run_cli, write_project

# Cell 3 of the executed notebook (after the parameters and the injected parameters).
NOTEBOOK = """\
# %% tags=["parameters"]
marker = ""  # the kernel writes its pid here when it reaches cell 3
hold = ""  # cell 3 waits while this file exists (at most a minute)

# %%
import os
import pathlib
import time

from livingreview import record

def wait_while(path):
    start = time.monotonic()
    while os.path.exists(path) and time.monotonic() - start < 60:
        time.sleep(0.05)

record.value("answer", 42)
pathlib.Path(marker).write_text(str(os.getpid()))

# %%
{cell}
"""

WAITING = "wait_while(hold)"


def analysis_project(root: Path, cell: str = WAITING, config: str = "") -> Path:
    """A committed fixture project with one analysis, 'slow', whose cell 3 is ``cell``."""
    write_project(root, commit=False)
    (root / "analyses").mkdir()
    (root / "analyses" / "slow.py").write_text(NOTEBOOK.format(cell=cell))
    marker, hold = root.parent / "kernel.pid", root.parent / "hold"
    with (root / "manuscript.yaml").open("a") as handle:
        handle.write(
            # No Jupyter Book: these tests are about the processes of a build, not its site.
            f"notebook_pages: false\nanalyses:\n  slow:\n    notebook: analyses/slow.py\n"
            f"    parameters: {{marker: '{marker}', hold: '{hold}'}}\n{config}"
        )
    replace_in(root / "content" / "02.methods.md", "## Methods\n", "## Methods\n\nThe answer is {{ slow.answer }}.\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root)
    return root


def start(root: Path, *args: str, stderr: Path | None = None) -> subprocess.Popen:
    """``livingreview -C root ARGS`` in the background, in a session of its own (so that a test can clean up)."""
    env = {**os.environ, **GIT_ENV, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    with open(stderr or os.devnull, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "livingreview", "-C", str(root), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running_kernel(root: Path, process: subprocess.Popen) -> int:
    """Wait until the analysis's kernel reaches cell 3; its pid."""
    marker = root.parent / "kernel.pid"
    wait_for(lambda: marker.is_file() and marker.read_text() or process.poll() is not None, "the kernel")
    assert process.poll() is None, f"the build ended with {process.returncode} before its kernel ran"
    return int(marker.read_text())


def alive(processes: list[psutil.Process]) -> list[str]:
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} {' '.join(process.cmdline())[:150]}")
        except psutil.NoSuchProcess:
            pass
    return found


def assert_all_gone(processes: list[psutil.Process], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = alive(processes)
    assert not survivors, "still running:\n" + "\n".join(survivors)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def hold(tmp_path: Path):
    path = tmp_path / "hold"
    path.touch()
    yield path
    path.unlink(missing_ok=True)


def kill_session(process: subprocess.Popen, others: list[psutil.Process] = ()) -> None:
    """Whatever a failed test left running: the command's session, and ``others`` (kernels and Chromium have their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for other in others:
        with contextlib.suppress(psutil.Error):
            other.kill()


INTERRUPTED = "interrupted: outputs were left as they were before this build"


@pytest.mark.parametrize(
    "signum, group, code, message",
    [
        (signal.SIGINT, False, 130, INTERRUPTED),
        (signal.SIGINT, True, 130, INTERRUPTED),  # Ctrl-C in a terminal: to the whole process group
        (signal.SIGTERM, False, 143, "terminated (SIGTERM): outputs were left as they were before this build"),
        (signal.SIGKILL, False, -9, None),
    ],
    ids=["SIGINT", "Ctrl-C", "SIGTERM", "SIGKILL"],
)
def test_a_signal_mid_analysis_leaves_no_process_behind(tmp_path: Path, hold: Path, signum, group, code, message):
    root = analysis_project(tmp_path / "project")
    log = tmp_path / "stderr.txt"
    build = start(root, "build", "--format", "html", "--format", "pdf", stderr=log)
    descendants = []
    try:
        kernel = running_kernel(root, build)
        descendants = psutil.Process(build.pid).children(recursive=True)
        names = " ".join(p.name() for p in descendants)
        assert kernel in {p.pid for p in descendants} and "chromium" in names, names
        if group:
            os.killpg(build.pid, signum)
        else:
            build.send_signal(signum)
        assert build.wait(timeout=15) == code, log.read_text()
        assert_all_gone(descendants)
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        if message:
            assert lines[-1] == message, log.read_text()
            assert "Traceback" not in log.read_text()
            assert not list((root / "output" / "analyses").glob(".*")), "staging folders were left"
        before = snapshot(root / "output")
        time.sleep(1)
        assert snapshot(root / "output") == before, "output/ changed after the build ended"
        assert not (root / "output" / "analyses" / "slow").exists()
    finally:
        kill_session(build, descendants)


def test_the_next_build_removes_what_a_killed_one_left(tmp_path: Path, hold: Path):
    root = analysis_project(tmp_path / "project")
    build = start(root, "build", "--format", "html")
    try:
        running_kernel(root, build)
        build.kill()
        build.wait()
    finally:
        kill_session(build)
    output, site = root / "output", root / "webpage"
    assert list((output / "analyses").glob(".staging-slow-*"))
    # What each writer leaves when killed (atomic.py's .part files and replaced folders, staging folders).
    left = [
        output / ".manuscript.html.k2x9_a0b.part",
        output / ".staging-notebooks-3f9a1c2e",
        output / ".images.ab12cd34",
        output / ".images.old",
        output / "analyses" / ".old-slow-4242",
        site / "v" / ".staging-0a1b2c3d",
        site / "v" / ".local.zz99yy88",
        site / ".versions.html.q1w2e3r4.part",
    ]
    for path in left:
        if path.suffix == ".part":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("half written")
        else:
            (path / "inside").mkdir(parents=True)
            (path / "inside" / "index.html").write_text("half written")
    hold.unlink()
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    assert [str(p.relative_to(root)) for p in left if p.exists()] == []
    assert not [*output.rglob(".staging-*"), *site.rglob(".staging-*")]
    assert (output / "analyses" / "slow" / "manifest.json").is_file()


def test_an_analysis_past_its_time_limit_fails_naming_the_cell_and_limit(tmp_path: Path):
    # Limits of 8 s: a kernel's start-up on a loaded machine must not use one up (see below).
    root = analysis_project(tmp_path / "project", "time.sleep(60)", "    timeout: 8\n")
    started = time.monotonic()
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 5, result.output
    assert time.monotonic() - started < 40
    message = " ".join(result.stderr.split())
    assert (
        "analyses/slow.py: cell 3: analysis 'slow' exceeded its time limit of 8 s while running "
        "'time.sleep(60)'; its kernel was killed"
    ) in message, message
    assert "hint: raise analyses.slow.timeout in manuscript.yaml" in message
    assert "partial notebook: output/analyses/slow.failed.ipynb" in message
    assert (root / "output" / "analyses" / "slow.failed.ipynb").is_file()
    kernel = int((tmp_path / "kernel.pid").read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE


def test_the_time_limit_holds_on_a_dask_worker(tmp_path: Path):
    root = analysis_project(tmp_path / "project", "time.sleep(60)", "executor:\n  timeout: 8\n")
    result = run_cli(root, "run", "--executor", "dask")
    assert result.returncode == 5, result.output
    message = " ".join(result.stderr.split())
    assert "cell 3: analysis 'slow' exceeded its time limit of 8 s while running 'time.sleep(60)'" in message, message
    assert "raise executor.timeout in manuscript.yaml" in message
    assert "Task was destroyed" not in message
    kernel = int((tmp_path / "kernel.pid").read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE


def test_kill_9_with_dask_leaves_no_worker_or_kernel_behind(tmp_path: Path, hold: Path):
    root = analysis_project(tmp_path / "project")
    run = start(root, "run", "--executor", "dask")
    descendants = []
    try:
        kernel = running_kernel(root, run)
        descendants = psutil.Process(run.pid).children(recursive=True)
        assert kernel in {p.pid for p in descendants}
        run.kill()
        run.wait()
        assert_all_gone(descendants)
    finally:
        kill_session(run, descendants)


def test_a_per_profile_time_limit_overrides_the_analysis_one(tmp_path: Path):
    # 8 s, not less: on a loaded 2-core machine a kernel can take seconds to start, and the
    # limit must run out while the cell under test sleeps, not before it starts.
    config = "    timeout: 600\n    profile_timeouts: {ci: 8}\n"
    root = analysis_project(tmp_path / "project", "time.sleep(60)", config)
    result = run_cli(root, "run")
    assert result.returncode == 5, result.output
    message = " ".join(result.stderr.split())
    assert "cell 3: analysis 'slow' exceeded its time limit of 8 s while running 'time.sleep(60)'" in message
    assert "raise analyses.slow.profile_timeouts.ci in manuscript.yaml" in message


def test_a_kernel_killed_by_the_system_names_the_cell_and_hints_at_memory(tmp_path: Path):
    root = analysis_project(tmp_path / "project", "os.kill(os.getpid(), 9)")
    result = run_cli(root, "run")
    assert result.returncode == 5, result.output
    message = " ".join(result.stderr.split())
    assert (
        "analyses/slow.py: cell 3: analysis 'slow' lost its kernel (killed by SIGKILL) while running "
        "'os.kill(os.getpid(), 9)'"
    ) in message, message
    assert "runs out of memory" in message
    assert (root / "output" / "analyses" / "slow.failed.ipynb").is_file()


def test_a_second_build_waits_for_the_first_or_refuses_with_no_wait(tmp_path: Path, hold: Path):
    root = analysis_project(tmp_path / "project")
    first = start(root, "build", "--format", "html")
    second = None
    try:
        running_kernel(root, first)
        refused = run_cli(root, "build", "--format", "html", "--no-wait")
        assert refused.returncode == 7, refused.output
        message = " ".join(refused.stderr.split())
        assert f"livingreview build (pid {first.pid}) is using this project" in message, message
        log = tmp_path / "second.txt"
        second = start(root, "run", stderr=log)
        waiting = f"waiting for livingreview build (pid {first.pid}) to finish with this project…"
        wait_for(lambda: waiting in log.read_text(), "the second command to wait")
        hold.unlink()
        assert first.wait(timeout=60) == 0
        assert second.wait(timeout=60) == 0, log.read_text()
        assert "slow [ci]: cached" in log.read_text()
    finally:
        kill_session(first)
        if second:
            kill_session(second)


def test_serve_stopped_mid_rebuild_leaves_no_process_behind(tmp_path: Path):
    """The rebuild runs in a background thread, which the signal does not interrupt: its workers are stopped."""
    root = analysis_project(tmp_path / "project")
    log = tmp_path / "serve.txt"
    serve = start(root, "serve", "--port", "0", stderr=log)
    descendants = []
    try:
        wait_for(lambda: "serving http://" in log.read_text() or serve.poll() is not None, "serve to start", 120)
        assert serve.poll() is None, log.read_text()
        marker = tmp_path / "kernel.pid"
        marker.unlink()
        (tmp_path / "hold").touch()
        replace_in(root / "analyses" / "slow.py", 'record.value("answer", 42)', 'record.value("answer", 43)')
        kernel = running_kernel(root, serve)
        descendants = psutil.Process(serve.pid).children(recursive=True)
        assert kernel in {p.pid for p in descendants}
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=15) == 130, log.read_text()
        assert_all_gone(descendants)
        text = log.read_text()
        assert text.splitlines()[-1] == INTERRUPTED, text
        assert "Traceback" not in text and "Exception in thread" not in text, text
    finally:
        (tmp_path / "hold").unlink(missing_ok=True)
        kill_session(serve, descendants)


def test_chromium_and_its_helpers_die_with_the_process_that_started_them(tmp_path: Path):
    """Chromium runs in a session of its own, so only its death signal ends it when its parent is killed."""
    script = (
        "import time\n"
        "from livingreview.render.pdf import PdfPrinter, chromium_executable\n"
        "printer = PdfPrinter(chromium_executable(None), 60)\n"
        "print(printer._process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    family = []
    try:
        browser = psutil.Process(int(owner.stdout.readline()))
        wait_for(lambda: len(browser.children(recursive=True)) >= 3, "Chromium's helper processes", 30)
        family = [browser, *browser.children(recursive=True)]
        owner.kill()
        owner.wait()
        assert_all_gone(family)
    finally:
        kill_session(owner, family)
        owner.stdout.close()
