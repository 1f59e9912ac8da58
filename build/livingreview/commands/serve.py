"""``livingreview serve``: a local preview that rebuilds on save and reloads the page.

Watchdog reports edits under ``content/``, ``analyses/`` and ``manuscript.yaml``; after a
short quiet period the build runs again in this process (HTML only unless asked), and
every open page learns of it through a long-poll at ``/__livereload`` (no websocket, no
extra package in the browser). A failed build keeps the last good output on screen and
shows the error over it. The analyses cache makes a prose edit cost no execution.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from rich.console import Console
from rich.markup import escape
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from livingreview.load.config import CONFIG_NAME, Overrides
from livingreview.load.project import Project
from livingreview.pipeline import build
from livingreview.publish.notebook_pages import render_notebook_pages
from livingreview.util.errors import LivingReviewError
from livingreview.util.progress import Progress

QUIET_SECONDS = 0.3  # editors write a file in several steps; wait for them to finish
POLL_SECONDS = 25.0

RELOAD_SCRIPT = """
<script>
/* livingreview serve: reload when a rebuild finishes, show the error when it fails */
(function () {
  var generation = null;
  function show(error) {
    var box = document.getElementById("lr-serve-error");
    if (!box) {
      box = document.createElement("pre");
      box.id = "lr-serve-error";
      box.style.cssText = "position:fixed;left:0;right:0;bottom:0;max-height:50vh;overflow:auto;margin:0;" +
        "padding:1em;background:#fff0f0;color:#8a1c1c;border-top:3px solid #c53030;z-index:9999;white-space:pre-wrap";
      document.body.appendChild(box);
    }
    box.textContent = "Build failed; showing the last good build.\\n\\n" + error;
  }
  function poll() {
    fetch("/__livereload?since=" + (generation === null ? -1 : generation))
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (generation !== null && state.generation !== generation) {
          if (state.error) { show(state.error); } else { window.location.reload(); return; }
        } else if (generation === null && state.error) { show(state.error); }
        generation = state.generation;
        poll();
      })
      .catch(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
</script>
"""


class Builder:
    """Runs builds one at a time and tells waiting pages when one finished."""

    def __init__(
        self,
        project: Project,
        formats: list[str],
        console: Console,
        overrides: Overrides | None = None,
        verbose: bool = False,
    ):
        self.project = project
        self.formats = formats
        self.overrides = overrides
        self.console = console
        self.verbose = verbose
        self.generation = 0
        self.error: str | None = None
        self.changed = threading.Event()
        self._done = threading.Condition()

    def build(self) -> None:
        started = time.perf_counter()
        try:
            # Reload: manuscript.yaml may have changed; the command line's settings still apply.
            self.project = Project.load(self.project.root, self.overrides)
            progress = Progress(self.console)
            result = build(self.project, progress, self.formats)
            # The preview's value links point at the notebook pages, so keep them current too
            # (without them the links go to the executed notebooks, which the build keeps).
            if self.project.config.notebook_pages:
                with progress.stage("pages", "notebook pages of the preview"):
                    render_notebook_pages(self.project, result.title, progress.step)
            error = None
            for warning in result.warning_lines(self.verbose):
                self.console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        except LivingReviewError as exc:
            error = "\n".join([exc.title, *(str(p) for p in exc.problems)])
            # The label is markup; the error is text, whose brackets (a [section]) must print as written.
            self.console.print(f"[bold red]error:[/] {escape(error)}", highlight=False)
        with self._done:
            self.generation += 1
            self.error = error
            self._done.notify_all()
        state = "failed" if error else "done"
        self.console.print(
            f"rebuild {self.generation} {state} in {time.perf_counter() - started:.2f} s", highlight=False
        )

    def wait(self, since: int, timeout: float) -> dict:
        with self._done:
            self._done.wait_for(lambda: self.generation != since, timeout=timeout)
            return {"generation": self.generation, "error": self.error}

    def loop(self) -> None:
        """Rebuild after each burst of edits, once the files have been quiet for a moment."""
        while True:
            self.changed.wait()
            while self.changed.is_set():
                self.changed.clear()
                time.sleep(QUIET_SECONDS)
            self.build()


class _Watcher(FileSystemEventHandler):
    def __init__(self, builder: Builder, ignore: list[Path], files: set[Path]):
        self.builder = builder
        self.ignore = ignore
        # Files outside content/ that manuscript.yaml names (references, CSL, defaults, theme).
        self.files = files

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        path = Path(str(event.src_path))
        if path in self.files or Path(str(getattr(event, "dest_path", "") or path)) in self.files:
            self.builder.changed.set()
            return
        if any(path.is_relative_to(folder) for folder in self.ignore) or path.name.startswith((".#", "~")):
            return
        if path.parent == self.builder.project.root and path.name != CONFIG_NAME:
            return
        self.builder.changed.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A page that is closed or reloaded drops its long-poll (and any file still being
        # sent): the write that finds the socket closed is no error of the preview.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(SimpleHTTPRequestHandler):
    builder: Builder

    def log_message(self, format: str, *args) -> None:
        pass  # the terminal shows builds, not every request

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/__livereload":
            since = int(parse_qs(url.query).get("since", ["-1"])[0])
            body = json.dumps(self.builder.wait(since, 0 if since < 0 else POLL_SECONDS)).encode()
            self._send(body, "application/json")
            return
        if url.path == "/":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/manuscript.html")
            self.end_headers()
            return
        path = Path(self.translate_path(url.path))
        if path.suffix == ".html" and path.is_file():
            page = path.read_text(encoding="utf-8")
            at = page.rfind("</body>")
            page = page[:at] + RELOAD_SCRIPT + page[at:] if at >= 0 else page + RELOAD_SCRIPT
            self._send(page.encode(), "text/html; charset=utf-8")
            return
        super().do_GET()

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def _configured_files(project: Project) -> set[Path]:
    config = project.config
    named = [*config.citations.references, *config.pandoc.defaults]
    named += [p for p in (config.pandoc.csl, config.pandoc.html_theme, config.pandoc.html_plugins) if p]
    return {(project.root / p).resolve() for p in named}


def serve(
    project: Project,
    console: Console,
    host: str = "127.0.0.1",
    port: int = 8000,
    formats: list[str] | None = None,
    overrides: Overrides | None = None,
    verbose: bool = False,
) -> None:
    """Build, serve ``output/`` and rebuild on every save until interrupted; ``overrides``: the command line's settings.

    ``verbose`` lists every warning of each build in full.
    """
    builder = Builder(project, formats or ["html"], console, overrides, verbose)
    builder.build()
    handler = type("Handler", (_Handler,), {"builder": builder})
    server = _Server((host, port), partial(handler, directory=str(project.output_dir)))
    ignore = [project.output_dir, project.site_dir, project.root / ".git"]
    observer = Observer()
    files = _configured_files(project)
    watcher = _Watcher(builder, ignore, files)
    for folder in (project.content_dir, project.root / "analyses"):
        if folder.is_dir():
            observer.schedule(watcher, str(folder), recursive=True)
    for folder in {project.root} | {f.parent for f in files if f.parent.is_dir()}:
        observer.schedule(watcher, str(folder), recursive=False)
    observer.start()
    threading.Thread(target=builder.loop, daemon=True, name="rebuild").start()
    bound, port = server.server_address[0], server.server_address[1]
    address = f"http://{bound.decode() if isinstance(bound, (bytes, bytearray)) else bound}:{port}/"
    console.print(
        f"serving {address} (Ctrl-C to stop); rebuilding on changes to content/, analyses/, {CONFIG_NAME}",
        highlight=False,
        markup=False,
    )
    try:
        server.serve_forever()
    finally:
        observer.stop()
        server.server_close()
