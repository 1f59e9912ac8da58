"""Running git: read-only facts about the project's checkout (never changed), and scratch clones of a remote's branch that deploy and the results store write to."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from livingreview.util.errors import Location, Problem, ToolError


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


# --------------------------------------------------------------------------- writing to a remote's branch
# (deploy and the results store: scratch clones, never the project's checkout)


def git_checked(
    cwd: Path, *args: str, config: Sequence[str] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Git in ``cwd``; with ``check``, a failure raises ``ToolError`` naming the command and git's message."""
    done = git(cwd, *args, config=config)
    if done is None:
        raise ToolError(Problem(Location("git"), "git is not installed"))
    if check and done.returncode != 0:
        raise ToolError(Problem(Location("git"), f"git {' '.join(args)} failed: {done.stderr.strip()[-500:]}"))
    return done


def stored_credentials(root: Path) -> list[str]:
    """Credentials that actions/checkout stores in the repository (http.<url>.extraheader), as ``-c`` options.

    A clone into a scratch folder does not read the checkout's config, so they are passed on explicitly.
    """
    done = git_checked(root, "config", "--get-regexp", r"^http\..*\.extraheader$", check=False)
    config: list[str] = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        config += ["-c", f"{key}={value}"]
    return config


def clone_branch(
    root: Path, url: str, branch: str, into: Path, config: Sequence[str] = (), shallow: bool = False
) -> bool:
    """``branch`` of ``url`` cloned into ``into``; False (an empty repository there, on that branch) if it does not exist yet."""
    exists = git_checked(root, "ls-remote", "--exit-code", "--heads", url, branch, config=config, check=False)
    if exists.returncode not in (0, 2):  # 2: reached, no such branch; anything else: not reached
        raise ToolError(
            Problem(
                Location("git", key=url),
                f"cannot reach the remote: {exists.stderr.strip()[-300:] or 'git ls-remote failed'}",
                "check the remote's URL (git remote -v) and your access to it",
            )
        )
    if exists.returncode == 0:
        depth = ["--depth", "1"] if shallow else []
        git_checked(
            root, "clone", "--quiet", *depth, "--branch", branch, "--single-branch", url, str(into), config=config
        )
        return True
    into.mkdir(parents=True)
    git_checked(into, "init", "--quiet")
    git_checked(into, "checkout", "--quiet", "--orphan", branch)
    git_checked(into, "remote", "add", "origin", url)
    return False
