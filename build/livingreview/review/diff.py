"""``livingreview diff A B``: what changed between two versions of the manuscript.

A version is a commit of the repository or a version of the site (``webpage/v/<name>/``,
named by its folder, a unique commit prefix, ``latest`` or ``local``). For each of the
two, what is available is gathered into a ``Snapshot``:

- prose: the Markdown sections (``content/NN.name.md``) read from git at the commit.
  A site version whose commit is not in the repository (``local``, or a version
  copied from elsewhere) has only its ``manuscript.html``; then both sides are compared
  as the text of the HTML, one section per ``<h2>`` heading;
- references: the CSL items of ``content/manual-references*.json`` (and of the JSON files
  that ``citations.references`` lists now) at the commit, else the entries of the HTML
  bibliography (``<div id="refs">``);
- values and figures: from the published site folder (``values.json`` and the files of
  ``analyses/<name>/figures/`` and ``images/``). A commit that was never published has
  none, and the report says so instead of guessing.

Prose is compared word by word (``difflib.SequenceMatcher`` on whitespace-separated
tokens), per section, sections matched by file name (or heading), then by name
without the number prefix, so renumbering a section is not "removed + added".

The result is printed as text, with git's word-diff markers ``[-removed-]`` and
``{+added+}``, and written as an HTML page to ``output/diff/<A>..<B>.html``. When both
are site versions the page is also written to ``webpage/diffs/<A>..<B>.html`` (version
folders are never changed after publication), for the versions page to link.
"""

from __future__ import annotations

import bisect
import difflib
import json
import os
import re
from collections.abc import Set
from dataclasses import dataclass, field
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.text import Text

from livingreview.load.project import LOCAL_VERSION, RESOURCES, Project
from livingreview.load.results import (
    AnalysisValues,
    FigureRecord,
    Record,
    TableRecord,
    ValueRecord,
    describe,
    parse_values,
)
from livingreview.review.verify import find_version, site_versions
from livingreview.util import atomic
from livingreview.util.errors import ConfigError, Location, Problem, did_you_mean
from livingreview.util.gitinfo import git_output
from livingreview.util.hashing import sha256_file
from livingreview.util.templates import page_templates

CONTEXT_WORDS = 6
_WORD = re.compile(r"\S+")
_SECTION_FILE = re.compile(r"^[0-9].*\.md$")
_NUMBER_PREFIX = re.compile(r"^[0-9]+[._-]?")


# --------------------------------------------------------------------------- reading a version


def git_commit(project: Project, revision: str) -> str | None:
    """The full hash of ``revision`` if the repository has that commit."""
    if not revision or revision.startswith("-"):
        return None
    found = git_output(project.root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    return found.strip() if found else None


class _ManuscriptText(HTMLParser):
    """The visible text of a manuscript.html, split at ``<h2>`` headings, and its bibliography entries."""

    SKIP = {"head", "script", "style", "template"}
    BLOCK = {
        "p",
        "div",
        "li",
        "br",
        "tr",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "figure",
        "figcaption",
        "table",
        "section",
        "ul",
        "ol",
        "dd",
        "dt",
        "header",
        "footer",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[tuple[str, list[str]]] = [("(before the first heading)", [])]
        self.references: list[str] = []
        self._heading: list[str] | None = None
        self._skipping = 0
        self._refs = 0  # div depth inside <div id="refs">; 0 outside
        self._entry: list[str] | None = None
        self._entry_depth = 0
        self._margin_depth = 0  # inside the entry's number ("1. "), which shifts when entries are added

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
            return
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "div":
            if self._refs:
                self._refs += 1
                if "csl-entry" in classes:
                    self._entry, self._entry_depth = [], self._refs
                elif "csl-left-margin" in classes:
                    self._margin_depth = self._refs
            elif attributes.get("id") == "refs":
                self._refs = 1
        if tag == "h2":
            self._heading = []
        elif tag in self.BLOCK:
            self._text("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skipping = max(0, self._skipping - 1)
            return
        if tag == "div" and self._refs:
            if self._margin_depth == self._refs:
                self._margin_depth = 0
            if self._entry is not None and self._entry_depth == self._refs:
                self.references.append(" ".join("".join(self._entry).split()))
                self._entry = None
            self._refs -= 1
        if tag == "h2" and self._heading is not None:
            title = " ".join("".join(self._heading).split()) or "(untitled)"
            names = {name for name, _ in self.sections}
            number = 2
            unique = title
            while unique in names:
                unique, number = f"{title} ({number})", number + 1
            self.sections.append((unique, []))
            self._heading = None
        elif tag in self.BLOCK:
            self._text("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._heading is not None:
            self._heading.append(data)
        elif self._refs:
            if self._entry is not None and not self._margin_depth:
                self._entry.append(data)
        else:
            self._text(data)

    def _text(self, data: str) -> None:
        if not self._skipping and self._heading is None and not self._refs:
            self.sections[-1][1].append(data)


def read_html(path: Path) -> tuple[dict[str, str], list[str]]:
    """(section heading -> text, bibliography entries) of a rendered manuscript."""
    reader = _ManuscriptText()
    reader.feed(path.read_text(encoding="utf-8"))
    reader.close()
    sections = {}
    for name, parts in reader.sections:
        text = "\n".join(" ".join(line.split()) for line in "".join(parts).splitlines())
        text = re.sub(r"\n{2,}", "\n", text).strip()
        if text or name != reader.sections[0][0]:
            sections[name] = text
    return sections, reader.references


def _reference_text(item: dict[str, Any]) -> str:
    authors = [a for a in item.get("author") or [] if isinstance(a, dict)]
    first = (authors[0].get("family") or authors[0].get("literal") or "") if authors else ""
    year = ""
    issued = item.get("issued")
    if isinstance(issued, dict) and issued.get("date-parts"):
        year = str(issued["date-parts"][0][0]) if issued["date-parts"][0] else ""
    head = ", ".join(part for part in (first + (" et al." if len(authors) > 1 else ""), year) if part)
    return f"{item.get('title', '(no title)')}" + (f" ({head})" if head else "")


@dataclass
class Snapshot:
    """One side of a diff: what a commit and/or a published site version make available."""

    spec: str  # as given on the command line
    name: str  # full commit or version folder name, used in file names
    commit: str | None  # a commit the repository has
    folder: Path | None  # webpage/v/<name>/ when published
    project: Project = field(repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name if self.name == LOCAL_VERSION else self.name[:12]

    @cached_property
    def version_record(self) -> dict[str, Any]:
        if self.folder is None:
            return {}
        try:
            return json.loads((self.folder / "version.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @property
    def description(self) -> str:
        """'1a2b3c4d5e6f "Message" (2024-05-01)' for headers."""
        record = self.version_record
        message = record.get("message")
        if message is None and self.commit:
            message = (git_output(self.project.root, "log", "-1", "--format=%s", self.commit) or "").strip()
        date = (record.get("date") or "")[:10]
        if not date and self.commit:
            date = (git_output(self.project.root, "log", "-1", "--format=%cs", self.commit) or "").strip()
        where = "site version" if self.folder else "commit, not published"
        return f"{self.label} ({where}" + (f", {date}" if date else "") + ")" + (f": {message}" if message else "")

    def _content_files(self) -> list[str]:
        folder = str(self.project.config.content_dir).rstrip("/")
        if not self.commit:
            return []
        listing = git_output(self.project.root, "ls-tree", "--name-only", "-z", self.commit, "--", f"./{folder}/") or ""
        return sorted(n for n in listing.split("\0") if n)

    @cached_property
    def markdown(self) -> dict[str, str] | None:
        """Section file name -> Markdown source at the commit."""
        if self.commit is None:
            return None
        sections = {}
        for path in self._content_files():
            name = path.rsplit("/", 1)[-1]
            if _SECTION_FILE.match(name):
                sections[name] = git_output(self.project.root, "show", f"{self.commit}:./{path}") or ""
        return sections

    @cached_property
    def reference_items(self) -> dict[str, dict[str, Any]] | None:
        """CSL items by id, from citations.references and manual-references*.json at the commit."""
        if self.commit is None:
            return None
        items: dict[str, dict[str, Any]] = {}
        # The files the configuration lists now, as the build reads them: first, so that a
        # manual reference wins for the same id. A commit without one of them simply lacks it.
        configured = [p.as_posix() for p in self.project.config.citations.references if p.suffix == ".json"]
        manual = [
            path
            for path in self._content_files()
            if path.rsplit("/", 1)[-1].startswith("manual-references") and path.endswith(".json")
        ]
        for path in [*configured, *manual]:
            try:
                data = json.loads(git_output(self.project.root, "show", f"{self.commit}:./{path}") or "[]")
            except ValueError:
                self.notes.append(f"{path} at {self.label} is not valid JSON; its references are left out")
                continue
            for item in data if isinstance(data, list) else []:
                if isinstance(item, dict) and "id" in item:
                    items[str(item["id"])] = item
        return items

    @cached_property
    def html(self) -> tuple[dict[str, str], list[str]] | None:
        page = self.folder / "manuscript.html" if self.folder else None
        return read_html(page) if page and page.is_file() else None

    @cached_property
    def values(self) -> dict[str, AnalysisValues] | None:
        path = self.folder / "values.json" if self.folder else None
        if path is None or not path.is_file():
            return None
        try:
            return parse_values(json.loads(path.read_text(encoding="utf-8")))
        except ValidationError:  # before ValueError, which it is
            self.notes.append(f"{path.name} of {self.label} is not a valid values.json")
            return None
        except ValueError:
            self.notes.append(f"{path.name} of {self.label} is not valid JSON")
            return None

    @cached_property
    def figures(self) -> dict[str, str] | None:
        """Figure files of the version (analyses' figures and content images) -> sha256."""
        if self.folder is None:
            return None
        files = [*self.folder.glob("analyses/*/figures/*"), *(self.folder / "images").rglob("*")]
        return {p.relative_to(self.folder).as_posix(): sha256_file(p) for p in sorted(files) if p.is_file()}


def load_snapshot(project: Project, spec: str) -> Snapshot:
    """Resolve a site version name, a commit prefix or any git revision."""
    folder = find_version(project, spec)
    if folder is not None:
        try:
            record = json.loads((folder / "version.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {"commit": folder.name, "dirty": folder.name == LOCAL_VERSION}
        # A dirty build's sources are not in any commit: only its HTML says what it was.
        commit = None if record.get("dirty") else git_commit(project, record.get("commit") or "")
        return Snapshot(spec, folder.name, commit, folder, project)
    commit = git_commit(project, spec)
    if commit is None:
        names = [f.name for f in site_versions(project)]
        raise ConfigError(
            Problem(
                Location("command line", key=spec),
                f"neither a version under {project.config.site_dir}/v/ nor a commit of the repository",
                did_you_mean(spec, names, "name a commit (hash, branch, tag) or a published version"),
            )
        )
    published = project.site_dir / "v" / commit
    return Snapshot(spec, commit, commit, published if published.is_dir() else None, project)


# --------------------------------------------------------------------------- prose


@dataclass
class Change:
    """One run of changed words, with a few unchanged words either side."""

    removed: str
    added: str
    before: str
    after: str
    line: int | None  # line in B's source (Markdown only)


@dataclass
class SectionDiff:
    name: str  # B's name (A's for a removed section)
    old_name: str | None
    status: str  # changed, added, removed
    changes: list[Change]
    words_removed: int
    words_added: int


def _tokens(text: str) -> tuple[list[str], list[int]]:
    """Whitespace-separated words and the 1-based line of each."""
    breaks = [m.start() for m in re.finditer("\n", text)]
    words, lines = [], []
    for match in _WORD.finditer(text):
        words.append(match.group())
        lines.append(bisect.bisect_left(breaks, match.start()) + 1)
    return words, lines


def word_diff(old: str, new: str, with_lines: bool = True, context: int = CONTEXT_WORDS) -> list[Change]:
    """The changed runs of words between two texts."""
    a, _ = _tokens(old)
    b, lines = _tokens(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changes = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        line = None
        if with_lines and b:
            line = lines[min(j1, len(b) - 1)]
        changes.append(
            Change(
                removed=" ".join(a[i1:i2]),
                added=" ".join(b[j1:j2]),
                before=" ".join(b[max(0, j1 - context) : j1]),
                after=" ".join(b[j2 : j2 + context]),
                line=line,
            )
        )
    return changes


def _pair(old: dict[str, str], new: dict[str, str]) -> list[tuple[str | None, str | None]]:
    """Match sections by name, then by name without its number prefix; B's order, then removed ones."""
    pairs: dict[str, str | None] = {name: name if name in old else None for name in new}
    left = [name for name in old if name not in new]
    for name, match in pairs.items():
        if match is None:
            stem = _NUMBER_PREFIX.sub("", name)
            candidates = [o for o in left if _NUMBER_PREFIX.sub("", o) == stem]
            if len(candidates) == 1:
                pairs[name] = candidates[0]
                left.remove(candidates[0])
    return [(o, n) for n, o in pairs.items()] + [(o, None) for o in left]


def prose_diff(old: dict[str, str], new: dict[str, str], with_lines: bool) -> tuple[list[SectionDiff], int]:
    """Changed sections, and how many were unchanged."""
    found, unchanged = [], 0
    for a, b in _pair(old, new):
        before, after = old.get(a, "") if a else "", new.get(b, "") if b else ""
        changes = word_diff(before, after, with_lines)
        if not changes and a and b:
            unchanged += 1
            continue
        status = "added" if a is None else "removed" if b is None else "changed"
        found.append(
            SectionDiff(
                name=b or a or "",
                old_name=a if a != b else None,
                status=status,
                changes=changes,
                words_removed=sum(len(c.removed.split()) for c in changes),
                words_added=sum(len(c.added.split()) for c in changes),
            )
        )
    return found, unchanged


# --------------------------------------------------------------------------- values, figures, references


@dataclass
class ValueChange:
    name: str  # analysis.key
    kind: str
    status: str  # changed, added, removed
    old: str | None
    new: str | None
    old_provenance: str | None
    new_provenance: str | None


@dataclass
class AnalysisChange:
    """Why an analysis's values may have changed: its parameters, profile, commit."""

    name: str
    status: str  # changed, added, removed
    details: list[str]


def _shown(entry: Record) -> str:
    if isinstance(entry, TableRecord):
        return f"table of {_count(len(entry.value), 'row')}"
    if isinstance(entry, ValueRecord):
        return entry.shown
    return str(entry.value)  # a figure, which has none, on one side of a changed record


def _appearance(entry: Record) -> tuple[Any, ...]:
    """What a reader sees of a record: it changed if any of this did."""
    if isinstance(entry, ValueRecord):
        return entry.type, entry.value, entry.formatted, entry.unit
    return entry.type, entry.value


def _provenance(analysis: str, side: AnalysisValues | None, entry: Record | None) -> str | None:
    return describe(analysis, side.provenance, entry, brief=True) if side is not None and entry is not None else None


def value_diff(
    old: dict[str, AnalysisValues], new: dict[str, AnalysisValues]
) -> tuple[list[ValueChange], list[AnalysisChange]]:
    """Recorded values and tables that were added, removed or changed (figures: see ``figure_diff``)."""
    values: list[ValueChange] = []
    analyses: list[AnalysisChange] = []
    for analysis in list(new) + [a for a in old if a not in new]:
        a, b = old.get(analysis), new.get(analysis)
        ra = a.records if a is not None else {}
        rb = b.records if b is not None else {}
        for key in list(rb) + [k for k in ra if k not in rb]:
            ea, eb = ra.get(key), rb.get(key)
            entry = eb if eb is not None else ra[key]
            if isinstance(entry, FigureRecord):
                continue
            if ea is not None and eb is not None and _appearance(ea) == _appearance(eb):
                continue
            status = "added" if ea is None else "removed" if eb is None else "changed"
            old_text = _shown(ea) if ea is not None else None
            new_text = _shown(eb) if eb is not None else None
            if old_text == new_text and ea is not None and eb is not None:  # same when formatted: show the exact values
                old_text, new_text = f"{old_text} ({ea.value!r})", f"{new_text} ({eb.value!r})"
            values.append(
                ValueChange(
                    f"{analysis}.{key}",
                    entry.type,
                    status,
                    old_text,
                    new_text,
                    _provenance(analysis, a, ea),
                    _provenance(analysis, b, eb),
                )
            )
        details = []
        pa = a.provenance if a is not None else None
        pb = b.provenance if b is not None else None
        old_params = pa.parameters if pa is not None else {}
        new_params = pb.parameters if pb is not None else {}
        for k in sorted(set(old_params) | set(new_params)):
            if old_params.get(k) != new_params.get(k):
                details.append(f"parameter {k}: {old_params.get(k, '—')!r} → {new_params.get(k, '—')!r}")
        if pa is not None and pb is not None and pa.profile != pb.profile:
            details.append(f"profile: {pa.profile} → {pb.profile}")
        if pa is not None and pb is not None and pa.key != pb.key and not details:
            details.append("code, inputs or environment changed (cache key differs)")
        if a is None or b is None:
            analyses.append(AnalysisChange(analysis, "added" if a is None else "removed", details))
        elif details:
            analyses.append(AnalysisChange(analysis, "changed", details))
    return values, analyses


@dataclass
class FigureChange:
    name: str  # analyses/<name>/figures/<stem> or images/<file>
    status: str  # changed, added, removed
    files: list[str]
    old_file: str | None  # path inside A's version folder, for showing it
    new_file: str | None


def _figure_name(path: str) -> str:
    return path.rsplit(".", 1)[0] if path.startswith("analyses/") else path


def figure_diff(old: dict[str, str], new: dict[str, str]) -> list[FigureChange]:
    """Figures whose files were added, removed or changed, grouped (an analysis figure is an SVG and a PNG)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(set(old) | set(new)):
        groups.setdefault(_figure_name(path), []).append(path)
    found = []
    for name, paths in groups.items():
        changed = [p for p in paths if old.get(p) != new.get(p)]
        if not changed:
            continue
        in_old, in_new = [p for p in paths if p in old], [p for p in paths if p in new]
        status = "added" if not in_old else "removed" if not in_new else "changed"

        def shown(files: list[str]) -> str | None:
            preferred = [p for p in files if p.endswith(".svg")] or [p for p in files if p.endswith(".png")] or files
            return preferred[0] if preferred else None

        found.append(FigureChange(name, status, changed, shown(in_old), shown(in_new)))
    return found


@dataclass
class ReferenceChange:
    status: str  # added, removed, changed
    id: str
    text: str


def reference_diff(old: dict[str, str], new: dict[str, str], changed: Set[str] = frozenset()) -> list[ReferenceChange]:
    found = [ReferenceChange("added", k, new[k]) for k in new if k not in old]
    found += [ReferenceChange("removed", k, old[k]) for k in old if k not in new]
    found += [ReferenceChange("changed", k, new[k]) for k in sorted(changed) if k in old and k in new]
    return found


# --------------------------------------------------------------------------- the whole diff


@dataclass
class Diff:
    old: Snapshot
    new: Snapshot
    prose_source: str | None = None
    sections: list[SectionDiff] = field(default_factory=list)
    unchanged_sections: int = 0
    values: list[ValueChange] | None = None
    analyses: list[AnalysisChange] = field(default_factory=list)
    figures: list[FigureChange] | None = None
    references: list[ReferenceChange] | None = None
    reference_source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return f"{self.old.name}..{self.new.name}.html"


def diff(project: Project, a: str, b: str) -> Diff:
    """Compare versions ``a`` (older) and ``b`` (newer); what cannot be compared is named in ``notes``."""
    old, new = load_snapshot(project, a), load_snapshot(project, b)
    result = Diff(old, new)

    if old.markdown is not None and new.markdown is not None:
        result.prose_source = f"Markdown sources, {project.config.content_dir}/*.md at each commit"
        result.sections, result.unchanged_sections = prose_diff(old.markdown, new.markdown, with_lines=True)
    elif old.html is not None and new.html is not None:
        result.prose_source = "text of each version's manuscript.html, by <h2> section"
        result.sections, result.unchanged_sections = prose_diff(old.html[0], new.html[0], with_lines=False)
        for side in (old, new):
            if side.commit is None:
                result.notes.append(
                    f"{side.label} has no commit in this repository: prose is compared as rendered HTML"
                )
    else:
        missing = [s.label for s in (old, new) if s.markdown is None and s.html is None]
        result.notes.append(
            "prose not compared: "
            + (
                f"{', '.join(missing)} has neither a commit nor a published manuscript"
                if missing
                else "one version has only its Markdown sources, the other only its HTML"
            )
        )

    if old.reference_items is not None and new.reference_items is not None:
        configured = ", ".join(p.as_posix() for p in project.config.citations.references if p.suffix == ".json")
        result.reference_source = "content/manual-references*.json" + (f" and {configured}" if configured else "")
        result.reference_source += " at each commit"
        ra, rb = old.reference_items, new.reference_items
        changed = {k for k in ra.keys() & rb.keys() if ra[k] != rb[k]}
        result.references = reference_diff(
            {k: _reference_text(v) for k, v in ra.items()}, {k: _reference_text(v) for k, v in rb.items()}, changed
        )
    elif old.html is not None and new.html is not None:
        result.reference_source = "bibliography of each version's manuscript.html"
        result.references = reference_diff({t: t for t in old.html[1]}, {t: t for t in new.html[1]})
        for change in result.references:
            change.id = ""
    else:
        result.notes.append("references not compared: neither both commits nor both published versions")

    if old.values is not None and new.values is not None:
        result.values, result.analyses = value_diff(old.values, new.values)
    else:
        unpublished = [s.label for s in (old, new) if s.values is None]
        result.notes.append(
            f"values unavailable: {', '.join(unpublished)} was not published with values "
            f"(build that commit to publish it under {project.config.site_dir}/v/)"
        )
    if old.figures is not None and new.figures is not None:
        result.figures = figure_diff(old.figures, new.figures)
    else:
        unpublished = [s.label for s in (old, new) if s.figures is None]
        result.notes.append(f"figures unavailable: {', '.join(unpublished)} was not published")
    result.notes.extend(old.notes + new.notes)
    return result


# --------------------------------------------------------------------------- output


def _change_text(change: Change) -> Text:
    text = Text("    ")
    if change.line is not None:
        text.append(f"line {change.line}: ", style="dim")
    text.append("…" + (change.before + " " if change.before else ""))
    if change.removed:
        text.append(f"[-{change.removed}-]", style="red strike")
    if change.added:
        text.append(f"{{+{change.added}+}}", style="green")
    text.append((" " + change.after if change.after else "") + "…")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def print_diff(result: Diff, console) -> None:
    """The diff as text: a heading per part, git's word-diff markers for prose."""
    out = console.print
    out(Text(f"Changes from {result.old.description}", style="bold"))
    out(Text(f"          to {result.new.description}", style="bold"))
    for note in result.notes:
        out(Text(f"note: {note}", style="yellow"))

    if result.prose_source:
        out(
            Text(
                f"\nProse ({result.prose_source}): {_count(len(result.sections), 'section')} changed, "
                f"{result.unchanged_sections} unchanged",
                style="bold",
            )
        )
        for section in result.sections:
            renamed = f" (was {section.old_name})" if section.old_name else ""
            out(
                Text(
                    f"  {section.name}{renamed}: {section.status}, +{section.words_added} −{section.words_removed} words"
                )
            )
            for change in section.changes:
                out(_change_text(change))

    if result.values is not None:
        out(Text(f"\nValues: {_count(len(result.values), 'value')} changed", style="bold"))
        for value in result.values:
            out(
                Text(
                    f"  {value.name}: {value.old or '(none)'} → {value.new or '(none)'}"
                    + ("" if value.status == "changed" else f"  [{value.status}]")
                )
            )
            if value.old_provenance:
                out(Text(f"      old: {value.old_provenance}", style="dim"))
            if value.new_provenance:
                out(Text(f"      new: {value.new_provenance}", style="dim"))
        for analysis in result.analyses:
            details = "; ".join(analysis.details) or analysis.status
            out(Text(f"  {analysis.name} ({analysis.status}): {details}"))

    if result.figures is not None:
        out(Text(f"\nFigures: {_count(len(result.figures), 'figure')} changed", style="bold"))
        for figure in result.figures:
            out(Text(f"  {figure.name}: {figure.status} ({', '.join(figure.files)})"))

    if result.references is not None:
        counts = {s: sum(1 for r in result.references if r.status == s) for s in ("added", "removed", "changed")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none changed"
        out(Text(f"\nReferences ({result.reference_source}): {summary}", style="bold"))
        for ref in result.references:
            mark = {"added": "+", "removed": "-", "changed": "~"}[ref.status]
            style = {"added": "green", "removed": "red", "changed": "yellow"}[ref.status]
            out(Text(f"  {mark} " + (f"{ref.id}: " if ref.id else "") + ref.text, style=style))


def _page(project: Project, result: Diff, target: Path) -> str:
    site = project.site_dir / "v"

    def link(snapshot: Snapshot, file: str | None) -> str | None:
        if file is None or snapshot.folder is None:
            return None
        return os.path.relpath(site / snapshot.folder.name / file, target.parent)

    figures = [
        {"change": f, "old": link(result.old, f.old_file), "new": link(result.new, f.new_file)}
        for f in result.figures or []
    ]
    environment = page_templates(RESOURCES / "reports")
    return environment.get_template("diff.html").render(
        diff=result,
        figures=figures,
        old_link=link(result.old, "index.html"),
        new_link=link(result.new, "index.html"),
    )


def write_pages(project: Project, result: Diff) -> list[Path]:
    """``output/diff/<A>..<B>.html``, and ``webpage/diffs/<A>..<B>.html`` when both are site versions."""
    targets = [project.output_dir / "diff" / result.file_name]
    if result.old.folder is not None and result.new.folder is not None:
        targets.append(project.site_dir / "diffs" / result.file_name)
    for target in targets:
        atomic.write_text(target, _page(project, result, target))
    return targets
