"""``livingreview new``: a complete manuscript repository, ready to build, check and deploy.

Everything is written into a staging folder next to the target and renamed into place
at the end, so an interrupted ``new`` leaves no half-made repository behind.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from livingreview.load.project import RESOURCES
from livingreview.scaffold import vendor
from livingreview.util.errors import ConfigError, Location, Problem

SCAFFOLD = RESOURCES / "scaffold"
# Scaffold files whose names cannot be what they are in the repository (a dotfile in a
# package, a workflow folder that GitHub would run in livingreview's own repository).
_RENAMED = {"gitignore": ".gitignore", "github": ".github", "build-README.md": "build/README.md"}


@dataclass
class Options:
    title: str = "A living review"
    authors: Sequence[str] = ("Your Name",)
    repository: str | None = None


@dataclass
class Created:
    root: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            Problem(Location(target), "already exists and is not empty", "name a new folder, e.g. my-review")
        )


def check_slug(repository: str | None) -> None:
    if repository is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise ConfigError(
            Problem(Location("--repository"), f"{repository!r} is not a GitHub owner/name slug", "e.g. jdoe/my-review")
        )


def create(target: Path, options: Options, fill: Callable[[Path, dict], None] | None = None) -> Created:
    """Make the repository at ``target`` (which must not exist, or be empty).

    ``fill(staging, context)`` may replace or add files before the repository is moved into
    place: the Manubot migration puts a rootstock ``content/`` there.
    """
    target = target.resolve()
    check_target(target)
    check_slug(options.repository)
    staging = target.parent / f".{target.name}.livingreview-new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        context = {
            "title": options.title,
            "authors": list(options.authors),
            "repository": options.repository,
            "env_name": re.sub(r"[^A-Za-z0-9_-]+", "-", target.name).strip("-") or "livingreview",
        }
        _render_tree(SCAFFOLD, staging, context)
        shutil.copyfile(RESOURCES / "content" / "00.front-matter.md", staging / "content" / "00.front-matter.md")
        shutil.copytree(RESOURCES / "content" / "images", staging / "content" / "images")
        vendor.copy_tool(staging / "build")
        (staging / "ci" / "requirements.lock").write_text(vendor.lock_text()[0], encoding="utf-8")
        if fill:
            fill(staging, context)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    return Created(target, files=[f for f in files if f.parts[:2] != ("build", "livingreview")])


def _render_tree(source: Path, target: Path, context: dict) -> None:
    # Manubot's comment syntax: "{#fig:x}" in Markdown is an attribute, not a Jinja2 comment.
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        comment_start_string="{##",
        comment_end_string="##}",
    )
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(source).as_posix()
        for old, new in _RENAMED.items():
            if relative == old or relative.startswith(old + "/"):
                relative = new + relative[len(old) :]
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".j2":
            out = out.with_suffix("")
            out.write_text(env.from_string(path.read_text(encoding="utf-8")).render(context), encoding="utf-8")
        else:
            shutil.copyfile(path, out)
        if path.stat().st_mode & 0o111:
            out.chmod(0o755)
