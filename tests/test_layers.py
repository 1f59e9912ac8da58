"""The layer contracts in pyproject.toml hold, and `lint-imports` does fail when they break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The copy in root/build comes first on the path, before the installed package.
    env = {**os.environ, "PYTHONPATH": str(root / "build")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "build" / "livingreview",
        tmp_path / "build" / "livingreview",
        ignore=shutil.ignore_patterns("__pycache__", "resources"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_package_keeps_its_contracts(copy: Path):
    done = lint_imports(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        # Loading may not reach up into a stage.
        ("load/config.py", "from livingreview.render import html  # noqa", "Layers"),
        # Publishing may not import the reviewer commands.
        ("publish/site.py", "from livingreview.review import diff  # noqa", "Layers"),
        # A cycle inside one stage.
        ("execution/execute.py", "from livingreview.execution import executors  # noqa", "No import cycles"),
        # Kernels import the record API without the build.
        ("record.py", "from livingreview.util import errors  # noqa", "notebook API"),
    ],
)
def test_lint_imports_catches_a_broken_layer(copy: Path, module: str, line: str, broken: str):
    path = copy / "build" / "livingreview" / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    done = lint_imports(copy)
    assert done.returncode != 0
    assert any(broken in row and "BROKEN" in row for row in done.stdout.splitlines()), done.stdout
