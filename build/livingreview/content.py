"""The manuscript's sources in ``content/``, read and checked before anything is rendered.

Manubot layout: ``NN.name.md`` sections (concatenated in file-name order),
``metadata.yaml``, ``manual-references*.json`` (CSL JSON) and ``images/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livingreview import yamlfile
from livingreview.errors import ContentError, Location, Problem

# Markdown images ![alt](path "title") and raw HTML <img src="path">.
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class Section:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Content:
    directory: Path
    sections: list[Section]
    metadata: dict[str, Any]
    reference_files: list[Path]
    problems: list[Problem] = field(default_factory=list)

    def locate(self, needle: re.Pattern[str]) -> list[Location]:
        """Every ``file:line`` of a section where ``needle`` matches."""
        return [where for section in self.sections for where in locate_in(section.path, needle, section.text)]


def locate_in(path: Path, needle: re.Pattern[str], text: str | None = None) -> list[Location]:
    """Every ``path:line`` where ``needle`` matches."""
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    return [Location(path, n) for n, line in enumerate(text.splitlines(), start=1) if needle.search(line)]


def _check_metadata(path: Path, problems: list[Problem]) -> dict[str, Any]:
    if not path.exists():
        problems.append(
            Problem(Location(path), "missing", "create metadata.yaml with at least a 'title:' line")
        )
        return {}
    try:
        data = yamlfile.load(path)
    except yamlfile.YamlSyntaxError as exc:
        problems.append(exc.problem)
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(Location(path, 1), "must be a mapping (title:, authors:, ...)"))
        return {}
    if "title" in data and not isinstance(data["title"], str):
        problems.append(Problem(Location(path, yamlfile.line_of(data, ["title"]), "title"), "must be text"))
    authors = data.get("authors", [])
    if authors is not None and not isinstance(authors, list):
        problems.append(
            Problem(Location(path, yamlfile.line_of(data, ["authors"]), "authors"), "must be a list of authors")
        )
    else:
        for index, author in enumerate(authors or []):
            where = Location(path, yamlfile.line_of(data, ["authors", index]), f"authors[{index}]")
            if not isinstance(author, dict):
                problems.append(Problem(where, "each author must be a mapping with at least 'name:'"))
            elif not isinstance(author.get("name"), str):
                problems.append(Problem(where, "author has no 'name'", "add 'name: Full Name'"))
    return json.loads(json.dumps(data, default=str))


def _check_references(paths: list[Path], problems: list[Problem]) -> None:
    for path in paths:
        if path.suffix != ".json":
            continue
        try:
            items = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            problems.append(Problem(Location(path, exc.lineno), f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(items, list):
            problems.append(Problem(Location(path, 1), "must be a JSON array of CSL items"))
            continue
        for index, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                problems.append(
                    Problem(Location(path, key=f"[{index}]"), "CSL item without an 'id'", "give every item an \"id\"")
                )


def _check_images(section: Section, directory: Path, problems: list[Problem]) -> None:
    in_fence = False
    for number, line in enumerate(section.text.splitlines(), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        if in_fence or "{{" in line:
            continue
        for match in _IMAGE.finditer(line):
            target = match.group(1) or match.group(2)
            where = Location(section.path, number)
            if re.match(r"[a-z][a-z0-9+.-]*://", target, re.I):
                problems.append(
                    Problem(
                        where,
                        f"remote image {target}: readers would need the network to see it",
                        "download it into content/images/ and link the local copy",
                    )
                )
            elif not target.startswith("data:") and not (directory / target.split("#")[0]).is_file():
                problems.append(
                    Problem(where, f"image not found: {target}", f"paths are relative to {directory.name}/")
                )


def read_content(directory: Path) -> Content:
    """Read and check ``directory``; raise one ``ContentError`` listing every problem."""
    if not directory.is_dir():
        raise ContentError(
            Problem(Location(directory), "content folder not found", "create it, or set content_dir in manuscript.yaml")
        )
    paths = sorted(directory.glob("[0-9]*.md"))
    if not paths:
        raise ContentError(
            Problem(
                Location(directory),
                "no manuscript sections found",
                "add Markdown files named like 01.introduction.md",
            )
        )
    problems: list[Problem] = []
    sections = [Section(p, p.read_text(encoding="utf-8-sig")) for p in paths]
    metadata = _check_metadata(directory / "metadata.yaml", problems)
    references = sorted(directory.glob("manual-references*.*"))
    _check_references(references, problems)
    for section in sections:
        _check_images(section, directory, problems)
    if problems:
        raise ContentError(problems)
    return Content(directory, sections, metadata, references)
