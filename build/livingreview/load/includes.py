"""What a section makes a browser load, checked before anything is rendered.

A section is untrusted input (docs/threat-model.md). Whatever it asks the browser to
fetch while the PDF is printed, or a reader's browser to fetch later, must be a file
of ``content/``: never an absolute path, a ``..`` escape, a symlink out of the folder,
a ``file:`` URL or the network. This module finds those requests in Markdown and raw
HTML, with the ``file:line`` that makes them:

- Markdown images ``![alt](path)``;
- raw HTML attributes that load a resource (``src``, ``srcset``, ``data``, ``poster``,
  ``background``, and ``href`` on anything but ``<a>``/``<area>``);
- CSS ``url(...)`` and ``@import`` in ``style`` attributes and ``<style>`` elements;
- links (Markdown and ``<a href>``) only for the ``file:`` scheme, which would point
  readers at the build machine.

The PDF printer enforces the same rule at print time (``pdf.py``), whatever produced
the request; this check exists to tell the author where, before any work starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from livingreview.util.errors import Location, Problem

_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_MD_IMAGE = re.compile(r"!\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_MD_LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?(file:[^)\s>]*)")
_TAG = re.compile(r"<([a-zA-Z][\w:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
_ATTRIBUTE = re.compile(r"([\w:-]+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+)")
_CSS_URL = re.compile(r"url\(\s*(\"[^\"]*\"|'[^']*'|[^)\s]*)\s*\)|@import\s+(\"[^\"]*\"|'[^']*')", re.I)
_STYLE_ELEMENT = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")

# Attributes whose value the browser fetches and shows as part of the page.
_LOADING = {"src", "srcset", "data", "poster", "background", "href", "xlink:href", "lowsrc", "dynsrc", "codebase"}
# Elements whose href is a link to follow, not a resource to load.
_NAVIGATION = {"a", "area", "base"}


@dataclass(frozen=True)
class Request:
    """One thing a section asks for: what, where, and whether it is loaded or only linked."""

    target: str
    line: int
    loads: bool
    what: str


def _blank(match: re.Match[str]) -> str:
    # Keep offsets (and so line numbers) while hiding code from the scan.
    return re.sub(r"[^\n]", " ", match.group(0))


def _scannable(text: str) -> str:
    """``text`` with fenced code, inline code and HTML comments blanked out."""
    parts = _FENCE.split(text)
    out, inside, i = [], False, 0
    # re.split with one group alternates text and the fence marker.
    while i < len(parts):
        chunk = parts[i]
        out.append(re.sub(r"[^\n]", " ", chunk) if inside else chunk)
        if i + 1 < len(parts):
            out.append(parts[i + 1])
            inside = not inside
        i += 2
    text = "".join(out)
    text = _HTML_COMMENT.sub(_blank, text)
    return _INLINE_CODE.sub(_blank, text)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


def requests(text: str) -> Iterator[Request]:
    """Every resource ``text`` loads, and every ``file:`` link it makes."""
    text = _scannable(text)

    def line_at(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    for match in _MD_IMAGE.finditer(text):
        yield Request(_unquote(match.group(1)), line_at(match.start()), True, "image")
    for match in _MD_LINK.finditer(text):
        yield Request(match.group(1), line_at(match.start()), False, "link")
    for tag in _TAG.finditer(text):
        name = tag.group(1).lower()
        for attribute in _ATTRIBUTE.finditer(tag.group(2)):
            key, value = attribute.group(1).lower(), _unquote(attribute.group(2))
            where = line_at(tag.start())
            if key == "style":
                yield from _css(value, where, f"<{name} style>")
            elif key in _LOADING:
                loads = not (key == "href" and name in _NAVIGATION)
                targets = (
                    [part.strip().split()[0] for part in value.split(",") if part.strip()]
                    if key == "srcset"
                    else [value]
                )
                for target in targets:
                    yield Request(target, where, loads, f"<{name} {key}>")
    for style in _STYLE_ELEMENT.finditer(text):
        yield from _css(style.group(1), line_at(style.start(1)), "<style>")


def _css(css: str, line: int, what: str) -> Iterator[Request]:
    for match in _CSS_URL.finditer(css):
        target = _unquote(match.group(1) if match.group(1) is not None else match.group(2))
        yield Request(target, line + css.count("\n", 0, match.start()), True, f"{what} url()")


def check(path: Path, text: str, directory: Path) -> list[Problem]:
    """Problems with what section ``path`` asks for; paths resolve against ``directory`` (content/)."""
    problems = []
    root = directory.resolve()
    for request in requests(text):
        where = Location(path, request.line)
        problem = _judge(request, root)
        if problem:
            message, hint = problem
            problems.append(Problem(where, message, hint))
    return problems


_FROM_CONTENT = "files must come from content/; give a path relative to it, such as images/figure.svg"


def _remote(request: Request) -> tuple[str, str]:
    return (
        f"remote {request.what} {request.target}: readers would need the network to see it",
        "download it into content/images/ and link the local copy",
    )


def _judge(request: Request, root: Path) -> tuple[str, str] | None:
    target = request.target
    if not target or target.startswith("#") or "{{" in target or "{%" in target:
        return None
    scheme = _SCHEME.match(target)
    if scheme:
        kind = scheme.group(1).lower()
        if kind == "file":
            return (f"{request.what} points at the build machine: {target}", _FROM_CONTENT)
        if not request.loads or kind in ("data", "mailto"):
            return None
        if kind in ("http", "https", "ftp", "ws", "wss"):
            return _remote(request)
        return (f"{request.what} uses the unsupported scheme {kind}: {target}", "link a file of content/ instead")
    if not request.loads:
        return None
    if target.startswith("//"):
        return _remote(request)
    relative = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if relative.startswith("/") or relative.startswith("\\") or re.match(r"^[a-zA-Z]:[\\/]", relative):
        return (f"{request.what} has an absolute path {target}", _FROM_CONTENT)
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        # Without "..", only a symlink on the way can lead out.
        escape = "leaves content/" if ".." in Path(relative).parts else "is a symlink out of content/"
        return (
            f"{request.what} {target} {escape}",
            "every file a section shows must lie inside content/ (symlinks included)",
        )
    if not resolved.is_file():
        return (f"{request.what} not found: {target}", f"paths are relative to {root.name}/")
    return None


def outside_symlinks(directory: Path) -> list[Problem]:
    """Symlinks under ``directory`` whose target is not inside it; the build would publish their target."""
    root = directory.resolve()
    problems = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            problems.append(
                Problem(
                    Location(path),
                    "symlink to something outside content/; building would read and publish it",
                    "copy the file into content/ instead of linking it",
                )
            )
    return problems
