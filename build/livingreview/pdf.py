"""Stage "pdf": headless Chromium prints ``manuscript.html`` to ``manuscript.pdf``.

Chromium renders the same MathML and CSS as the reader's browser, so the PDF needs
no second math engine (WeasyPrint was rejected: it cannot render math offline).

Starting Chromium takes about a second. ``PdfPrinter`` starts it (through Playwright,
with the system Chromium: no browser download) in a background thread when the build
begins, so that start-up overlaps the pandoc stage; the pdf stage then only loads the
page and prints it.
"""

from __future__ import annotations

import queue
import shutil
import threading
from pathlib import Path

from livingreview import atomic
from livingreview.errors import Location, Problem, ToolError

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


class PdfPrinter:
    """A Chromium started ahead of time in a background thread; ``print`` blocks until done."""

    def __init__(self, executable: str, timeout: float):
        self._executable = executable
        self._timeout_ms = timeout * 1000
        self._timeout = timeout
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="chromium", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # Playwright's sync API must stay on the thread that started it.
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=self._executable,
                    args=[flag for flag in FLAGS if flag != "--headless"],
                    timeout=self._timeout_ms,
                )
                while (job := self._jobs.get()) is not None:
                    html, target = job
                    try:
                        page = browser.new_page()
                        page.goto(html.as_uri(), wait_until="load", timeout=self._timeout_ms)
                        page.pdf(path=str(target), format="A4", print_background=True, prefer_css_page_size=True)
                        page.close()
                        self._results.put(None)
                    except Exception as exc:  # reported by print() on the build's thread
                        self._results.put(exc)
                browser.close()
        except Exception as exc:
            self._results.put(exc)

    def print(self, html: Path) -> Path:
        target = html.with_suffix(".pdf")
        with atomic.atomic_path(target) as tmp:
            self._jobs.put((html, tmp))
            try:
                error = self._results.get(timeout=self._timeout + 30)
            except queue.Empty:
                error = TimeoutError(f"no PDF after {self._timeout:g} s")
            if error is None and tmp.read_bytes()[:5] != b"%PDF-":
                error = RuntimeError("the output is not a PDF")
            if error is not None:
                raise ToolError(
                    Problem(
                        Location(html),
                        f"Chromium failed to print the PDF: {str(error).strip()[:2000]}",
                        "raise pdf.timeout in manuscript.yaml if the manuscript is very large",
                    )
                )
        return target

    def close(self) -> None:
        # Joined: a Playwright thread still running at interpreter exit crashes it.
        self._jobs.put(None)
        self._thread.join(timeout=30)
