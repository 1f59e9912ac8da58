"""``livingreview deploy``: publish ``webpage/`` to the ``gh-pages`` branch of a remote.

The branch is cloned into a temporary folder, the new version folders are added next to
the old ones (an existing version is never replaced), the index pages are rebuilt from
all of them, and one commit naming the source commit is pushed. The project's own
repository is only read: deploying is the one command that writes to a remote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from livingreview.load.project import LOCAL_VERSION, Project
from livingreview.publish.site import compare, read_versions, update_index
from livingreview.util.errors import ContentError, Location, Problem, ToolError
from livingreview.util.gitinfo import clone_branch, git_checked, stored_credentials

IDENTITY = ["-c", "user.name=livingreview deploy", "-c", "user.email=livingreview@localhost"]


@dataclass
class Deployed:
    remote: str
    branch: str
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    pushed: bool = False


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
    url = git_checked(project.root, "remote", "get-url", remote, check=False).stdout.strip()
    if not url:
        raise ToolError(Problem(Location("git", key=f"remote {remote}"), "no such remote", "add it, or pass --remote"))
    auth = stored_credentials(project.root)
    result = Deployed(remote, branch)
    with tempfile.TemporaryDirectory(prefix="livingreview-deploy-") as scratch:
        pages = Path(scratch) / "pages"
        clone_branch(project.root, url, branch, pages, config=auth)
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
        git_checked(pages, "add", "--all")
        if git_checked(pages, "diff", "--cached", "--quiet", check=False).returncode == 0:
            return result
        message = f"Publish {revision.short}: {revision.message}\n\nSource commit: {revision.commit}\n"
        configured = git_checked(pages, "config", "user.email", check=False).stdout.strip() or os.environ.get(
            "GIT_AUTHOR_EMAIL"
        )
        author = [] if configured else IDENTITY
        git_checked(pages, "commit", "--quiet", "-m", message, config=author)
        git_checked(pages, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", config=auth)
        result.pushed = True
    return result
