"""Stage "html": pandoc 2.x turns ``output/manuscript.md`` into ``output/manuscript.html``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from livingreview import atomic
from livingreview.cite_filter import UNRESOLVED_ENV
from livingreview.content import Content, locate_in
from livingreview.errors import CitationError, Location, Problem, ToolError
from livingreview.process import ProcessedManuscript
from livingreview.project import Project


@cache
def pandoc_executable() -> Path:
    """Pandoc 2.19 from the pypandoc-binary wheel: the xnos filters reject pandoc 3."""
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


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (the filters) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def _citekey_pattern(key: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w@])@" + re.escape(key) + r"(?![\w:.#$%&\-+?<>~/]*\w)")


def _unresolved_error(items: list[dict[str, str]], content: Content, markdown: Path) -> CitationError:
    problems = []
    seen = set()
    for item in items:
        key = item["input_id"]
        if key in seen:
            continue
        seen.add(key)
        hint = (
            f'add a CSL JSON item with "id": "{item["standard_id"]}" to '
            f"{content.directory.name}/manual-references.json (the build never looks references up online)"
        )
        # Keys produced by a template appear only in the rendered manuscript.md.
        places = content.locate(_citekey_pattern(key)) or locate_in(markdown, _citekey_pattern(key))
        for where in places:
            problems.append(Problem(where, f"unresolved citation @{key}", hint))
    return CitationError(problems)


# pandoc 2.19's html5 template loads html5shiv from a CDN for Internet Explorer < 9.
_HTML5SHIV = re.compile(r"\s*<!--\[if lt IE 9\]>.*?<!\[endif\]-->", re.S)

# The xnos filters announce, at length, that they wrote their CSS into header-includes.
# That is what we want (see render_html), so the notice is dropped.
_XNOS_NOTICE = re.compile(r"pandoc-\w+nos: Wrote the following blocks.*?</style>\s*", re.S)


def _meaningful(stderr: str) -> list[str]:
    return [line for line in _XNOS_NOTICE.sub("", stderr).splitlines() if line.strip()]


def copy_images(project: Project) -> None:
    images = project.content_dir / "images"
    if images.is_dir():
        atomic.replace_tree(images, project.output_dir / "images")


def render_html(project: Project, processed: ProcessedManuscript, content: Content) -> tuple[Path, list[str]]:
    """Run pandoc; return the HTML path and pandoc's warnings."""
    target = project.output_dir / "manuscript.html"
    with tempfile.TemporaryDirectory() as scratch, atomic.atomic_path(target) as tmp:
        report = Path(scratch) / "unresolved.json"
        command = [
            str(pandoc_executable()),
            *(f"--defaults={path}" for path in project.pandoc_defaults),
            f"--csl={project.csl}",
            # Not --include-in-header: that would replace the header-includes metadata
            # (Manubot's <meta> tags and the xnos styles), as rootstock also found.
            f"--include-after-body={project.html_theme}",
            f"--include-after-body={project.html_plugins}",
            f"--output={tmp}",
            str(processed.markdown),
        ]
        done = subprocess.run(
            command,
            cwd=project.root,
            env=tool_env(**{UNRESOLVED_ENV: str(report)}),
            capture_output=True,
            text=True,
        )
        if report.exists():
            raise _unresolved_error(json.loads(report.read_text()), content, processed.markdown)
        if done.returncode != 0:
            raise ToolError(
                Problem(
                    Location(processed.markdown),
                    f"pandoc failed (exit {done.returncode}):\n{done.stderr.strip()[-3000:]}",
                    "the messages above come from pandoc or one of its filters",
                )
            )
        # Readers must never need the network, not even from an IE-only comment.
        tmp.write_text(_HTML5SHIV.sub("", tmp.read_text(encoding="utf-8")), encoding="utf-8")
    warnings = _meaningful(done.stderr)
    copy_images(project)
    return target, warnings
