"""``livingreview serve``: preview, rebuild on save, reload signal, no re-execution for prose."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from test_analyses import write_project


class Server:
    def __init__(self, root: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "livingreview", "-C", str(root), "serve", "--port", "0"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stderr:
                self.lines.append(line)
                found = re.search(r"serving (http://\S+/)", line)
                if found:
                    self.url = found[1]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(240), "serve did not start"
        assert self.url, "".join(self.lines)

    def get(self, path: str, timeout: float = 60) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read().decode()

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError("serve did not stop within 60 s of Ctrl-C; it printed:\n" + self.log()) from None


def test_serve_rebuilds_on_save_and_reloads_without_rerunning_analyses(tmp_path: Path):
    root = write_project(tmp_path / "p", notebook_pages=True)
    server = Server(root)
    try:
        page = server.get("manuscript.html")
        assert "The total is" in page and "/__livereload" in page  # the reload script is injected
        assert "demo [ci]: run" in server.log()
        manifest = root / "output" / "analyses" / "demo" / "manifest.json"
        executed_at = manifest.stat().st_mtime_ns
        state = json.loads(server.get("__livereload?since=-1"))

        section = root / "content" / "01.results.md"
        section.write_text(section.read_text() + "\nA sentence written while serving.\n")
        # The long-poll answers once the rebuild has finished.
        changed = json.loads(server.get(f"__livereload?since={state['generation']}"))
        assert changed["generation"] > state["generation"] and changed["error"] is None
        assert "A sentence written while serving." in server.get("manuscript.html")
        assert manifest.stat().st_mtime_ns == executed_at  # a prose edit re-runs nothing
        assert "demo [ci]: cached" in server.log()
        assert 'id="cell-' in server.get("notebooks/demo.html")  # value links resolve in the preview

        # A broken edit is reported to the page; the last good build stays served.
        section.write_text(section.read_text() + "\n{{ demo.totl }}\n")
        failed = json.loads(server.get(f"__livereload?since={changed['generation']}"))
        assert "demo.totl" in failed["error"] and "01.results.md" in failed["error"]
        assert "A sentence written while serving." in server.get("manuscript.html")
    finally:
        code = server.stop()
    assert code in (0, 130), server.log()


def test_serve_rebuilds_when_a_reference_file_outside_content_changes(tmp_path: Path):
    root = write_project(tmp_path / "p")
    frozen = root / "refs" / "frozen.json"
    frozen.parent.mkdir()
    frozen.write_text(json.dumps([{"id": "doi:10.1000/frozen", "type": "book", "title": "Old Frozen Title"}]))
    config = root / "manuscript.yaml"
    config.write_text(config.read_text() + "citations:\n  references: [refs/frozen.json]\n")
    section = root / "content" / "01.results.md"
    section.write_text(section.read_text() + '\nSee [@doi:10.1000/frozen].\n\n<div id="refs"></div>\n')
    server = Server(root)
    try:
        assert "Old Frozen Title" in server.get("manuscript.html")
        state = json.loads(server.get("__livereload?since=-1"))
        frozen.write_text(json.dumps([{"id": "doi:10.1000/frozen", "type": "book", "title": "New Frozen Title"}]))
        changed = json.loads(server.get(f"__livereload?since={state['generation']}"))
        assert changed["error"] is None, changed
        assert "New Frozen Title" in server.get("manuscript.html")
    finally:
        code = server.stop()
    assert code in (0, 130), server.log()
