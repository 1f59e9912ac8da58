"""Stage "pdf": headless Chromium prints ``manuscript.html`` to ``manuscript.pdf``.

Chromium renders the same MathML and CSS as the reader's browser, so the PDF needs
no second math engine (WeasyPrint was rejected: it cannot render math offline).

Starting Chromium takes about a second. ``PdfPrinter`` starts it when the build
begins, so that start-up overlaps the pandoc stage; the pdf stage then only loads the
page and prints it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
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


class _PageGone(RuntimeError):
    """The page being printed lost its renderer process."""


class PdfPrinter:
    """A headless Chromium started ahead of time, driven over its DevTools pipe.

    ``--remote-debugging-pipe`` speaks the DevTools protocol as NUL-terminated JSON on
    file descriptors 3 (commands in) and 4 (replies and events out): no port, no
    network, no driver process. ``print`` loads the page and calls ``Page.printToPDF``.
    """

    def __init__(self, executable: str, timeout: float):
        self._timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="livingreview-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_pipes() -> None:  # runs in the child, before exec
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_pipes, pass_fds=(3, 4), start_new_session=True,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError(f"Chromium did not answer within {self._timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"Chromium exited: {stderr.strip()[-1500:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _call(self, method: str, deadline: float, params: dict | None = None, session: str | None = None,
              until_event: str | None = None) -> dict:
        """Send a command; return its result (after ``until_event`` arrives, if given)."""
        ident = self._send(method, params, session)
        result, event_seen = None, until_event is None
        while result is None or not event_seen:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                result = message.get("result", {})
            elif until_event and message.get("method") == until_event and message.get("sessionId") == session:
                event_seen = True
            elif session and message.get("method") in ("Target.detachedFromTarget", "Inspector.targetCrashed") and (
                message.get("sessionId") == session or message.get("params", {}).get("sessionId") == session
            ):
                raise _PageGone(f"{method}: the page's renderer went away")
        return result

    def print(self, html: Path) -> Path:
        target = html.with_suffix(".pdf")
        deadline = time.monotonic() + self._timeout
        # Right after Chromium starts, its first renderer is occasionally killed while
        # loading; a fresh page then prints normally.
        for attempt in range(3):
            try:
                pdf = self._print_once(html, deadline)
                break
            except _PageGone:
                if attempt == 2:
                    raise ToolError(Problem(Location(html), "Chromium's renderer crashed three times while printing")) from None
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(base64.b64decode(pdf["data"]))
        return target

    def _print_once(self, html: Path, deadline: float) -> dict:
        try:
            target_id = self._call("Target.createTarget", deadline, {"url": "about:blank"})["targetId"]
            session = self._call("Target.attachToTarget", deadline, {"targetId": target_id, "flatten": True})["sessionId"]
            self._call("Page.enable", deadline, session=session)
            self._call("Page.navigate", deadline, {"url": html.as_uri()}, session, until_event="Page.loadEventFired")
            # A4; the theme's @page rules set the margins.
            pdf = self._call("Page.printToPDF", deadline, {
                "printBackground": True, "preferCSSPageSize": True,
                "paperWidth": 8.27, "paperHeight": 11.69, "displayHeaderFooter": False,
            }, session)
        except _PageGone:
            raise
        except (OSError, RuntimeError, TimeoutError, KeyError) as error:
            raise ToolError(
                Problem(
                    Location(html),
                    f"Chromium failed to print the PDF: {error}",
                    "raise pdf.timeout in manuscript.yaml if the manuscript is very large",
                )
            ) from None
        return pdf

    def close(self) -> None:
        # Nothing of the browser's state is kept, so it is stopped outright, with the
        # renderer and helper processes of its group.
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)
