"""Printing the PDF from untrusted content: the page may read only the build's own
output, never a file elsewhere on the machine, never the network, and the PDF's links
point to the published site, not to the build machine's folders.

A section from a pull request may hold raw HTML. One fixture project puts many ways of
loading a file into one section, each on its own line, each aimed at a secret file
outside the project or at the project's ``.git/config`` (CI keeps a token there);
the build must refuse them all, name each line, and print none of the secrets.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pypdf
import pytest

from conftest import SITE_URL, Result, build, commit_all, git, line_of, replace_in, write_project

SECRET = "SECRET-7f3a9c1e-outside-the-project"
TOKEN = "TOKEN-e41b2d77-in-git-config"
HIDDEN = "HIDDEN-93c0aa51-in-output-cache"
MARKERS = (SECRET, TOKEN, HIDDEN)


def pdftotext(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def link_targets(pdf: Path) -> list[str]:
    """Every /URI of every link annotation."""
    uris = []
    for page in pypdf.PdfReader(pdf).pages:
        for annotation in page.get("/Annots") or []:
            action = annotation.get_object().get("/A")
            if action and "/URI" in action:
                uris.append(str(action["/URI"]))
    return uris


def png(width: int = 24, height: int = 16) -> bytes:
    """A small opaque RGB PNG (stripes), written without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\0" + bytes((200, 40 + 8 * y, 90) * width) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def files_holding(folder: Path, marker: str, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Regular files (not links) under ``folder`` that contain ``marker``."""
    if not folder.is_dir():
        return []
    return [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and not any(path.is_relative_to(s) for s in skip)
        and marker.encode() in path.read_bytes()
    ]


class Listener:
    """A TCP and a UDP socket on loopback that record whatever reaches them."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                return
            self.hits.append("tcp")
            connection.close()

    def _receive(self) -> None:
        while True:
            try:
                self.udp.recvfrom(4096)
            except OSError:
                return
            self.hits.append("udp")

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@dataclass
class Printed:
    """A fixture project built once: the section under test and what the build said."""

    root: Path
    section: Path
    result: Result
    commit: str
    vectors: dict[str, str]
    hits: list[str]  # connections and datagrams that reached the loopback listener

    @property
    def pdf(self) -> Path:
        return self.root / "output" / "manuscript.pdf"


def element(tag: str, attributes: dict[str, str], into: str = "", parent: str = "") -> str:
    """A script that puts ``<tag attributes>`` into the page, as raw markup would.

    ``includes.py`` refuses such markup in a section before anything is built; made by a
    script, it reaches the printer, which is what is tested here.
    """
    svg = "document.createElementNS('http://www.w3.org/2000/svg', '{}')"
    make = (svg if into == "svg" else "document.createElement('{}')").format(tag)
    sets = " ".join(f"e.setAttribute('{key}', '{value}');" for key, value in attributes.items())
    if into == "svg":
        wrap = f"var w = {svg.format('svg')}; w.append(e);"
    elif parent:
        wrap = f"var w = document.createElement('{parent}'); w.append(e);"
    else:
        wrap = "var w = e;"
    where = "document.head.append(w);" if into == "head" else "document.currentScript.after(w);"
    return f"<script>(function () {{ var e = {make}; {sets} {wrap} {where} }})();</script>"


def style(css: str) -> str:
    """A script that adds a ``<style>`` element holding ``css``."""
    return (
        "<script>(function () { var e = document.createElement('style'); "
        f"e.textContent = '{css}'; document.head.append(e); }})();</script>"
    )


def attack_vectors(secret: Path, git_config: Path, port: int, udp_port: int) -> dict[str, str]:
    """One line each; names of the form ``kind: target``."""
    s, g = secret.as_uri(), git_config.as_uri()
    # From output/manuscript.html, as a file:// page would resolve them.
    rs, rg = "../../secret.txt", "../.git/config"
    return {
        "iframe: file secret": element("iframe", {"src": s}),
        "iframe: relative git config": element("iframe", {"src": rg}),
        "iframe: escaped traversal": element("iframe", {"src": "images%2F..%2F..%2F.git%2Fconfig"}),
        "iframe: link out of output": element("iframe", {"src": "leak.txt"}),
        "iframe: hidden output file": element("iframe", {"src": ".cache/leak.txt"}),
        "iframe: loopback web server": element("iframe", {"src": f"https://127.0.0.1:{port}/frame"}),
        "iframe: a page of content/images that frames a secret": (
            '<iframe src="images/frame.html" width="600" height="80"></iframe>'
        ),
        "object: file git config": element("object", {"data": g, "type": "text/plain"}),
        "embed: relative secret": element("embed", {"src": rs}),
        "img srcset: file secret": element("img", {"srcset": f"{s} 2x"}),
        "img: relative secret": element("img", {"src": rs}),
        "stylesheet: file git config": element("link", {"rel": "stylesheet", "href": g}, into="head"),
        "stylesheet: of content/images, importing the git config": '<link rel="stylesheet" href="images/print.css">',
        "css import: relative git config": style(f'@import url("{rg}");'),
        "css background: file secret": style(f'body {{ background-image: url("{s}"); }}'),
        "font-face: relative git config": style(
            f'@font-face {{ font-family: Leak; src: url("{rg}"); }} p {{ font-family: Leak, serif; }}'
        ),
        "script fetch: file secret": f"<script>fetch('{s}').then(r => r.text()).then(t => document.body.append(t));</script>",
        "script xhr: relative git config": (
            f"<script>var x = new XMLHttpRequest(); x.open('GET', '{rg}'); "
            "x.onload = () => document.body.append(x.responseText); x.send();</script>"
        ),
        "worker fetch: file git config": f"<script>new Worker(URL.createObjectURL(new Blob([\"fetch('{g}')\"])));</script>",
        "video: file git config": element("video", {"src": g}),
        "video poster: relative secret": element("video", {"poster": rs}),
        "audio source: relative git config": element("source", {"src": rg}, parent="audio"),
        "video track: file secret": element("track", {"src": s, "default": ""}, parent="video"),
        "svg image: relative git config": element("image", {"href": rg, "width": "10", "height": "10"}, into="svg"),
        "preload: relative secret": element("link", {"rel": "preload", "href": rs, "as": "fetch"}, into="head"),
        # Not requests that DevTools can pause: they must find no network.
        "websocket: loopback": f"<script>new WebSocket('wss://127.0.0.1:{port}/socket');</script>",
        "webrtc: loopback stun": (
            f"<script>var pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{udp_port}'}}]}}); "
            "pc.createDataChannel('x'); pc.createOffer().then(o => pc.setLocalDescription(o));</script>"
        ),
        "preconnect: loopback": element(
            "link", {"rel": "preconnect", "href": f"https://127.0.0.1:{port}/"}, into="head"
        ),
    }


# Files of content/images/ that a section may load, and that load what they may not:
# no line of a section names what they ask for.
FRAME_HTML = '<!doctype html><p>framed</p><iframe src="../../../secret.txt?from-a-page"></iframe>\n'
PRINT_CSS = '@import url("../../.git/config?from-a-stylesheet");\n'

# Lines that must be named: everything DevTools or Chromium's log sees. The others
# either ask for nothing DevTools can pause (what is tested of them is that they reach
# nothing) or load a file that asks (reported at manuscript.html).
REPORTED = [
    "iframe: file secret",
    "iframe: relative git config",
    "iframe: escaped traversal",
    "iframe: link out of output",
    "iframe: hidden output file",
    "iframe: loopback web server",
    "object: file git config",
    "embed: relative secret",
    "img srcset: file secret",
    "img: relative secret",
    "stylesheet: file git config",
    "css import: relative git config",
    "css background: file secret",
    "font-face: relative git config",
    "script fetch: file secret",
    "script xhr: relative git config",
    "worker fetch: file git config",
    "video: file git config",
    "video poster: relative secret",
    "audio source: relative git config",
    "video track: file secret",
    "svg image: relative git config",
    "preload: relative secret",
]
UNREPORTED = {
    "websocket: loopback",
    "webrtc: loopback stun",
    "preconnect: loopback",
    "iframe: a page of content/images that frames a secret",
    "stylesheet: of content/images, importing the git config",
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Printed:
    base = tmp_path_factory.mktemp("attack")
    secret = base / "secret.txt"
    secret.write_text(f"{SECRET}\n", encoding="utf-8")
    root = write_project(base / "project")
    git(root, "config", "lr-fixture.token", TOKEN)
    git_config = root / ".git" / "config"
    assert TOKEN in git_config.read_text()
    listener = Listener()
    vectors = attack_vectors(secret, git_config, listener.port, listener.udp_port)
    (root / "content" / "images" / "frame.html").write_text(FRAME_HTML, encoding="utf-8")
    (root / "content" / "images" / "print.css").write_text(PRINT_CSS, encoding="utf-8")
    section = root / "content" / "05.attack.md"
    section.write_text(
        "## Supplementary material\n\n"
        + "\n\n".join(vectors.values())
        + '\n\n<script>fetch("../../sec" + "ret.txt?made-by-a-script");</script>\n',
        encoding="utf-8",
    )
    head = commit_all(root, "Add supplementary material")
    # What an attacker cannot normally place in output/, but the printer must refuse anyway.
    (root / "output" / ".cache").mkdir(parents=True)
    (root / "output" / ".cache" / "leak.txt").write_text(f"{HIDDEN}\n", encoding="utf-8")
    (root / "output" / "leak.txt").symlink_to(secret)
    try:
        result = build(root, "html", "pdf")
    finally:
        listener.close()
    return Printed(root, section, result, head, vectors, listener.hits)


def test_attack_fails_the_build_as_invalid_content(attacked: Printed):
    assert attacked.result.returncode == 3, attacked.result.output
    assert "the PDF may load only files of the build" in attacked.result.output
    assert attacked.result.output.count("hint: the PDF may load only files of the build") == 1


@pytest.mark.parametrize("name", REPORTED)
def test_each_refused_load_names_its_line(attacked: Printed, name: str):
    line = line_of(attacked.section, attacked.vectors[name])
    assert f"05.attack.md:{line}:" in attacked.result.output, attacked.result.output


def test_every_vector_is_either_reported_or_known_not_to_be():
    assert set(attack_vectors(Path("/s"), Path("/g"), 1, 2)) == set(REPORTED) | UNREPORTED


def test_why_each_kind_of_refusal(attacked: Printed):
    output = attacked.result.output
    assert "is a link to a file outside the output folder" in output
    assert "hidden files of the output folder" in output
    assert "leads out of the build's output folder" in output
    assert "it is not a file of this build" in output


def test_a_url_no_line_names_is_reported_at_the_html(attacked: Printed):
    output = attacked.result.output
    for made_by in ("made-by-a-script", "from-a-page", "from-a-stylesheet"):
        assert re.search(rf"manuscript\.html: the PDF may not load \S*\?{made_by}: ", output), (made_by, output)
    assert "no line of the sections names it" in output


def test_no_secret_reaches_the_pdf_or_any_output(attacked: Printed):
    assert attacked.pdf.read_bytes()[:5] == b"%PDF-"
    text = pdftotext(attacked.pdf)
    assert "Supplementary material" in text  # the page that was printed is the manuscript
    out = attacked.root / "output"
    for marker in MARKERS:
        assert marker not in text
        assert marker.encode() not in attacked.pdf.read_bytes()
        assert files_holding(out, marker, skip=(out / ".cache",)) == []
        assert files_holding(attacked.root / "webpage", marker) == []
    assert not (attacked.root / "webpage").exists()


def test_nothing_reaches_the_network(attacked: Printed):
    assert attacked.hits == []


def test_the_pdf_does_not_name_the_build_machine(attacked: Printed):
    uris = link_targets(attacked.pdf)
    assert uris
    assert not [u for u in uris if u.startswith("file:") or str(attacked.root) in u]


# ------------------------------------------------------- what the page does to itself


# Each set is built on its own: a page can navigate away only once.
NAVIGATIONS = {
    "refresh": {
        "dialog": '<script>alert("stalls a page until answered");</script>',
        "window.open": '<script>window.open("../.git/config");</script>',
        "link in a new window": (
            '<a id="away" href="https://example.org/away" target="_blank">x</a>'
            '<script>document.getElementById("away").click();</script>'
        ),
        "meta refresh": '<meta http-equiv="refresh" content="0; url=../../secret.txt">',
    },
    "location": {
        "location after load": (
            '<script>addEventListener("load", () => { location.href = "../.git/config?navigated"; });</script>'
        ),
    },
}


@pytest.fixture(scope="module", params=sorted(NAVIGATIONS))
def navigating(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Printed:
    """Raw HTML that moves the page elsewhere, opens windows or stalls it."""
    base = tmp_path_factory.mktemp("navigate")
    secret = base / "secret.txt"
    secret.write_text(f"{SECRET}\n", encoding="utf-8")
    root = write_project(base / "project")
    git(root, "config", "lr-fixture.token", TOKEN)
    vectors = NAVIGATIONS[request.param]
    section = root / "content" / "05.attack.md"
    section.write_text("## Supplementary material\n\n" + "\n\n".join(vectors.values()) + "\n", encoding="utf-8")
    head = commit_all(root, "Add supplementary material")
    return Printed(root, section, build(root, "html", "pdf"), head, vectors, [])


def test_navigations_and_windows_are_refused_and_named(navigating: Printed):
    output = navigating.result.output
    assert navigating.result.returncode == 3, output
    for name, vector in navigating.vectors.items():
        if name != "dialog":
            assert f"05.attack.md:{line_of(navigating.section, vector)}:" in output, (name, output)
    if "window.open" in navigating.vectors:
        assert "the page may not open windows" in output
    assert "the page may not navigate away from itself" in output
    # The dialog was dismissed: printing went on rather than waiting for the timeout.
    assert "did not answer" not in output
    # Printing an error page may fail: then no PDF is written.
    if navigating.pdf.exists():
        text = pdftotext(navigating.pdf)
        assert SECRET not in text and TOKEN not in text


# ----------------------------------------------------------------- a benign manuscript


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Printed:
    root = write_project(tmp_path_factory.mktemp("benign") / "project")
    (root / "content" / "images" / "raster.png").write_bytes(png())
    replace_in(
        root / "content" / "02.methods.md",
        "Figure @fig:plot shows",
        "![A raster figure](images/raster.png){#fig:raster}\n\n"
        "The [executed notebook](notebooks/index.html) and the [recorded values](values.json) are published "
        "next to this manuscript.\n\nFigure @fig:plot shows",
    )
    head = commit_all(root, "Add a raster figure and links to the site")
    result = build(root, "html", "pdf")
    return Printed(root, root / "content" / "02.methods.md", result, head, {}, [])


def test_benign_build_prints(benign: Printed):
    assert benign.result.returncode == 0, benign.result.output
    assert "executed notebook" in pdftotext(benign.pdf)


def test_pdf_links_point_to_the_published_version(benign: Printed):
    version = f"{SITE_URL}v/{benign.commit}/"
    uris = link_targets(benign.pdf)
    assert f"{version}notebooks/index.html" in uris
    assert f"{version}values.json" in uris
    assert not [u for u in uris if u.startswith("file:") or str(benign.root) in u]
    # Everything on the site's host is this version's; the rest are other sites (DOIs, ORCID).
    site_host = urlsplit(SITE_URL).netloc
    assert [u for u in uris if urlsplit(u).netloc == site_host and not u.startswith(version)] == []
    assert all(re.match(r"https?://", u) or not re.match(r"[a-z][a-z0-9+.-]*:", u) for u in uris), uris


def test_a_project_image_is_printed(benign: Printed):
    listing = subprocess.run(["pdfimages", "-list", str(benign.pdf)], capture_output=True, text=True, check=True).stdout
    images = [line.split() for line in listing.splitlines()[2:]]
    assert any(row[3:5] == ["24", "16"] for row in images), listing


def test_a_dirty_tree_links_to_the_local_version(tmp_path: Path):
    root = write_project(tmp_path / "project")
    head = git(root, "rev-parse", "HEAD")
    replace_in(
        root / "content" / "02.methods.md",
        "Figure @fig:plot shows",
        "The [notebooks](notebooks/index.html).\n\nFigure @fig:plot shows",
    )
    result = build(root, "html", "pdf")
    assert result.returncode == 0, result.output
    uris = link_targets(root / "output" / "manuscript.pdf")
    assert f"{SITE_URL}v/local/notebooks/index.html" in uris
    assert not [u for u in uris if u.startswith(("file:", f"{SITE_URL}v/{head}"))]
