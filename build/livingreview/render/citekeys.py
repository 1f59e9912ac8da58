"""Manubot citation keys, resolved once in Python before pandoc runs.

Manubot's ``pandoc-manubot-cite`` filter turns each citation key into its standard form
(``@doi:10.1000/XYZ`` -> ``doi:10.1000/xyz``), looks that up in the manual references,
renames the citation to the item's short id and hands the cited items to citeproc. As a
JSON filter it makes pandoc serialise the whole document and parse it back, which on a
large review costs seconds. Here the half that needs Manubot runs in the build process,
with Manubot's own functions, on every key the manuscript *could* cite; the Lua filter
``resources/pandoc/lua/citekeys.lua`` applies the result inside pandoc and reports the
keys it actually met.

Which keys pandoc will parse is found with a generous pattern over ``manuscript.md``.
Should pandoc meet a key the pattern missed, the filter reports it as unresolved, and
:func:`prepare_retry` tells whether the map only lacked it (the caller runs pandoc
again) or no reference matches it (an error naming every place that cites it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import manubot

from livingreview.render.cite_filter import RESOURCES, local_csl_validator
from livingreview.util import atomic

DATA_ENV = "LIVINGREVIEW_CITEKEYS"
"""Environment variable naming the file the Lua filter reads (key map and CSL items)."""

REPORT_ENV = "LIVINGREVIEW_CITATIONS"
"""Environment variable naming the file the Lua filter writes (keys cited, keys unresolved)."""

# A citation key as pandoc's Markdown reader sees one: "@" not preceded by a word
# character, then either "{...}" or a word character followed by word characters and
# the punctuation pandoc allows inside keys. Pandoc ends a key before punctuation that
# no word character follows, so every prefix of a run ending at such a place is a
# candidate (a superset is harmless: the filter only looks keys up).
_KEY = re.compile(r"(?<![\w@])-?@(?:\{([^{}\s]*)\}|(\w[\w:.#$%&\-+?<>~/]*))")
# "[@tag]: doi:10.1000/x" at the start of a line: Manubot reads it as an alias.
_ALIAS = re.compile(r"^\[@[^\]\s]+\]:[ \t]*(\S+)", re.M)
# Anything that could be a paragraph starting with a citation and a colon, which is how
# Manubot recognises an alias definition (after list or quote markers, in brackets or not).
_ALIAS_PARAGRAPH = re.compile(
    r"^[^\S\n]*(?:>[^\S\n]*)*(?:(?:[*+-]|\d+[.)])[^\S\n]+)?(?:\[[^\n]*@[^\n]*\]|-?@\S*):", re.M
)
_XNOS_PREFIXES = ("fig", "tbl", "eq", "sec")


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def candidate_keys(text: str) -> set[str]:
    """Every string pandoc could read as a citation key (or alias target) in ``text``."""
    keys: set[str] = set()
    for match in _KEY.finditer(text):
        if match.group(1) is not None:
            keys.add(match.group(1))
            continue
        run = match.group(2)
        for end in range(1, len(run) + 1):
            if _word(run[end - 1]) and (end == len(run) or not _word(run[end])):
                keys.add(run[:end])
    for match in _ALIAS.finditer(text):
        keys.add(match.group(1))
    return keys


def _meta(value: Any) -> dict[str, Any]:
    """A Python value as a pandoc metadata value, converted as panflute converts it
    for Manubot's filter (numbers become strings), so citeproc sees the same items."""
    if isinstance(value, bool):
        return {"t": "MetaBool", "c": value}
    if isinstance(value, str):
        return {"t": "MetaString", "c": value}
    if isinstance(value, (int, float)):
        return {"t": "MetaString", "c": str(value)}
    if isinstance(value, list):
        return {"t": "MetaList", "c": [_meta(v) for v in value if v is not None]}
    if isinstance(value, dict):
        return {"t": "MetaMap", "c": {k: _meta(v) for k, v in value.items() if v is not None}}
    raise TypeError(f"cannot pass {type(value).__name__} to pandoc metadata: {value!r}")


def _fingerprint(root: Path, paths: list[str], extra: list[Any]) -> str:
    digest = hashlib.sha256()
    digest.update(f"manubot {manubot.__version__}\n".encode())
    digest.update((RESOURCES / "csl/csl-data-local.json").read_bytes())
    for path in paths:
        digest.update(f"\n{path}\n".encode())
        file = root / path
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_references(root: Path, paths: list[str], extra: list[Any], cache: Path | None = None) -> dict[str, dict]:
    """Manual references by standard id, exactly as Manubot's filter loads them.

    Checking 500 items against the CSL schema takes most of a second, so the result is
    kept in ``cache`` and reused while the files, Manubot and the schema are unchanged.
    """
    key = _fingerprint(root, paths, extra)
    if cache and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("fingerprint") == key:
                return stored["references"]
        except (json.JSONDecodeError, KeyError, AttributeError):
            pass  # a damaged cache is rebuilt
    # Manubot's citation modules take some 70 ms to import: only a cache miss needs them.
    import manubot.cite.citeproc as citeproc
    from manubot.process.bibliography import load_manual_references

    # Manubot downloads the CSL schema to validate items; the local copy is the same schema.
    citeproc.get_jsonschema_csl_validator = local_csl_validator
    # Paths are relative to the project root, where pandoc (and Manubot's filter) run;
    # Manubot notes only each file's name in its items, so the absolute path is the same.
    references = load_manual_references([str(root / p) for p in paths], extra_csl_items=extra)
    references = {standard_id: dict(item) for standard_id, item in references.items()}
    if cache:
        atomic.write_text(cache, json.dumps({"fingerprint": key, "references": references}, ensure_ascii=False))
    return references


def _is_xnos(key: str) -> bool:
    return key.split(":", 1)[0] in _XNOS_PREFIXES if ":" in key else False


@dataclass
class Resolver:
    """Manubot's key -> CSL item resolution for one manuscript."""

    references: dict[str, dict]
    bibliography: list[str]
    infer_prefixes: bool = True
    keys: set[str] = field(default_factory=set)
    # Whether the filter must look for "[@tag]: doi:..." alias paragraphs (it skips a
    # walk over every paragraph when the text cannot hold one).
    aliases: bool = True
    # citations.unresolved: warn. The filter then leaves a key without an item as it is,
    # which citeproc shows as the key in bold with "?", as Manubot's filter leaves it.
    allow_unresolved: bool = False

    def standard_id(self, key: str) -> str:
        """Manubot's standard form of a (de-aliased) key."""
        # Deferred: commands that import the html stage without rendering (site, run) skip its import.
        from manubot.cite.citekey import CiteKey

        try:
            return CiteKey(key, infer_prefix=self.infer_prefixes).standard_id
        except Exception:  # Manubot's handlers reject some malformed keys
            return key

    def item_id(self, key: str) -> str | None:
        """The id of the CSL item ``key`` cites, or None."""
        item = self.references.get(self.standard_id(key))
        return item["id"] if item else None

    def write_data(self, path: Path) -> None:
        """The metadata file the Lua filter reads: map, items (by standard id), bibliography."""
        resolve = {}
        for key in self.keys:
            if _is_xnos(key):
                continue
            item_id = self.item_id(key)
            if item_id:
                resolve[key] = item_id
        ids = set(resolve.values())
        items = [item for _, item in sorted(self.references.items()) if item["id"] in ids]
        meta = {
            "livingreview-resolve": _meta(resolve),
            "livingreview-references": _meta(items),
            "livingreview-bibliography": _meta(list(self.bibliography)),
            "livingreview-alias-paragraphs": _meta(self.aliases),
            "livingreview-allow-unresolved": _meta(self.allow_unresolved),
        }
        path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    def cited_items(self, cited: Iterable[tuple[str, str]]) -> list[dict]:
        """The CSL items of the cited keys, in Manubot's order (by standard id)."""
        ids = {self.item_id(dealiased) for _, dealiased in cited}
        return [item for _, item in sorted(self.references.items()) if item["id"] in ids]

    def inspect(self, cited: Iterable[tuple[str, str]]) -> list[str]:
        """Manubot's warnings about malformed keys (an arXiv id that is not one, ...)."""
        # Deferred as in standard_id.
        from manubot.cite.citekey import CiteKey

        warnings = []
        for dealiased in dict.fromkeys(d for _, d in cited):
            try:
                report = CiteKey(dealiased, infer_prefix=self.infer_prefixes).inspect()
            except Exception as exc:  # pragma: no cover - depends on Manubot's handlers
                report = str(exc)
            if report:
                warnings.append(f"citation key {dealiased}: {report}")
        return warnings


def resolver_for(root: Path, pandoc_metadata: dict[str, Any], manuscript_text: str, cache: Path | None) -> Resolver:
    """A resolver for ``manuscript.md``, given the pandoc metadata it was written with."""
    bibliography = pandoc_metadata.get("bibliography", [])
    if isinstance(bibliography, str):
        bibliography = [bibliography]
    bibliography = [str(p) for p in bibliography]
    extra = pandoc_metadata.get("references") or []
    references = load_references(root, bibliography, extra, cache)
    infer = pandoc_metadata.get("manubot-infer-citekey-prefixes", True)
    keys = candidate_keys(manuscript_text)
    aliases = pandoc_metadata.get("citekey-aliases") or {}
    if isinstance(aliases, dict):
        keys.update(str(v) for v in aliases.values())
    alias_paragraphs = _ALIAS_PARAGRAPH.search(manuscript_text) is not None
    return Resolver(references, bibliography, bool(infer), keys, alias_paragraphs)


@dataclass
class Report:
    """What the Lua filter met: cited keys and unresolved ones, each as (key, de-aliased key)."""

    cited: list[tuple[str, str]]
    unresolved: list[tuple[str, str]]

    @classmethod
    def read(cls, path: Path) -> Report | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls([tuple(p) for p in data["cited"]], [tuple(p) for p in data["unresolved"]])


def prepare_retry(resolver: Resolver, report: Report) -> bool:
    """Whether running pandoc again may resolve the keys the filter could not: a key
    the pattern over manuscript.md did not foresee (it is added to the map), or an alias
    paragraph the filter was told it need not look for (it will look). Rare by design."""
    missed = [d for _, d in report.unresolved if d not in resolver.keys and resolver.item_id(d)]
    retry = bool(missed) or not resolver.aliases
    resolver.keys.update(missed)
    resolver.aliases = True
    return retry


def unresolved_items(resolver: Resolver, report: Report) -> list[dict[str, str]]:
    """The keys no manual reference matches, as ``render._unresolved_error`` reports them."""
    return [{"input_id": key, "standard_id": resolver.standard_id(d)} for key, d in report.unresolved]


def write_outputs(root: Path, resolver: Resolver, report: Report, pandoc_metadata: dict[str, Any]) -> None:
    """``references.json`` and ``citations.tsv``, which Manubot's filter writes where the
    metadata says (rootstock publishes them next to the manuscript), in its format."""
    bibliography = pandoc_metadata.get("manubot-output-bibliography")
    if bibliography:
        items = resolver.cited_items(report.cited)
        atomic.write_text(root / bibliography, json.dumps(items, indent=2, ensure_ascii=False) + "\n")
    citekeys = pandoc_metadata.get("manubot-output-citekeys")
    if citekeys:
        # Deferred as in Resolver.standard_id.
        from manubot.cite.citekey import shorten_citekey

        table = io.StringIO()
        writer = csv.writer(table, delimiter="\t")
        writer.writerow(["input_id", "dealiased_id", "standard_id", "short_id"])
        for key, dealiased in report.cited:
            standard = resolver.standard_id(dealiased)
            writer.writerow([key, dealiased, standard, shorten_citekey(standard)])
        atomic.write_text(root / citekeys, table.getvalue())
