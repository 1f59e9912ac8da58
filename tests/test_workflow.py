"""The GitHub Actions workflow: valid against the workflow schema, and safe by construction."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "manuscript.yml"
CHECK = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]


def load() -> dict:
    return YAML(typ="safe").load(WORKFLOW.read_text())


def test_workflow_matches_the_github_schema():
    done = subprocess.run([*CHECK, str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_catches_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    shutil.copyfile(WORKFLOW, broken)
    broken.write_text(broken.read_text().replace("runs-on:", "runs_on:"))
    done = subprocess.run([*CHECK, str(broken)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "runs-on" in done.stdout + done.stderr


def test_pull_requests_build_read_only_and_main_deploys():
    flow = load()
    triggers = flow.get("on") or flow.get(True)  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    assert flow["permissions"] == {"contents": "read"}

    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    assert "permissions" not in build  # inherits read-only
    runs = [step.get("run", "") for step in build["steps"]]
    assert "./ci/quickstart.sh test" in runs
    (building,) = [step for step in build["steps"] if step.get("run", "").startswith("./ci/quickstart.sh build")]
    # Pull requests may publish ci results under a banner; main fails when a stored full result is missing.
    assert building["run"] == './ci/quickstart.sh build --fallback "$FALLBACK"'
    assert building["env"]["FALLBACK"] == "${{ github.event_name == 'pull_request' && 'ci' || 'fail' }}"
    uploads = [s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    uploaded = "\n".join(s["with"]["path"] for s in uploads)
    assert "output/manuscript.html" in uploaded and "output/manuscript.pdf" in uploaded
    assert not any("secrets." in str(step) for step in build["steps"])

    assert deploy["needs"] == "build"
    assert "github.event_name == 'push'" in deploy["if"] and "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"contents": "write"}
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert any(step.get("run") == "./ci/deploy.sh" for step in deploy["steps"])


def test_environment_and_analyses_are_cached():
    steps = load()["jobs"]["build"]["steps"]
    cached = [s["with"]["path"] for s in steps if str(s.get("uses", "")).startswith("actions/cache")]
    assert any(".venv" in path for path in cached)
    assert any("output/analyses" in path for path in cached)


@pytest.mark.parametrize("script", ["ci/quickstart.sh", "ci/deploy.sh"])
def test_ci_scripts_are_executable(script: str):
    assert (REPO / script).stat().st_mode & 0o111


def test_only_the_deploy_job_keeps_a_token_on_disk():
    jobs = load()["jobs"]
    for name, job in jobs.items():
        checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
        assert checkouts, name
        for step in checkouts:
            persisted = step.get("with", {}).get("persist-credentials", True)
            # Jobs that build (and so run pull-request content) must not leave the token in .git/config.
            assert persisted is (name == "deploy"), f"{name}: persist-credentials={persisted}"
        writes = job.get("permissions", {}).get("contents") == "write"
        assert writes is (name == "deploy"), f"{name} has write access"


def test_a_symlinked_venv_is_ignored(tmp_path: Path):
    # A .venv that is a symlink (to a shared environment) must not make the tree dirty.
    done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "-q", ".venv"], capture_output=True)
    assert done.returncode == 0


RESULTS = REPO / ".github" / "workflows" / "results.yml"


def test_the_results_workflow_is_manual_and_the_only_other_writer():
    checked = subprocess.run([*CHECK, str(RESULTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    flow = YAML(typ="safe").load(RESULTS.read_text())
    triggers = flow.get("on") or flow.get(True)
    assert list(triggers) == ["workflow_dispatch"]  # never from a pull request
    assert flow["permissions"] == {"contents": "read"}
    (job,) = flow["jobs"].values()
    assert job["permissions"] == {"contents": "write"}
    runs = [step.get("run", "") for step in job["steps"]]
    assert any("lr run --profile" in r for r in runs) and any("lr results push" in r for r in runs)
    assert not any("secrets." in str(step) for step in job["steps"])
