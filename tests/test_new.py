"""``livingreview new`` and ``upgrade``: a manuscript repository that builds and checks on its own."""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

import livingreview
from conftest import GIT_ENV, git, run_cli

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(livingreview.__file__).resolve().parent
CHECK_WORKFLOW = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]


def new(tmp_path: Path, *args: str) -> Path:
    target = tmp_path / "review"
    done = run_cli(tmp_path, "new", str(target), *args)
    assert done.returncode == 0, done.output
    return target


def clean_env() -> dict[str, str]:
    """A shell as a new author has it: Python 3.11 and the system tools, no venv, no PYTHONPATH."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("HOME", "LANG", "TMPDIR")}
    path = f"{Path(sys.base_prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return {**keep, "PATH": path, "NO_COLOR": "1", "TERM": "dumb", "GIT_CONFIG_NOSYSTEM": "1"}


def readme_commands(root: Path) -> list[str]:
    readme = (root / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def doc_commands(doc: str) -> str:
    """The first bash block of a guide in docs/, as a script."""
    return re.search(r"```bash\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S).group(1)


def run_as_author(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a clean shell where ``livingreview`` is this checkout's tool, and nothing else of it is."""
    shim = cwd / ".shim"
    shim.mkdir()
    (shim / "livingreview").write_text(f'#!/bin/sh\nexec {sys.executable} -m livingreview "$@"\n')
    (shim / "livingreview").chmod(0o755)
    env = {**clean_env(), **GIT_ENV, "PATH": f"{shim}:{clean_env()['PATH']}"}
    return subprocess.run(
        ["bash", "-euxo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500
    )


def test_the_new_project_guide_builds_and_checks_a_review_from_nothing(tmp_path: Path):
    """docs/new-project.md as written: new, git, then the new repository's own two README commands."""
    script = doc_commands("new-project.md")
    done = run_as_author(script, tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-6000:]}"
    root = tmp_path / "my-review"
    assert readme_commands(root) == ["./ci/quickstart.sh build", "./ci/quickstart.sh check"]
    assert script.strip().splitlines()[-2:] == readme_commands(root)
    assert "all values agree" in done.stderr, done.stderr[-3000:]  # check ran verify on the example analysis
    commit = git(root, "rev-parse", "HEAD")

    html = (root / "output" / "manuscript.html").read_text()
    assert "Ada Lovelace" in html and "Do Kernels Dream?" in html
    # The permalink stamp: this commit, on the site its repository will publish.
    assert f"https://ada.github.io/my-review/v/{commit}/" in html
    # The icons are there for the author's ORCID and GitHub ids, once metadata.yaml gives them.
    front_matter = (root / "content" / "00.front-matter.md").read_text()
    assert "images/orcid.svg" in front_matter and (root / "content" / "images" / "orcid.svg").is_file()
    assert re.search(r"<figcaption[^>]*><span>Figure\s1:</span> Simulated data", html)  # numbered
    assert re.search(r"fig\.\s*(?:<[^>]+>)*\s*1", html)  # "@fig:trend" became a numbered reference
    value = re.search(r'<a[^>]*class="lr-value"[^>]*data-key="example.slope"[^>]*title="([^"]*)"', html)
    assert value, "the injected slope carries its provenance"
    assert "example" in value.group(1) and commit[:7] in value.group(1)
    assert (root / "output" / "manuscript.pdf").stat().st_size > 10_000
    assert git(root, "status", "--porcelain") == ""  # .gitignore covers every output
    # Kernels write no bytecode: what they import (pyplot, only the example notebook does)
    # was compiled when the venv was made, or every run would compile it again.
    assert list((root / ".venv" / "lib").glob("python3.*/site-packages/matplotlib/__pycache__/pyplot.*.pyc"))

    workflow = root / ".github" / "workflows" / "manuscript.yml"
    checked = subprocess.run([*CHECK_WORKFLOW, str(workflow)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_new_workflow_checks_the_manuscript_not_livingreview(tmp_path: Path):
    root = new(tmp_path)
    flow = YAML(typ="safe").load((root / ".github" / "workflows" / "manuscript.yml").read_text())
    runs = [s.get("run", "") for job in flow["jobs"].values() for s in job["steps"]]
    assert "./ci/quickstart.sh check" in runs
    assert not any("pytest" in r or "quickstart.sh test" in r for r in runs)
    assert flow["permissions"] == {"contents": "read"}
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    assert build["steps"][0]["with"]["persist-credentials"] is False
    assert deploy["permissions"] == {"contents": "write"} and "default_branch" in deploy["if"]
    assert not (root / "tests").exists()
    (checking,) = [s for s in build["steps"] if s.get("run") == "./ci/quickstart.sh check"]
    assert checking["env"]["FALLBACK"] == "${{ github.event_name == 'pull_request' && 'ci' || 'fail' }}"
    assert '${FALLBACK:+--fallback "$FALLBACK"}' in (root / "ci" / "quickstart.sh").read_text()

    # Publication results: a manual job, never a pull request's, is the only other writer.
    results = root / ".github" / "workflows" / "results.yml"
    checked = subprocess.run([*CHECK_WORKFLOW, str(results)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    manual = YAML(typ="safe").load(results.read_text())
    assert list(manual.get("on") or manual.get(True)) == ["workflow_dispatch"]
    assert manual["permissions"] == {"contents": "read"}


def test_new_writes_what_an_author_needs(tmp_path: Path):
    root = new(tmp_path, "--title", 'A "quoted" title: yes', "--author", "Ada", "--author", "Grace")
    metadata = YAML(typ="safe").load((root / "content" / "metadata.yaml").read_text())
    assert metadata["title"] == 'A "quoted" title: yes'
    assert [a["name"] for a in metadata["authors"]] == ["Ada", "Grace"]
    assert "# repository: owner/name" in (root / "manuscript.yaml").read_text()  # no slug, none invented
    assert (root / ".gitignore").read_text().count("/output/") == 1
    lock = (root / "ci" / "requirements.lock").read_text()
    assert re.search(r"^manubot==", lock, re.M) and re.search(r"^numpy==", lock, re.M)
    assert not re.search(r"^(pytest|ruff|mypy|torch)==", lock, re.M)  # livingreview's test tools stay here
    references = (root / "content" / "manual-references.json").read_text()
    for kind in ("doi:", "pmid:", "arxiv:", "url:", "raw:"):
        assert f'"id": "{kind}' in references
    assert os.access(root / "ci" / "quickstart.sh", os.X_OK)
    # The vendored tool is this one, byte for byte.
    vendored = root / "build" / "livingreview"
    assert (vendored / "commands" / "cli.py").read_bytes() == (TOOL / "commands" / "cli.py").read_bytes()
    assert not list(vendored.rglob("__pycache__"))


def test_new_refuses_a_folder_that_is_not_empty(tmp_path: Path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    done = run_cli(tmp_path, "new", str(tmp_path / "taken"))
    assert done.returncode == 2
    assert "already exists and is not empty" in done.output
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_upgrade_replaces_the_vendored_tool_and_keeps_the_authors_pins(tmp_path: Path):
    root = new(tmp_path)
    vendored = root / "build" / "livingreview"
    # An older livingreview: a module it lacked, one that changed since, an older version and pins.
    (vendored / "scaffold" / "commands.py").unlink()
    (vendored / "pipeline.py").write_text("# an old pipeline\n")
    pyproject = root / "build" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{livingreview.__version__}"', 'version = "0.0.9"'))
    lock = root / "ci" / "requirements.lock"
    old = lock.read_text()
    manubot_pin = re.search(r"^manubot==.*$", old, re.M).group(0)
    lock.write_text(old.replace(manubot_pin, "manubot==0.5.0") + "scipy==1.14.1  # my analysis\nrich==1.0\n")

    done = run_cli(root, "upgrade")
    assert done.returncode == 0, done.output
    assert "0.0.9 -> " + livingreview.__version__ in done.output
    assert "dropped your pin rich==1.0" in done.output
    comparison = filecmp.dircmp(TOOL, vendored, ignore=["__pycache__"])
    assert tree_identical(comparison), "the vendored copy is this livingreview"
    text = lock.read_text()
    assert manubot_pin in text and "manubot==0.5.0" not in text
    assert "scipy==1.14.1  # my analysis" in text and "rich==1.0" not in text
    assert f'version = "{livingreview.__version__}"' in pyproject.read_text()
    assert not list((root / "build").glob(".livingreview*"))


def tree_identical(comparison: filecmp.dircmp) -> bool:
    if comparison.left_only or comparison.right_only or comparison.diff_files:
        return False
    return all(tree_identical(sub) for sub in comparison.subdirs.values())


def test_upgrade_outside_a_manuscript_repository_says_so(tmp_path: Path):
    done = run_cli(tmp_path, "upgrade")
    assert done.returncode == 2
    assert "no vendored livingreview here" in done.output
