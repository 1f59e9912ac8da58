"""The manuscript's sources in ``content/``, read and checked before anything is rendered.

Manubot layout: ``NN.name.md`` sections (concatenated in file-name order),
``metadata.yaml``, ``manual-references*.json`` (CSL JSON) and ``images/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livingreview.load import includes
from livingreview.load.config import CONFIG_NAME
from livingreview.load.project import RESOURCES
from livingreview.util import yamlfile
from livingreview.util.errors import ContentError, Location, Problem


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


def _check_metadata(path: Path, root: Path, problems: list[Problem]) -> dict[str, Any]:
    if not path.exists():
        problems.append(Problem(Location(path), "missing", "create metadata.yaml with at least a 'title:' line"))
        return {}
    try:
        data = yamlfile.load(path)
    except yamlfile.YamlSyntaxError as exc:
        problems.append(exc.problem)
        return {}
    if data is None:
        # Manubot itself fails on an empty file with a traceback.
        problems.append(Problem(Location(path, 1), "is empty", "add at least a 'title:' line"))
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
    _check_metadata_paths(path, root, data, problems)
    return json.loads(json.dumps(data, default=str))


# Metadata that pandoc reads as file paths, and metadata it pastes into the page as HTML.
_PATH_KEYS = ("bibliography", "csl", "citation-abbreviations")
_HTML_KEYS = ("header-includes", "include-before", "include-after")


def _check_metadata_paths(path: Path, root: Path, data: dict[str, Any], problems: list[Problem]) -> None:
    # Pandoc runs in the project folder, so these paths are relative to it.
    content = path.parent.resolve()
    for key in _PATH_KEYS:
        values = data.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and (":" in value or not (root / value).resolve().is_relative_to(content)):
                problems.append(
                    Problem(
                        Location(path, yamlfile.line_of(data, [key]), key),
                        f"{value!r} lies outside the project's content",
                        f"give a path inside {path.parent.name}/, relative to the project",
                    )
                )
    for key in _HTML_KEYS:
        values = data.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                for problem in includes.check(path, value, path.parent):
                    problem.location = Location(path, yamlfile.line_of(data, [key]), key)
                    problems.append(problem)


def _csl_validator() -> Any:
    # jsonschema takes a sixth of a second to import: only a command that reads manual references pays for it.
    import jsonschema

    schema = json.loads((RESOURCES / "csl" / "csl-data-local.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema["items"] | {"definitions": schema["definitions"]})


def _line_of_item(text: str, item: dict[str, Any]) -> int | None:
    needle = re.compile(r'"id"\s*:\s*' + re.escape(json.dumps(item.get("id"))))
    found = needle.search(text)
    return text.count("\n", 0, found.start()) + 1 if found else None


def _check_references(paths: list[Path], problems: list[Problem]) -> None:
    validator = None
    for path in paths:
        if path.suffix != ".json":
            continue
        text = path.read_text(encoding="utf-8-sig")
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(Location(path, exc.lineno), f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(items, list):
            problems.append(Problem(Location(path, 1), "must be a JSON array of CSL items"))
            continue
        validator = validator or _csl_validator()
        for index, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                problems.append(
                    Problem(Location(path, key=f"[{index}]"), "CSL item without an 'id'", 'give every item an "id"')
                )
                continue
            # Manubot silently drops fields that break the CSL schema (an author given
            # as a string vanishes from the bibliography), so they are errors here.
            for error in sorted(validator.iter_errors(item), key=lambda e: list(e.absolute_path)):
                field = yamlfile.key_path(list(error.absolute_path))
                problems.append(
                    Problem(
                        Location(
                            path, _line_of_item(text, item), f"[{index}] {item['id']}" + (f".{field}" if field else "")
                        ),
                        f"invalid CSL: {error.message}",
                        'names are lists of {"family": ..., "given": ...} (or {"literal": ...}); '
                        'dates are {"date-parts": [[year, month, day]]}',
                    )
                )


def _read_section(path: Path, problems: list[Problem]) -> Section | None:
    data = path.read_bytes()
    try:
        return Section(path, data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(
            Problem(
                Location(path, line),
                f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                "save the file as UTF-8",
            )
        )
        return None


def read_content(directory: Path, root: Path | None = None, references: Sequence[Path] = ()) -> Content:
    """Read and check ``directory``; raise one ``ContentError`` listing every problem.

    ``root`` is the project folder, against which pandoc resolves paths in metadata and
    ``references`` (citations.references, which load_config has checked are files inside it).
    """
    root = (root or directory.parent).resolve()
    if not directory.is_dir():
        raise ContentError(
            Problem(Location(directory), "content folder not found", f"create it, or set content_dir in {CONFIG_NAME}")
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
    # Symlinks first: nothing below may read through one that leaves content/.
    problems: list[Problem] = includes.outside_symlinks(directory)
    escaping = {problem.location.path for problem in problems}
    sections = [s for p in paths if p not in escaping and (s := _read_section(p, problems))]
    metadata = (
        _check_metadata(directory / "metadata.yaml", root, problems)
        if directory / "metadata.yaml" not in escaping
        else {}
    )
    manual = sorted(directory.glob("manual-references*.*"))
    # Manubot lets the file read last win for an id, so the manual references come after the
    # configured ones (which may be a frozen copy of what Manubot once looked up online).
    listed = {path.resolve() for path in manual}
    configured = [root / p for p in references if (root / p).resolve() not in listed]
    reference_files = list(dict.fromkeys(configured)) + manual
    _check_references([p for p in reference_files if p not in escaping], problems)
    for section in sections:
        problems.extend(includes.check(section.path, section.text, directory))
    if problems:
        raise ContentError(problems)
    return Content(directory, sections, metadata, reference_files)
