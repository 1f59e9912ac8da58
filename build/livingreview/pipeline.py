"""The build, as named stages called in order: check, plan, execute, process (+inject), html,
docx, jats, latex, pdf, publish.

The pipeline is the one place that composes stages; it also asks the reviewer's diff for
the page that shows what a new version changed, so publishing never imports it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from livingreview.execution.plan import Selection
from livingreview.execution.run import run_analyses
from livingreview.execution.store import pull
from livingreview.load.config import CONFIG_NAME, CPU_PROFILE
from livingreview.load.content import read_content
from livingreview.load.project import LOCAL_VERSION, Project
from livingreview.publish.notebook_pages import render_notebook_pages
from livingreview.publish.site import previous_version, publish, update_index, write_build_record
from livingreview.render.formats import render_format
from livingreview.render.html import UnresolvedCitation, render_html, unresolved_warning
from livingreview.render.inject import namespaces
from livingreview.render.outputs import OUTPUTS, PANDOC_FORMATS
from livingreview.render.pdf import PdfPrinter, chromium_executable
from livingreview.render.process import process
from livingreview.review.diff import diff, write_pages
from livingreview.util.errors import AnalysisError, Location, Problem
from livingreview.util.gitinfo import quiet_manubot_git
from livingreview.util.progress import Progress
from livingreview.util.words import counted


@dataclass
class BuildResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    title: str = ""
    unused: dict[str, list[str]] = field(default_factory=dict)  # analysis -> recorded keys the text does not use
    # analysis -> why it is published at the ci profile rather than publish_profile (results.fallback: ci)
    not_publication_scale: dict[str, str] = field(default_factory=dict)

    def warning_lines(self, verbose: bool = False) -> list[str]:
        """Every warning, with the unused records of an analysis counted on one line unless ``verbose``.

        An analysis may record far more than the text shows (a flagship's appendix, 176
        values): listed one by one they would bury every other warning.
        """
        lines = list(self.warnings)
        for name, keys in self.unused.items():
            if verbose:
                lines.extend(f"recorded but not used in the text: {key}" for key in keys)
            else:
                verb, them = ("is", "it") if len(keys) == 1 else ("are", "them")
                lines.append(
                    f"{name}: {counted(len(keys), 'recorded value')} {verb} not used in the text (-v lists {them})"
                )
        return lines


def build(
    project: Project,
    progress: Progress,
    formats: Sequence[str] | None = None,
    selection: Selection | None = None,
) -> BuildResult:
    """Every stage, for ``formats`` (default: the configured ones), the analyses as ``selection`` asks."""
    formats = list(formats or project.config.formats)
    printer = None
    if "pdf" in formats:
        # Started now so that Chromium's start-up overlaps the stages before "pdf".
        printer = PdfPrinter(chromium_executable(project.config.pdf.chromium), project.config.pdf.timeout)
    try:
        return _stages(project, progress, formats, selection or Selection(), printer)
    finally:
        if printer:
            printer.close()


def _stages(project, progress, formats, selection, printer) -> BuildResult:
    result = BuildResult(timings=progress.timings)
    with progress.stage("check", f"reading {project.config.content_dir}/"):
        content = read_content(project.content_dir, project.root, project.config.citations.references)
    result.title = content.metadata.get("title", "")
    result.warnings.extend(setup_warnings(project))
    if project.config.analyses:
        result.not_publication_scale = _analyses(project, progress, selection)
    with progress.stage("process", "manubot process: templates, metadata, injected values"):
        injected = namespaces(project)
        quiet_manubot_git(project.root)
        processed = process(project, content, injected, result.not_publication_scale)
    result.unused = {name: keys for name, ns in injected.items() if (keys := ns.unused())}
    result.outputs["markdown"] = processed.markdown
    unresolved: list[UnresolvedCitation] | None = None
    html = None
    # A version folder is immutable, so only a build of every configured format is published.
    publishes = set(project.config.formats) <= set(formats)
    # The PDF is printed from the HTML, and the site shows it; `--format docx` alone needs neither.
    if "html" in formats or "pdf" in formats or publishes:
        with progress.stage("html", "pandoc: numbering, citations, HTML"):
            rendered = render_html(project, processed, content)
        html, unresolved = rendered.path, rendered.unresolved
        result.warnings.extend(rendered.warnings)
        result.outputs["html"] = html
    for fmt in (f for f in PANDOC_FORMATS if f in formats):
        output = OUTPUTS[fmt]
        with progress.stage(fmt, f"pandoc: {output.description} → {project.config.output_dir}/{output.main}"):
            made = render_format(project, processed, content, fmt)
        # The same text as the page's: what the html stage already said is not said again.
        result.warnings.extend(w for w in made.warnings if w not in result.warnings)
        if unresolved is None:
            unresolved = made.unresolved
        result.outputs[fmt] = made.path
    if printer and html:
        with progress.stage("pdf", "Chromium: printing the PDF"):
            result.outputs["pdf"] = printer.print(html, project.version_url, content.sections, progress.step)
    write_build_record(project, formats, [c.key for c in unresolved or []], result.not_publication_scale)
    if publishes:
        publish_site(project, progress, content.metadata.get("title", ""), result)
    return result


def _analyses(project: Project, progress: Progress, selection: Selection) -> dict[str, str]:
    """Bring every analysis up to date; with publish_profile, from the results store.

    Returns the analyses published at the ci profile instead (results.fallback: ci), with why.
    """
    publish = project.config.publish_profile
    if not publish or selection.profile not in (None, publish) or selection.force:
        run_analyses(project, progress, replace(selection, profile=selection.profile or publish))
        return {}
    wanted = replace(selection, profile=publish)
    with progress.stage("pull", f"stored {publish} results ({project.config.results.store} store)"):
        pulled = pull(project, wanted)
    for name in pulled.pulled:
        progress.console.print(f"  {name} [{publish}]: from the results store", highlight=False, markup=False)
    missing = pulled.missing
    if missing and project.config.results.fallback == "fail":
        raise AnalysisError(
            [
                Problem(
                    Location(CONFIG_NAME, key=f"analyses.{name}"),
                    f"{name}: {why}",
                    f"run it where its hardware is (livingreview run --profile {publish} {name}) and "
                    "'livingreview results push', or publish the ci profile marked as such: "
                    "results.fallback: ci (or --fallback ci)",
                )
                for name, why in missing.items()
            ]
        )
    present = tuple(name for name in (selection.names or project.config.analyses) if name not in missing)
    if present:
        run_analyses(project, progress, replace(wanted, names=present))
    if missing:
        run_analyses(project, progress, replace(selection, names=tuple(missing), profile=CPU_PROFILE))
    return missing


def setup_warnings(project: Project) -> list[str]:
    """What the project lacks that makes the build quietly less than it could be: said once per build."""
    warnings = []
    if project.site_url is None:
        warnings.append(
            f"no repository is known, so the permalink stamp and the links to the published site are left out: "
            f"set 'repository: owner/name' (or 'site_url') in {CONFIG_NAME}, or add a GitHub remote named 'origin'"
        )
    if project.config.analyses and project.missing_locks:
        names = ", ".join(str(p) for p in project.missing_locks)
        warnings.append(
            f"no lock file {names}: a change to the analyses' environment will not re-run them; "
            f"pin it (pip freeze > {project.missing_locks[0]}) or list your lock files under 'environment' "
            f"in {CONFIG_NAME}"
        )
    return warnings


def site(project: Project, progress: Progress) -> BuildResult:
    """``livingreview site``: the publish stage alone, from the last complete build in output/."""
    result = BuildResult(timings=progress.timings)
    content = read_content(project.content_dir, project.root, project.config.citations.references)
    publish_site(project, progress, content.metadata.get("title", ""), result)
    return result


def publish_site(project: Project, progress: Progress, title: str, result: BuildResult) -> None:
    """Stage "publish": notebook pages, then the version folder and the index pages of webpage/."""
    with progress.stage("publish", f"{project.config.site_dir}/: notebook pages, version folder, versions page"):
        render_notebook_pages(project, title, progress.step)
        progress.step(f"copying the build into its version folder under {project.config.site_dir}/v/, versions page")
        published = publish(project, title)
        if published.created and published.version != LOCAL_VERSION:
            progress.step("the diff page against the previous version")
            _diff_page(project, published.folder.parent.parent, published.version)
    result.outputs["site"] = published.folder
    if not published.created and published.differences:
        result.warnings.append(
            f"{published.folder.name} was already published and is kept as it was; this rebuild differs in: "
            + ", ".join(published.differences[:8])
        )


def _diff_page(project: Project, site: Path, version: str) -> None:
    """``webpage/diffs/<previous>..<version>.html``, linked from the versions page: what changed."""
    older = previous_version(site, version)
    if older:
        write_pages(project, diff(project, older, version))
        update_index(site)


@dataclass(frozen=True)
class Checked:
    sections: int
    warnings: list[str]
    unresolved: list[UnresolvedCitation]


def check(project: Project) -> Checked:
    """``livingreview check``: everything ``build`` would reject, without running analyses.

    The text is rendered and cited for real, into a scratch folder, so template errors,
    undefined values (against each analysis's last results), unresolved citations and
    bad paths fail here as they would in a build. Returns the number of sections, and
    what a build would warn about its citations (unresolved keys under ``warn``).
    """
    content = read_content(project.content_dir, project.root, project.config.citations.references)
    injected = namespaces(project, placeholders=True)
    with tempfile.TemporaryDirectory(prefix="livingreview-check-") as scratch:
        # Same project, other output folder: nothing of output/ is touched.
        trial = Project(project.root, project.config.model_copy(update={"output_dir": Path(scratch)}))
        quiet_manubot_git(project.root)
        processed = process(trial, content, injected)
        rendered = render_html(trial, processed, content)
    warnings = [unresolved_warning(rendered.unresolved, content)] if rendered.unresolved else []
    return Checked(len(content.sections), warnings, rendered.unresolved)
