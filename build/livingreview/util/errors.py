"""Domain exceptions.

Every failure a user can cause is a ``LivingReviewError`` carrying the place it
happened (file, line, key) and a hint. The CLI boundary (``cli.main``) is the only
place that turns them into messages and exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def did_you_mean(word: str, candidates: Iterable[str], otherwise: str, n: int = 1, cutoff: float = 0.6) -> str:
    """The hint for a misspelt name: its closest candidates, or ``otherwise``."""
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=cutoff)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else otherwise


def _display(path: Path | str) -> str:
    """Paths inside the current folder are shown relative to it, as editors and terminals link them."""
    path = Path(path)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    return str(path)


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file, optionally a line and a config key path."""

    path: Path | str
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        text = _display(self.path)
        if self.line is not None:
            text += f":{self.line}"
        if self.key:
            text += f": {self.key}"
        return text


@dataclass
class Problem:
    """One problem among possibly many found in a single pass."""

    location: Location
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class LivingReviewError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1
    title = "build failed"

    def __init__(self, problems: list[Problem] | Problem | str, hint: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(Location("livingreview"), problems, hint)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ConfigError(LivingReviewError):
    exit_code = 2
    title = "invalid configuration"


class ContentError(LivingReviewError):
    exit_code = 3
    title = "invalid manuscript content"


class TemplateError(ContentError):
    title = "template error"


class CitationError(ContentError):
    title = "unresolved citations"


class ToolError(LivingReviewError):
    """An external program (pandoc, chromium, git) failed or is missing."""

    exit_code = 4
    title = "external tool failed"


class AnalysisError(LivingReviewError):
    """A notebook is missing, malformed, mis-parameterised or failed while running."""

    exit_code = 5
    title = "analysis failed"


class SchedulingError(AnalysisError):
    """The analyses cannot run where they were sent: no worker with a GPU, no worker at all."""

    title = "analyses cannot be scheduled"


class VerificationError(LivingReviewError):
    """``livingreview verify``: a re-run value disagrees with the published one, or a key is missing or extra."""

    exit_code = 6
    title = "published values not reproduced"


class BusyError(LivingReviewError):
    """Another ``livingreview`` command is using the project, and ``--no-wait`` was given."""

    exit_code = 7
    title = "project busy"
