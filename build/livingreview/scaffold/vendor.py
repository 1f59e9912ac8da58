"""The tool inside a manuscript repository: ``build/livingreview/``, its pyproject and its pins.

A manuscript repository must build on a fresh machine from the package registries alone,
and livingreview itself is on none of them. So, as rootstock carries Manubot's build
scripts, every repository carries a copy of the tool (``build/``), installed into its venv
with ``pip install -e ./build``. The pins of the tool's dependencies come from the
environment that runs ``new`` or ``upgrade``: the versions the tool was tested with, not
whatever a resolver picks later.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import livingreview
from livingreview.util import atomic
from livingreview.util.errors import ConfigError, Location, Problem

PACKAGE = Path(livingreview.__file__).resolve().parent
# What the analyses of a new manuscript need beyond the tool (the example notebook plots with numpy).
ANALYSIS_PACKAGES = ("numpy", "matplotlib")
# pip freeze leaves these out too: every venv has its own.
_NOT_PINNED = {"pip", "setuptools", "wheel", "livingreview"}
LOCK_BEGIN = "# --- livingreview's dependencies: rewritten by `livingreview upgrade` ---"
LOCK_END = "# --- end of livingreview's dependencies; your analyses' packages go below ---"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==")


def copy_tool(target: Path) -> None:
    """``target/livingreview``: this installation's package, sources and resources, without caches."""
    shutil.copytree(PACKAGE, target / "livingreview", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    atomic.write_text(target / "pyproject.toml", pyproject())


def pyproject() -> str:
    """A pyproject.toml that installs the vendored copy, with this installation's requirements."""
    dist = metadata.distribution("livingreview")
    requires = [r for r in dist.requires or [] if _applies(Requirement(r), ())]
    scripts = [e for e in dist.entry_points if e.group == "console_scripts"]
    lines = [
        "# Installs the vendored livingreview (./ci/quickstart.sh runs `pip install -e ./build`).",
        "# Written by `livingreview new` / `livingreview upgrade`: do not edit.",
        "[build-system]",
        'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        'name = "livingreview"',
        f'version = "{dist.version}"',
        'requires-python = ">=3.11"',
        "dependencies = [",
        *(f'    "{r}",' for r in requires),
        "]",
        "",
        "[project.scripts]",
        *(f'{e.name} = "{e.value}"' for e in scripts),
        "",
        "[tool.setuptools.packages.find]",
        'where = ["."]',
        'include = ["livingreview*"]',
        "",
        "[tool.setuptools.package-data]",
        'livingreview = ["resources/**/*"]',
    ]
    return "\n".join(lines) + "\n"


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras))


def pins(extra: Iterable[str] = ANALYSIS_PACKAGES) -> dict[str, str]:
    """name -> installed version for livingreview's runtime dependencies (transitively) and ``extra``."""
    found: dict[str, str] = {}
    todo = [Requirement(r) for r in metadata.requires("livingreview") or []]
    todo = [r for r in todo if _applies(r, ())] + [Requirement(name) for name in extra]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another platform
        found[name] = dist.version
        todo.extend(r for r in map(Requirement, dist.requires or []) if _applies(r, requirement.extras))
    return {name: version for name, version in sorted(found.items()) if name not in _NOT_PINNED}


def lock_text(current: str | None = None) -> tuple[str, list[str]]:
    """The lock file with the managed block set to this installation's pins.

    Lines outside the block (the author's) are kept, except pins of a package the block
    now pins, which pip would refuse as a conflict: those are dropped and returned.
    """
    pinned = pins()
    block = [LOCK_BEGIN, *(f"{name}=={version}" for name, version in pinned.items()), LOCK_END]
    header = [
        "# Exact versions of every Python package the build and the analyses run with, installed in one",
        "# pip call by ci/quickstart.sh. Add the packages your analyses import after the block below, as",
        "# name==version; a change to this file re-runs every analysis.",
    ]
    if current is None:
        return "\n".join([*header, *block]) + "\n", []
    lines = current.splitlines()
    if LOCK_BEGIN in lines and LOCK_END in lines:
        before, after = lines[: lines.index(LOCK_BEGIN)], lines[lines.index(LOCK_END) + 1 :]
    else:
        before, after = [], lines
    kept, dropped = [], []
    for line in after:
        match = _PIN.match(line)
        if match and canonicalize_name(match.group(1)) in pinned:
            dropped.append(line.strip())
        else:
            kept.append(line)
    return "\n".join([*(before or header), *block, *kept]) + "\n", dropped


def upgrade(root: Path) -> list[str]:
    """Replace the vendored tool of the manuscript at ``root`` with this one; what changed, as lines."""
    vendored = root / "build" / "livingreview"
    if not (root / "build" / "pyproject.toml").is_file() or not vendored.is_dir():
        raise ConfigError(
            Problem(
                Location(root / "build"),
                "no vendored livingreview here (build/livingreview/ and build/pyproject.toml)",
                "upgrade works on repositories made by `livingreview new`; run it with -C <manuscript repository>",
            )
        )
    if vendored.resolve() == PACKAGE:
        raise ConfigError(
            Problem(Location(vendored), "this is the copy that is running", "run the newer livingreview's upgrade")
        )
    old_version = _version(root / "build" / "pyproject.toml")
    staging = root / "build" / ".livingreview.upgrade"
    shutil.rmtree(staging, ignore_errors=True)
    copy_tool(staging)
    lock = root / "ci" / "requirements.lock"
    text, dropped = lock_text(lock.read_text(encoding="utf-8") if lock.is_file() else None)
    # The new copy is complete before the old one goes: an interrupted upgrade leaves one or the other.
    old = root / "build" / ".livingreview.old"
    shutil.rmtree(old, ignore_errors=True)
    vendored.rename(old)
    (staging / "livingreview").rename(vendored)
    (staging / "pyproject.toml").replace(root / "build" / "pyproject.toml")
    shutil.rmtree(old)
    shutil.rmtree(staging)
    atomic.write_text(lock, text)
    changes = [f"build/livingreview: {old_version} -> {livingreview.__version__}", "ci/requirements.lock: pins updated"]
    changes += [f"ci/requirements.lock: dropped your pin {line} (livingreview pins it)" for line in dropped]
    return changes


def _version(pyproject: Path) -> str:
    match = re.search(r'^version = "([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else "unknown version"
