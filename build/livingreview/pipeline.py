"""The build, as named stages called in order: check, plan, execute, process (+inject), html,
docx, jats, latex, pdf, publish.

The pipeline is the one place that composes stages; it also asks the reviewer's diff for
the page that shows what a new version changed, so publishing never imports it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livingreview.execution.plan import Selection
from livingreview.execution.run import run_analyses
from livingreview.execution.store import pull
from livingreview.load.config import CONFIG_NAME, CPU_PROFILE
from livingreview.load.content import Content, read_content
from livingreview.load.project import LOCAL_VERSION, Project
from livingreview.load.results import results_dir
from livingreview.render.outputs import OUTPUTS, PANDOC_FORMATS
from livingreview.util.errors import AnalysisError, Location, Problem
from livingreview.util.fingerprint import BuildState, files_digest, fingerprint, keep_tool_digest, tool_digest
from livingreview.util.gitinfo import quiet_manubot_git
from livingreview.util.progress import Progress
from livingreview.util.words import counted

if TYPE_CHECKING:
    from livingreview.render.html import UnresolvedCitation
    from livingreview.render.pdf import PdfPrinter

# pandoc's, Chromium's, Jupyter Book's, the site's and the diff's modules are imported by the stages that
# use them: a rebuild that finds everything up to date loads none of them.


@dataclass
class BuildResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    title: str = ""
    unused: dict[str, list[str]] = field(default_factory=dict)  # analysis -> recorded keys the text does not use
    # analysis -> why it is published at the ci profile rather than publish_profile (results.fallback: ci)
    not_publication_scale: dict[str, str] = field(default_factory=dict)
    up_to_date: bool = False  # nothing that affects an output changed: every stage after the analyses was skipped

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
    printer: list[PdfPrinter] = []
    try:
        return _stages(project, progress, formats, selection or Selection(), printer)
    finally:
        for started in printer:
            started.close()


def start_printer(project: Project, printer: list[PdfPrinter]) -> None:
    from livingreview.render.pdf import PdfPrinter, chromium_executable

    printer.append(PdfPrinter(chromium_executable(project.config.pdf.chromium), project.config.pdf.timeout))


def _stages(project, progress, formats, selection, printer: list[PdfPrinter]) -> BuildResult:
    result = BuildResult(timings=progress.timings)
    stages = Freshness(project)
    loaded: list[Content] = []

    def read() -> Content:
        if not loaded:
            loaded.append(read_content(project.content_dir, project.root, project.config.citations.references))
        return loaded[0]

    checked = stages.fresh("check")
    if "pdf" in formats and not (checked and stages.printed_before()):
        # Started now so that Chromium's start-up overlaps the analyses and stages before "pdf";
        # only a rebuild of unchanged content waits to see whether the PDF is up to date.
        start_printer(project, printer)
    if checked:
        # The same files were checked by the same tool: the content is read only if a stage needs it.
        stages.skip(progress, "check", result)
    else:
        with progress.stage("check", f"reading {project.config.content_dir}/"):
            read()
        stages.done("check", [], title=read().metadata.get("title", ""))
    result.title = stages.data("check").get("title", "")
    result.warnings.extend(setup_warnings(project))
    if project.config.analyses:
        result.not_publication_scale = _analyses(project, progress, selection)
    # A version folder is immutable, so only a build of every configured format is published.
    publishes = set(project.config.formats) <= set(formats)
    # The PDF is printed from the HTML, and the site shows it; `--format docx` alone needs neither.
    wants_html = "html" in formats or "pdf" in formats or publishes
    stages.analysed(result.not_publication_scale)
    wanted = ["process", *(["html"] if wants_html else []), *(f for f in PANDOC_FORMATS if f in formats)]
    if "pdf" in formats and not printer and not stages.all_fresh([*wanted, "pdf"]):
        start_printer(project, printer)
    ran: list[str] = []

    markdown = project.output_dir / "manuscript.md"
    processed = None
    if stages.fresh("process"):
        stages.skip(progress, "process", result)
    else:
        from livingreview.render.inject import namespaces
        from livingreview.render.process import process

        with progress.stage("process", "manubot process: templates, metadata, injected values"):
            injected = namespaces(project)
            quiet_manubot_git(project.root)
            processed = process(project, read(), injected, result.not_publication_scale)
        unused = {name: keys for name, ns in injected.items() if (keys := ns.unused())}
        stages.done("process", [markdown, project.output_dir / "variables.json"], unused=unused)
        ran.append("process")
    result.unused = stages.data("process").get("unused", {})
    result.outputs["markdown"] = markdown

    def pandoc_input():
        # The processed manuscript, read back from output/ when "process" was up to date.
        if processed:
            return processed
        from livingreview.render.process import ProcessedManuscript

        variables = json.loads(markdown.with_name("variables.json").read_text(encoding="utf-8"))
        return ProcessedManuscript(markdown, variables, project.revision is None or project.revision.dirty)

    html = project.output_dir / "manuscript.html"
    if wants_html:
        if stages.fresh("html"):
            stages.skip(progress, "html", result)
        else:
            from livingreview.render.html import render_html

            with progress.stage("html", "pandoc: numbering, citations, HTML"):
                rendered = render_html(project, pandoc_input(), read())
            stages.done(
                "html",
                [rendered.path, project.output_dir / "images"],
                warnings=rendered.warnings,
                unresolved=[c.key for c in rendered.unresolved],
            )
            ran.append("html")
        result.warnings.extend(stages.data("html").get("warnings", []))
        result.outputs["html"] = html
    for fmt in (f for f in PANDOC_FORMATS if f in formats):
        output = OUTPUTS[fmt]
        if stages.fresh(fmt):
            stages.skip(progress, fmt, result)
        else:
            from livingreview.render.formats import render_format

            with progress.stage(fmt, f"pandoc: {output.description} → {project.config.output_dir}/{output.main}"):
                made = render_format(project, pandoc_input(), read(), fmt)
            paths = [project.output_dir / p for p in output.published]
            stages.done(fmt, paths, warnings=made.warnings, unresolved=[c.key for c in made.unresolved])
            ran.append(fmt)
        # The same text as the page's: what the html stage already said is not said again.
        result.warnings.extend(w for w in stages.data(fmt).get("warnings", []) if w not in result.warnings)
        result.outputs[fmt] = project.output_dir / output.main
    if "pdf" in formats and wants_html:
        if stages.fresh("pdf"):
            stages.skip(progress, "pdf", result)
        else:
            with progress.stage("pdf", "Chromium: printing the PDF"):
                made_pdf = printer[0].print(html, project.version_url, read().sections, progress.step)
            stages.done("pdf", [made_pdf])
            ran.append("pdf")
        result.outputs["pdf"] = project.output_dir / "manuscript.pdf"
    unresolved: list[str] = next((stages.data(s)["unresolved"] for s in wanted if "unresolved" in stages.data(s)), [])
    if ran:
        from livingreview.publish.site import write_build_record

        write_build_record(project, formats, unresolved, result.not_publication_scale)
    if publishes:
        built = [*wanted, *(["pdf"] if "pdf" in formats and wants_html else [])]
        if stages.fresh("publish", built):
            stages.skip(progress, "publish", result)
            result.outputs["site"] = project.site_dir / "v" / stages.data("publish")["version"]
        else:
            publish_site(project, progress, result.title, result)
            version = result.outputs["site"]
            stages.done("publish", [version], built, version=version.name)
            ran.append("publish")
    result.up_to_date = not ran
    return result


class Freshness:
    """Which stages a rebuild may skip: each stage's key digests what can change its outputs.

    - every stage: the tool's code and resources, the lock files, the commit (and whether the
      tree is dirty: the permalink stamp shows both) and the date (an undated manuscript is
      stamped with today's);
    - check: the content folder and reference files, and the configuration (the same files
      checked by the same tool need not be read again unless a later stage runs);
    - process: the content folder and reference files, the analyses' manifests, the
      configuration (all but ``pdf``) and what is not at publication scale;
    - html and the pandoc formats: process's outputs, the content files (images, references),
      the files that style them (CSL, pandoc defaults, theme, plugins, reference document)
      and the configuration;
    - pdf: the HTML and ``pdf``; publish: every built output and the analyses' results.
    A stage runs when its key differs from its last run's or its outputs are not as it left
    them (``util/fingerprint.py``); downstream keys then change only if its outputs did.
    """

    def __init__(self, project: Project):
        self.project = project
        self.state = BuildState(project.root, project.output_dir)
        config = project.config.model_dump(mode="json")
        self.pdf_config = config.pop("pdf")
        self.config = config
        revision = project.revision
        root = project.root
        self.tool_cache = project.output_dir / ".cache" / "tool-digest.json"
        self.common = fingerprint(
            tool_digest(self.tool_cache),
            files_digest((root / p for p in project.config.environment), root),
            [revision.commit, revision.dirty] if revision else None,
            date.today().isoformat(),
        )
        # What the text is made of; then the files that only shape how pandoc renders it.
        files = [p for p in project.content_dir.rglob("*") if p.is_file()]
        files += [root / p for p in project.config.citations.references]
        self.inputs = files_digest(files, root)
        styling = [
            project.config.pandoc.csl,
            *project.config.pandoc.defaults,
            project.config.pandoc.html_theme,
            project.config.pandoc.html_plugins,
            project.config.docx.reference_doc,
        ]
        self.styling = files_digest((root / p for p in styling if p), root)
        self.results: dict[str, str | None] = {}
        self.not_publication_scale: dict[str, str] = {}

    def analysed(self, not_publication_scale: dict[str, str]) -> None:
        """The analyses are up to date: their results now take part in the keys."""
        root, project = self.project.root, self.project
        self.results = files_digest(
            (results_dir(project, name) / "manifest.json" for name in project.config.analyses), root
        )
        self.not_publication_scale = not_publication_scale

    def key(self, stage: str, built: Sequence[str] = ()) -> str:
        output = self.state.output_digest
        if stage == "check":
            parts: tuple = (self.inputs, self.config)
        elif stage == "process":
            parts = (self.inputs, self.results, self.config, self.not_publication_scale)
        elif stage == "pdf":
            parts = (output("html"), self.pdf_config)
        elif stage == "publish":
            parts = ({name: output(name) for name in built}, self.results, self.config)
        else:  # html, docx, jats, latex
            parts = (output("process"), self.inputs, self.styling, self.config)
        return fingerprint(stage, self.common, *parts)

    def fresh(self, stage: str, built: Sequence[str] = ()) -> bool:
        return self.state.fresh(stage, self.key(stage, built))

    def all_fresh(self, stages: Sequence[str]) -> bool:
        """Whether the whole chain is up to date (upstream outputs as they are now)."""
        return all(self.fresh(stage) for stage in stages)

    def done(self, stage: str, outputs: Sequence[Path], built: Sequence[str] = (), **data: Any) -> None:
        self.state.done(stage, self.key(stage, built), outputs, **data)
        # Written once a stage has succeeded, beside its outputs: a failed first build leaves no output folder.
        keep_tool_digest(self.tool_cache)

    def data(self, stage: str) -> dict[str, Any]:
        return self.state.data(stage)

    def printed_before(self) -> bool:
        """Whether a PDF was printed by an earlier build (which a no-op rebuild keeps)."""
        return "pdf" in self.state.stages

    def skip(self, progress: Progress, stage: str, result: BuildResult) -> None:
        progress.console.print(f"[dim]– {stage:<8} up to date[/]", highlight=False)


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
    if not pulled.pulled and not missing:
        # Everything was cached already (pull planned it): nothing to run, nothing to plan again.
        for name in pulled.cached:
            progress.console.print(f"  {name} [{publish}]: cached", highlight=False, markup=False)
        return {}
    present = tuple(name for name in (selection.names or project.config.analyses) if name not in missing)
    if present:
        run_analyses(project, progress, replace(wanted, names=present))
    if missing:
        for name, why in missing.items():
            progress.console.print(
                f"  {name} [{publish}]: {why}: its {CPU_PROFILE} result is used instead, under a banner (fallback: ci)",
                highlight=False,
                markup=False,
            )
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
        from livingreview.publish.notebook_pages import render_notebook_pages

        render_notebook_pages(project, title, progress.step)
        progress.step(f"copying the build into its version folder under {project.config.site_dir}/v/, versions page")
        from livingreview.publish.site import publish

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
    from livingreview.publish.site import previous_version, update_index

    older = previous_version(site, version)
    if older:
        from livingreview.review.diff import diff, write_pages

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
    from livingreview.render.html import render_html, unresolved_warning
    from livingreview.render.inject import namespaces
    from livingreview.render.process import process

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
