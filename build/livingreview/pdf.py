"""Stage "pdf": headless Chromium prints ``manuscript.html`` to ``manuscript.pdf``.

Chromium renders the same MathML and CSS as the reader's browser, so the PDF needs
no second math engine. WeasyPrint was rejected: it cannot render math offline.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from livingreview import atomic
from livingreview.errors import Location, Problem, ToolError
from livingreview.project import Project

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags that keep Chromium off the network and quiet on a locked-down machine.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-pdf-header-footer",
)


def chromium_executable(configured: str | None) -> str:
    for name in [configured] if configured else CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ToolError(
        Problem(
            Location("manuscript.yaml", key="pdf.chromium"),
            f"Chromium not found (looked for {configured or ', '.join(CANDIDATES)})",
            "install it (sudo apt-get install chromium), or drop 'pdf' from formats",
        )
    )


def render_pdf(project: Project, html: Path) -> Path:
    target = html.with_suffix(".pdf")
    executable = chromium_executable(project.config.pdf.chromium)
    with tempfile.TemporaryDirectory(prefix="livingreview-chromium-") as profile, atomic.atomic_path(target) as tmp:
        command = [executable, *FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={tmp}", html.as_uri()]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=project.config.pdf.timeout
            )
        except subprocess.TimeoutExpired:
            raise ToolError(
                Problem(
                    Location(html),
                    f"Chromium did not finish printing within {project.config.pdf.timeout:g} s",
                    "raise pdf.timeout in manuscript.yaml",
                )
            ) from None
        if done.returncode != 0 or tmp.stat().st_size == 0 or not tmp.read_bytes()[:5] == b"%PDF-":
            raise ToolError(
                Problem(Location(html), f"Chromium failed to print the PDF:\n{done.stderr.strip()[-2000:]}")
            )
    return target
