"""``livingreview new --from-rootstock PATH``: a Manubot rootstock repository as a livingreview project.

What makes a rootstock manuscript look the way it does is carried over, and nothing else:
- ``content/``, byte for byte;
- its citation style, ``build/assets/style.csl``;
- the references Manubot resolved online (the ``output`` branch's ``references.json``),
  frozen into a CSL JSON file, because livingreview never looks references up;
- the options of its pandoc defaults that change the output and differ from rootstock's
  own; filters and HTML plugins run code, so they are reported, not carried.
Citation keys that stay unresolved are reported; the project then publishes them visibly
(``citations.unresolved: warn``), as rootstock does, until they are fixed.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from ruamel.yaml import YAML

from livingreview.load.config import Overrides
from livingreview.load.project import Project
from livingreview.pipeline import check
from livingreview.render.html import UnresolvedCitation
from livingreview.scaffold.new import Created, Options, create
from livingreview.util import gitinfo
from livingreview.util.errors import ConfigError, LivingReviewError, Location, Problem

STYLE = Path("build/assets/style.csl")
FROZEN = Path("build/assets/manubot-references.json")
DEFAULTS = Path("build/assets/pandoc-defaults.yaml")
_OUTPUT_BRANCHES = ("output", "origin/output", "upstream/output")

# rootstock's defaults (build/pandoc/defaults/common.yaml and html.yaml) as shipped: a
# repository's value equal to these needs nothing, since livingreview's chain does the same.
_STOCK: dict[str, Any] = {
    "from": "markdown",
    "to": "html5",
    "wrap": "preserve",
    "metadata.link-citations": True,
    "variables.document-css": False,
    "variables.math": "",
}
# Set by the build itself (files, format, math as MathML for an offline page) or handled apart.
_BUILD_OWNS = {"input-file", "input-files", "output-file", "html-math-method", "metadata.csl", "standalone"}
_CODE = {"filters", "include-after-body", "include-before-body", "include-in-header", "lua-filter", "template"}


def migrate(source: Path, target: Path, title: str | None, repository: str | None, console: Console) -> Created:
    source = source.resolve()
    if not (source / "content").is_dir() or not (source / "content" / "metadata.yaml").is_file():
        raise ConfigError(
            Problem(
                Location(source),
                "not a rootstock repository: no content/metadata.yaml",
                "name the folder of a Manubot manuscript (a clone of a rootstock repository)",
            )
        )
    metadata = YAML(typ="safe").load((source / "content" / "metadata.yaml").read_text(encoding="utf-8")) or {}
    repository = repository or _origin_slug(source)
    notes: list[str] = []
    authors = [a.get("name", "") for a in metadata.get("authors") or [] if isinstance(a, dict)]
    options = Options(
        title=title or str(metadata.get("title") or source.name),
        authors=[a for a in authors if a] or ["Your Name"],
        repository=repository,
    )

    def fill(staging: Path, context: dict) -> None:
        shutil.rmtree(staging / "content")
        shutil.copytree(source / "content", staging / "content", symlinks=True)
        shutil.rmtree(staging / "analyses")
        settings: dict[str, Any] = {}
        if (source / STYLE).is_file():
            (staging / STYLE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / STYLE, staging / STYLE)
            settings["csl"] = STYLE
        else:
            notes.append(f"{STYLE} not found: references use livingreview's built-in numeric style")
        frozen, where = _frozen_references(source)
        if frozen:
            (staging / FROZEN).parent.mkdir(parents=True, exist_ok=True)
            (staging / FROZEN).write_text(json.dumps(frozen, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            notes.append(f"froze {len(frozen)} references Manubot had resolved ({where}) into {FROZEN}")
        else:
            notes.append(where)
        carried, skipped = _pandoc_settings(source)
        if carried:
            (staging / DEFAULTS).parent.mkdir(parents=True, exist_ok=True)
            with (staging / DEFAULTS).open("w", encoding="utf-8") as handle:
                handle.write("# Carried over from the rootstock repository's build/pandoc/defaults/.\n")
                YAML().dump(carried, handle)
            settings["defaults"] = [DEFAULTS]
        notes.extend(skipped)
        unresolved = _unresolved(staging, _manuscript_yaml(repository, settings, frozen, warn=True), notes)
        # Unchecked (None): keep warn, since Manubot published whatever stayed unresolved.
        (staging / "manuscript.yaml").write_text(
            _manuscript_yaml(repository, settings, frozen, warn=unresolved is None or bool(unresolved)),
            encoding="utf-8",
        )
        if unresolved:
            notes.append(
                f"{len(unresolved)} citation keys stay unresolved, as they were in Manubot's build; they are shown "
                "in bold with '?' and listed by every build (citations.unresolved: warn) until you add them to "
                "content/manual-references.json:"
            )
            notes.extend(f"  @{item.key}  ({_places(item, staging)})" for item in unresolved)

    created = create(target, options, fill)
    created.notes = notes + created.notes
    return created


def _unresolved(staging: Path, config: str, notes: list[str]) -> list[UnresolvedCitation] | None:
    """The citation keys no reference resolves, found as ``livingreview check`` finds them.

    None when the content has other problems that stop the check (a remote image, say):
    they go into ``notes``, since the repository is still worth making, and fixing them is
    the author's first step.
    """
    (staging / "manuscript.yaml").write_text(config, encoding="utf-8")
    try:
        return check(Project.load(staging, Overrides(unresolved_citations="warn"))).unresolved
    except LivingReviewError as error:
        notes.append(f"the build will refuse this content until these are fixed ({error.title}):")
        for problem in error.problems:
            where = _shown(Path(problem.location.path), staging)
            line = f":{problem.location.line}" if problem.location.line else ""
            notes.append(f"  {where}{line}: {problem.message}" + (f" ({problem.hint})" if problem.hint else ""))
        return None


def _shown(path: Path, staging: Path) -> Path:
    return path.relative_to(staging) if path.is_absolute() and path.is_relative_to(staging) else path


def _places(item: UnresolvedCitation, staging: Path) -> str:
    shown = []
    for place in item.places:
        relative = _shown(Path(place.path), staging)
        shown.append(f"{relative}:{place.line}" if place.line else str(relative))
    return ", ".join(shown)


def _origin_slug(source: Path) -> str | None:
    url = (gitinfo.git_output(source, "remote", "get-url", "origin") or "").strip()
    return gitinfo.slug_from_url(url)


def _frozen_references(source: Path) -> tuple[list[dict], str]:
    """The CSL items Manubot resolved, with their standard citation keys as ids; else why not."""
    for ref in _OUTPUT_BRANCHES:
        text = gitinfo.git_output(source, "show", f"{ref}:references.json")
        if text:
            table = gitinfo.git_output(source, "show", f"{ref}:citations.tsv") or ""
            return _standardised(json.loads(text), table, source), f"the {ref} branch's references.json"
    built = source / "output" / "references.json"
    if built.is_file():
        tsv_path = source / "output" / "citations.tsv"
        tsv = tsv_path.read_text(encoding="utf-8") if tsv_path.is_file() else ""
        return _standardised(json.loads(built.read_text(encoding="utf-8")), tsv, source), str(built)
    return [], (
        "no references.json on an 'output' branch or in output/: every citation key not in "
        "content/manual-references.json stays unresolved (fetch the output branch and migrate again)"
    )


def _standardised(items: list[dict], citations_tsv: str, source: Path) -> list[dict]:
    """Items keyed by standard id (doi:10.1000/x), as manual references are; the manual ones left out."""
    short_to_standard = {
        row["short_id"]: row["standard_id"] for row in csv.DictReader(io.StringIO(citations_tsv), delimiter="\t")
    }
    manual = set()
    for path in sorted((source / "content").glob("manual-references*.json")):
        try:
            manual |= {str(item.get("id")) for item in json.loads(path.read_text(encoding="utf-8"))}
        except (ValueError, AttributeError):
            continue  # the build reports a broken manual-references file with its line
    frozen = []
    for item in items:
        standard = short_to_standard.get(str(item.get("id"))) or _standard_from_note(item)
        if not standard or standard in manual or standard.removeprefix("raw:") in manual:
            continue
        frozen.append({**item, "id": standard})
    return frozen


def _standard_from_note(item: dict) -> str | None:
    for line in str(item.get("note", "")).splitlines():
        if line.startswith("standard_id: "):
            return line.removeprefix("standard_id: ").strip()
    return None


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("metadata", "variables"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _pandoc_settings(source: Path) -> tuple[dict, list[str]]:
    """The defaults options to carry over (as a defaults file's mapping), and notes on those left out."""
    folder = source / "build" / "pandoc" / "defaults"
    flat: dict[str, Any] = {}
    for name in ("common.yaml", "html.yaml"):
        if (folder / name).is_file():
            flat.update(_flatten(YAML(typ="safe").load((folder / name).read_text(encoding="utf-8")) or {}))
    carried: dict[str, Any] = {}
    skipped = []
    for key, value in flat.items():
        if key in _BUILD_OWNS or _STOCK.get(key, object()) == value:
            continue
        if key.split(".")[0] in _CODE:
            stock = {"pandoc-fignos", "pandoc-eqnos", "pandoc-tablenos", "pandoc-manubot-cite", "citeproc"}
            extra = [str(v) for v in value if str(v) not in stock] if key == "filters" else []
            if extra:
                skipped.append(
                    f"pandoc filters not carried over (they run code; add them to pandoc.defaults in "
                    f"manuscript.yaml if you trust them): {', '.join(extra)}"
                )
            elif key != "filters" and value:
                names = ", ".join(Path(str(v)).stem for v in value)
                skipped.append(f"rootstock's HTML theme and plugins ({names}) are replaced by livingreview's theme")
            continue
        section, _, leaf = key.partition(".")
        if leaf:
            carried.setdefault(section, {})[leaf] = value
        else:
            carried[key] = value
    return carried, skipped


def _manuscript_yaml(repository: str | None, settings: dict[str, Any], frozen: list[dict], warn: bool) -> str:
    lines = [
        "# livingreview configuration, migrated from a Manubot rootstock repository",
        "# (`livingreview check` validates it; every key is in livingreview's docs/configuration.md).",
        f"repository: {repository}"
        if repository
        else "# repository: owner/name  # GitHub slug; taken from the 'origin' remote when unset",
        "formats: [html, pdf]",
    ]
    if settings:
        lines.append("pandoc:")
        if "csl" in settings:
            lines.append(f"  csl: {settings['csl']}  # the repository's own citation style")
        if "defaults" in settings:
            lines.append(
                f"  defaults: [{settings['defaults'][0]}]  # options of its pandoc defaults that change the output"
            )
    if frozen or warn:
        lines.append("citations:")
    if frozen:
        lines.append(
            f"  references: [{FROZEN}]  # what Manubot resolved online, frozen: the build never looks references up"
        )
    if warn:
        lines.append(
            "  # Unresolved keys are shown in bold with '?', listed once per build, and noted on the version\n"
            "  # page, as rootstock publishes them. Add them to content/manual-references.json, then delete\n"
            "  # this line: the default, strict, fails the build on any unresolved key.\n"
            "  unresolved: warn"
        )
    return "\n".join(lines) + "\n"
