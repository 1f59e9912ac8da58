"""Read-only facts about the project's git checkout (never changes the repository), and running git."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Revision:
    commit: str
    dirty: bool
    commit_time: datetime
    message: str
    origin_slug: str | None

    @property
    def short(self) -> str:
        return self.commit[:7]


def git(root: Path, *args: str, config: Sequence[str] = ()) -> subprocess.CompletedProcess[str] | None:
    """``git <config> -C root <args>``, its output captured as text; None when git is not installed."""
    try:
        return subprocess.run(["git", *config, "-C", str(root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None


def git_output(root: Path, *args: str) -> str | None:
    """The output of a git command that succeeded, unchanged; None if it failed or git is not installed."""
    done = git(root, *args)
    return done.stdout if done is not None and done.returncode == 0 else None


def slug_from_url(url: str | None) -> str | None:
    if not url:
        return None
    match = re.search(r"github\.com[:/]([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", url)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def revision(root: Path, generated: tuple[str, ...] = ()) -> Revision | None:
    """The checked-out commit, or None outside a repository or before the first commit.

    ``generated`` names folders the build writes (``output``, ``webpage``): files there
    do not make the tree dirty, even when .gitignore forgets them.
    """
    info = (git_output(root, "log", "-1", "--format=%H%n%cI%n%s") or "").strip()
    if not info:
        return None
    commit, when, *message = info.splitlines()
    # Untracked files count: they may be sections or data that change the output.
    excludes = [f":(exclude){folder}" for folder in generated]
    status = (git_output(root, "status", "--porcelain", "--untracked-files=normal", "--", ".", *excludes) or "").strip()
    return Revision(
        commit=commit,
        dirty=bool(status),
        commit_time=datetime.fromisoformat(when),
        message=message[0] if message else "",
        origin_slug=slug_from_url((git_output(root, "remote", "get-url", "origin") or "").strip()),
    )


def repository_root(root: Path) -> Path | None:
    """The top folder of the checkout (or of its superproject) that holds ``root``; None outside a repository."""
    for args in (("rev-parse", "--show-superproject-working-tree"), ("rev-parse", "--show-toplevel")):
        found = (git_output(root, *args) or "").strip()
        if found:
            return Path(found)
    return None


def quiet_manubot_git(root: Path) -> None:
    """Have Manubot ask git about the project at ``root``, through here.

    Manubot's thumbnail search runs ``git rev-parse`` in the current folder without
    capturing its errors, so a build outside a repository printed "fatal: not a git
    repository" twice, and a build with ``-C`` looked in the wrong repository.
    """
    from manubot.process import metadata  # imported by the process stage anyway

    metadata.git_repository_root = lambda: repository_root(root)
