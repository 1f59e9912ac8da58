"""What two renderings of one manuscript must share, whichever pandoc wrote their markup.

The build renders with the current pandoc and Lua filters; rootstock renders with
pandoc 2.19 and its Python filters (see :mod:`livingreview.render`). Their HTML differs
in markup that carries no meaning (a table row's class, where whitespace falls, the
MathML pandoc's math library writes), so the two are compared on what a reader gets:

* the text of the body as a reader sees it, with each formula as its TeX source: every
  figure, table and equation number, every cross-reference and citation as printed,
  and the reference list;
* every link inside the page, in order (cross-references and citations to their
  targets, and their text);
* the ids of the numbered targets, in order.

The tests (``tests/test_render_equivalence.py``) and the scale benchmark use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

_TARGET = re.compile(r"^(fig|tbl|eq):")
_SKIPPED = {"script", "style", "head", "title"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass(frozen=True)
class Rendering:
    text: str
    links: tuple[tuple[str, str], ...]
    targets: tuple[str, ...]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.targets: list[str] = []
        self._skip = 0  # depth inside elements whose text no reader sees
        self._math = 0  # depth inside <math>: only its TeX annotation is kept
        self._annotation = False
        self._link: tuple[str, int] | None = None  # href, where its text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        values = dict(attrs)
        if tag in _SKIPPED:
            self._skip += 1
        elif tag == "math":
            self._math += 1
        elif tag == "annotation" and self._math:
            self._annotation = True
            self.text.append(" $")
        elif tag == "a" and (values.get("href") or "").startswith("#"):
            self._link = (values["href"] or "", len(self.text))
        if _TARGET.match(values.get("id") or ""):
            self.targets.append(values["id"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag == "math":
            self._math = max(0, self._math - 1)
        elif tag == "annotation" and self._annotation:
            self._annotation = False
            self.text.append("$ ")
        elif tag == "a" and self._link:
            href, start = self._link
            self.links.append((href, _squeeze("".join(self.text[start:]))))
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._skip or (self._math and not self._annotation):
            return
        self.text.append(data.strip() if self._annotation else data)


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\xa0", " ")).strip()


def read(html: str) -> Rendering:
    """The parts of an HTML page two equivalent renderings agree on."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return Rendering(_squeeze("".join(reader.text)), tuple(reader.links), tuple(reader.targets))


def _first_difference(a: Sequence, b: Sequence) -> int:
    """The index where ``a`` and ``b`` part (the shorter one's length if one begins the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def differences(expected: str, actual: str, context: int = 60) -> list[str]:
    """Where the page ``actual`` says something other than ``expected`` (empty: equivalent)."""
    a, b = read(expected), read(actual)
    found = []
    if a.text != b.text:
        at = _first_difference(a.text, b.text)
        start = max(0, at - context)
        found.append(
            f"text differs at character {at}: expected ...{a.text[start : at + context]!r}..."
            f" got ...{b.text[start : at + context]!r}..."
        )
    if a.links != b.links:
        diverge = _first_difference(a.links, b.links)
        found.append(
            f"links differ at link {diverge} of {len(a.links)}/{len(b.links)}: expected"
            f" {a.links[diverge : diverge + 3]} got {b.links[diverge : diverge + 3]}"
        )
    if a.targets != b.targets:
        found.append(f"numbered targets differ: expected {a.targets} got {b.targets}")
    return found
