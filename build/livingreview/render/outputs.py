"""Where each format's output goes: one table for the stages that write them, the page's
links bar (through render/process.py) and the version folder (publish/site.py).

Kept free of imports so that publishing and the light commands need not load pandoc's glue.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """A format's output, relative to ``output/`` and to the version folder."""

    format: str
    main: str  # the file itself: what a reader opens
    folder: str | None = None  # the bundle it lies in (JATS, LaTeX)
    archive: str | None = None  # that bundle as one zip file, which the links bar links
    description: str = ""

    @property
    def published(self) -> list[str]:
        """What the version folder gets of it, besides the page."""
        return [p for p in (self.folder or self.main, self.archive) if p]

    @property
    def linked(self) -> str:
        """What the page's links bar and the versions page link."""
        return self.archive or self.main


OUTPUTS: dict[str, Output] = {
    "pdf": Output("pdf", "manuscript.pdf", description="PDF"),
    "docx": Output("docx", "manuscript.docx", description="Word"),
    "jats": Output("jats", "jats/manuscript.jats.xml", "jats", "manuscript-jats.zip", "JATS XML"),
    "latex": Output("latex", "latex/manuscript.tex", "latex", "manuscript-latex.zip", "LaTeX"),
}
# Written by pandoc from output/manuscript.md besides the HTML (render/formats.py).
PANDOC_FORMATS: tuple[str, ...] = ("docx", "jats", "latex")
