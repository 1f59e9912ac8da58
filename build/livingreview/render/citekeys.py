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

For the HTML page there is a shorter way when no two keys the text may cite name the
same reference (:meth:`Resolver.as_cited`): citeproc gets each reference under the key
that cites it, the filter renames nothing, and :func:`rename_page` renames the keys in
the page (and reads from it what was cited), as they would have been renamed before
citeproc. What Manubot says about keys, and the references serialised for the filter
and for ``references.json``, are kept between builds (:class:`Memo`).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from collections.abc import Callable, Iterable
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
# (The pattern starts with "@", so that the search skips to each one; a "-" before it
# changes nothing that is captured.)
_KEY = re.compile(r"@(?<![\w@]@)(?:\{([^{}\s]*)\}|(\w[\w:.#$%&\-+?<>~/]*))")
# "[@tag]: doi:10.1000/x" at the start of a line: Manubot reads it as an alias.
_ALIAS = re.compile(r"^\[@[^\]\s]+\]:[ \t]*(\S+)", re.M)
# Anything that could be a paragraph starting with a citation and a colon, which is how
# Manubot recognises an alias definition (after list or quote markers, in brackets or not).
# A colon that a word character or "/" follows belongs to the key ("@fig:x", "@url:https://").
# (Searched for in "\n" + the text: starting with a newline, the search skips to each.)
_ALIAS_PARAGRAPH = re.compile(
    r"\n[^\S\n]*(?:>[^\S\n]*)*(?:(?:[*+-]|\d+[.)])[^\S\n]+)?(?:\[[^\n]*@[^\n]*\]|-?@\S*):(?![\w/])"
)
_XNOS_PREFIXES = ("fig", "tbl", "eq", "sec")


# The end of each word in a run of key characters: where pandoc may end a key.
_WORD_END = re.compile(r"\w(?!\w)")


def candidate_keys(text: str) -> set[str]:
    """Every string pandoc could read as a citation key (or alias target) in ``text``."""
    keys: set[str] = set()
    runs: set[str] = set()
    for braced, run in _KEY.findall(text):
        if run:
            runs.add(run)
        else:
            keys.add(braced)
    # A key is cited many times: each distinct run is cut into its prefixes once.
    for run in runs:
        keys.update(run[: end.end()] for end in _WORD_END.finditer(run))
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
    return _load_references(root, paths, extra, cache)[0]


def _load_references(root: Path, paths: list[str], extra: list[Any], cache: Path | None) -> tuple[dict[str, dict], str]:
    """load_references, and the fingerprint of what the references were loaded from."""
    key = _fingerprint(root, paths, extra)
    if cache and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("fingerprint") == key:
                return stored["references"], key
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
    return references, key


def _is_xnos(key: str) -> bool:
    return key.split(":", 1)[0] in _XNOS_PREFIXES if ":" in key else False


@dataclass
class Memo:
    """What a build asks Manubot about citation keys (standard and short ids, warnings
    about malformed keys), which depends on nothing but the key, Manubot's version and
    whether prefixes are inferred, and texts made from the references (each with the
    digest of what it was made from): kept in ``path`` (the texts next to it) between
    builds, so that a rebuild asks Manubot only about new keys and serialises the
    references only when the ones cited change."""

    path: Path | None
    version: str
    standard: dict[str, str] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)
    inspected: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # made in this process, by name and digest
    changed: bool = False

    @classmethod
    def load(cls, path: Path | None, infer_prefixes: bool) -> Memo:
        version = f"manubot {manubot.__version__}, infer prefixes {infer_prefixes}"
        if path and path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("version") == version:
                    return cls(path, version, stored["standard"], stored["short"], stored["inspected"])
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                pass  # a damaged memo is rebuilt
        return cls(path, version)

    def text(self, name: str, digest: str, make: Callable[[], str]) -> str:
        """The text ``name`` made from what ``digest`` stands for, made by ``make`` unless kept.

        Each is a file of its own (the digest on its first line), read only when asked for.
        """
        kept = self.texts.get(f"{name} {digest}")
        if kept is not None:
            return kept
        file = self.path.with_name(f"{self.path.stem}-{name}.txt") if self.path else None
        if file and file.is_file():
            first, _, text = file.read_text(encoding="utf-8").partition("\n")
            if first == digest:
                return text
        text = self.texts[f"{name} {digest}"] = make()
        if file:
            atomic.write_text(file, f"{digest}\n{text}")
        return text

    def save(self) -> None:
        if self.path and self.changed:
            data = {
                "version": self.version,
                "standard": self.standard,
                "short": self.short,
                "inspected": self.inspected,
            }
            atomic.write_text(self.path, json.dumps(data, ensure_ascii=False))
            self.changed = False


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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
    # Manubot's answers about keys, and texts made from the references (see Memo).
    memo: Memo = field(default_factory=lambda: Memo(None, ""))
    # The fingerprint of what the references were loaded from (see _fingerprint).
    fingerprint: str = ""
    # The keys the text itself may cite (``keys`` adds the targets of aliases), and the
    # aliases of the metadata (citekey-aliases: tag -> key).
    text_keys: set[str] = field(default_factory=set)
    metadata_aliases: dict[str, str] = field(default_factory=dict)

    def standard_id(self, key: str) -> str:
        """Manubot's standard form of a (de-aliased) key."""
        known = self.memo.standard.get(key)
        if known is not None:
            return known
        # Deferred: commands that import the html stage without rendering (site, run) skip its import.
        from manubot.cite.citekey import CiteKey

        try:
            standard = CiteKey(key, infer_prefix=self.infer_prefixes).standard_id
        except Exception:  # Manubot's handlers reject some malformed keys
            standard = key
        self.memo.standard[key] = standard
        self.memo.changed = True
        return standard

    def short_id(self, standard_id: str) -> str:
        """Manubot's short id of a standard id."""
        known = self.memo.short.get(standard_id)
        if known is None:
            # Deferred as in standard_id.
            from manubot.cite.citekey import shorten_citekey

            known = self.memo.short[standard_id] = shorten_citekey(standard_id)
            self.memo.changed = True
        return known

    def item_id(self, key: str) -> str | None:
        """The id of the CSL item ``key`` cites, or None."""
        item = self.references.get(self.standard_id(key))
        return item["id"] if item else None

    def resolve_map(self) -> dict[str, str]:
        """Each key (de-aliased, not a cross-reference) that resolves, with its item's id."""
        resolve = {}
        for key in self.keys:
            if _is_xnos(key):
                continue
            item_id = self.item_id(key)
            if item_id:
                resolve[key] = item_id
        return resolve

    def as_cited(self) -> dict[str, str] | None:
        """Each key the text may cite (as written) that resolves, with its item's id, when
        no two of them name the same item and no alias paragraph may rename any: then
        citeproc can find every reference under the key it is cited by, and the page's
        ids are renamed after pandoc (see rename_page). None otherwise."""
        if self.aliases:
            return None
        found: dict[str, str] = {}
        for key in self.text_keys:
            dealiased = self.metadata_aliases.get(key, key)
            if _is_xnos(dealiased):
                continue
            item_id = self.item_id(dealiased)
            if item_id:
                if any(c.isspace() or c == '"' for c in key):
                    return None  # not one token of data-cites
                found[key] = item_id
        return found if len(set(found.values())) == len(found) else None

    def write_data(self, path: Path, as_cited: dict[str, str] | None = None) -> None:
        """The metadata file the Lua filter reads: map, items, bibliography. The items are
        under their ids (Manubot's short ids), for the filter to rename the citations,
        unless ``as_cited`` (see as_cited) puts each under the key that cites it."""
        resolve = self.resolve_map()
        by_item = {item_id: key for key, item_id in as_cited.items()} if as_cited is not None else None
        ids = set(resolve.values()) if by_item is None else set(by_item)

        def items() -> str:
            chosen = [item for _, item in sorted(self.references.items()) if item["id"] in ids]
            if by_item is not None:
                chosen = [{**item, "id": by_item[item["id"]]} for item in chosen]
            return json.dumps(_meta(chosen), ensure_ascii=False)

        meta = {
            "livingreview-resolve": _meta(resolve),
            "livingreview-bibliography": _meta(list(self.bibliography)),
            "livingreview-alias-paragraphs": _meta(self.aliases),
            "livingreview-allow-unresolved": _meta(self.allow_unresolved),
            "livingreview-as-cited": _meta(by_item is not None),
        }
        chosen_ids = sorted(ids) if by_item is None else sorted(f"{k} {v}" for v, k in by_item.items())
        # One text of each kind: the page's (as cited) and the other formats' (renamed).
        kind = "references-as-cited" if by_item is not None else "references-renamed"
        references = self.memo.text(kind, _digest(self.fingerprint, *chosen_ids), items)
        rest = json.dumps(meta, ensure_ascii=False)
        path.write_text('{"livingreview-references":' + references + "," + rest[1:], encoding="utf-8")

    def cited_items(self, cited: Iterable[tuple[str, str]]) -> list[dict]:
        """The CSL items of the cited keys, in Manubot's order (by standard id)."""
        ids = {self.item_id(dealiased) for _, dealiased in cited}
        return [item for _, item in sorted(self.references.items()) if item["id"] in ids]

    def inspect(self, cited: Iterable[tuple[str, str]]) -> list[str]:
        """Manubot's warnings about malformed keys (an arXiv id that is not one, ...)."""
        warnings = []
        for dealiased in dict.fromkeys(d for _, d in cited):
            report = self.memo.inspected.get(dealiased)
            if report is None:
                # Deferred as in standard_id.
                from manubot.cite.citekey import CiteKey

                try:
                    report = CiteKey(dealiased, infer_prefix=self.infer_prefixes).inspect() or ""
                except Exception as exc:  # pragma: no cover - depends on Manubot's handlers
                    report = str(exc)
                self.memo.inspected[dealiased] = report
                self.memo.changed = True
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
    references, fingerprint = _load_references(root, bibliography, extra, cache)
    infer = pandoc_metadata.get("manubot-infer-citekey-prefixes", True)
    text_keys = candidate_keys(manuscript_text)
    keys = set(text_keys)
    aliases = pandoc_metadata.get("citekey-aliases") or {}
    metadata_aliases = {}
    if isinstance(aliases, dict):
        metadata_aliases = {str(k): str(v) for k, v in aliases.items()}
        keys.update(metadata_aliases.values())
    alias_paragraphs = _ALIAS_PARAGRAPH.search("\n" + manuscript_text) is not None
    memo = Memo.load(cache.with_name("citekeys.json") if cache else None, bool(infer))
    return Resolver(
        references,
        bibliography,
        bool(infer),
        keys,
        alias_paragraphs,
        memo=memo,
        fingerprint=fingerprint,
        text_keys=text_keys,
        metadata_aliases=metadata_aliases,
    )


@dataclass
class Report:
    """What the Lua filter met: cited keys and unresolved ones, each as (key, de-aliased key)."""

    cited: list[tuple[str, str]]
    unresolved: list[tuple[str, str]]
    # The filter ran with the items under the keys that cite them (see rename_page):
    # what was cited is to be read from the page.
    as_cited: bool = False

    @classmethod
    def read(cls, path: Path) -> Report | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("as_cited"):
            return cls([], [], as_cited=True)
        return cls([tuple(p) for p in data["cited"]], [tuple(p) for p in data["unresolved"]])


# In pandoc's HTML: the keys of each citation, its links to the reference list, and the
# reference list's entries (html5 writer, citeproc with link-citations). Each pattern
# starts with a literal, which the search skips to.
_CITES = re.compile(r'<span class="citation" data-cites="([^"]*)"')
_LINKS = re.compile(r'<a href="#ref-([^"]*)" role="doc-biblioref"')
_ENTRIES = re.compile(r'<div id="ref-([^"]*)" class="csl-entry"')
_NOT_FOUND = re.compile(r"^\[WARNING\] Citeproc: citation (.+) not found\r?$", re.M)


def _escape(text: str) -> str:
    """An attribute value as pandoc's HTML writer escapes it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def rename_page(page: str, stderr: str, resolver: Resolver, as_cited: dict[str, str]) -> tuple[str, Report] | None:
    """A page rendered with the references under the keys that cite them (see
    Resolver.as_cited), with each such key renamed to its item's id where citeproc wrote
    it (the citations' data-cites, their links, the reference list), as the filter would
    have renamed it before citeproc; and the report the filter would have written: the
    keys cited, in order (data-cites, then the reference list, then citeproc's warnings
    of keys without a reference), and those without a reference.

    None when the page does not list every reference its citations name (a template or
    option of the project's that writes them otherwise): the filter must rename then.
    """
    escaped = {_escape(key): _escape(item_id) for key, item_id in as_cited.items()}
    seen: dict[str, None] = {}
    listed: set[str] = set()

    def cites(match: re.Match[str]) -> str:
        keys = match.group(1).split()
        for key in keys:
            seen.setdefault(key)
        return '<span class="citation" data-cites="' + " ".join(escaped.get(key, key) for key in keys) + '"'

    def link(match: re.Match[str]) -> str:
        key = match.group(1)
        return '<a href="#ref-' + escaped.get(key, key) + '" role="doc-biblioref"'

    def entry(match: re.Match[str]) -> str:
        key = match.group(1)
        seen.setdefault(key)
        listed.add(key)
        return '<div id="ref-' + escaped.get(key, key) + '" class="csl-entry"'

    page = _ENTRIES.sub(entry, _LINKS.sub(link, _CITES.sub(cites, page)))
    if any(key in escaped and key not in listed for key in seen):
        return None
    keys = [html.unescape(key) for key in seen]
    keys.extend(match.group(1) for match in _NOT_FOUND.finditer(stderr))
    cited, unresolved = [], []
    for key in dict.fromkeys(keys):
        dealiased = resolver.metadata_aliases.get(key, key)
        if _is_xnos(dealiased):
            continue
        cited.append((key, dealiased))
        if key not in as_cited:
            unresolved.append((key, dealiased))
    return page, Report(cited, unresolved)


def prepare_retry(resolver: Resolver, report: Report) -> bool:
    """Whether running pandoc again may resolve the keys the filter could not: a key
    the pattern over manuscript.md did not foresee (it is added to the map), or an alias
    paragraph the filter was told it need not look for (it will look). Rare by design."""
    missed = [(k, d) for k, d in report.unresolved if d not in resolver.keys and resolver.item_id(d)]
    retry = bool(missed) or not resolver.aliases
    resolver.keys.update(d for _, d in missed)
    resolver.text_keys.update(k for k, _ in missed)
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
        ids = {resolver.item_id(dealiased) for _, dealiased in report.cited}
        ids.discard(None)

        def listed() -> str:
            return json.dumps(resolver.cited_items(report.cited), indent=2, ensure_ascii=False) + "\n"

        digest = _digest(resolver.fingerprint, *sorted(i for i in ids if i))
        atomic.write_text(root / bibliography, resolver.memo.text("references-json", digest, listed))
    citekeys = pandoc_metadata.get("manubot-output-citekeys")
    if citekeys:
        table = io.StringIO()
        writer = csv.writer(table, delimiter="\t")
        writer.writerow(["input_id", "dealiased_id", "standard_id", "short_id"])
        for key, dealiased in report.cited:
            standard = resolver.standard_id(dealiased)
            writer.writerow([key, dealiased, standard, resolver.short_id(standard)])
        atomic.write_text(root / citekeys, table.getvalue())
