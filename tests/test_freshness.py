"""A rebuild runs exactly the stages that what changed affects, and none when nothing did."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import livingreview
from conftest import GIT_ENV, Result
from livingreview.util import uptodate
from test_analyses import write_project

STAGES = ("process", "html", "pdf", "publish")
PACKAGE = Path(livingreview.__file__).resolve().parent


def build(root: Path, *formats: str, pythonpath: Path | None = None) -> Result:
    env = {**os.environ, **GIT_ENV, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    args = [arg for fmt in formats for arg in ("--format", fmt)]
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "build", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


def ran(result: Result) -> set[str]:
    """The stages that ran (a ✓ line), checked against the ones reported up to date."""
    done = {s for s in STAGES if re.search(rf"^✓ {s}\b", result.stderr, re.M)}
    skipped = {s for s in STAGES if re.search(rf"^– {s}\s+up to date", result.stderr, re.M)}
    assert not done & skipped
    return done


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "p")
    (root / "ci").mkdir()
    (root / "ci" / "requirements.lock").write_text("numpy==2.0.0\n")
    (root / "theme.css").write_text("body { color: #111; }\n")
    config = root / "manuscript.yaml"
    config.write_text(config.read_text().replace("formats: [html]", "formats: [html, pdf]"))
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "lock"], check=True, env={**os.environ, **GIT_ENV})
    assert ran(build(root)) == set(STAGES)
    return root


def test_a_rebuild_with_nothing_changed_runs_nothing_and_says_so(project: Path):
    html = project / "output" / "manuscript.html"
    before = html.stat().st_mtime_ns
    # Touched, not changed: the full check (not the last build's record, see below), which finds nothing to do.
    (project / "manuscript.yaml").touch()
    again = build(project)
    assert ran(again) == set()
    assert "everything is up to date" in again.stderr
    assert "demo [ci]: cached" in again.stderr
    assert html.stat().st_mtime_ns == before
    # The outputs are still reported, as after any build.
    assert "html: output/manuscript.html" in again.stderr and "pdf: output/manuscript.pdf" in again.stderr


REPLAYED = re.compile(r"^– build\s+up to date: no file it reads or writes changed", re.M)


def test_a_rebuild_where_no_file_changed_answers_from_the_last_build(project: Path):
    checked = build(project)  # the record the fixture's build left, or (if it started too soon) the full check
    replayed = build(project)
    assert REPLAYED.search(replayed.stderr) and "– html" not in replayed.stderr
    # What the full check reports, but its stage lines.
    report = checked.stderr[checked.stderr.index("everything is up to date") :]
    assert replayed.stderr.endswith(report)

    # Another command line is checked in full the first time: --format html was never run.
    assert not REPLAYED.search(build(project, "html").stderr)
    # An output edited by hand is made again: the record is of its size, time and inode, not only its name.
    html = project / "output" / "manuscript.html"
    html.write_text(html.read_text().replace("</body>", "<p>by hand</p></body>"))
    assert ran(build(project)) == {"html"}
    assert REPLAYED.search(build(project).stderr)
    # A new file anywhere in the project (a build might read it) means a full check; this one (git
    # ignores it, so the tree stays clean) changes nothing.
    with (project / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("notes.txt\n")
    (project / "notes.txt").write_text("to do\n")
    rechecked = build(project)
    assert ran(rechecked) == set() and not REPLAYED.search(rechecked.stderr)
    # A commit is seen too: the permalink stamp names it.
    time.sleep(0.2)  # notes.txt was written too close to that check's start for it to record
    build(project)
    assert REPLAYED.search(build(project).stderr)
    commit = ["git", "-C", str(project), "commit", "-q", "--allow-empty", "-m", "notes"]
    subprocess.run(commit, check=True, env={**os.environ, **GIT_ENV})
    assert ran(build(project)) == set(STAGES)


@pytest.mark.parametrize(
    "argv",
    [["build", "--force"], ["-C", ".", "build", "--help"], ["run"], ["verify"], ["--version"], ["-q", "build"], []],
)
def test_only_a_plain_build_is_answered_from_the_record(argv: list[str]):
    assert uptodate._project_dir(argv) is None


def test_each_kind_of_change_rebuilds_what_it_affects(project: Path):
    section = project / "content" / "01.results.md"
    section.write_text(section.read_text() + "\nOne more sentence.\n")
    assert ran(build(project)) == set(STAGES)

    # The PDF's own settings: only the PDF (and the site that shows it).
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + "pdf:\n  timeout: 120\n")
    # Publishing follows exactly when the PDF's bytes changed: Chromium stamps it to the second,
    # so a PDF made again within the same second is the same file and the site is left as it is.
    pdf = project / "output" / "manuscript.pdf"
    before = pdf.read_bytes()
    rebuilt = ran(build(project))
    assert rebuilt == ({"pdf", "publish"} if pdf.read_bytes() != before else {"pdf"})

    # A file the configuration names (the page's stylesheet) changes the page, not the Markdown.
    config.write_text(config.read_text() + "pandoc:\n  html_theme: theme.css\n")
    assert ran(build(project)) >= {"html", "pdf", "publish"}
    (project / "theme.css").write_text("body { color: #222; }\n")
    assert ran(build(project)) == {"html", "pdf", "publish"}

    # New recorded results: the values in the text are injected again.
    forced = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(project), "run", "--force"], capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    assert "process" in ran(build(project))

    # The lock re-runs the analyses, and everything after them.
    lock = project / "ci" / "requirements.lock"
    lock.write_text("numpy==2.0.1\n")
    relocked = build(project)
    assert "demo [ci]: run" in relocked.stderr and ran(relocked) == set(STAGES)

    # An output removed or edited by hand is made again; what follows from it only if it then differs.
    (project / "output" / "manuscript.pdf").unlink()
    assert ran(build(project)) - {"publish"} == {"pdf"}  # a reprinted PDF differs in its timestamps
    html = project / "output" / "manuscript.html"
    html.write_text(html.read_text().replace("</body>", "<p>injected by hand</p></body>"))
    assert ran(build(project)) == {"html"}
    assert "injected by hand" not in html.read_text()
    assert ran(build(project)) == set()


def test_another_version_of_the_tool_rebuilds_everything(project: Path, tmp_path: Path):
    copy = tmp_path / "tool"
    shutil.copytree(PACKAGE, copy / "livingreview", ignore=shutil.ignore_patterns("__pycache__"))
    # The same code and resources, elsewhere: the same tool.
    assert ran(build(project, "html", pythonpath=copy)) == set()
    theme = copy / "livingreview" / "resources" / "themes" / "default.html"
    theme.write_text(theme.read_text() + "\n<!-- a resource of the next version -->\n")
    assert ran(build(project, "html", pythonpath=copy)) == {"process", "html"}
    assert ran(build(project, "html", pythonpath=copy)) == set()
