"""The README is what a newcomer runs: its commands and help text must be true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_shows_the_current_help():
    shown = re.search(r"```text\n(usage: livingreview .*?)```", README, re.S).group(1)
    actual = subprocess.run(
        [sys.executable, "-m", "livingreview", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    ).stdout
    assert shown.strip() == actual.strip()


def test_ci_runs_the_readme_test_command_verbatim():
    quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quickstart.splitlines() if line.strip()]
    assert len(commands) == 2, "the Quickstart is exactly two commands"
    build, test = commands
    assert build == "./ci/quickstart.sh build"
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
