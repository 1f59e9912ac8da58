"""Browser tests of the published site: what a reader's browser actually does with it.

One fixture project (the analyses fixture of ``test_analyses.py``, extended with display
and inline math, a math cell in its notebook, a second section and a PDF) is built once.
Its ``webpage/`` folder is served from 127.0.0.1 by the standard library, and one
headless Debian Chromium, driven by Playwright with ``executable_path`` (Playwright's own
browser downloads need the network), opens it like a reader would.

Every browser context aborts any request that is not for the local server and records
it, so a page that reached for a CDN fails here even if the test did not look. Full-page
screenshots go to ``test-artifacts/`` (``LIVINGREVIEW_TEST_ARTIFACTS`` overrides it),
which CI uploads.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect, sync_playwright

from test_analyses import GIT, cli, write_project

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

# The manuscript: two sections (so the theme builds a table of contents), an injected
# value, inline math, a numbered display equation and a recorded figure.
BODY = r"""## Results

The total is {{ demo.total }} for n = {{ demo.n }}.
Each term is $i^2$ and the sum is scaled by $s$, which gives

$$ T = s \sum_{i=0}^{n-1} i^2 = s \, \frac{(n-1)\,n\,(2n-1)}{6} $$ {#eq:total}

as @eq:total states.

{{ demo.curve_demo }}

Figure @fig:curve_demo shows the terms.

## Discussion

The value above links to the notebook cell that recorded it.
"""

# Appended to the fixture notebook: a markdown cell with math (typeset by KaTeX on the
# notebook page) and a cell that displays a figure (an <img> on the notebook page).
NOTEBOOK_EXTRA = r"""
# %% [markdown]
# The recorded total is $T = s \sum_{i<n} i^2 + o$, where
#
# $$ \sum_{i=0}^{n-1} i^2 = \frac{(n-1)\,n\,(2n-1)}{6}. $$

# %%
import io

from IPython.display import Image, display

# With the Agg backend a figure displays as text only: display its PNG instead.
shown, axis = plt.subplots(figsize=(3, 2))
axis.bar([0, 1], [1, 2])
png = io.BytesIO()
shown.savefig(png, format="png")
display(Image(data=png.getvalue()))
"""

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Site:
    """The built fixture project and its published ``webpage/`` folder."""

    root: Path
    commit: str

    @property
    def webpage(self) -> Path:
        return self.root / "webpage"

    def cell(self, key: str) -> int:
        """The notebook cell that the manifest says recorded ``demo.<key>``."""
        manifest = json.loads((self.root / "output" / "analyses" / "demo" / "manifest.json").read_text())
        return manifest["records"][key]["cell"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = write_project(tmp_path_factory.mktemp("browser") / "project", text=BODY, notebook_pages=True, figure=True)
    notebook = root / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text() + NOTEBOOK_EXTRA)
    config = root / "manuscript.yaml"
    # With the PDF, the links bar has all three of its entries to check.
    config.write_text(config.read_text().replace("formats: [html]", "formats: [html, pdf]"))
    subprocess.run([*GIT, "-C", str(root), "commit", "-qam", "math and a displayed figure"], check=True)
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = cli(root, "build")
    assert result.returncode == 0, result.stderr
    assert (root / "webpage" / "v" / commit / "manuscript.pdf").is_file()
    return Site(root, commit)


@dataclass
class Server:
    """A local HTTP server for ``webpage/`` that remembers every request it answered."""

    base: str  # http://127.0.0.1:PORT/
    answered: list[tuple[str, int]] = field(default_factory=list)

    def url(self, path: str = "") -> str:
        return self.base + path.lstrip("/")

    def is_local(self, url: str) -> bool:
        return url.startswith(self.base) or url.startswith(("data:", "blob:"))

    def failures(self, since: int = 0) -> list[tuple[str, int]]:
        """Requests answered with an error, from the ``since``-th request on."""
        # Chromium asks the origin for /favicon.ico by itself; Manubot's redirect page at
        # the site's root declares no icon. No page of the site requests it.
        return [(p, s) for p, s in self.answered[since:] if s >= 400 and p != "/favicon.ico"]


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[Server]:
    answered: list[tuple[str, int]] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Recorded instead of printed: a test can then assert that nothing 404ed.
            answered.append((urlsplit(self.path).path, int(code)))

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site.webpage)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/", answered)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "the browser tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("LIVINGREVIEW_TEST_ARTIFACTS") or REPOSITORY_ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Reader:
    """A browser context that keeps the reader on localhost and collects what went wrong."""

    context: BrowserContext
    server: Server
    foreign: list[str] = field(default_factory=list)  # requests for anything but the local server
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def open(self, path: str, *, wait_for_math: bool = False) -> Page:
        page = self.context.new_page()
        page.on("console", functools.partial(self._console, page))
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: uncaught {error}"))
        response = page.goto(self.server.url(path), wait_until="load")
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        if wait_for_math:
            page.wait_for_function("document.documentElement.dataset.math === 'rendered'", timeout=15_000)
        return page

    def _console(self, page: Page, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        source = message.location.get("url", "")
        if source == self.server.url("favicon.ico"):
            return  # see Server.failures
        self.errors.append(f"{page.url}: {message.text} ({source})")


@pytest.fixture
def reader(browser: Browser, server: Server) -> Iterator[Reader]:
    yield from _reader(browser, server, viewport=DESKTOP)


@pytest.fixture
def phone(browser: Browser, server: Server) -> Iterator[Reader]:
    yield from _reader(browser, server, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)


def _reader(browser: Browser, server: Server, **options) -> Iterator[Reader]:
    context = browser.new_context(**options)
    reader = Reader(context, server)

    def guard(route: Route) -> None:
        url = route.request.url
        if server.is_local(url):
            route.continue_()
        else:
            reader.foreign.append(url)
            route.abort()

    context.route("**/*", guard)
    try:
        yield reader
    finally:
        context.close()
    # Whatever a test looked at, no page may have reached beyond localhost.
    assert not reader.foreign, f"requests left localhost: {reader.foreign}"


def manuscript_path(site: Site) -> str:
    return f"v/{site.commit}/manuscript.html"


def notebook_path(site: Site) -> str:
    return f"v/{site.commit}/notebooks/demo.html"


# --------------------------------------------------------------------------- tests


def test_site_root_redirects_to_latest_version(site: Site, reader: Reader):
    page = reader.open("")
    page.wait_for_url("**/v/latest/", timeout=10_000)
    page.wait_for_load_state("load")
    assert page.title() == "Analyses fixture"
    assert page.locator("a.lr-value").count() == 2
    # v/latest is a symlink to the commit's folder: the same manuscript as the permalink.
    permalink = reader.open(manuscript_path(site))
    assert page.content() == permalink.content()


def test_math_is_rendered_as_mathml(site: Site, reader: Reader):
    page = reader.open(manuscript_path(site))
    boxes = page.eval_on_selector_all(
        "math",
        """all => all.map(m => {
            const r = m.getBoundingClientRect();
            return {display: m.getAttribute("display") || "inline", width: r.width, height: r.height};
        })""",
    )
    inline = [b for b in boxes if b["display"] == "inline"]
    display = [b for b in boxes if b["display"] == "block"]
    assert len(inline) == 2 and len(display) == 1, boxes
    assert all(b["width"] > 0 and b["height"] > 0 for b in boxes), boxes
    # A laid-out fraction with a sum is much taller than a line of inline math; TeX shown
    # as plain text (MathML unsupported or not converted) would be one line high.
    assert display[0]["height"] > 1.8 * max(b["height"] for b in inline), boxes
    text = page.inner_text("body")
    for tex in ("$", "\\(", "\\[", "\\frac", "\\sum"):
        assert tex not in text, f"raw TeX {tex!r} left in the page text"
    # pandoc-eqnos numbered the equation and the reference points at it.
    assert page.locator("#eq\\:total").count() == 1
    assert page.locator('a[href="#eq:total"]').inner_text() == "1"
    assert not reader.errors, reader.errors


# OpenType fonts with a MATH table, as named by the theme (default.html).
MATH_FONTS = {"STIX Two Math", "Latin Modern Math", "Cambria Math", "DejaVu Math TeX Gyre", "Noto Sans Math"}


def test_math_is_laid_out_with_a_math_font(site: Site, reader: Reader):
    """Without a MATH table Chromium misplaces scripts and limits (and so does the PDF)."""
    page = reader.open(manuscript_path(site))
    session = reader.context.new_cdp_session(page)
    session.send("DOM.enable")
    session.send("CSS.enable")
    root = session.send("DOM.getDocument")["root"]["nodeId"]
    used = set()
    # Digits and operators: every text font has them, so only the family list decides.
    # (A letter like i becomes a mathematical italic that text fonts lack, so it would fall
    # back to a math font glyph by glyph, while the layout still used the text font.)
    for selector in ("math mn", 'math[display="block"] mo'):
        node = session.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        fonts = session.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        used |= {font["familyName"] for font in fonts}
    assert used and used <= MATH_FONTS, (
        f"math drawn with {sorted(used)}: install one of {sorted(MATH_FONTS)} (Debian: fonts-dejavu-extra)"
    )


def test_notebook_page_math_is_typeset_by_local_katex(site: Site, reader: Reader):
    page = reader.open(notebook_path(site), wait_for_math=True)
    katex = page.locator(".katex")
    assert katex.count() >= 2  # the inline formula and the display formula
    assert page.locator(".katex-display").count() == 1
    box = page.locator(".katex-display").bounding_box()
    assert box and box["width"] > 0 and box["height"] > 0
    # KaTeX's own fonts loaded from the site (a missing font falls back silently).
    assert page.evaluate("document.fonts.check('16px KaTeX_Main')")
    text = page.inner_text("main, article, body")
    assert "\\frac" not in text and "$$" not in text


def test_every_image_loads(site: Site, reader: Reader, server: Server):
    start = len(server.answered)
    for path in (manuscript_path(site), notebook_path(site)):
        page = reader.open(path)
        images = page.locator("img")
        assert images.count() >= 1, f"{path} has no image to check"
        for index in range(images.count()):
            image = images.nth(index)
            image.scroll_into_view_if_needed()  # lazily loaded images load once visible
            image.evaluate("img => img.decode().catch(() => null)")
            loaded = image.evaluate("img => img.complete && img.naturalWidth > 0")
            assert loaded, f"{path}: image {image.get_attribute('src')} did not load"
    assert not server.failures(start), server.failures(start)


def test_value_tooltip_shows_provenance_on_hover_and_focus(site: Site, reader: Reader):
    page = reader.open(manuscript_path(site))
    value = page.locator('a.lr-value[data-key="demo.total"]')
    assert value.inner_text() == "573.0"
    expect(page.locator('[role="tooltip"]:visible')).to_have_count(0)

    value.hover()
    tooltip = page.locator(f"#{value.get_attribute('aria-describedby')}")
    expect(tooltip).to_be_visible()
    text = tooltip.inner_text()
    cell = f"cell {site.cell('total')}"
    for fact in ("demo.total = 573.0", "analyses/demo.py", cell, "n=10", "scale=2.0", f"commit {site.commit[:12]}"):
        assert fact in text, f"{fact!r} not in tooltip {text!r}"
    # The tooltip sits next to the value and inside the window.
    box, anchor = tooltip.bounding_box(), value.bounding_box()
    assert box and anchor and abs(box["y"] - (anchor["y"] + anchor["height"])) < 40
    assert box["x"] >= 0 and box["x"] + box["width"] <= DESKTOP["width"]

    page.mouse.move(0, 0)
    expect(tooltip).to_be_hidden()

    # Keyboard readers: focusing the link shows it, Escape dismisses it.
    value.focus()
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(f"commit {site.commit[:12]}")
    page.keyboard.press("Escape")
    expect(tooltip).to_be_hidden()
    # Only one tooltip: the native title one is gone, the provenance kept in a data attribute.
    assert value.get_attribute("title") is None
    assert cell in (value.get_attribute("data-lr-provenance") or "")
    # Without JavaScript the served HTML still carries it as a title.
    assert f'title="demo.total = 573.0 | notebook analyses/demo.py, {cell} |' in page.request.get(page.url).text()
    assert not reader.errors, reader.errors


def test_value_tooltip_on_touch_shows_before_following_the_link(site: Site, phone: Reader):
    page = phone.open(manuscript_path(site))
    value = page.locator('a.lr-value[data-key="demo.n"]')
    value.scroll_into_view_if_needed()
    value.tap()
    tooltip = page.locator(f"#{value.get_attribute('aria-describedby')}")
    expect(tooltip).to_be_visible()  # a first tap shows the provenance ...
    expect(tooltip).to_contain_text("demo.n = 10")
    assert page.url.endswith("/manuscript.html")
    box = tooltip.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    # ... and a second tap follows the link to the notebook cell.
    with page.expect_navigation():
        value.tap()
    assert urldefrag(page.url).url.endswith("/notebooks/demo.html") and page.url.endswith(f"#cell-{site.cell('n')}")


def test_notebook_and_site_links_resolve(site: Site, reader: Reader, server: Server):
    page = reader.open(manuscript_path(site))
    values = page.eval_on_selector_all("a.lr-value", "all => all.map(a => a.href)")
    bar = dict(page.eval_on_selector_all(".lr-links a", "all => all.map(a => [a.textContent, a.href])"))
    assert set(bar) == {"PDF", "Notebooks", "Versions"}, bar
    # In the sidebar the bar reads as one line.
    tops = {
        round((box or {}).get("y", -1)) for box in (link.bounding_box() for link in page.locator(".lr-links a").all())
    }
    assert len(tops) == 1, tops
    assert len(values) == 2

    for url in [*values, *bar.values()]:
        response = page.request.get(urldefrag(url).url)
        assert response.status == 200, f"{url}: {response.status}"
    assert page.request.get(bar["PDF"]).body().startswith(b"%PDF-")
    assert page.request.get(server.url("manuscript.pdf")).body().startswith(b"%PDF-")

    # Every #cell-N a value links to is a cell of the notebook page.
    anchors = {urldefrag(url).fragment for url in values}
    assert anchors == {f"cell-{site.cell('total')}"}
    notebook = reader.open(notebook_path(site))
    for anchor in anchors:
        assert notebook.locator(f"#{anchor}").count() == 1, anchor

    # In-page links of the manuscript (figure, equation, table of contents) have targets.
    targets = page.eval_on_selector_all(
        'a[href^="#"]', "all => all.map(a => a.getAttribute('href').slice(1)).filter(Boolean)"
    )
    assert {"fig:curve_demo", "eq:total", "results", "discussion"} <= set(targets)
    assert page.locator("h2 > a.lr-anchor").count() == 2  # one per section heading
    missing = page.evaluate("ids => ids.filter(id => !document.getElementById(id))", targets)
    assert not missing, missing


def test_notebook_and_versions_pages_link_only_to_existing_files(site: Site, reader: Reader, server: Server):
    broken = []
    for path in (f"v/{site.commit}/notebooks/index.html", notebook_path(site), "versions.html"):
        listing = reader.open(path)
        hrefs = listing.eval_on_selector_all("a[href]", "all => all.map(a => a.href)")
        for url in sorted({urldefrag(u).url for u in hrefs if server.is_local(u)}):
            status = listing.request.get(url).status
            if status != 200:
                broken.append(f"{path} -> {url}: {status}")
    assert not broken, "\n".join(broken)


def test_value_links_point_at_the_cell_that_recorded_them(site: Site, reader: Reader):
    """A reader who follows a value lands on the code that produced it, not a neighbour."""
    page = reader.open(manuscript_path(site))
    for key, call in (("total", 'record.value("total"'), ("n", 'record.value("n"')):
        href = page.locator(f'a.lr-value[data-key="demo.{key}"]').get_attribute("href") or ""
        notebook = reader.open(notebook_path(site))
        anchor = urldefrag(href).fragment
        assert call in notebook.locator(f"#{anchor}").inner_text(), f"demo.{key} links to #{anchor}"
        notebook.close()
    # The figure's provenance names its cell too (values.json, for reviewers).
    values = json.loads((site.webpage / "v" / site.commit / "values.json").read_text())
    cell = values["demo"]["records"]["curve_demo"]["cell"]
    notebook = reader.open(notebook_path(site))
    assert 'record.figure("curve_demo"' in notebook.locator(f"#cell-{cell}").inner_text(), f"cell {cell}"


def test_pages_log_no_console_errors(site: Site, reader: Reader, server: Server):
    paths = [
        "",
        manuscript_path(site),
        notebook_path(site),
        f"v/{site.commit}/notebooks/index.html",
        "versions.html",
    ]
    start = len(server.answered)
    for path in paths:
        page = reader.open(path, wait_for_math=path == notebook_path(site))
        page.wait_for_load_state("networkidle")
    assert not reader.errors, "\n".join(reader.errors)
    assert not server.failures(start), server.failures(start)


def test_no_request_leaves_localhost(site: Site, reader: Reader, server: Server):
    # First, that the guard works: a request for another host is stopped and recorded.
    probe = reader.open(manuscript_path(site))
    outcome = probe.evaluate("fetch('https://cdn.example.org/x.js').then(() => 'fetched', () => 'blocked')")
    assert outcome == "blocked" and reader.foreign == ["https://cdn.example.org/x.js"]
    reader.foreign.clear()
    probe.close()

    requested: list[str] = []
    reader.context.on("request", lambda request: requested.append(request.url))
    for path in ("", manuscript_path(site), notebook_path(site), "versions.html"):
        reader.open(path, wait_for_math=path == notebook_path(site)).wait_for_load_state("networkidle")
    # The notebook page loads its theme, KaTeX and fonts: a good many requests, all local.
    assert len(requested) > 20
    assert not reader.foreign, reader.foreign
    assert all(server.is_local(url) for url in requested), [u for u in requested if not server.is_local(u)]


def test_phone_layout_has_no_horizontal_scroll(site: Site, phone: Reader, artifacts: Path):
    page = phone.open(manuscript_path(site))
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"page is {width[0]}px wide in a {width[1]}px window"
    toggle = page.locator(".lr-toc-toggle")
    assert toggle.is_visible()
    toc = page.locator("nav.lr-toc")
    expect(toc).to_be_hidden()
    toggle.tap()
    expect(toc).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    toc.get_by_role("link", name="Discussion").tap()
    expect(toc).to_be_hidden()
    assert page.url.endswith("#discussion")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "manuscript-phone.png"), full_page=True)
    assert not phone.errors, phone.errors


def test_figure_zoom_opens_and_escape_closes(site: Site, reader: Reader):
    page = reader.open(manuscript_path(site))
    figure = page.locator('[id="fig:curve_demo"] img, figure img').first
    figure.click()
    overlay = page.locator(".lr-zoom-overlay")
    expect(overlay).to_be_visible()
    zoomed = overlay.locator("img")
    assert zoomed.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    assert (zoomed.bounding_box() or {}).get("width", 0) > (figure.bounding_box() or {}).get("width", 0)
    page.keyboard.press("Escape")
    expect(overlay).to_have_count(0)
    assert not reader.errors, reader.errors


def test_screenshots_are_kept(site: Site, reader: Reader, artifacts: Path):
    page = reader.open(manuscript_path(site))
    page.screenshot(path=str(artifacts / "manuscript-desktop.png"), full_page=True)
    notebook = reader.open(notebook_path(site), wait_for_math=True)
    notebook.screenshot(path=str(artifacts / "notebook-desktop.png"), full_page=True)
    for name in ("manuscript-desktop.png", "notebook-desktop.png"):
        data = (artifacts / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
