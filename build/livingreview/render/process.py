"""Stage "process": Manubot's ``manubot process``, with strict templating.

We call Manubot's own functions (``load_variables`` reads metadata.yaml and authors
exactly as ``manubot process`` does) but render the Jinja2 templates ourselves, for
three reasons: an undefined variable must be an error with ``file:line`` (Manubot
prints an empty string and exits 0), the permalink stamp must come from the real
checkout rather than CI environment variables, and ``--skip-remote`` behaviour must be
guaranteed (Manubot otherwise adds a ``rootstock`` remote to the repository).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import re
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from livingreview.load.config import CONFIG_NAME
from livingreview.load.content import Content, Section
from livingreview.load.project import RESOURCES, Project
from livingreview.render.outputs import OUTPUTS
from livingreview.util import atomic
from livingreview.util.errors import Location, Problem, TemplateError, did_you_mean

_REMOTE_ICON = re.compile(r'<link rel="(?:icon|mask-icon)"[^>]*href="https?://[^"]*"[^>]*>\n?')


@dataclass
class ProcessedManuscript:
    markdown: Path
    variables: dict[str, Any]
    dirty: bool


class _UndefinedVariable(jinja2.UndefinedError):
    def __init__(self, name: str, candidates: list[str]):
        self.name = name
        self.candidates = candidates
        super().__init__(f"'{name}' is undefined")


def _strict_undefined(top_level: list[str]) -> type[jinja2.Undefined]:
    """An Undefined that may be tested (``is defined``, truthiness) but never printed."""

    class StrictOnPrint(jinja2.Undefined):
        __slots__ = ()

        def _fail_with_undefined_error(self, *args, **kwargs):
            # The sandbox answers a refused attribute with an Undefined carrying a
            # SecurityError; that must stay a refusal, not turn into "undefined".
            if isinstance(self._undefined_exception, type) and issubclass(self._undefined_exception, SecurityError):
                raise SecurityError(self._undefined_hint or "refused by the template sandbox")
            owner = self._undefined_obj
            keys = list(owner.keys()) if hasattr(owner, "keys") else top_level
            raise _UndefinedVariable(str(self._undefined_name), keys)

        __str__ = _fail_with_undefined_error

    return StrictOnPrint


# Beyond this, a template's output is a denial of service on CI, not a manuscript.
_MAX_PRODUCT = 1_000_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with arithmetic that cannot exhaust memory.

    The sandbox already refuses internal attributes (``__globals__``, ``__class__``,
    ...), calls that mutate lists and dicts, and ranges over 100,000 items.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError(f"exponent {right} is too large for a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > _MAX_PRODUCT:
                    raise SecurityError("repeating a sequence to over a million items is refused in templates")
        return super().call_binop(context, operator, left, right)


def _environment(sections: dict[str, str], top_level: list[str]) -> jinja2.Environment:
    # Same syntax options as manubot.process.util.template_with_jinja2, so Manubot
    # content renders identically; what differs is that undefined variables are errors
    # and that the content of a pull request is untrusted: it is sandboxed, and may
    # include or import only other sections (by file name), never a file read from disk.
    by_name = dict(sections)
    by_name.update({Path(path).name: text for path, text in sections.items()})
    return _Sandbox(
        loader=jinja2.FunctionLoader(lambda name: (by_name[name], name, lambda: True) if name in by_name else None),
        undefined=_strict_undefined(top_level),
        autoescape=False,
        comment_start_string="{##",
        comment_end_string="##}",
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        keep_trailing_newline=True,
    )


def _template_line(exc: BaseException, filename: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def _expression_at(text: str, line: int | None, name: str) -> str | None:
    if line is None:
        return None
    source = text.splitlines()[line - 1] if line <= len(text.splitlines()) else ""
    for expr in re.findall(r"\{\{.*?\}\}", source):
        if name in expr:
            return expr
    return None


_SANDBOX_HINT = (
    "sections are untrusted input: templates may use variables, filters, 'if', 'for' and 'include' of other "
    "sections, but never internal attributes, modules or calls that change data (docs/threat-model.md)"
)


def _render_problem(exc: Exception, section: Section, name: str) -> Problem:
    """What went wrong while rendering ``section``, at its ``file:line``."""
    line = _template_line(exc, name)
    if isinstance(exc, _UndefinedVariable):
        expr = _expression_at(section.text, line, exc.name)
        return Problem(
            Location(section.path, line),
            f"undefined template variable '{exc.name}'" + (f" in {expr}" if expr else ""),
            did_you_mean(
                exc.name, exc.candidates, "guard optional values with '{% if x is defined %}'", n=3, cutoff=0.5
            ),
        )
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return Problem(Location(section.path, exc.lineno), f"template syntax error: {exc.message}")
    if isinstance(exc, jinja2.TemplateNotFound):
        return Problem(
            Location(section.path, line),
            f"template {exc.name!r} not found",
            "'include' and 'import' accept only the file name of another section, e.g. '02.introduction.md'",
        )
    if isinstance(exc, (SecurityError, OverflowError)):
        message = str(exc).rstrip(".")
        return Problem(Location(section.path, line), f"refused by the template sandbox: {message}", _SANDBOX_HINT)
    if isinstance(exc, jinja2.TemplateError):
        return Problem(Location(section.path, line), f"template error: {exc}")
    # Anything else a template expression can raise (a bad filter argument, 1/0, ...).
    return Problem(Location(section.path, line), f"template error: {type(exc).__name__}: {exc}")


def render_sections(content: Content, variables: dict[str, Any]) -> str:
    """Render each section as a Jinja2 template and concatenate them as Manubot does."""
    sections = sections_with_front_matter(content)
    sources = {str(s.path): s.text for s in sections}
    env = _environment(sources, sorted(variables))
    rendered, problems = [], []
    for section in sections:
        name = str(section.path)
        try:
            rendered.append(env.get_template(name).render(**variables))
        except Exception as exc:
            problems.append(_render_problem(exc, section, name))
    if problems:
        raise TemplateError(problems)
    return "\n\n".join(rendered) + "\n"


FRONT_MATTER = RESOURCES / "content" / "00.front-matter.md"
# Rootstock's own template writes the name before the reference ("Figure @fig:x" -> "Figure 1"),
# so a text that does so keeps bare numbers; any other gets names ("@fig:x" -> "fig. 1").
_NAMED_REFERENCE = re.compile(
    r"\b(?:fig(?:ure)?s?|tab(?:le)?s?|eq(?:uation)?s?|eqn)\.?\s+[+*!]?@(?:fig|tbl|eq):", re.IGNORECASE
)


def _front_matter_text() -> str:
    """The built-in front matter with its icons as data: URLs, so it needs no files in content/images/.

    (``livingreview new`` copies the file itself, with the icons, into content/.)
    """
    text = FRONT_MATTER.read_text(encoding="utf-8")
    for icon in ("orcid.svg", "github.svg"):
        data = base64.b64encode((FRONT_MATTER.parent / "images" / icon).read_bytes()).decode()
        text = text.replace(f"images/{icon}", f"data:image/svg+xml;base64,{data}")
    return text


def sections_with_front_matter(content: Content) -> list[Section]:
    """The sections, after the built-in front matter when none of them is one (authors and stamp always show)."""
    if any("front-matter" in section.name for section in content.sections):
        return content.sections
    return [Section(FRONT_MATTER, _front_matter_text()), *content.sections]


def _manubot_variables(project: Project, content: Content) -> dict[str, Any]:
    # Manubot's process modules take a tenth of a second to import; commands that never render skip them.
    from manubot.process.metadata import get_header_includes
    from manubot.process.util import load_variables

    out = project.output_dir
    args = argparse.Namespace(
        meta_yaml_path=content.directory / "metadata.yaml",
        template_variables_path=[],
        skip_remote=True,
        skip_citations=True,
        manual_references_paths=[os.path.relpath(p, project.root) for p in content.reference_files],
        references_path=out / "references.json",
        citations_path=out / "citations.tsv",
        requests_cache_path=out / "requests-cache",
        clear_requests_cache=False,
    )
    # Manubot reads CI variables from the environment; ours come from git below.
    logging.getLogger().setLevel(logging.ERROR)
    variables = load_variables(args)
    manubot = variables["manubot"]
    for key in ("ci_source", "html_url", "pdf_url", "html_url_versioned", "pdf_url_versioned"):
        manubot.pop(key, None)

    revision = project.revision
    generated = revision.commit_time if revision and not revision.dirty else datetime.now().astimezone()
    manubot["generated"] = generated.isoformat(timespec="seconds")
    manubot["generated_date_long"] = f"{generated:%B} {generated.day}, {generated.year}"
    if "date" not in content.metadata:
        # A build of a clean commit must not depend on the day it ran.
        manubot["date"] = variables["pandoc"]["date-meta"] = generated.date().isoformat()
        manubot["date_long"] = manubot["generated_date_long"]

    slug, site = project.repository, project.site_url
    if site:
        manubot["html_url"] = site
        manubot["pdf_url"] = site + "manuscript.pdf"
    if revision and slug:
        # Without a repository, ci_source stays undefined, as in a local Manubot build:
        # rootstock's front matter reads ci_source.repo_slug whenever ci_source is defined.
        owner, name = slug.split("/", 1)
        manubot["ci_source"] = {
            "provider": "github" if os.getenv("GITHUB_ACTIONS") == "true" else "local",
            "repo_slug": slug,
            "repo_owner": owner,
            "repo_name": name,
            "commit": revision.commit,
            "triggering_commit": revision.commit,
            "dirty": revision.dirty,
        }
    if revision and site and not revision.dirty:
        # A dirty tree is never given a commit's permalink.
        manubot["html_url_versioned"] = f"{site}v/{revision.commit}/"
        manubot["pdf_url_versioned"] = f"{site}v/{revision.commit}/manuscript.pdf"
    # A reference reads as a name and number ("fig. 1") unless metadata.yaml says otherwise, or the text
    # names its targets itself, rootstock-style ("Figure @fig:x"), when a name would be said twice.
    pandoc = variables["pandoc"]
    if not any(key.endswith("-cleveref") for key in pandoc):
        pandoc["xnos-cleveref"] = not any(_NAMED_REFERENCE.search(s.text) for s in content.sections)
    # Manubot's template links its favicon from manubot.org: a reader's browser would
    # fetch it, and the HTML must work offline.
    header = _REMOTE_ICON.sub("", get_header_includes(variables))
    if revision is None or revision.dirty:
        header += '<meta name="livingreview-dirty" content="true" />\n'
    # Read by the theme's links bar: what this version of the site holds next to the manuscript.
    for fmt, output in OUTPUTS.items():
        if fmt in project.config.formats:
            header += f'<meta name="livingreview-{fmt}" content="{output.linked}" />\n'
    if project.config.analyses and project.config.notebook_pages:
        header += '<meta name="livingreview-notebooks" content="notebooks/index.html" />\n'
    variables["pandoc"]["header-includes"] = header
    return variables


def process(
    project: Project,
    content: Content,
    extra: dict[str, Any] | None = None,
    not_publication_scale: dict[str, str] | None = None,
) -> ProcessedManuscript:
    """Write ``output/manuscript.md`` and ``output/variables.json`` as ``manubot process`` does."""
    # Deferred as in _manubot_variables.
    from manubot.process.manuscript import get_manuscript_stats
    from manubot.util import get_configured_yaml

    variables = _manubot_variables(project, content)
    if not_publication_scale:
        # Read by the theme's banner: which published values are not at publication scale, and why.
        notice = "; ".join(f"{name} ({why})" for name, why in not_publication_scale.items())
        variables["pandoc"]["header-includes"] += (
            f'<meta name="livingreview-not-publication-scale" content="{html.escape(notice, quote=True)}" />\n'
        )
    raw = "\n\n".join(s.text for s in content.sections) + "\n"
    variables["manubot"]["manuscript_stats"] = get_manuscript_stats(raw)
    out = project.output_dir
    atomic.write_text(out / "variables.json", json.dumps(variables, ensure_ascii=False, indent=2, default=str) + "\n")
    clashes = sorted(set(extra or {}) & set(variables))
    if clashes:
        raise TemplateError(
            Problem(
                Location(CONFIG_NAME, key=f"analyses.{clashes[0]}"),
                f"analysis name {clashes[0]!r} clashes with a Manubot or metadata.yaml variable",
                "rename the analysis",
            )
        )
    variables.update(extra or {})
    text = render_sections(content, variables)

    markdown = out / "manuscript.md"
    with atomic.atomic_path(markdown) as tmp, tmp.open("w", encoding="utf-8") as handle:
        get_configured_yaml().dump(
            variables["pandoc"],
            handle,
            default_flow_style=False,
            explicit_start=True,
            explicit_end=True,
            width=float("inf"),
            allow_unicode=True,
            sort_keys=False,
        )
        handle.write("\n")
        handle.write(text)
    dirty = project.revision is None or project.revision.dirty
    return ProcessedManuscript(markdown, variables, dirty)
