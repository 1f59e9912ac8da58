"""Stage "publish": the versioned site in ``webpage/``.

The layout is Manubot's (``manubot webpage``), extended with the analyses::

    webpage/index.html              opens v/latest/
    webpage/versions.html, .json    every version: date, commit, message, links
    webpage/v/<commit>/             one folder per commit, never changed once written
        manuscript.html (+ index.html), manuscript.pdf, images/
        manuscript.docx             Word (with formats: docx)
        jats/, manuscript-jats.zip  JATS XML and its figures (formats: jats)
        latex/, manuscript-latex.zip  the LaTeX bundle: .tex, figures, cited references (formats: latex)
        analyses/<name>/            executed notebook, figures, manifest.json
        notebooks/                  the executed notebooks as HTML pages
        values.json                 every recorded value with its provenance
        version.json                commit, date, message (and unresolved_citations, if any)
    webpage/v/latest -> <commit>    the newest commit (a symlink, as in Manubot)
    webpage/v/freeze/index.html     redirect to the newest permalink (Manubot)
    webpage/v/local/                a dirty working tree's build; replaced every time

``manubot webpage`` itself is not called: it empties an existing version folder before
refilling it, stages files in the repository's git index (``git add v``) and works
only from the current directory. Its redirect template and its version listing rule
(every folder of ``v/`` but ``latest`` and ``freeze``) are reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from livingreview.load.project import LOCAL_VERSION, RESOURCES, Project
from livingreview.load.results import all_manifests, dump, results_dir
from livingreview.render.outputs import OUTPUTS
from livingreview.util import atomic
from livingreview.util.errors import ContentError, Location, Problem
from livingreview.util.hashing import sha256_file
from livingreview.util.templates import page_templates

NOT_VERSIONS = {"latest", "freeze"}
# Rebuilding a commit reproduces every file of its version folder byte for byte except
# these: Chromium stamps the PDF with its creation time.
MAY_DIFFER = {"manuscript.pdf"}
BUILD_RECORD = "build.json"


@dataclass
class Published:
    version: str
    folder: Path
    created: bool
    differences: list[str] = field(default_factory=list)
    diff: Path | None = None


def write_build_record(
    project: Project,
    formats: list[str],
    unresolved_citations: list[str] | None = None,
    not_publication_scale: dict[str, str] | None = None,
) -> None:
    """What ``output/`` was built from, so ``livingreview site`` never publishes a stale build,
    and what its version record must say about it (the keys left unresolved under citations.unresolved: warn)."""
    revision = project.revision
    record = {
        "commit": revision.commit if revision else None,
        "dirty": revision.dirty if revision else True,
        "formats": sorted(formats),
        "unresolved_citations": list(unresolved_citations or []),
        # Analyses published with the ci profile because no stored publish_profile result matched, and why.
        "not_publication_scale": dict(not_publication_scale or {}),
    }
    atomic.write_text(project.output_dir / BUILD_RECORD, json.dumps(record, indent=2) + "\n")


def _check_build(project: Project) -> dict[str, Any]:
    path = project.output_dir / BUILD_RECORD
    rel = os.path.relpath(path, Path.cwd())
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ContentError(
            Problem(Location(rel), "no complete build to publish", "run 'livingreview build' first")
        ) from None
    revision = project.revision
    now: dict[str, Any] = {
        "commit": revision.commit if revision else None,
        "dirty": revision.dirty if revision else True,
    }
    if record.get("commit") != now["commit"] or (record.get("dirty") and not now["dirty"]):
        built = (record.get("commit") or "no commit")[:12] + (" (dirty)" if record.get("dirty") else "")
        current = (now["commit"] or "no commit")[:12] + (" (dirty)" if now["dirty"] else "")
        raise ContentError(
            Problem(
                Location(rel),
                f"output/ was built from {built}, but the checkout is {current}",
                "run 'livingreview build' first",
            )
        )
    missing = sorted(set(project.config.formats) - set(record.get("formats", [])))
    if missing:
        raise ContentError(
            Problem(
                Location(rel),
                f"the last build did not make {', '.join(missing)}",
                "run 'livingreview build' (all formats)",
            )
        )
    return record


def _version_record(project: Project, title: str, build: dict[str, Any]) -> dict[str, Any]:
    revision = project.revision
    record: dict[str, Any]
    if revision is None or revision.dirty:
        record = {
            "version": LOCAL_VERSION,
            "commit": revision.commit if revision else None,
            "dirty": True,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "message": "uncommitted changes",
            "title": title,
        }
    else:
        record = {
            "version": revision.commit,
            "commit": revision.commit,
            "dirty": False,
            "date": revision.commit_time.isoformat(),
            "message": revision.message,
            "title": title,
        }
    # Only when there are some: the version.json of every other build stays as it always was.
    if build.get("unresolved_citations"):
        record["unresolved_citations"] = list(build["unresolved_citations"])
    if build.get("not_publication_scale"):
        record["not_publication_scale"] = dict(build["not_publication_scale"])
    return record


def _values(project: Project) -> dict[str, Any]:
    """Every record of every analysis, with the provenance that the manifest holds once per analysis."""
    values = {}
    for name, manifest in sorted(all_manifests(project).items()):
        values[name] = dump(manifest.as_values())
    return values


def _assemble(project: Project, title: str, folder: Path, build: dict[str, Any]) -> dict[str, Any]:
    out = project.output_dir
    shutil.copyfile(out / "manuscript.html", folder / "manuscript.html")
    # Manubot serves the manuscript as the folder's index.
    shutil.copyfile(out / "manuscript.html", folder / "index.html")
    if (out / "manuscript.pdf").is_file():
        shutil.copyfile(out / "manuscript.pdf", folder / "manuscript.pdf")
    # Word, JATS and LaTeX, each as the build made it (the two bundles also as one zip each).
    for fmt in build.get("formats", []):
        for name in OUTPUTS[fmt].published if fmt in OUTPUTS and fmt != "pdf" else []:
            source = out / name
            if source.is_dir():
                shutil.copytree(source, folder / name)
            elif source.is_file():
                shutil.copyfile(source, folder / name)
    if (out / "images").is_dir():
        shutil.copytree(out / "images", folder / "images")
    for name in all_manifests(project):
        shutil.copytree(results_dir(project, name), folder / "analyses" / name)
    if (out / "notebooks").is_dir():
        shutil.copytree(out / "notebooks", folder / "notebooks", ignore=shutil.ignore_patterns(".key"))
    (folder / "values.json").write_text(json.dumps(_values(project), indent=2, sort_keys=True) + "\n")
    record = _version_record(project, title, build)
    (folder / "version.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): sha256_file(path) for path in sorted(folder.rglob("*")) if path.is_file()
    }


def compare(new: Path, old: Path) -> list[str]:
    """Files that differ between two version folders, beyond those that may (``MAY_DIFFER``)."""
    a, b = _hashes(new), _hashes(old)
    changed = [p for p in sorted(a.keys() | b.keys()) if a.get(p) != b.get(p) and p not in MAY_DIFFER]
    return changed


def publish(project: Project, title: str, site_dir: Path | None = None) -> Published:
    """Copy the current build into its version folder and refresh the index pages."""
    build = _check_build(project)
    site = site_dir or project.site_dir
    versions = site / "v"
    versions.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=versions) as scratch:
        staging = Path(scratch) / "version"
        staging.mkdir()
        record = _assemble(project, title, staging, build)
        version = record["version"]
        target = versions / version
        if version == LOCAL_VERSION:
            atomic.replace_tree(staging, target)
            result = Published(version, target, created=True)
        elif target.is_dir():
            # A permalink is immutable: report how the rebuild compares, change nothing.
            result = Published(version, target, created=False, differences=compare(staging, target))
        else:
            os.replace(staging, target)
            result = Published(version, target, created=True)
    update_index(site)
    return result


def previous_version(site: Path, version: str) -> str | None:
    """The newest committed version published before ``version``, if any."""
    committed = [r["version"] for r in read_versions(site) if r["version"] != LOCAL_VERSION]
    older = committed[committed.index(version) + 1 :] if version in committed else []
    return older[0] if older else None


def version_folders(site: Path) -> list[Path]:
    """The version folders of ``site/v/``, by name: not ``latest``, ``freeze`` or staging folders."""
    versions = site / "v"
    return sorted(
        folder
        for folder in (versions.iterdir() if versions.is_dir() else [])
        if folder.is_dir()
        and not folder.is_symlink()
        and folder.name not in NOT_VERSIONS
        and not folder.name.startswith(".")
    )


def read_versions(site: Path) -> list[dict[str, Any]]:
    """The site's versions, newest first: committed versions by date, then the local one."""
    found = []
    for folder in version_folders(site):
        try:
            record = json.loads((folder / "version.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # A version made by manubot webpage, or by hand: list it with what is known.
            record = {"version": folder.name, "commit": folder.name, "dirty": False, "date": "", "message": ""}
        record["files"] = sorted(p.name for p in folder.iterdir())
        record["notebooks"] = (folder / "notebooks" / "index.html").is_file()
        found.append(record)
    committed = sorted((r for r in found if r["version"] != LOCAL_VERSION), key=_when, reverse=True)
    for newer, older in zip(committed, committed[1:], strict=False):
        page = f"diffs/{older['version']}..{newer['version']}.html"
        if (site / page).is_file():
            newer["diff"] = page
    return committed + [r for r in found if r["version"] == LOCAL_VERSION]


def _when(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(record.get("date") or "")
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _redirect(url: str) -> str:
    template = (resources.files("manubot") / "webpage" / "redirect-template.html").read_text()
    return template.format(url=url)


def update_index(site: Path) -> list[dict[str, Any]]:
    """Rewrite ``versions.html``/``.json``, ``index.html``, ``v/latest`` and ``v/freeze`` from ``v/``."""
    versions = read_versions(site)
    committed = [r for r in versions if r["version"] != LOCAL_VERSION]
    newest = committed[0]["version"] if committed else (LOCAL_VERSION if versions else None)
    latest = site / "v" / "latest"
    if newest:
        if (latest.is_symlink() or latest.exists()) and (not latest.is_symlink() or os.readlink(latest) != newest):
            (latest.unlink() if latest.is_symlink() or latest.is_file() else shutil.rmtree(latest))
        if not latest.is_symlink():
            latest.symlink_to(newest, target_is_directory=True)
    if committed:
        freeze = site / "v" / "freeze"
        freeze.mkdir(exist_ok=True)
        atomic.write_text(freeze / "index.html", _redirect(f"../{committed[0]['version']}/"))
    environment = page_templates(RESOURCES / "site")
    title = versions[0].get("title", "") if versions else ""
    page = environment.get_template("versions.html").render(versions=versions, title=title, latest=newest)
    atomic.write_text(site / "versions.html", page)
    listing = [{k: v for k, v in r.items() if k != "files"} for r in versions]
    atomic.write_text(site / "versions.json", json.dumps(listing, indent=2) + "\n")
    atomic.write_text(site / "index.html", _redirect("v/latest/"))
    # GitHub Pages runs Jekyll unless told not to, and Jekyll drops the notebook pages' _static/.
    (site / ".nojekyll").touch()
    pdf = site / "manuscript.pdf"
    if pdf.is_symlink() or pdf.exists():
        pdf.unlink()
    if (site / "v" / "latest" / "manuscript.pdf").is_file():
        # As Manubot's webpage: the site-level PDF address (manubot.pdf_url) is the latest one.
        pdf.symlink_to("v/latest/manuscript.pdf")
    return versions
