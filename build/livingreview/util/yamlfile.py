"""YAML loading that remembers line numbers, so every error can point at its line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from livingreview.util.errors import Location, Problem


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


def load(path: Path) -> Any:
    """Parse ``path`` round-trip (keeping line info). Raises ``YamlSyntaxError``."""
    yaml = YAML(typ="rt")
    try:
        text = path.read_text(encoding="utf-8-sig")
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(
            Problem(
                Location(path, line),
                f"cannot parse YAML: {reason}",
                "check indentation, and quote values containing ':' or '#'",
            )
        ) from None
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(Problem(Location(path), f"not UTF-8 text: {exc}")) from None


def line_of(data: Any, loc: Sequence[str | int]) -> int | None:
    """1-based line of the deepest node of ``loc`` that exists in ``data``."""
    line = None
    node = data
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    if line is None and isinstance(data, (CommentedMap, CommentedSeq)):
        line = data.lc.line + 1
    return line


def key_path(loc: Sequence[str | int]) -> str:
    """Render ``('formats', 1)`` as ``formats[1]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
