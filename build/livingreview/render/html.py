"""Stage "html": pandoc turns ``output/manuscript.md`` into ``output/manuscript.html``.

Two renderers give the same numbers, cross-references, citations and reference list.
"lua", the default, runs the current pandoc (3.x, from the pypandoc-binary wheel) and
numbers figures, tables and equations and renames Manubot citation keys with Lua
filters inside it (``resources/pandoc/lua/``, one pass over the document), after
resolving the keys once in this process (:mod:`livingreview.citekeys`). For the page,
when each reference is cited by one key only, citeproc gets the references under the
keys as cited and the keys are renamed in the page afterwards, which spares the filters
a walk of every citation (``citekeys.rename_page``). "rootstock" runs rootstock's own chain on
pandoc 2.19.2: the Python JSON filters pandoc-fignos, pandoc-eqnos, pandoc-tablenos
and Manubot's cite filter, each of which re-parses the whole document. It is kept as
the reference the Lua renderer is tested and benchmarked against
(:mod:`livingreview.equivalence`). ``pandoc.renderer`` in manuscript.yaml picks one
(overridden by ``LIVINGREVIEW_RENDERER``, and both by ``--renderer``).

A citation key that no reference resolves fails the stage, naming every place that cites
it, unless ``citations.unresolved`` is ``warn`` (or ``--unresolved-citations warn``):
then both renderers leave it as Manubot does, citeproc prints it as the key in bold with
"?", the keys are one warning (and go to the version record through the pipeline), and
the page carries them in a ``<meta>`` tag for the theme's links bar.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from livingreview.load.config import CONFIG_NAME
from livingreview.load.content import Content, locate_in
from livingreview.load.project import RESOURCES, Project
from livingreview.render import citekeys
from livingreview.render.cite_filter import ALLOW_UNRESOLVED_ENV, UNRESOLVED_ENV
from livingreview.render.process import ProcessedManuscript
from livingreview.util import atomic, children
from livingreview.util.errors import CitationError, Location, Problem, ToolError

# Where the rootstock renderer's pandoc is, when not where ci/quickstart.sh puts it: a
# property of the machine, not of the manuscript, so no manuscript.yaml key.
REFERENCE_PANDOC_ENV = "LIVINGREVIEW_REFERENCE_PANDOC"
REFERENCE_PANDOC_VERSION = "2.19.2"  # rootstock's; the xnos filters reject pandoc 3

_DEFAULTS = RESOURCES / "pandoc" / "defaults"
# Each replaces common.yaml: the options every format shares, and the filter chain.
_COMMON_DEFAULTS = {"lua": _DEFAULTS / "lua.yaml", "rootstock": _DEFAULTS / "common.yaml"}


@cache
def pandoc_executable(name: str = "lua") -> Path:
    """The pandoc renderer ``name`` runs: the bundled current one, or rootstock's 2.19.2."""
    if name == "rootstock":
        return _reference_pandoc()
    # Located without importing pypandoc, whose import costs a tenth of a second.
    spec = importlib.util.find_spec("pypandoc")
    if spec and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "files" / "pandoc"
        if bundled.is_file():
            return bundled
    found = shutil.which("pandoc")
    if found:
        return Path(found)
    raise ToolError("pandoc not found", "install the pinned requirements: pip install -r ci/requirements.lock")


def _reference_pandoc() -> Path:
    configured = os.environ.get(REFERENCE_PANDOC_ENV)
    path = (
        Path(configured) if configured else Path(sys.prefix) / "opt" / f"pandoc-{REFERENCE_PANDOC_VERSION}" / "pandoc"
    )
    if not path.is_file():
        raise ToolError(
            f"pandoc {REFERENCE_PANDOC_VERSION}, which the rootstock renderer needs, is not at {path}",
            "./ci/quickstart.sh installs it from the pypandoc-binary==1.10 wheel;"
            f" or point {REFERENCE_PANDOC_ENV} at a pandoc {REFERENCE_PANDOC_VERSION} binary",
        )
    return path


def pandoc_defaults(project: Project, name: str) -> list[Path]:
    """The project's pandoc defaults files, with the shared ones of renderer ``name``.

    Pandoc appends the filters of every defaults file it is given, so the chains cannot
    be layered: the renderer's file takes the place of the built-in common.yaml.
    """
    common = _DEFAULTS / "common.yaml"
    return [_COMMON_DEFAULTS[name] if path == common else path for path in project.pandoc_defaults]


def pandoc_command(project: Project, markdown: Path, output: Path, name: str) -> list[str]:
    """The pandoc command line of the html stage (also what the benchmarks time)."""
    return [
        str(pandoc_executable(name)),
        *(f"--defaults={path}" for path in pandoc_defaults(project, name)),
        f"--csl={project.csl}",
        # Not --include-in-header: that would replace the header-includes metadata
        # (Manubot's <meta> tags and the equation styles), as rootstock also found.
        f"--include-after-body={project.html_theme}",
        f"--include-after-body={project.html_plugins}",
        f"--output={output}",
        str(markdown),
    ]


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (the filters) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def _citekey_pattern(key: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w@])@" + re.escape(key) + r"(?![\w:.#$%&\-+?<>~/]*\w)")


# The page's list of its unresolved keys, which the theme's links bar shows.
UNRESOLVED_META = "livingreview-unresolved-citations"


@dataclass(frozen=True)
class UnresolvedCitation:
    """A citation key, as cited, that no reference resolves, and every place that cites it."""

    key: str
    standard_id: str
    places: tuple[Location, ...]


@dataclass
class RenderedHtml:
    path: Path
    warnings: list[str] = field(default_factory=list)
    # Left in the page as the key in bold with "?" (citations.unresolved: warn).
    unresolved: list[UnresolvedCitation] = field(default_factory=list)


def _unresolved(items: list[dict[str, str]], content: Content, markdown: Path) -> list[UnresolvedCitation]:
    found: dict[str, UnresolvedCitation] = {}
    for item in items:
        key = item["input_id"]
        if key not in found:
            # Keys produced by a template appear only in the rendered manuscript.md.
            places = content.locate(_citekey_pattern(key)) or locate_in(markdown, _citekey_pattern(key))
            found[key] = UnresolvedCitation(key, item["standard_id"], tuple(places))
    return list(found.values())


def _unresolved_error(unresolved: list[UnresolvedCitation], content: Content) -> CitationError:
    problems = []
    for citation in unresolved:
        hint = (
            f'add a CSL JSON item with "id": "{citation.standard_id}" to '
            f"{content.directory.name}/manual-references.json (the build never looks references up online)"
        )
        for where in citation.places:
            problems.append(Problem(where, f"unresolved citation @{citation.key}", hint))
    return CitationError(problems)


def _places(places: tuple[Location, ...]) -> str:
    """``content/a.md:3,9, content/b.md:4``: one entry per file, as compact as a terminal line allows."""
    lines: dict[str, list[str]] = {}
    for where in places:
        lines.setdefault(str(Location(where.path)), []).append(str(where.line) if where.line else "")
    return ", ".join(f"{path}:{','.join(n for n in numbers if n)}".rstrip(":") for path, numbers in lines.items())


def unresolved_warning(unresolved: list[UnresolvedCitation], content: Content) -> str:
    """One warning for every unresolved key, with where each is cited, and one hint on its own line."""
    listed = "; ".join(f"@{c.key}" + (f" ({_places(c.places)})" if c.places else "") for c in unresolved)
    count = f"{len(unresolved)} unresolved citation{'s' if len(unresolved) != 1 else ''}"
    example = unresolved[0].standard_id
    return (
        f"{count}, shown as the key in bold with '?': {listed}\n"
        f'    hint: add a CSL JSON item for each, with its standard id as "id" (e.g. "id": "{example}"), to '
        f"{content.directory.name}/manual-references.json or to a file listed under citations.references in "
        f"{CONFIG_NAME} (the build never looks references up online)"
    )


def _mark_unresolved(page: str, unresolved: list[UnresolvedCitation]) -> str:
    """The page with its unresolved keys in a ``<meta>`` tag, for the theme to say so."""
    keys = html.escape(" ".join(c.key for c in unresolved), quote=True)
    tag = f'<meta name="{UNRESOLVED_META}" content="{keys}" />\n'
    at = page.find("</head>")
    return page[:at] + tag + page[at:] if at >= 0 else page


_CITEPROC_NOT_FOUND = re.compile(r"\[WARNING\] Citeproc: citation (\S+) not found")


def _quiet_citeproc(warnings: list[str], unresolved: list[UnresolvedCitation]) -> list[str]:
    """Citeproc's own line per unresolved key, which the one warning of the build already says."""
    keys = {c.key for c in unresolved}
    return [line for line in warnings if not ((m := _CITEPROC_NOT_FOUND.search(line)) and m.group(1) in keys)]


# pandoc 2.19's html5 template (the rootstock renderer's) loads html5shiv from a CDN for Internet Explorer < 9.
_HTML5SHIV = re.compile(r"\s*<!--\[if lt IE 9\]>.*?<!\[endif\]-->", re.S)
_IE_ONLY = b"<!--[if lt IE 9]>"

# The xnos filters announce, at length, that they wrote their CSS into header-includes.
# That is what we want (see render_html), so the notice is dropped.
_XNOS_NOTICE = re.compile(r"pandoc-\w+nos: Wrote the following blocks.*?</style>\s*", re.S)


def _meaningful(stderr: str) -> list[str]:
    return [line for line in _XNOS_NOTICE.sub("", stderr).splitlines() if line.strip()]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (its path there, POSIX style) with its size and mtime."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            stat = os.stat(os.path.join(directory, name))
            found[Path(directory, name).relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def copy_images(project: Project) -> None:
    """``content/images/`` into ``output/``, unless the copy there is up to date (the same
    files, sizes and modification times: the copy keeps them)."""
    images, target = project.content_dir / "images", project.output_dir / "images"
    if images.is_dir() and not (target.is_dir() and _files(images) == _files(target)):
        atomic.replace_tree(images, target)


def _pandoc_failed(done: subprocess.CompletedProcess, markdown: Path) -> ToolError:
    return ToolError(
        Problem(
            Location(markdown),
            f"pandoc failed (exit {done.returncode}):\n{done.stderr.strip()[-3000:]}",
            "the messages above come from pandoc or one of its filters",
        )
    )


def render_html(project: Project, processed: ProcessedManuscript, content: Content) -> RenderedHtml:
    """Run pandoc; return the HTML path, the warnings of pandoc and its filters, and the unresolved keys
    (which fail it instead, unless citations.unresolved is warn)."""
    target = project.output_dir / "manuscript.html"
    name = project.config.pandoc.renderer
    with tempfile.TemporaryDirectory() as scratch, atomic.atomic_path(target) as tmp:
        command = pandoc_command(project, processed.markdown, tmp, name)
        if name == "lua":
            warnings, items = _run_lua(project, processed, content, command, Path(scratch), page=tmp)
        else:
            warnings, items = _run_rootstock(project, processed, content, command, Path(scratch))
        unresolved = _unresolved(items, content, processed.markdown)
        if unresolved and project.config.citations.unresolved == "strict":
            raise _unresolved_error(unresolved, content)
        # Readers must never need the network, not even from an IE-only comment (which
        # pandoc 2.19's template writes): the page is decoded and written again only when
        # it holds one, or has unresolved keys to list.
        if unresolved or _IE_ONLY in tmp.read_bytes():
            page = _HTML5SHIV.sub("", tmp.read_text(encoding="utf-8"))
            if unresolved:
                page = _mark_unresolved(page, unresolved)
                warnings = [unresolved_warning(unresolved, content), *_quiet_citeproc(warnings, unresolved)]
            tmp.write_text(page, encoding="utf-8")
    copy_images(project)
    return RenderedHtml(target, warnings, unresolved)


def _allows_unresolved(project: Project) -> bool:
    return project.config.citations.unresolved == "warn"


def _run_rootstock(
    project: Project, processed: ProcessedManuscript, content: Content, command: list[str], scratch: Path
) -> tuple[list[str], list[dict[str, str]]]:
    """Rootstock's filter chain; unresolved keys come back through LIVINGREVIEW_UNRESOLVED."""
    report = scratch / "unresolved.json"
    allow = {ALLOW_UNRESOLVED_ENV: "1"} if _allows_unresolved(project) else {}
    done = subprocess.run(
        command,
        cwd=project.root,
        env=tool_env(**{UNRESOLVED_ENV: str(report)}, **allow),
        capture_output=True,
        text=True,
        preexec_fn=children.preexec(),
    )
    items = json.loads(report.read_text()) if report.exists() else []
    if items and not allow:
        return [], items  # pandoc failed on them: render_html reports where they are cited
    if done.returncode != 0:
        raise _pandoc_failed(done, processed.markdown)
    return _meaningful(done.stderr), items


def may_have_footnotes(markdown: str) -> bool:
    """Whether pandoc could read a footnote in ``markdown`` (a superset).

    ``[^id]`` marks a note; so does ``^[...]``, unless it reads as a superscript (no
    space before the next ``^``), as in rootstock's ``^[✉](#correspondence)^``.
    """
    if "[^" in markdown:
        return True
    for match in re.finditer(r"\^\[", markdown):
        end = markdown.find("^", match.end())
        if end < 0 or re.search(r"\s", markdown[match.start() + 1 : end]):
            return True
    return False


# A "{" (as Markdown writes one) where crossref.lua may find an attribute block to attach
# to the element before it: after math (a "$" that can close it, then spaces), right
# after an image or a span ("](...)", "]", "</span>"), or right after such an element's
# own attributes, which pandoc read (their syntax, a little more generous than pandoc's).
_BRACE = r"(?:\\?\{|&#0*123;|&#[xX]0*7[bB];|&lbrace;|&lcub;)"
# What follows it, up to four characters the Markdown reader passes on unchanged (no
# quotes, dashes or dots that smart punctuation would turn into other characters).
_AFTER_BRACE = r"((?:[A-Za-z0-9#:=]|\.(?!\.)|-(?!-)){0,4})"
_OWN_ATTRIBUTES = (  # possessive throughout: no backtracking, linear time
    r"\{\s*+(?:(?:[#.][^\s}]*+|-|[^\s}=\"']++="
    r"(?:\"(?:\\.|[^\"\\])*+\"|'(?:\\.|[^'\\])*+'|(?:\\.|[^\s}])*+))\s*+)*+\}"
)
# After math, after an image or a span, after their own attributes. A match never
# holds the start of another site of its kind, so finditer finds them all; the last
# kind is matched only where an element's attributes start.
_AFTER_MATH = re.compile(r"\$[ \t]*" + _BRACE + _AFTER_BRACE)
_AFTER_ELEMENT = re.compile(r"[)\]>]" + _BRACE + _AFTER_BRACE)
_AFTER_ATTRIBUTES = re.compile(r"[)\]]" + _OWN_ATTRIBUTES + _BRACE + _AFTER_BRACE)
_MAX_NEEDLES = 24


def brace_needles(markdown: str) -> str:
    """What the text of any paragraph with an attribute block to attach must hold
    (crossref.lua's LIVINGREVIEW_BRACES): "{" and what follows it in the Markdown, one a
    line, wherever the Markdown has such a brace (a superset). Most braces of a review
    are in its formulas, whose paragraphs the filter then passes over."""
    # Math closes with a "$" after something other than a space ("$$" included).
    needles = {
        "{" + match.group(1)
        for match in _AFTER_MATH.finditer(markdown)
        if match.start() == 0 or not markdown[match.start() - 1].isspace()
    }
    needles.update("{" + match.group(1) for match in _AFTER_ELEMENT.finditer(markdown))
    for opening in ("){", "]{"):
        at = markdown.find(opening)
        while at >= 0:
            match = _AFTER_ATTRIBUTES.match(markdown, at)
            if match:
                needles.add("{" + match.group(1))
            at = markdown.find(opening, at + 1)
    if len(needles) > _MAX_NEEDLES or "{" in needles:
        return "{"
    return "\n".join(sorted(needles))


def lua_environment(markdown: str, data: Path, report: Path) -> dict[str, str]:
    """The environment of the Lua filters (lua.yaml): where citekeys.lua reads its data
    and writes its report, and what the Markdown says that lets them skip work."""
    hints = {"LIVINGREVIEW_BRACES": brace_needles(markdown)}
    if not may_have_footnotes(markdown):
        hints["LIVINGREVIEW_NO_NOTES"] = "1"
    return tool_env(**{citekeys.DATA_ENV: str(data), citekeys.REPORT_ENV: str(report)}, **hints)


# A CSL style that prints an item's id (which the page renames only in its links).
_PRINTS_ID = re.compile(r'variable="[^"]*\b(?:id|citation-key)\b')


@cache
def _prints_item_ids(csl: Path) -> bool:
    try:
        return _PRINTS_ID.search(csl.read_text(encoding="utf-8")) is not None
    except OSError:
        return True


def _run_lua(
    project: Project,
    processed: ProcessedManuscript,
    content: Content,
    command: list[str],
    scratch: Path,
    *,
    page: Path | None = None,
) -> tuple[list[str], list[dict[str, str]]]:
    """The Lua filters, after resolving citation keys here (see livingreview.citekeys).

    ``page``: the HTML page the command writes. Given it, the references may go to
    citeproc under the keys that cite them, and the keys be renamed in the page after
    pandoc (citekeys.rename_page), which spares the filter a walk of every citation.
    """
    metadata = processed.variables["pandoc"]
    text = processed.markdown.read_text(encoding="utf-8")
    resolver = citekeys.resolver_for(
        project.root, metadata, text, cache=project.output_dir / ".cache" / "manual-references.json"
    )
    resolver.allow_unresolved = _allows_unresolved(project)
    data, report_path = scratch / "citekeys.json", scratch / "citations.json"
    env = lua_environment(text, data, report_path)
    as_cited_allowed = page is not None and not _prints_item_ids(project.csl)

    def run(as_cited: dict[str, str] | None) -> tuple[subprocess.CompletedProcess, citekeys.Report | None]:
        resolver.write_data(data, as_cited)
        report_path.unlink(missing_ok=True)
        # Killed with the build, even by kill -9: it writes into output/.
        done = subprocess.run(
            command, cwd=project.root, env=env, capture_output=True, text=True, preexec_fn=children.preexec()
        )
        return done, citekeys.Report.read(report_path)

    for attempt in (1, 2):
        as_cited = resolver.as_cited() if as_cited_allowed else None
        done, report = run(as_cited)
        if report is not None and report.as_cited and page is not None and as_cited is not None:
            if done.returncode != 0:
                raise _pandoc_failed(done, processed.markdown)
            renamed = citekeys.rename_page(page.read_text(encoding="utf-8"), done.stderr, resolver, as_cited)
            if renamed is None:
                # The page does not show what was cited: once more, with the filter renaming.
                as_cited_allowed = False
                done, report = run(None)
            else:
                page.write_text(renamed[0], encoding="utf-8")
                report = renamed[1]
        if report is None or not report.unresolved:
            break
        # The same retry under warn, so that both policies resolve exactly the same keys.
        if attempt == 2 or not citekeys.prepare_retry(resolver, report):
            if not resolver.allow_unresolved:
                # pandoc failed on them: render_html reports where they are cited
                return [], citekeys.unresolved_items(resolver, report)
            break
    if done.returncode != 0:
        raise _pandoc_failed(done, processed.markdown)
    if report is None:
        raise ToolError("the citekeys.lua filter did not run", "check the filters in the pandoc defaults files")
    citekeys.write_outputs(project.root, resolver, report, metadata)
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    inspected = resolver.inspect(report.cited)
    resolver.memo.save()
    return inspected + warnings, citekeys.unresolved_items(resolver, report)
