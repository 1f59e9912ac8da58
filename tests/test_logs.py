"""What the commands print: every line says something, nothing is noise, nothing is a traceback.

Each test drives the real CLI on a small fixture project and reads what it printed.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from conftest import write_project as write_manuscript
from livingreview.load.results import sealed
from test_analyses import states, write_project
from test_serve import Server

NOISE = ("without encryption", "[IPKernelApp]", "KeyboardInterrupt", "fatal:", "Traceback")


def assert_clean(output: str) -> None:
    for noise in NOISE:
        assert noise not in output, f"{noise!r} printed:\n{output}"


@pytest.fixture
def analysed(tmp_path: Path) -> Path:
    """A committed project with one analysis (demo: a parameter n, an input, a local module), run once."""
    root = write_project(tmp_path / "p")
    result = run_cli(root, "run")
    assert result.returncode == 0, result.output
    assert states(result) == {"demo": "run (never run)"}
    return root


# --------------------------------------------------------------------------- 1, 3: kernels, counts


def test_an_analysis_run_prints_no_kernel_noise_and_counts_in_the_singular(analysed: Path):
    result = run_cli(analysed, "build", "--force")
    assert result.returncode == 0, result.output
    assert_clean(result.output)
    assert re.search(r"✓ execute\s+papermill: 1 analysis \(", result.stderr), result.stderr
    assert "1 analyses" not in result.output
    # Between the reason and the timing, only the analysis's own line: no kernel log line.
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "demo [ci]: run (forced)" in line)
    assert re.fullmatch(r"\s+demo: ran in \d+\.\d s", lines[at + 1]), lines[at : at + 3]

    check = run_cli(analysed, "check")
    assert check.returncode == 0, check.output
    assert "configuration and 1 section is valid" in check.stderr


def test_two_analyses_are_counted_in_the_plural(tmp_path: Path):
    root = write_project(tmp_path / "p", names=("demo", "other"))
    result = run_cli(root, "run", "--jobs", "2")
    assert result.returncode == 0, result.output
    assert_clean(result.output)
    assert "papermill: 2 analyses (" in result.stderr


# --------------------------------------------------------------------------- 2: outside git


def test_a_project_outside_git_builds_without_git_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # However the temporary folder is placed, git must not find a repository above it.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = write_manuscript(tmp_path / "project", commit=False)
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    assert_clean(result.output)
    assert "not a git repository" not in result.output
    assert (root / "output" / "manuscript.html").is_file()
    check = run_cli(root, "check")
    assert check.returncode == 0, check.output
    assert_clean(check.output)
    assert "configuration and 4 sections are valid" in check.stderr


# --------------------------------------------------------------------------- 4: why an analysis runs again


def test_a_rerun_says_what_changed(analysed: Path):
    """Beyond the single changes that test_analyses.py::test_cache_invalidation names one by one."""
    root = analysed
    # Two changes at once are both named.
    notebook = root / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("* scale + offset", "* scale + offset + 1"))
    (root / "analyses" / "helper.py").write_text("def square(x):\n    return x ** 2\n")
    result = run_cli(root, "run")
    assert states(result) == {"demo": "run (code changed; module changed: analyses/helper.py)"}
    assert_clean(result.output)

    # The environment's lock file: its appearance, then a change to it.
    lock = root / "ci" / "requirements.lock"
    lock.parent.mkdir()
    lock.write_text("numpy==2.0.0\n")
    assert states(run_cli(root, "run")) == {"demo": "run (environment added: ci/requirements.lock)"}
    lock.write_text("numpy==2.1.0\n")
    assert states(run_cli(root, "run")) == {"demo": "run (environment changed: ci/requirements.lock)"}
    assert states(run_cli(root, "run")) == {"demo": "cached"}


def test_a_manifest_from_before_key_parts_still_reads_and_says_inputs_changed(analysed: Path):
    manifest = analysed / "output" / "analyses" / "demo" / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["key_parts"]["code"] and data["key_parts"]["device"]
    old = {k: v for k, v in data.items() if k not in ("key_parts", "seal")}
    manifest.write_text(json.dumps(sealed(old), indent=2) + "\n")
    assert states(run_cli(analysed, "run")) == {"demo": "cached"}  # still a valid result

    notebook = analysed / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("* scale + offset", "* scale + offset + 1"))
    assert states(run_cli(analysed, "run")) == {"demo": "run (inputs changed)"}
    assert "key_parts" in json.loads(manifest.read_text())


# --------------------------------------------------------------------------- 7: unused values, -v


def test_unused_values_are_counted_per_analysis_and_listed_with_verbose(tmp_path: Path):
    root = write_project(tmp_path / "p", text="## Results\n\nTotal: {{ demo.total }}.\n", figure=True)
    result = run_cli(root, "build")
    assert result.returncode == 0, result.output
    assert "warning: demo: 2 recorded values are not used in the text (-v lists them)" in result.stderr
    assert "recorded but not used in the text" not in result.stderr
    assert_clean(result.output)

    for verbose in (["-v", "build"], ["build", "--verbose"]):
        listed = run_cli(root, *verbose)
        assert listed.returncode == 0, listed.output
        assert "warning: recorded but not used in the text: demo.n" in listed.stderr
        assert "warning: recorded but not used in the text: demo.curve_demo" in listed.stderr
        assert "recorded values are not used" not in listed.stderr

    section = root / "content" / "01.results.md"
    section.write_text("## Results\n\nTotal: {{ demo.total }} for n = {{ demo.n }}.\n")
    single = run_cli(root, "build")
    assert "warning: demo: 1 recorded value is not used in the text (-v lists it)" in single.stderr


# --------------------------------------------------------------------------- 5: serve


def _drop(url: str, path: str) -> None:
    """Send a GET and close the connection with a reset, as a browser that closes the page."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    connection = socket.create_connection((host, int(port)))
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    time.sleep(0.5)  # the server is now waiting to answer the long-poll
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def test_serve_prints_errors_without_markup_and_dropped_connections_without_tracebacks(tmp_path: Path):
    root = write_project(tmp_path / "p")
    server = Server(root)
    try:
        state = json.loads(server.get("__livereload?since=-1"))
        # Two pages closed while their long-polls wait: answering them finds the sockets closed.
        _drop(server.url, f"/__livereload?since={state['generation']}")
        _drop(server.url, f"/__livereload?since={state['generation']}")
        section = root / "content" / "01.results.md"
        section.write_text(section.read_text() + "\n{{ demo.totl }}\n")
        failed = json.loads(server.get(f"__livereload?since={state['generation']}"))
        assert "demo.totl" in failed["error"]
        time.sleep(1.0)  # the dropped long-polls are answered in their own threads
        log = server.log()
    finally:
        code = server.stop()
    assert code in (0, 130), server.log()
    assert "error: " in log and "demo.totl" in log
    assert "[bold red]" not in log and "[/]" not in log
    for noise in ("Traceback", "BrokenPipeError", "ConnectionResetError", "Exception occurred during processing"):
        assert noise not in log, log
    assert_clean(log)


# --------------------------------------------------------------------------- 6: steps of long stages


def _on_a_terminal(project: Path, *args: str, timeout: float = 300) -> str:
    """What the CLI draws on a terminal (a pseudo-terminal), escape sequences and all."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    for variable in ("NO_COLOR", "GITHUB_ACTIONS", "CI"):
        env.pop(variable, None)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "livingreview", "-C", str(project), *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    drawn = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                try:
                    chunk = os.read(primary, 1 << 16)
                except OSError:  # the terminal closed: the command has ended
                    break
                if not chunk:
                    break
                drawn += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, drawn.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    return drawn.decode(errors="replace")


def test_publish_and_pdf_stages_show_their_steps_on_a_terminal_only(tmp_path: Path):
    root = write_project(tmp_path / "p", notebook_pages=True)
    drawn = _on_a_terminal(root, "build", "--format", "html", "--format", "pdf")
    for step in (
        "notebook pages: starting Jupyter Book",
        "notebook pages: writing demo",
        "copying the build into its version folder",
        "loading manuscript.html with its fonts and figures",
        "laying out and printing the pages",
    ):
        assert step in drawn, f"{step!r} was never shown:\n{drawn}"
    assert_clean(drawn)

    # Piped (CI, a log file): each stage's closing line only, no spinner, no cursor movement.
    (root / "content" / "01.results.md").write_text("## Results\n\nThe total is {{ demo.total }}.\n")
    piped = run_cli(root, "build", "--format", "html", "--format", "pdf")
    assert piped.returncode == 0, piped.output
    assert "\x1b[" not in piped.output and "\r" not in piped.output
    assert "notebook pages:" not in piped.output and "printing the pages" not in piped.output
    assert re.search(r"✓ pdf\s+Chromium: printing the PDF \(\d+\.\d\d s\)", piped.stderr)
    assert re.search(r"✓ publish\s+webpage/: .*\(\d+\.\d\d s\)", piped.stderr)
