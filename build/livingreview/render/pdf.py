"""Stage "pdf": headless Chromium prints ``manuscript.html`` to ``manuscript.pdf``.

Chromium renders the same MathML and CSS as the reader's browser, so the PDF needs
no second math engine (WeasyPrint was rejected: it cannot render math offline).

Starting Chromium takes about a second. ``PdfPrinter`` starts it when the build
begins, so that start-up overlaps the pandoc stage; the pdf stage then only loads the
page and prints it.

Printing untrusted HTML
-----------------------
Sections come from pull requests and may hold raw HTML (``<iframe>``, ``<object>``,
``<link>``, CSS ``url()``, ``<script>`` with ``fetch``...). Loaded from ``file://``, such
a page could read any file of the build machine (``.git/config`` holds CI's token) into
the published PDF, and every relative link in the PDF would name the machine's folders.
So the page is never loaded from ``file://``:

- It is loaded from the URL its version will be published at
  (``Project.version_url``, ``<site>v/<commit>/manuscript.html``). Relative links in
  the PDF therefore point to the published site, and Chromium refuses ``file://`` and
  other local URLs to a web page outright, before any request exists (it only logs
  "Not allowed to load local resource", which is read here to report them).
- DevTools' ``Fetch`` domain pauses every request and this module answers it. It is
  enabled on the browser, not on the page's session: that also covers what the page
  starts in other targets (service and shared workers, out-of-process frames, a
  popup). A URL under the version's folder is answered with the file under
  ``output/``, after ``Path.resolve()`` shows it stays inside ``output/`` (a link out is
  refused) and no part of it is hidden (``.cache/``, ``.staging-*``); anything else is
  failed (``BlockedByClient``) and recorded.
- The main frame may load its document once: a meta refresh, ``location=`` or a reload
  is refused and recorded, and so is ``window.open`` (headless Chromium's popup
  blocker already refuses it without a user gesture). Dialogs (``alert``) are
  dismissed so that they cannot stall the print; downloads are denied.
- What ``Fetch`` cannot pause (WebSocket, WebRTC, preconnect, DNS prefetch) finds no
  network: Chromium's only proxy is a closed local port, host names resolve to
  nothing, and WebRTC may not send UDP past the proxy.

Every refused request becomes a ``ContentError`` naming the sections' lines that ask
for it (found by resolving the URLs each line mentions against the page's URL), or
``manuscript.html`` when no line does (a script, a template or a loaded file asks for
it). ``includes.py`` already refuses what a section's markup asks for before the
build; this is the rule enforced whatever made the request. The PDF printed without
the refused resources is still written, so the author sees what was printed (unless
a refused navigation made printing fail); the build fails, so nothing is published.

A loopback HTTP server would do the same job with a port that any local process could
read the build through, and would still need a published-site URL for the links; the
DevTools pipe is already private to the build.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mimetypes
import os
import posixpath
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from livingreview.load.config import CONFIG_NAME
from livingreview.util import atomic, children
from livingreview.util.errors import ContentError, Location, Problem, ToolError

if TYPE_CHECKING:
    from livingreview.load.content import Section

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
    # Every page request is answered over DevTools; these stop what Fetch cannot pause
    # (WebSocket, WebRTC, preconnect) from reaching the network. Port 9 (discard) is a
    # dead end, and a failing fixed proxy is never bypassed to a direct connection.
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)

HINT = (
    "the PDF may load only files of the build: put the file in content/images/ and link it "
    "relatively (images/name.png), or link to a web page with <a href> instead of embedding it"
)

_LOCAL_REFUSED = "Not allowed to load local resource: "
_MIXED_BLOCKED = re.compile(r"requested an insecure \w+ '([^']+)'\. This request has been blocked")
# What may surround a URL on a line of Markdown, HTML, CSS or JavaScript.
_URL_DELIMITERS = re.compile(r"[\s\"'`()<>,\[\]{};]+")


def chromium_executable(configured: str | None) -> str:
    for name in [configured] if configured else CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ToolError(
        Problem(
            Location(CONFIG_NAME, key="pdf.chromium"),
            f"Chromium not found (looked for {configured or ', '.join(CANDIDATES)})",
            "install it (sudo apt-get install chromium), or drop 'pdf' from formats",
        )
    )


# Where a project with no repository and no site_url is printed from: ".invalid" can never
# resolve (RFC 2606), and _UNLINK_SITE removes every link into it before printing.
_UNPUBLISHED = "https://unpublished.invalid/v/local/"
_UNLINK_SITE = """
for (const a of document.querySelectorAll('a[href]')) {
  const u = new URL(a.href, document.baseURI);
  if (u.origin === location.origin && !(u.pathname === location.pathname && u.hash)) a.removeAttribute('href');
}
"""


class _PageGone(RuntimeError):
    """The page being printed lost its renderer process."""


# What Chromium answers when the page's renderer went away under a command, as it does now
# and then right after start-up on a loaded machine: a fresh page prints normally.
_RENDERER_LOST = re.compile(r"No target with given id|Printing failed|Target closed|Session with given id not found")


@dataclass
class _Page:
    """One attempt at printing: its tab, and what it asked for that was refused."""

    target: str
    session: str
    document: Path
    root: Path
    # Chromium's own spelling of the page's URL and of its folder, from the first request.
    url: str = ""
    folder: str = ""
    refused: dict[str, str] = field(default_factory=dict)

    def refuse(self, url: str, why: str) -> None:
        self.refused.setdefault(url, why)


_OUTSIDE = "it is not a file of this build"
_NAVIGATES = "the page may not navigate away from itself while it is printed"


class PdfPrinter:
    """A headless Chromium started ahead of time, driven over its DevTools pipe.

    ``--remote-debugging-pipe`` speaks the DevTools protocol as NUL-terminated JSON on
    file descriptors 3 (commands in) and 4 (replies and events out): no port, no
    network, no driver process. ``print`` loads the page from its published URL, answers
    its requests from ``output/`` and calls ``Page.printToPDF``.
    """

    def __init__(self, executable: str, timeout: float):
        self._timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="livingreview-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        # Dies with this process, even by kill -9; its helper processes exit with it.
        die_with_us = children.preexec()

        def wire_pipes() -> None:  # runs in the child, before exec
            die_with_us()
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_pipes,
            pass_fds=(3, 4),
            start_new_session=True,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._page: _Page | None = None
        self._intercepting = False

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        # A fulfilled request carries a whole file: more than one write may be needed.
        data = memoryview(json.dumps(message).encode() + b"\0")
        while data:
            data = data[os.write(self._to_browser, data) :]
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

    def _call(
        self,
        method: str,
        deadline: float,
        params: dict | None = None,
        session: str | None = None,
        until_event: str | None = None,
    ) -> dict:
        """Send a command; return its result (after ``until_event`` arrives, if given).

        Events that arrive meanwhile are handled, whatever the command: the page's
        requests stay paused until they are answered here.
        """
        ident = self._send(method, params, session)
        result, event_seen = None, until_event is None
        while result is None or not event_seen:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                result = message.get("result", {})
            elif "id" in message:
                # The reply to an answer given to a request: a request cancelled meanwhile
                # (its frame went away) makes it an error that changes nothing.
                continue
            elif until_event and message.get("method") == until_event and message.get("sessionId") == session:
                event_seen = True
            elif (
                session
                and message.get("method") in ("Target.detachedFromTarget", "Inspector.targetCrashed")
                and (message.get("sessionId") == session or message.get("params", {}).get("sessionId") == session)
            ):
                raise _PageGone(f"{method}: the page's renderer went away")
            else:
                self._on_event(message)
        return result

    def print(
        self,
        html: Path,
        published_at: str | None,
        sections: Sequence[Section] = (),
        step: Callable[[str], None] | None = None,
    ) -> Path:
        """Print ``html`` (in the build's output folder) as if loaded from ``published_at``.

        ``published_at`` is the URL of the folder the page will be published in; only
        files of ``html``'s folder are served to it. A refused request is a
        ``ContentError`` naming the lines of ``sections`` that ask for it. Without a
        known site (None), links into the site are left out of the PDF rather than
        pointing at an address that does not exist. ``step`` hears what printing is doing
        now (loading, printing, writing), for a progress line.
        """
        step = step or (lambda text: None)
        unlink = published_at is None
        published_at = published_at or _UNPUBLISHED
        target = html.with_suffix(".pdf")
        deadline = time.monotonic() + self._timeout
        # Right after Chromium starts, its first renderer is occasionally killed while
        # loading; a fresh page then prints normally.
        for attempt in range(3):
            try:
                pdf, page = self._print_once(html, urljoin(published_at, html.name), deadline, unlink, step)
                break
            except _PageGone:
                if attempt == 2:
                    raise ToolError(
                        Problem(Location(html), "Chromium's renderer crashed three times while printing")
                    ) from None
                step(f"the page's renderer went away; printing from a fresh page (attempt {attempt + 2} of 3)")
        if pdf:
            step(f"writing {target.name}")
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(base64.b64decode(pdf["data"]))
        if page.refused:
            raise ContentError(_problems(page, sections))
        return target

    def _print_once(
        self, html: Path, url: str, deadline: float, unlink: bool, step: Callable[[str], None]
    ) -> tuple[dict | None, _Page]:
        """The printed PDF, or None when the page failed it by doing what it may not."""
        target_id, page = None, None
        try:
            if not self._intercepting:
                # The first command is answered once Chromium, started with the build, is up.
                step("waiting for Chromium to start")
                # On the browser, not the page: requests from workers, out-of-process
                # frames and popups pause too.
                self._call("Fetch.enable", deadline, {"patterns": [{"urlPattern": "*"}]})
                self._call("Browser.setDownloadBehavior", deadline, {"behavior": "deny"})
                self._intercepting = True
            target_id = self._call("Target.createTarget", deadline, {"url": "about:blank"})["targetId"]
            session = self._call("Target.attachToTarget", deadline, {"targetId": target_id, "flatten": True})[
                "sessionId"
            ]
            page = self._page = _Page(target_id, session, html, html.parent.resolve())
            self._call("Page.enable", deadline, session=session)
            self._call("Log.enable", deadline, session=session)
            step(f"loading {html.name} with its fonts and figures")
            loaded = self._call("Page.navigate", deadline, {"url": url}, session, until_event="Page.loadEventFired")
            if loaded.get("errorText"):
                raise RuntimeError(f"loading {url} failed: {loaded['errorText']}")
            if unlink:
                self._call("Runtime.evaluate", deadline, {"expression": _UNLINK_SITE}, session)
            step("laying out and printing the pages")
            # A4; the theme's @page rules set the margins.
            pdf = self._call(
                "Page.printToPDF",
                deadline,
                {
                    "printBackground": True,
                    "preferCSSPageSize": True,
                    "paperWidth": 8.27,
                    "paperHeight": 11.69,
                    "displayHeaderFooter": False,
                },
                session,
            )
        except _PageGone:
            raise
        except (OSError, RuntimeError, TimeoutError, KeyError) as error:
            if page and page.refused:
                # A refused navigation leaves Chromium printing an error page, or nothing:
                # what the page tried is the problem to report.
                return None, page
            if isinstance(error, RuntimeError) and _RENDERER_LOST.search(str(error)):
                raise _PageGone(str(error)) from None
            raise ToolError(
                Problem(
                    Location(html),
                    f"Chromium failed to print the PDF: {error}",
                    f"raise pdf.timeout in {CONFIG_NAME} if the manuscript is very large",
                )
            ) from None
        finally:
            # The page stays current while it closes: what its scripts ask for until then
            # (a worker's late fetch) is still refused and reported.
            if target_id:
                # Gone with its renderer, or Chromium is stopped by close().
                with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                    self._call("Target.closeTarget", deadline, {"targetId": target_id})
            self._page = None
        return pdf, page

    def _on_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Fetch.requestPaused":
            self._answer(params)
            return
        page = self._page
        if page is None or message.get("sessionId") != page.session:
            return
        if method == "Log.entryAdded":
            # Chromium refuses local URLs to a web page before any request exists; its
            # log is the only trace.
            text = params.get("entry", {}).get("text", "")
            if text.startswith(_LOCAL_REFUSED):
                page.refuse(text[len(_LOCAL_REFUSED) :].strip(), _OUTSIDE)
            elif blocked := _MIXED_BLOCKED.search(text):
                page.refuse(blocked.group(1), _OUTSIDE)
        elif method in ("Page.frameRequestedNavigation", "Page.frameScheduledNavigation"):
            if params.get("frameId") == page.target and _normal(params.get("url", "")) != _normal(page.url):
                page.refuse(params.get("url", ""), _NAVIGATES)
        elif method == "Page.windowOpen":
            page.refuse(params.get("url") or "about:blank", "the page may not open windows")
        elif method == "Page.javascriptDialogOpening":
            # An open alert() stops the page until it is answered: printing would time out.
            self._send("Page.handleJavaScriptDialog", {"accept": False}, page.session)

    def _answer(self, params: dict) -> None:
        """Serve a paused request from the page's folder, or fail it."""
        request, url = params["requestId"], params["request"]["url"]
        page = self._page
        if page is None:
            self._fail(request)
            return
        if params.get("resourceType") == "Document" and params.get("frameId") == page.target:
            if page.url:
                page.refuse(url, _NAVIGATES)
                self._fail(request)
            else:
                # The page's own URL, as Chromium spells it (percent-encoding, case).
                parts = urlsplit(url)
                page.url = url
                page.folder = f"{parts.scheme}://{parts.netloc}{parts.path[: parts.path.rindex('/') + 1]}"
                self._fulfil(request, page.document)
            return
        parts = urlsplit(url)
        folder = urlsplit(page.folder)
        if (parts.scheme, parts.netloc) == (folder.scheme, folder.netloc) and parts.path.startswith(folder.path):
            path, why = _serve(page.root, unquote(parts.path[len(folder.path) :]))
            if why:
                page.refuse(url, why)
                self._fail(request)
            else:
                self._fulfil(request, path)
        elif (parts.scheme, parts.netloc, parts.path) == (folder.scheme, folder.netloc, "/favicon.ico"):
            self._fail(request)  # the browser's own request for the site's icon
        else:
            page.refuse(url, _OUTSIDE)
            self._fail(request)

    def _fulfil(self, request: str, path: Path | None) -> None:
        try:
            body = path.read_bytes() if path else None
        except OSError:
            body = None
        if body is None or path is None:
            # Missing from the build (a notebook page is made only after the PDF): as on the site.
            self._send("Fetch.fulfillRequest", {"requestId": request, "responseCode": 404})
            return
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(
            "Fetch.fulfillRequest",
            {
                "requestId": request,
                "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": kind}],
                "body": base64.b64encode(body).decode("ascii"),
            },
        )

    def _fail(self, request: str) -> None:
        self._send("Fetch.failRequest", {"requestId": request, "errorReason": "BlockedByClient"})

    def close(self) -> None:
        # Nothing of the browser's state is kept, so it is stopped outright, with the
        # renderer and helper processes of its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


def _serve(root: Path, relative: str) -> tuple[Path | None, str | None]:
    """The file of ``root`` (resolved) that ``relative`` names, or why it is refused.

    ``(None, None)``: not in the build (answered 404, as the site would).
    """
    parts = PurePosixPath(relative).parts
    if "\0" in relative or relative.startswith("/") or ".." in parts:
        return None, "it leads out of the build's output folder"
    if any(part.startswith(".") for part in parts):
        return None, "hidden files of the output folder (caches, staging folders) are not part of the build"
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError):
        return None, None
    if not path.is_relative_to(root):
        return None, f"{root.name}/{relative} is a link to a file outside the output folder"
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return None, "hidden files of the output folder (caches, staging folders) are not part of the build"
    return (path, None) if path.is_file() else (None, None)


def _normal(url: str) -> str:
    """``url`` in a form two spellings of it share: no fragment, dot segments and escapes resolved."""
    parts = urlsplit(url.strip())
    # An escaped slash stays one: it separates no folders (``images%2F..`` is one name).
    path = unquote(re.sub(r"%2[fF]", "%252F", parts.path))
    if path:
        path = posixpath.normpath(path) + ("/" if path.endswith("/") and path != "/" else "")
    netloc = parts.netloc.lower()
    if parts.scheme.lower() == "file" and netloc == "localhost":
        netloc = ""
    query = f"?{unquote(parts.query)}" if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{path}{query}"


def _mentioned(sections: Sequence[Section], page_url: str) -> dict[str, set[tuple[str, int]]]:
    """Every URL the sections' lines name, absolutely or relative to the page, with where."""
    places: dict[str, set[tuple[str, int]]] = {}
    for section in sections:
        for number, line in enumerate(section.text.splitlines(), start=1):
            for token in _URL_DELIMITERS.split(line):
                if not re.search(r"[./:%]", token):
                    continue  # a word of prose, not a path
                # Unquoted attribute values (src=x) and meta refresh targets (url=x).
                for candidate in {token, token.partition("=")[2]} - {""}:
                    try:
                        url = _normal(urljoin(page_url, candidate))
                    except ValueError:
                        continue
                    places.setdefault(url, set()).add((str(section.path), number))
    return places


def _problems(page: _Page, sections: Sequence[Section]) -> list[Problem]:
    """Each refused URL at every section line that asks for it; the rest at the HTML file."""
    mentioned = _mentioned(sections, page.url)
    found: dict[tuple[str, int], set[str]] = {}
    unplaced = []
    for url, why in page.refused.items():
        message = f"the PDF may not load {url}: {why}"
        places = mentioned.get(_normal(url), set()) | {
            (str(section.path), number)
            for section in sections
            for number, line in enumerate(section.text.splitlines(), start=1)
            if url in line
        }
        for place in places:
            found.setdefault(place, set()).add(message)
        if not places:
            unplaced.append(
                Problem(
                    Location(page.document),
                    f"{message} (no line of the sections names it: a script, a template or a file the page loads asks for it)",
                )
            )
    problems = [
        Problem(Location(path, number), message)
        for (path, number), messages in sorted(found.items())
        for message in sorted(messages)
    ] + sorted(unplaced, key=lambda problem: problem.message)
    problems[-1].hint = HINT
    return problems
