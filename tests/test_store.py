"""The results store: publication results computed once, anywhere, published by every build."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import threading
from pathlib import Path

from test_analyses import GIT, cli, write_project


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def published(tmp_path: Path, fallback: str = "fail") -> tuple[Path, Path]:
    """A project whose site publishes 'full', with a local bare repository as its origin."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    root = write_project(tmp_path / "gpu-box")
    config = root / "manuscript.yaml"
    config.write_text(config.read_text() + f"publish_profile: full\nresults:\n  fallback: {fallback}\n")
    git(root, "commit", "-qam", "publish full")
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "HEAD:refs/heads/main")
    return root, remote


def clone(remote: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--branch", "main", str(remote), str(where)], check=True)
    return where


def run_full_and_push(root: Path) -> None:
    done = cli(root, "run", "--profile", "full")
    assert done.returncode == 0, done.stderr
    pushed = cli(root, "results", "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "stored: demo" in pushed.stderr


def manifest(root: Path) -> dict:
    return json.loads((root / "output" / "analyses" / "demo" / "manifest.json").read_text())


def test_a_full_result_pushed_from_one_machine_is_published_by_a_fresh_clone(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    assert "results" in git(remote, "branch", "--list", "results")
    ci = clone(remote, tmp_path / "ci")
    listed = cli(ci, "results", "list")
    assert listed.returncode == 0 and "demo" in listed.stdout + listed.stderr and "intact" in listed.stdout

    built = cli(ci, "build")
    assert built.returncode == 0, built.stderr
    assert "demo [full]: from the results store" in built.stderr
    assert "demo [ci]: run" not in built.stderr and "run (" not in built.stderr  # nothing ran here
    assert manifest(ci)["profile"] == "full" and manifest(ci)["parameters"]["n"] == 1000
    html = (ci / "output" / "manuscript.html").read_text()
    # The tooltip says with which profile, where, when and on what device the value was computed.
    tooltip = re.search(r'data-key="demo.total" title="([^"]*)"', html).group(1)
    assert "profile full" in tooltip and f"at {platform.node()}" in tooltip and "on cpu" in tooltip
    assert manifest(ci)["started"][:4] in tooltip
    assert '<meta name="livingreview-not-publication-scale"' not in html
    assert git(ci, "status", "--porcelain") == ""  # pulling changed nothing of the checkout


def test_a_code_change_fails_the_build_by_default_and_falls_back_to_ci_when_asked(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    ci = clone(remote, tmp_path / "ci")
    notebook = ci / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("* scale + offset", "* scale + offset + 1"))
    git(ci, "commit", "-qam", "change the analysis")

    failed = cli(ci, "build")
    assert failed.returncode == 5, failed.stderr
    assert "demo: no stored full result for this code (code changed since the one pushed" in failed.stderr
    assert "results.fallback: ci" in failed.stderr

    fell_back = cli(ci, "build", "--fallback", "ci")
    assert fell_back.returncode == 0, fell_back.stderr
    assert "demo [full]: no stored full result for this code (code changed" in fell_back.stderr
    assert "its ci result is used instead, under a banner" in fell_back.stderr  # said on the console too
    assert manifest(ci)["profile"] == "ci"
    html = (ci / "output" / "manuscript.html").read_text()
    assert '<meta name="livingreview-not-publication-scale"' in html and "code changed" in html
    version = json.loads((ci / "webpage" / "v" / git(ci, "rev-parse", "HEAD") / "version.json").read_text())
    assert "demo" in version["not_publication_scale"]


def test_a_tampered_entry_is_rejected(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    editor = tmp_path / "editor"
    subprocess.run(["git", "clone", "-q", "--branch", "results", str(remote), str(editor)], check=True)
    (stored,) = (editor / "entries" / "demo").iterdir()
    values = stored / "manifest.json"
    values.write_text(values.read_text().replace('"n": 1000', '"n": 999', 1))
    git(editor, "commit", "-qam", "tamper")
    git(editor, "push", "-q", "origin", "HEAD:results")

    ci = clone(remote, tmp_path / "ci")
    pulled = cli(ci, "results", "pull")
    assert pulled.returncode == 0
    assert f"the stored entry {stored.name[:12]} was rejected" in pulled.stderr and "seal" in pulled.stderr
    assert not (ci / "output" / "analyses" / "demo").exists()
    assert "changed after the run" in cli(ci, "results", "list").stdout
    failed = cli(ci, "build")
    assert failed.returncode == 5 and "rejected" in failed.stderr


def test_the_store_is_append_only_and_shows_what_differs(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    # Same code and parameters (same key), other values: what a nondeterministic analysis would give.
    folder = root / "output" / "analyses" / "demo"
    data = json.loads((folder / "manifest.json").read_text())
    data["records"]["total"]["value"] += 1
    data.pop("seal")
    from livingreview.load.results import sealed

    (folder / "manifest.json").write_text(json.dumps(sealed(data), indent=2))
    refused = cli(root, "results", "push")
    assert refused.returncode == 5, refused.stderr
    assert "append-only" in refused.stderr and "total: stored" in refused.stderr
    forced = cli(root, "results", "push", "--force")
    assert forced.returncode == 0 and "replaced: demo" in forced.stderr


def test_two_pushes_racing_to_the_branch_are_both_stored(tmp_path: Path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    roots = []
    for name in ("alpha", "beta"):
        root = write_project(tmp_path / name, names=(name,), text="## Results\n\nNothing yet.\n")
        git(root, "remote", "add", "origin", str(remote))
        assert cli(root, "run").returncode == 0
        roots.append(root)
    results: list[subprocess.CompletedProcess] = []
    threads = [threading.Thread(target=lambda r=r: results.append(cli(r, "results", "push"))) for r in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    stored = subprocess.run(
        ["git", "--git-dir", str(remote), "ls-tree", "--name-only", "results", "entries/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(stored) == ["entries/alpha", "entries/beta"]


def test_a_folder_store_works_the_same(tmp_path: Path):
    root = write_project(tmp_path / "p")
    config = root / "manuscript.yaml"
    shared = tmp_path / "shared-store"
    config.write_text(config.read_text() + f"publish_profile: full\nresults:\n  store: {shared}\n")
    git(root, "commit", "-qam", "folder store")
    assert cli(root, "run", "--profile", "full").returncode == 0
    assert cli(root, "results", "push").returncode == 0
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(root), str(other)], check=True)
    built = cli(other, "build")
    assert built.returncode == 0, built.stderr
    assert "from the results store" in built.stderr and manifest(other)["profile"] == "full"


def test_a_dask_run_pushes_what_a_ci_build_then_publishes(tmp_path: Path):
    root, remote = published(tmp_path)
    done = cli(root, "run", "--profile", "full", "--executor", "dask", "-j", "1")
    assert done.returncode == 0, done.stderr
    assert manifest(root)["executor"]["kind"] == "dask"
    assert cli(root, "results", "push").returncode == 0
    ci = clone(remote, tmp_path / "ci")
    built = cli(ci, "build")
    assert built.returncode == 0, built.stderr
    assert "from the results store" in built.stderr
    assert manifest(ci)["executor"]["kind"] == "dask" and manifest(ci)["profile"] == "full"


def test_verify_compares_a_rerun_with_the_stored_publication_results(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    reviewer = clone(remote, tmp_path / "reviewer")

    # Nothing built or cached here: the published values come from the store, and the re-run uses their profile.
    checked = cli(reviewer, "verify", "--against", "store")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verifying against the results store" in checked.stderr and "profile full" in checked.stderr
    assert "demo (profile full, as published)" in checked.stderr
    report = json.loads((reviewer / "output" / "verify" / "report.json").read_text())
    assert {row["profile"] for row in report["rows"]} == {"full"}
    assert not (reviewer / "output" / "analyses").exists()  # the store's entries are not taken as a build

    # The publication profile needs a GPU this machine lacks: the re-run is at ci, and those rows are not compared.
    config = reviewer / "manuscript.yaml"
    config.write_text(config.read_text().replace("full: {n: 1000}", "full: {n: 1000}\n    gpu_profiles: [full]"))
    fallback = cli(reviewer, "verify", "--against", "store")
    assert fallback.returncode == 6, fallback.stdout + fallback.stderr
    assert "demo (re-run with profile ci, published with full)" in fallback.stderr
    report = json.loads((reviewer / "output" / "verify" / "report.json").read_text())
    assert {row["profile"] for row in report["rows"]} == {"ci vs full"}
    assert cli(reviewer, "verify", "--against", "store", "--allow-profile-fallback").returncode == 0
    git(reviewer, "checkout", "-q", "--", "manuscript.yaml")

    # Code the store has no result for is a failing row that says why, not a silent pass.
    notebook = reviewer / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text() + "\n# changed\n")
    changed = cli(reviewer, "verify", "--against", "store")
    assert changed.returncode == 6, changed.stdout + changed.stderr
    assert "no stored full result for this code (code changed since the one pushed" in changed.stderr


def test_an_unreachable_remote_serves_the_branch_as_last_fetched_or_says_so(tmp_path: Path):
    root, remote = published(tmp_path)
    run_full_and_push(root)
    ci = clone(remote, tmp_path / "ci")  # the clone fetched origin/results, as actions/checkout does
    git(ci, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    built = cli(ci, "build")
    assert built.returncode == 0, built.stderr
    assert "demo [full]: from the results store" in built.stderr and manifest(ci)["profile"] == "full"

    git(ci, "update-ref", "-d", "refs/remotes/origin/results")
    (ci / "output").joinpath("analyses").rename(tmp_path / "old-analyses")
    failed = cli(ci, "build")
    assert failed.returncode != 0
    assert "cannot reach the remote" in failed.stderr and "gone.git" in failed.stderr
    assert "none was ever pushed" not in failed.stderr  # an unreachable store is not an empty one
