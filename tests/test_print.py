"""Print quality of the PDF: what Chromium prints from the theme's print rules.

One fixture project gets a section with a numbered display equation and an unnumbered
one, both far wider than the page, and a table whose cells cannot wrap enough to fit.
It is built through the real CLI; the page that holds them is rendered to pixels with
``pdftoppm``, and the words' boxes come from ``pdftotext -bbox``.

Paper cannot scroll: a scroll box that reaches the PDF prints a scrollbar (a band of
grey as wide as the box, under the equation) and cuts off what it hides. So each wide
block must print without a scrollbar and whole, inside the text area of the page: its
first and last words (STARTMARK and ENDMARK, written into the equation) and its rightmost
ink lie between the page's margins.
"""

from __future__ import annotations

import html as htmllib
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from conftest import build, commit_all, write_project

# The theme's @page margin (2 cm) on A4, in PDF points.
MARGIN = 2 / 2.54 * 72
DPI = 100
# The margins may be missed by this much (points): antialiasing and rounding.
SLACK = 3
# The theme's print font size of the body text (points).
BODY_SIZE = 10.5

# Marker words put each block between two known lines of text.
WIDE_SECTION = r"""## Print checks {.page_break_before}

BEFOREEQ the numbered equation follows.

$$\text{STARTMARK} \quad \mathrm{SE}(s) = \begin{cases} (h - l) / 3.92 & \text{if a 95\% confidence interval } [l, h] \text{ is reported by the source for this very score,} \\ 100 \sqrt{p (1 - p) / n} & \text{if the metric is an accuracy } p \in [0, 1] \text{ on } n \text{ test items and the source says how many there were,} \end{cases} \quad \text{ENDMARK}$$ {#eq:wide}

AFTEREQ the numbered equation is above; BEFOREPLAIN an unnumbered one follows.

$$\text{STARTPLAIN} \quad \hat y(x, c) = k_{(x,c)}^\top \left( K_W + \lambda I \right)^{-1} W^{1/2} y, \qquad K_W = W^{1/2} \Phi \Phi^\top W^{1/2}, \qquad k_{(x,c)} = W^{1/2} \Phi \, \varphi(x, c), \qquad \frac{\partial \hat y}{\partial Q} = \sum_b g_b \, w_b \, K_{\mathrm{att}} \psi_b \, \psi(x, c)^\top, \qquad \frac{\partial \hat y}{\partial K_{\mathrm{att}}} = \sum_b g_b \, w_b \, Q \, \psi(x, c) \, \psi_b^\top \qquad \text{ENDPLAIN}$$

AFTERPLAIN the unnumbered equation is above; BEFORETABLE the table follows.

| FIRSTCOLUMN | second | third | fourth | fifth | sixth | seventh | eighth | ninth | LASTCOLUMN |
|---|---|---|---|---|---|---|---|---|---|
| 1234567890123.4567 | 2234567890123.4567 | 3234567890123.4567 | 4234567890123.4567 | 5234567890123.4567 | 6234567890123.4567 | 7234567890123.4567 | 8234567890123.4567 | 9234567890123.4567 | 10234567890123.4567 |
| 1.5 | 2.5 | 3.5 | 4.5 | 5.5 | 6.5 | 7.5 | 8.5 | 9.5 | 10.5 |

Table: A table too wide for the page. {#tbl:wide}

AFTERTABLE the table is above.
"""


@dataclass
class Word:
    text: str
    page: int
    x_min: float
    y_min: float
    x_max: float
    y_max: float


@dataclass
class Printed:
    pdf: Path
    text: str
    words: list[Word]
    width: float  # of the page, in points
    folder: Path

    def word(self, text: str) -> Word:
        found = [word for word in self.words if word.text == text]
        # Text cut off by its box or past the paper's edge is not in the PDF at all.
        assert found, f"{text} is not printed: what holds it is cut off"
        assert len(found) == 1, f"{text} is printed {len(found)} times"
        return found[0]

    def page_image(self, page: int) -> Image.Image:
        stem = self.folder / f"page-{page}"
        subprocess.run(
            ["pdftoppm", "-r", str(DPI), "-gray", "-png", "-singlefile", "-f", str(page), "-l", str(page)]
            + [str(self.pdf), str(stem)],
            check=True,
        )
        return Image.open(f"{stem}.png").convert("L")


def words_of(pdf: Path) -> tuple[list[Word], float]:
    """Every word of the PDF with its box (points, origin top left), and the page width."""
    xhtml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    words, width = [], 0.0
    for number, page in enumerate(re.findall(r"<page\b(.*?)</page>", xhtml, re.S), start=1):
        width = float(re.search(r'width="([\d.]+)"', page).group(1))
        for x_min, y_min, x_max, y_max, text in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', page
        ):
            words.append(Word(htmllib.unescape(text), number, float(x_min), float(y_min), float(x_max), float(y_max)))
    return words, width


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> Printed:
    root = write_project(tmp_path_factory.mktemp("print") / "project")
    (root / "content" / "03.print.md").write_text(WIDE_SECTION, encoding="utf-8")
    commit_all(root, "wide blocks")
    result = build(root, "html", "pdf")
    assert result.returncode == 0, result.output
    pdf = root / "output" / "manuscript.pdf"
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    words, width = words_of(pdf)
    return Printed(pdf, text, words, width, tmp_path_factory.mktemp("pages"))


def between(printed: Printed, above: str, below: str) -> tuple[int, float, float]:
    """The page and the band of it (points, top and bottom) between two marker lines."""
    first, last = printed.word(above), printed.word(below)
    assert first.page == last.page, f"{above} and {below} are on different pages"
    return first.page, first.y_max, last.y_min


def scrollbar_rows(image: Image.Image, top: float, bottom: float) -> list[int]:
    """Pixel rows of the band that belong to a bar of grey: a printed scrollbar.

    Chromium prints a scrollbar as a light track (grey 252 of 255) holding a darker
    thumb (139), about 15 CSS pixels high, as wide as the scroll box. A row belongs to
    one when a third of the text width is one unbroken run of pixels that are not
    white, and such rows stack at least 5 high (at 100 dpi): a table's rules are 1 or
    2 CSS pixels, text and fraction bars leave gaps.
    """
    scale = DPI / 72
    left, right = int(MARGIN * scale), int(image.width - MARGIN * scale)
    least = (right - left) // 3
    pixels = image.load()
    bars, height = [], 0
    for y in range(int(top * scale) + 1, min(int(bottom * scale), image.height)):
        run = longest = 0
        for x in range(left, right):
            run = run + 1 if pixels[x, y] <= 253 else 0
            longest = max(longest, run)
        height = height + 1 if longest >= least else 0
        if height >= 5:
            bars.append(y)
    return bars


def ink_extent(image: Image.Image, top: float, bottom: float) -> tuple[float, float]:
    """Leftmost and rightmost non-white pixel of the band, in points."""
    scale = DPI / 72
    band = image.crop((0, int(top * scale) + 1, image.width, int(bottom * scale) - 1))
    # Invert: ink becomes bright, so getbbox finds it.
    box = band.point(lambda value: 255 if value < 200 else 0).getbbox()
    assert box, "nothing printed between the markers"
    return box[0] / scale, box[2] / scale


@pytest.mark.parametrize(
    ("above", "below", "first", "last"),
    [
        ("BEFOREEQ", "AFTEREQ", "STARTMARK", "ENDMARK"),
        ("BEFOREPLAIN", "AFTERPLAIN", "STARTPLAIN", "ENDPLAIN"),
        ("BEFORETABLE", "AFTERTABLE", "FIRSTCOLUMN", "LASTCOLUMN"),
    ],
    ids=["numbered-equation", "unnumbered-equation", "table"],
)
def test_wide_block_prints_whole_inside_the_margins_without_scrollbar(
    printed: Printed, above: str, below: str, first: str, last: str
):
    page, top, bottom = between(printed, above, below)
    image = printed.page_image(page)
    bars = scrollbar_rows(image, top, bottom)
    assert not bars, (
        f"a scrollbar is printed under the block (page {page}, pixel rows {bars[0]}-{bars[-1]} at {DPI} dpi)"
    )
    left_edge, right_edge = MARGIN - SLACK, printed.width - MARGIN + SLACK
    start, end = printed.word(first), printed.word(last)
    assert start.page == end.page == page
    assert top < start.y_min and end.y_max < bottom, "the block's words are not between its markers"
    # A block cut off by its box, or running off the page, has its last word past the margin.
    assert start.x_min >= left_edge, f"{first} starts at {start.x_min:.1f} pt, left of the margin ({MARGIN:.1f} pt)"
    assert end.x_max <= right_edge, (
        f"{last} ends at {end.x_max:.1f} pt, right of the margin ({printed.width - MARGIN:.1f} pt)"
    )
    ink_left, ink_right = ink_extent(image, top, bottom)
    assert left_edge <= ink_left and ink_right <= right_edge, (
        f"ink from {ink_left:.1f} to {ink_right:.1f} pt, outside the text area ({MARGIN:.1f} to {printed.width - MARGIN:.1f} pt)"
    )


def test_wide_equation_is_scaled_not_shrunk_to_nothing(printed: Printed):
    """Fitted to the page, the equation still spans most of its width: it is scaled, not lost."""
    start, end = printed.word("STARTMARK"), printed.word("ENDMARK")
    text_width = printed.width - 2 * MARGIN
    assert end.x_max - start.x_min > 0.6 * text_width
    number = printed.word("(2)")
    assert number.page == start.page and number.x_min > end.x_max, "the equation number is not right of the equation"


def printed_sizes(pdf: Path, marker: str) -> set[float]:
    """The font sizes (points on paper) of the text runs that hold ``marker``."""
    sizes = set()

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        if marker in text:
            # The font size scaled by the text and graphics matrices: Chromium draws CSS
            # pixels at 0.75 points, and at less when it shrinks the page to the paper.
            scale = math.hypot(tm[0] * cm[0] + tm[1] * cm[2], tm[0] * cm[1] + tm[1] * cm[3])
            sizes.add(round(size * scale, 2))

    for page in pypdf.PdfReader(pdf).pages:
        page.extract_text(visitor_text=visit)
    return sizes


def test_wide_blocks_do_not_shrink_the_whole_document(printed: Printed):
    """Chromium prints a page that is wider than the paper smaller, up to half its size:
    one block running past the margin would shrink the text of every page."""
    # On the page of the wide blocks, and in the fixture's Discussion, pages before it.
    for marker in ("BEFOREEQ", "representer"):
        assert printed_sizes(printed.pdf, marker) == {BODY_SIZE}, marker


def test_space_after_percent_in_text_survives(printed: Printed):
    """``\\text{a 95\\% confidence}``: TeX keeps the space after the control symbol ``\\%``."""
    text = re.sub(r"\s+", " ", printed.text)
    assert "95%confidence" not in text, "the space after \\% is lost"
    assert "95% confidence interval" in text
