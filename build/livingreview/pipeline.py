"""The build, as named stages called in order: load, check, process, html, pdf."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from livingreview.content import read_content
from livingreview.pdf import render_pdf
from livingreview.process import process
from livingreview.progress import Progress
from livingreview.project import Project
from livingreview.render import render_html


@dataclass
class BuildResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def build(project: Project, progress: Progress, formats: list[str] | None = None) -> BuildResult:
    formats = formats or project.config.formats
    result = BuildResult(timings=progress.timings)
    with progress.stage("check", f"reading {project.config.content_dir}/"):
        content = read_content(project.content_dir)
    with progress.stage("process", "manubot process: templates and metadata"):
        processed = process(project, content)
    result.outputs["markdown"] = processed.markdown
    with progress.stage("html", "pandoc: numbering, citations, HTML"):
        html, result.warnings = render_html(project, processed, content)
    result.outputs["html"] = html
    if "pdf" in formats:
        with progress.stage("pdf", "Chromium: printing the PDF"):
            result.outputs["pdf"] = render_pdf(project, html)
    return result
