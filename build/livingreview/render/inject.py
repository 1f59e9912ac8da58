"""Stage "inject": recorded values, tables and figures as template variables.

``{{ analysis.key }}`` renders a value formatted as the notebook asked, wrapped in a
span whose tooltip gives the exact value and its provenance and which links to the
executed notebook; print CSS shows it as plain text in the PDF. A figure or table key
renders a numbered figure/table block (``{#fig:key}`` / ``{#tbl:key}``) when placed on
a line of its own. Access is tracked so unused records can be listed.
"""

from __future__ import annotations

import html
import re
from typing import Any

from livingreview.load.results import (
    FigureRecord,
    Manifest,
    Record,
    TableRecord,
    ValueRecord,
    all_manifests,
    describe,
)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~^$])")


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _attribute(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", " ")


class Recorded:
    def __init__(
        self, analysis: str, manifest: Manifest, entry: Record, current: str | None = None, pages: bool = True
    ):
        self.analysis = analysis
        self.manifest = manifest
        self.entry = entry
        self.current = current  # the commit being built, None for a dirty tree
        self.pages = pages  # whether the site has notebook pages (config ``notebook_pages``)

    @property
    def link(self) -> str:
        if not self.pages:
            # The executed notebook itself, published in the same version folder (site.py).
            return f"analyses/{self.analysis}/{self.manifest.executed_notebook}"
        cell = self.entry.cell
        anchor = f"#cell-{cell}" if cell is not None else ""
        # The notebook's page in the same version of the site (see notebook_pages.py).
        return f"notebooks/{self.analysis}.html{anchor}"

    def provenance(self) -> str:
        return describe(self.analysis, self.manifest, self.entry, self.current)


class Value(Recorded):
    entry: ValueRecord

    @property
    def plain(self) -> str:
        return self.entry.shown

    @property
    def raw(self) -> Any:
        return self.entry.value

    def __str__(self) -> str:
        key = f"{self.analysis}.{self.entry.key}"
        return (
            f'[{_escape(self.plain)}]({self.link}){{.lr-value data-key="{key}" '
            f'title="{_attribute(self.provenance())}"}}'
        )


class Figure(Recorded):
    entry: FigureRecord

    def __str__(self) -> str:
        files = self.entry.files
        path = f"analyses/{self.analysis}/{files['svg']}"
        return f"![{_escape(self.entry.caption)}]({path}){{#fig:{self.entry.key}}}"


class Table(Recorded):
    entry: TableRecord

    def __str__(self) -> str:
        columns = self.entry.columns
        fmt = self.entry.fmt

        def cell(column: str, value: Any) -> str:
            spec = fmt.get(column)
            return _escape(spec.format(value) if spec and value is not None else str(value))

        lines = ["| " + " | ".join(_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
        for row in self.entry.value:
            lines.append("| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |")
        lines.append("")
        lines.append(f"Table: {_escape(self.entry.caption)} {{#tbl:{self.entry.key}}}")
        return "\n".join(lines)


KINDS: dict[str, type[Recorded]] = {"value": Value, "figure": Figure, "table": Table}


class Namespace:
    """``{{ name.key }}``: attribute access that records which keys were used."""

    def __init__(self, name: str, manifest: Manifest, current: str | None = None, pages: bool = True):
        self._name = name
        self._records = {
            key: KINDS[entry.kind](name, manifest, entry, current, pages) for key, entry in manifest.records.items()
        }
        self._used: set[str] = set()

    def __getattr__(self, key: str) -> Recorded:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            record = self._records[key]
        except KeyError:
            raise AttributeError(key) from None
        self._used.add(key)
        return record

    def keys(self) -> list[str]:
        return list(self._records)

    def unused(self) -> list[str]:
        return [f"{self._name}.{k}" for k in self._records if k not in self._used]


class Unrecorded:
    """``{{ name.key }}`` of an analysis that has never run: any key, shown as a placeholder.

    Used by ``livingreview check``, which validates the text without running analyses:
    keys of an analysis with a manifest are checked against it; others cannot be.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, key: str) -> str:
        if key.startswith("_"):
            raise AttributeError(key)
        return f"⟨{self._name}.{key}⟩"

    def unused(self) -> list[str]:
        return []


def namespaces(project, placeholders: bool = False) -> dict[str, Namespace | Unrecorded]:
    """One namespace per analysis with results; with ``placeholders``, also the others."""
    revision = project.revision
    current = revision.commit if revision and not revision.dirty else None
    found: dict[str, Namespace | Unrecorded] = {
        name: Namespace(name, manifest, current, project.config.notebook_pages)
        for name, manifest in all_manifests(project).items()
    }
    if placeholders:
        for name in project.config.analyses:
            found.setdefault(name, Unrecorded(name))
    return found
