"""Stage "publish", first half: the executed notebooks as a small Jupyter Book.

Each analysis's executed notebook becomes ``output/notebooks/<name>.html``, with an
``id="cell-N"`` anchor on every code cell so that an injected value can link to the
cell that recorded it. Jupyter Book 1.x (Sphinx) builds offline; 2.x cannot. Its
MathJax default comes from a CDN, so math is typeset by the KaTeX that Debian ships
(``libjs-katex``), copied next to the pages. The book is rebuilt only when an executed
notebook changed: its key is stored in ``output/notebooks/.key``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import jinja2

from livingreview.load.project import RESOURCES, Project
from livingreview.load.results import Manifest, all_manifests, results_dir
from livingreview.util import atomic, children
from livingreview.util.errors import Location, Problem, ToolError

KATEX = Path("/usr/share/javascript/katex")
KATEX_FILES = ["katex.min.js", "katex.min.css", "contrib/auto-render.js"]
PAGES_VERSION = "2"  # bump when the rendering below changes
# Sphinx's progress lines, as jupyter-book prints them: "reading sources... [ 50%] demo".
_SPHINX_STEP = re.compile(r"^(reading sources|writing output)\.\.\. \[\s*\d+%\] (\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Source maps and translations make up half of the theme's files and no reader needs them.
_DROP = re.compile(r"(\.map$|^_static/locales/|^\.buildinfo$|^\.doctrees/)")


def katex_dir() -> Path:
    if not (KATEX / "katex.min.css").is_file():
        raise ToolError(
            Problem(
                Location(str(KATEX)),
                "KaTeX not found: the notebook pages typeset math with it, offline",
                "install the Debian package: apt-get install libjs-katex (./ci/quickstart.sh does this)",
            )
        )
    return KATEX


def _book_key(project: Project, title: str, manifests: dict[str, Manifest]) -> str:
    digest = hashlib.sha256(f"{PAGES_VERSION} jupyter-book {metadata.version('jupyter-book')}".encode())
    digest.update(title.encode())
    for resource in sorted((RESOURCES / "notebook_pages").rglob("*")):
        if resource.is_file():
            digest.update(resource.read_bytes())
    for name in sorted(manifests):
        notebook = results_dir(project, name) / manifests[name].executed_notebook
        digest.update(name.encode() + notebook.read_bytes())
    return digest.hexdigest()


def _tag_cells(source: Path, target: Path) -> None:
    """Copy an executed notebook, tagging code cell N as ``cell-N`` (MyST-NB turns tags into classes)."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    tagged = copy.deepcopy(notebook)
    for index, cell in enumerate(tagged["cells"]):
        if cell["cell_type"] == "code":
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            tags.append(f"cell-{index}")
    target.write_text(json.dumps(tagged), encoding="utf-8")


_TAGGED = re.compile(r'<div class="cell ([^"]*?)tag_cell-(\d+)([^"]*)"')


def _anchor_cells(html: str) -> str:
    return _TAGGED.sub(lambda m: f'<div id="cell-{m[2]}" class="cell {m[1]}{m[3].lstrip()}"', html)


def _write_book(project: Project, title: str, manifests: dict[str, Manifest], book: Path) -> None:
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(RESOURCES / "notebook_pages"), autoescape=False, keep_trailing_newline=True
    )
    context = {"title": title, "analyses": manifests}
    for name in ("_config.yml", "_toc.yml", "index.md"):
        (book / name).write_text(templates.get_template(name).render(context), encoding="utf-8")
    static = book / "_static" / "katex"
    (static / "contrib").mkdir(parents=True)
    (static / "fonts").mkdir()
    source = katex_dir()
    for name in KATEX_FILES:
        shutil.copyfile(source / name, static / name)
    # Browsers that render KaTeX all read woff2: the ttf and woff copies would only add weight.
    for font in (source / "fonts").resolve().glob("*.woff2"):
        shutil.copyfile(font, static / "fonts" / font.name)
    shutil.copyfile(RESOURCES / "notebook_pages" / "render-math.js", static / "render-math.js")
    for name, manifest in manifests.items():
        _tag_cells(results_dir(project, name) / manifest.executed_notebook, book / f"{name}.ipynb")


def _run_jupyter_book(book: Path, step: Callable[[str], None]) -> tuple[int, list[str]]:
    """``jupyter-book build book``, telling ``step`` which notebook Sphinx reads and writes; its exit code and output."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", "NO_COLOR": "1"},
        preexec_fn=children.preexec(),  # ends with the build, even after kill -9
    ) as process:
        try:
            for raw in process.stdout or ():
                line = _ANSI.sub("", raw.rstrip())
                lines.append(line)
                found = _SPHINX_STEP.match(line)
                if found and found[2] != "index":
                    verb = "reading" if found[1] == "reading sources" else "writing"
                    step(f"notebook pages: {verb} {found[2]}")
        except BaseException:
            process.kill()
            raise
    return process.returncode, lines


def render_notebook_pages(project: Project, title: str, step: Callable[[str], None] | None = None) -> Path | None:
    """``output/notebooks/`` with one page per executed notebook, or None if there are none
    or the project publishes no notebook pages.

    ``step`` hears what is being done now (which notebook Jupyter Book is at), for a progress line.
    """
    step = step or (lambda text: None)
    manifests = all_manifests(project) if project.config.notebook_pages else {}
    target = project.output_dir / "notebooks"
    if not manifests:
        if target.exists():
            shutil.rmtree(target)
        return None
    key = _book_key(project, title, manifests)
    stamp = target / ".key"
    if stamp.is_file() and stamp.read_text() == key:
        return target
    project.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-notebooks-", dir=project.output_dir) as scratch:
        book = Path(scratch) / "book"
        book.mkdir()
        step(f"notebook pages: preparing {', '.join(sorted(manifests))}")
        _write_book(project, title, manifests, book)
        step("notebook pages: starting Jupyter Book")
        # Not --quiet: Sphinx's progress lines say which notebook it is at.
        code, lines = _run_jupyter_book(book, step)
        html = book / "_build" / "html"
        if code != 0 or not html.is_dir():
            tail = "\n".join("\n".join(lines).strip().splitlines()[-15:])
            raise ToolError(Problem(Location("jupyter-book"), f"rendering the notebook pages failed:\n{tail}"))
        step("notebook pages: anchoring the code cells")
        pages = Path(scratch) / "pages"
        for path in sorted(html.rglob("*")):
            relative = path.relative_to(html).as_posix()
            if path.is_dir() or _DROP.search(relative):
                continue
            out = pages / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".html":
                out.write_text(_anchor_cells(path.read_text(encoding="utf-8")), encoding="utf-8")
            else:
                shutil.copyfile(path, out)
        (pages / ".key").write_text(key)
        atomic.replace_tree(pages, target)
    return target
