"""``livingreview deploy``: publish ``webpage/`` to the ``gh-pages`` branch of a remote.

The branch is cloned into a temporary folder, the new version folders are added next to
the old ones (an existing version is never replaced), the index pages are rebuilt from
all of them, and one commit naming the source commit is pushed. The project's own
repository is only read: deploying is the one command that writes to a remote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livingreview.load.project import LOCAL_VERSION, Project
from livingreview.publish.site import compare, read_versions, update_index
from livingreview.util.errors import ContentError, Location, Problem, ToolError
from livingreview.util.gitinfo import git

IDENTITY = ["-c", "user.name=livingreview deploy", "-c", "user.email=livingreview@localhost"]


@dataclass
class Deployed:
    remote: str
    branch: str
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    pushed: bool = False


def _git(args: list[str], cwd: Path, *, config: Sequence[str] = (), check: bool = True) -> subprocess.CompletedProcess:
    """Git in ``cwd``; with ``check``, a failure stops the deploy, naming the command and git's message."""
    done = git(cwd, *args, config=config)
    if done is None:
        raise ToolError(Problem(Location("git"), "git is not installed"))
    if check and done.returncode != 0:
        raise ToolError(Problem(Location("git"), f"git {' '.join(args)} failed: {done.stderr.strip()[-500:]}"))
    return done


def _auth_config(root: Path) -> list[str]:
    """Credentials that actions/checkout stores in the repository (http.<url>.extraheader), for the clone."""
    done = _git(["config", "--get-regexp", r"^http\..*\.extraheader$"], root, check=False)
    config: list[str] = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        config += ["-c", f"{key}={value}"]
    return config


def deploy(project: Project, remote: str = "origin", branch: str = "gh-pages") -> Deployed:
    site = project.site_dir
    revision = project.revision
    if revision is None or revision.dirty:
        raise ContentError(
            Problem(
                Location(str(project.root)), "the working tree has uncommitted changes", "commit, rebuild, then deploy"
            )
        )
    if not (site / "v" / revision.commit).is_dir():
        raise ContentError(
            Problem(
                Location(f"{project.config.site_dir}/v"),
                f"no published version of {revision.short}",
                "run 'livingreview build' first",
            )
        )
    url = _git(["remote", "get-url", remote], project.root, check=False).stdout.strip()
    if not url:
        raise ToolError(Problem(Location("git", key=f"remote {remote}"), "no such remote", "add it, or pass --remote"))
    auth = _auth_config(project.root)
    result = Deployed(remote, branch)
    with tempfile.TemporaryDirectory(prefix="livingreview-deploy-") as scratch:
        pages = Path(scratch) / "pages"
        exists = _git(["ls-remote", "--exit-code", "--heads", url, branch], project.root, config=auth, check=False)
        if exists.returncode == 0:
            _git(
                ["clone", "--quiet", "--branch", branch, "--single-branch", url, str(pages)], project.root, config=auth
            )
        else:
            pages.mkdir()
            _git(["init", "--quiet"], pages)
            _git(["checkout", "--quiet", "--orphan", branch], pages)
            _git(["remote", "add", "origin", url], pages)
        for version in read_versions(site):
            name = version["version"]
            if name == LOCAL_VERSION:
                continue
            source, target = site / "v" / name, pages / "v" / name
            if target.is_dir():
                result.kept.append(name)
                differences = compare(source, target)
                if differences:
                    result.conflicts[name] = differences
                continue
            shutil.copytree(source, target, symlinks=True)
            result.added.append(name)
        # Diff pages between published versions; never replaced, like the versions themselves.
        for page in sorted((site / "diffs").glob("*.html")) if (site / "diffs").is_dir() else []:
            target = pages / "diffs" / page.name
            if LOCAL_VERSION not in page.stem.split("..") and not target.exists():
                target.parent.mkdir(exist_ok=True)
                shutil.copyfile(page, target)
        update_index(pages)
        _git(["add", "--all"], pages)
        if _git(["diff", "--cached", "--quiet"], pages, check=False).returncode == 0:
            return result
        message = f"Publish {revision.short}: {revision.message}\n\nSource commit: {revision.commit}\n"
        configured = _git(["config", "user.email"], pages, check=False).stdout.strip() or os.environ.get(
            "GIT_AUTHOR_EMAIL"
        )
        author = [] if configured else IDENTITY
        _git(["commit", "--quiet", "-m", message], pages, config=author)
        _git(["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], pages, config=auth)
        result.pushed = True
    return result
