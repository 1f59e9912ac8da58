"""Stages "docx", "jats" and "latex": the manuscript for Word, PubMed Central and journals.

Each is written by the same pandoc as the html stage, from the same processed
``output/manuscript.md``, through the same Lua filters (crossref.lua: numbered figures,
tables and equations and their references; citekeys.lua and citeproc: citations and
the reference list, in the same CSL style), with the citation keys resolved by the same
code (:func:`livingreview.render.html._run_lua`). Only the last filter is theirs:
``resources/pandoc/formats/formats.lua``, which makes the untrusted text safe to hand to
Word, a JATS pipeline or a TeX engine and gives each format its metadata (see its
header, and docs/threat-model.md).

Outputs, in ``output/`` (and, by the publish stage, in the version folder):

- ``manuscript.docx``: figures embedded; styles from ``docx.reference_doc``;
- ``jats/manuscript.jats.xml`` with ``jats/figures/``, and ``manuscript-jats.zip``;
- ``latex/manuscript.tex`` with ``latex/figures/``, ``latex/references.json`` (CSL JSON)
  and ``latex/references.bib`` (BibTeX) of the cited references, and
  ``manuscript-latex.zip``: compiles with pdflatex (twice) or lualatex, no shell escape.

Every image an output holds is a file of the build that was vetted here (under
``content/images/`` or an analysis's result folder, without leaving it through a
symlink) or a data: URL; pandoc itself runs with ``--sandbox`` and reads no other file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livingreview.load.content import Content, locate_in
from livingreview.load.project import RESOURCES, Project
from livingreview.render.html import (
    UnresolvedCitation,
    _quiet_citeproc,
    _run_lua,
    _unresolved,
    _unresolved_error,
    pandoc_executable,
    unresolved_warning,
)
from livingreview.render.outputs import OUTPUTS
from livingreview.render.process import ProcessedManuscript
from livingreview.util import atomic, children
from livingreview.util.errors import ContentError, Location, Problem, ToolError

DATA_ENV = "LIVINGREVIEW_FORMATS"
"""Environment variable naming the JSON file formats.lua reads (format, media, metadata)."""

_DEFAULTS = RESOURCES / "pandoc" / "defaults"

# Images an output may hold, by file suffix.
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
# An SVG with a sibling of the same name in one of these is replaced by it: Word's and
# Google Docs' older readers, PubMed Central and LaTeX all take raster figures.
_INSTEAD_OF_SVG = (".png", ".jpg", ".jpeg", ".pdf")
_MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass
class RenderedFormat:
    path: Path  # the main file (in its bundle folder for JATS and LaTeX, next to their zip)
    warnings: list[str] = field(default_factory=list)
    unresolved: list[UnresolvedCitation] = field(default_factory=list)


def render_format(project: Project, processed: ProcessedManuscript, content: Content, fmt: str) -> RenderedFormat:
    """Write format ``fmt`` of the manuscript; return its paths, pandoc's warnings and the unresolved keys
    (which fail it instead, unless citations.unresolved is warn, as in the html stage)."""
    output = OUTPUTS[fmt]
    out = project.output_dir
    with tempfile.TemporaryDirectory(prefix=f"livingreview-{fmt}-") as scratch_name:
        scratch = Path(scratch_name)
        bundle = scratch / (Path(output.archive).stem if output.archive else fmt)
        (bundle / "figures").mkdir(parents=True)
        target = bundle / Path(output.main).name
        data = scratch / "formats.json"
        filter_data = _without_nulls(_filter_data(project, processed, fmt, bundle))
        data.write_text(json.dumps(filter_data, ensure_ascii=False), "utf-8")
        command = pandoc_command(project, processed.markdown, target, fmt)
        # SOURCE_DATE_EPOCH: rsvg-convert (cairo) dates the PDFs it makes of SVG figures with it.
        with _environment({DATA_ENV: str(data), "SOURCE_DATE_EPOCH": _epoch(processed)}):
            warnings, items = _run_lua(project, processed, content, command, scratch)
        unresolved = _unresolved(items, content, processed.markdown)
        if unresolved and project.config.citations.unresolved == "strict":
            raise _unresolved_error(unresolved, content)
        _check_images(scratch / "report.json", content, processed.markdown, fmt)
        if unresolved:
            warnings = [unresolved_warning(unresolved, content), *_quiet_citeproc(warnings, unresolved)]
        if not any((bundle / "figures").iterdir()):
            (bundle / "figures").rmdir()
        if fmt == "latex":
            _add_references(processed, bundle, processed.markdown)
        if fmt == "docx":
            with atomic.atomic_path(out / output.main) as tmp:
                _date_docx(target, tmp, _build_time(processed))
        else:
            assert output.folder and output.archive
            atomic.replace_tree(bundle, out / output.folder)
            with atomic.atomic_path(out / output.archive) as tmp:
                write_zip(bundle, tmp)
    return RenderedFormat(out / output.main, warnings, unresolved)


def pandoc_command(project: Project, markdown: Path, output: Path, fmt: str) -> list[str]:
    """The pandoc command line of format ``fmt``: the html stage's filters, then this format's defaults.

    The project's own ``pandoc.defaults`` are not applied: they are written for the HTML page.
    """
    command = [
        str(pandoc_executable("lua")),
        f"--defaults={_DEFAULTS / 'lua.yaml'}",
        f"--defaults={_DEFAULTS / f'{fmt}.yaml'}",
        f"--csl={project.csl}",
    ]
    reference = project.config.docx.reference_doc
    if fmt == "docx" and reference is not None:
        command.append(f"--reference-doc={project.root / reference}")
    return [*command, f"--output={output}", str(markdown)]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment while pandoc runs (``_run_lua`` passes it on)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _generated(processed: ProcessedManuscript) -> datetime:
    """When this version was built: a clean commit's time (as the permalink stamp says), else now."""
    generated = processed.variables.get("manubot", {}).get("generated")
    try:
        return datetime.fromisoformat(str(generated))
    except ValueError:
        return datetime.now().astimezone()


def _epoch(processed: ProcessedManuscript) -> str:
    return str(int(_generated(processed).timestamp()))


def _build_time(processed: ProcessedManuscript) -> str:
    """The build's time in UTC, as the DOCX properties write it."""
    return _generated(processed).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Pandoc in its sandbox knows no clock: it dates the document 1970-01-01, always.
_SANDBOX_TIME = "1970-01-01T00:00:00Z"


def _date_docx(source: Path, target: Path, when: str) -> None:
    """``source`` copied to ``target`` with its created and modified dates set to ``when``.

    Entries keep their order, names, dates and compression, so the same build gives the
    same bytes (the version folder of a commit is reproducible).
    """
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "docProps/core.xml":
                data = data.replace(_SANDBOX_TIME.encode(), when.encode())
            new.writestr(info, data)


# ------------------------------------------------------------------------------- media


def media(project: Project) -> dict[str, dict[str, str]]:
    """Every image the outputs may hold: the path a section gives it (``images/plot.svg``,
    ``analyses/<name>/figures/x.svg``) -> the file (``path``), its type (``mime``) and name.

    Only regular files that stay inside ``content/images/`` or an analysis's result folder
    once symlinks are followed; an SVG maps to a raster sibling of the same name when
    there is one.
    """
    roots = [("images", project.content_dir / "images")]
    analyses = project.output_dir / "analyses"
    if analyses.is_dir():
        roots += [
            (f"analyses/{folder.name}", folder)
            for folder in sorted(analyses.iterdir())
            if folder.is_dir() and not folder.name.startswith(".")
        ]
    found: dict[str, dict[str, str]] = {}
    for prefix, root in roots:
        if not root.is_dir():
            continue
        base = root.resolve()
        files: dict[str, Path] = {}
        for path in sorted(root.rglob("*")):
            mime = _MEDIA_TYPES.get(path.suffix.lower())
            relative = path.relative_to(root)
            if not mime or any(part.startswith(".") for part in relative.parts):
                continue
            real = path.resolve()
            if not real.is_relative_to(base) or not real.is_file() or real.stat().st_size > _MAX_IMAGE_BYTES:
                continue
            files[relative.as_posix()] = real
        for key, real in files.items():
            chosen = real
            if real.suffix.lower() == ".svg":
                stem = key[: -len(".svg")]
                chosen = next((files[stem + s] for s in _INSTEAD_OF_SVG if stem + s in files), real)
            found[f"{prefix}/{key}"] = {
                "path": str(chosen),
                "mime": _MEDIA_TYPES[chosen.suffix.lower()],
                "name": Path(key).with_suffix(chosen.suffix.lower()).name,
            }
    return found


def _check_images(report: Path, content: Content, markdown: Path, fmt: str) -> None:
    """Fail on each image formats.lua refused: a path that is no file of the build (an absolute
    path, "..", a URL, a file of the machine), at every ``file:line`` that gives it.

    The check stage refuses such paths written in a section; this catches those a
    template makes, as the PDF printer does for the page.
    """
    refused = json.loads(report.read_text(encoding="utf-8")).get("refused", []) if report.is_file() else []
    problems = []
    for image in {item["src"]: item for item in refused}.values():
        src = image["src"]
        shown = src if len(src) <= 120 else src[:117] + "..."
        needle = re.compile(re.escape(src[:200]))
        places = content.locate(needle) or locate_in(markdown, needle) or [Location(markdown)]
        for where in places:
            problems.append(
                Problem(
                    where,
                    f"image {shown} is {image['why']}: it may not go into the {fmt} output",
                    "an image must be a file under content/images/ (or an analysis's figure, "
                    "{{ analysis.figure_key }}), given by a path relative to content/",
                )
            )
    if problems:
        raise ContentError(problems)


# ------------------------------------------------------------------------------- metadata


def _filter_data(project: Project, processed: ProcessedManuscript, fmt: str, bundle: Path) -> dict[str, Any]:
    manubot = processed.variables.get("manubot", {})
    converter = shutil.which("rsvg-convert") if fmt == "latex" else None
    return {
        "format": fmt,
        "bundle": str(bundle),
        "report": str(bundle.parent / "report.json"),
        "media": media(project),
        "svg_to_pdf": converter,
        "base_url": manubot.get("html_url_versioned"),
        "meta": {**_metadata(manubot, fmt), "stamp": _stamp(manubot)},
    }


def _without_nulls(value: Any) -> Any:
    """``value`` without None anywhere: JSON's null reads as true in Lua."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _stamp(manubot: dict[str, Any]) -> dict[str, str | None]:
    """The permalink stamp, as the front matter says it: where and when this version was built."""
    ci = manubot.get("ci_source") or {}
    text = "Built"
    if ci.get("repo_slug") and ci.get("commit"):
        text += f" from {ci['repo_slug']}@{str(ci['commit'])[:7]}"
        if ci.get("dirty"):
            text += " with uncommitted changes"
    when = manubot.get("generated_date_long") or manubot.get("date_long")
    if when:
        text += f" on {when}"
    url = manubot.get("html_url_versioned")
    return {"text": text + ("; permalink:" if url else "."), "url": url}


def _metadata(manubot: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Authors, affiliations and date as format ``fmt``'s template reads them."""
    authors = [a for a in manubot.get("authors") or [] if isinstance(a, dict) and a.get("name")]
    meta: dict[str, Any] = {}
    date = str(manubot.get("date") or "")
    if fmt != "jats":
        # A name with its affiliations on the lines below it (LaTeX's \author, Word's Author style).
        meta["author"] = [{"lines": [str(a["name"]), *map(str, a.get("affiliations") or [])]} for a in authors]
        if manubot.get("date_long"):
            meta["date"] = str(manubot["date_long"])
        return meta
    affiliations: list[str] = []
    contributors: list[dict[str, Any]] = []
    corresponding: list[dict[str, str]] = []
    for author in authors:
        contributor: dict[str, Any] = {"name": str(author["name"])}
        if author.get("orcid"):
            contributor["orcid"] = str(author["orcid"])
        ids = []
        for affiliation in author.get("affiliations") or []:
            if str(affiliation) not in affiliations:
                affiliations.append(str(affiliation))
            ids.append(str(affiliations.index(str(affiliation)) + 1))
        contributor["affiliation"] = ids
        if author.get("corresponding") and author.get("email"):
            contributor["email"] = str(author["email"])
            contributor["cor-id"] = str(len(corresponding) + 1)
            corresponding.append({"id": contributor["cor-id"], "email": str(author["email"])})
        contributors.append(contributor)
    meta["author"] = contributors
    if affiliations:
        meta["affiliation"] = [{"id": str(i), "organization": a} for i, a in enumerate(affiliations, 1)]
    meta["article"] = {"type": "review-article"}
    if corresponding:
        meta["article"]["author-notes"] = {"corresp": corresponding}
    if len(date) == 10 and date[4] == "-" and date[7] == "-":
        meta["date"] = {"iso-8601": date, "year": date[:4], "month": date[5:7], "day": date[8:]}
    return meta


# ------------------------------------------------------------------------------- LaTeX bundle


def _add_references(processed: ProcessedManuscript, bundle: Path, markdown: Path) -> None:
    """The cited references next to the .tex, for journals that typeset their own list:
    CSL JSON (as citekeys.py wrote it for the html stage) and BibTeX (converted by pandoc)."""
    written = processed.variables.get("pandoc", {}).get("manubot-output-bibliography")
    items = Path(str(written)) if written else None
    if items is None or not items.is_file():
        return
    shutil.copyfile(items, bundle / "references.json")
    done = subprocess.run(
        [
            str(pandoc_executable("lua")),
            "--sandbox",
            "--from=csljson",
            "--to=bibtex",
            f"--output={bundle / 'references.bib'}",
            str(bundle / "references.json"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=children.preexec(),
    )
    if done.returncode != 0:
        raise ToolError(
            Problem(
                Location(markdown),
                f"pandoc could not write the BibTeX of the cited references (exit {done.returncode}):\n"
                + done.stderr.strip()[-2000:],
            )
        )


def write_zip(folder: Path, target: Path) -> None:
    """``folder`` as a zip of one folder of its name, the same bytes for the same files (no dates)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
