"""``livingreview build`` on a valid project: what the HTML and PDF contain, and what
the build leaves untouched. Every test drives the real CLI as a subprocess."""

from __future__ import annotations

import html as htmllib
import re
import subprocess

from conftest import (
    REPOSITORY,
    SITE_URL,
    TITLE,
    Built,
    build,
    git,
    git_state,
    tree_hashes,
)

SECTION_HEADINGS = ["Authors", "Abstract", "Methods", "Discussion", "References"]
REFERENCE_TITLES = [
    "Linear Kernels in Practice",
    "In-Context Learning as Kernel Regression",
    "A Classic Text on Reproducing Kernels",
]
STAGES = ["check", "process", "html", "pdf"]


def body_of(page: str) -> str:
    return page[page.index("<body>") : page.index("</body>")]


def text_of(fragment: str) -> str:
    """Visible text: tags dropped, entities decoded, whitespace collapsed."""
    fragment = re.sub(r"<(script|style)\b.*?</\1>", " ", fragment, flags=re.S)
    fragment = re.sub(r"<annotation\b.*?</annotation>", " ", fragment, flags=re.S)
    fragment = re.sub(r"<[^>]+>", "", fragment)
    return re.sub(r"\s+", " ", htmllib.unescape(fragment).replace("\xa0", " "))


def without_comments(page: str) -> str:
    return re.sub(r"<!--.*?-->", "", page, flags=re.S)


def pdftotext(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def pdfinfo(path) -> dict[str, str]:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


# --------------------------------------------------------------------------- the run


def test_build_reports_every_output(built: Built):
    stderr = built.result.stderr
    assert "markdown: output/manuscript.md" in stderr
    assert "html: output/manuscript.html" in stderr
    assert "pdf: output/manuscript.pdf" in stderr
    assert "error" not in built.result.output.lower()
    assert "warning" not in built.result.output.lower()
    for name in ("manuscript.md", "manuscript.html", "manuscript.pdf", "images/plot.svg", "images/orcid.svg"):
        assert (built.root / "output" / name).is_file(), name


def test_stage_timings_are_printed(built: Built):
    stderr = built.result.stderr
    assert "Stage timings" in stderr
    table = stderr[stderr.index("Stage timings") :]
    for stage in STAGES:
        # Progress line while building, then a row with the seconds in the summary table.
        assert re.search(rf"✓ {stage}\s+.*\(\d+\.\d\d s\)", stderr), stage
        assert re.search(rf"^\s*{stage}\s+│\s+\d+\.\d\d\s*$", table, re.M), stage
    assert re.search(r"^\s*total\s+│\s+\d+\.\d\d\s*$", table, re.M)


# --------------------------------------------------------------------------- HTML


def test_html_has_title_and_every_section_heading(built: Built):
    page = built.html
    assert f"<title>{TITLE}</title>" in page
    assert f'<h1 class="title">{TITLE}</h1>' in page
    for heading in SECTION_HEADINGS:
        assert re.search(rf"<h[23][^>]*>{heading}</h[23]>", page), heading


def test_front_matter_lists_authors_and_corresponding_email(built: Built):
    text = text_of(body_of(built.html))
    assert "Ada Example" in text and "Grace Sample" in text
    assert '<a href="https://orcid.org/0000-0002-1825-0097">0000-0002-1825-0097</a>' in built.html
    assert '<a href="https://github.com/grace-sample">grace-sample</a>' in built.html
    assert '<img src="images/orcid.svg" class="inline_icon" width="16" height="16" alt="ORCID icon" />' in built.html
    # Only the corresponding author gets the envelope, and is named in the email line.
    assert '<strong>Grace Sample</strong><sup><a href="#correspondence">✉</a></sup>' in built.html
    assert "<strong>Ada Example</strong><sup>" not in built.html
    assert "or email to Grace Sample <grace@example.org>." in text
    assert "Department of Computer Science, Sample Institute" in text
    # Rootstock's template leaves no Jinja syntax behind.
    for leftover in ("{%", "%}", "{{", "}}", "{##"):
        assert leftover not in body_of(built.html), leftover


def test_citations_resolve_to_numbered_bibliography(built: Built):
    page = built.html
    text = text_of(body_of(page))
    assert "Linear kernels were studied early [1]." in text
    assert "Recent work revisits them [2], as does a classic text [3]." in text
    refs = page[page.index('<div id="refs"') :]
    refs_text = text_of(refs[: refs.index("</section>")])
    for number, title in enumerate(REFERENCE_TITLES, start=1):
        assert re.search(rf"\b{number}\. [^.]+\. {re.escape(title)}\.", refs_text), title
    assert "doi:10.1000/xyz123" in refs_text
    # Each citation links to its bibliography entry.
    for anchor in re.findall(r'<a href="#(ref-[^"]+)" role="doc-biblioref">', page):
        assert f'<div id="{anchor}" class="csl-entry"' in page
    assert len(re.findall(r'role="doc-biblioref"', page)) == 3
    assert "@doi:" not in text and "@arxiv:" not in text and "@smith2020" not in text


def test_math_is_rendered_as_mathml(built: Built):
    body = body_of(built.html)
    assert '<math display="block" xmlns="http://www.w3.org/1998/Math/MathML">' in body
    assert '<mo stretchy="false" form="prefix">⟨</mo>' in body
    assert "$$" not in built.html
    outside_annotations = re.sub(r"<annotation\b.*?</annotation>", "", built.html, flags=re.S)
    assert "\\langle" not in outside_annotations
    assert "\\rangle" not in outside_annotations
    assert '<annotation encoding="application/x-tex">' in body


def test_figure_table_equation_are_numbered_and_cross_referenced(built: Built):
    page = built.html
    text = text_of(body_of(page))
    # Numbered targets.
    # pandoc-xnos joins the label and number with a no-break space.
    assert '<figcaption aria-hidden="true"><span>Figure\xa01:</span> A figure caption</figcaption>' in page
    assert "<caption><span>Table\xa01:</span> Results.</caption>" in page
    assert "Figure 1: A figure caption" in text and "Table 1: Results." in text
    assert '<span id="eq:kernel" class="eqnos">' in page
    assert '<span class="eqnos-number">(1)</span>' in page
    # References, written rootstock-style ("Figure @fig:plot"), become numbered links.
    assert 'Figure <a href="#fig:plot">1</a> shows the kernel values' in page
    assert 'Table <a href="#tbl:results">1</a> lists them' in page
    assert 'Equation <a href="#eq:kernel">1</a> is the simplest' in page
    assert "Figure 1 shows the kernel values, and Table 1 lists them." in text
    assert '<div id="fig:plot" class="fignos">' in page
    assert '<div id="tbl:results" class="tablenos">' in page
    assert "@fig:" not in text and "@tbl:" not in text and "@eq:" not in text
    assert "{#" not in text


def test_permalink_stamp_names_the_commit(built: Built):
    page = built.html
    sha = built.head
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert f'<a href="https://github.com/{REPOSITORY}/tree/{sha}">{REPOSITORY}@{sha[:7]}</a>' in page
    assert f'(<a href="{SITE_URL}v/{sha}/">permalink</a>)' in page
    assert f'<meta name="manubot_html_url_versioned" content="{SITE_URL}v/{sha}/" />' in page
    assert '<meta name="livingreview-dirty"' not in page
    assert "uncommitted" not in text_of(body_of(page))
    text = text_of(body_of(page))
    assert re.search(
        rf"This manuscript \(permalink\) was automatically generated from {REPOSITORY}@{sha[:7]} on \w+ \d{{1,2}}, \d{{4}}\.",
        text,
    )
    # The date is the commit's date, so rebuilding a commit gives the same stamp.
    committed = git(built.root, "log", "-1", "--format=%cd", "--date=format:%B %-d, %Y")
    assert f"on {committed}." in text


REMOTE = r"(?:https?:)?//"


def test_html_loads_no_remote_resources(built: Built):
    """Nothing a browser would fetch points off the machine (links to read are fine)."""
    page = without_comments(built.html)
    assert not re.search(rf"\bsrc\s*=\s*[\"']?{REMOTE}", page, re.I)
    assert not re.search(r"\bsrcset\s*=", page, re.I)
    for link in re.findall(r"<link\b[^>]*>", page, re.I):
        rel = re.search(r"rel=\"([^\"]*)\"", link).group(1)
        if re.search(rf"href=\"{REMOTE}", link):
            assert rel in ("canonical", "alternate"), link  # metadata, never fetched
    assert not re.search(rf"url\(\s*[\"']?{REMOTE}", page, re.I)
    assert "@import" not in page
    assert not re.search(r"<script\b[^>]*\bsrc=", page, re.I)
    assert not re.search(r"<(?:iframe|embed|object|video|audio|source)\b", page, re.I)
    # Links to read are allowed and present.
    assert '<a href="https://orcid.org/' in page and '<a href="https://github.com/' in page
    # Local images exist next to the HTML.
    for src in re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", page):
        assert (built.root / "output" / src).is_file(), src


def test_html_has_no_script_src_at_all(built: Built):
    """Strict check on the raw file, comments included: no <script src=> of any kind."""
    scripts = re.findall(r"<script\b[^>]*\bsrc=[^>]*>", built.html, re.I)
    assert scripts == []


# --------------------------------------------------------------------------- PDF


def test_pdf_has_title_math_references_and_several_pages(built: Built):
    assert built.pdf.read_bytes()[:5] == b"%PDF-"
    info = pdfinfo(built.pdf)
    assert info["Title"] == TITLE
    assert int(info["Pages"]) > 1
    text = pdftotext(built.pdf)
    assert TITLE in text
    assert "Abstract" in text and "Methods" in text and "References" in text
    # MathML printed by Chromium: angle brackets and math-italic letters, no TeX source.
    assert "⟨" in text and "⟩" in text
    assert "\U0001d458" in text  # MATHEMATICAL ITALIC SMALL K
    assert "\\langle" not in text and "$$" not in text
    assert "Figure 1: A figure caption" in text
    assert "Table 1: Results." in text
    for title in REFERENCE_TITLES:
        assert title in re.sub(r"\s+", " ", text), title
    assert f"{REPOSITORY}@{built.head[:7]}" in text


# --------------------------------------------------------------------------- side effects


def test_build_leaves_content_byte_identical(built: Built):
    after = tree_hashes(built.root / "content")
    assert after == built.content_before
    assert "02.methods.md" in after and "images/plot.svg" in after


def test_build_leaves_git_repository_unchanged(built: Built):
    after = git_state(built.root)
    assert after == built.git_before
    assert after["remotes"] == ""
    assert after["count"] == "1"
    assert after["status"] == ""  # output/ is ignored, nothing else appeared
    assert git(built.root, "check-ignore", "output/manuscript.html") == "output/manuscript.html"


def test_dirty_working_tree_marks_the_build(project):
    head = git(project, "rev-parse", "HEAD")
    with (project / "content" / "01.abstract.md").open("a", encoding="utf-8") as handle:
        handle.write("\nAn uncommitted sentence.\n")
    result = build(project, "html")
    assert result.returncode == 0, result.output
    page = (project / "output" / "manuscript.html").read_text(encoding="utf-8")
    assert '<meta name="livingreview-dirty" content="true" />' in page
    assert "An uncommitted sentence." in page
    assert "/v/" not in page
    assert "manubot_html_url_versioned" not in page
    assert "permalink" not in text_of(body_of(page))
    # The stamp still says which commit the changes sit on.
    assert f"{REPOSITORY}@{head[:7]}" in page
    # --format html builds no PDF.
    assert not (project / "output" / "manuscript.pdf").exists()
    assert "pdf:" not in result.stderr
    assert not re.search(r"✓ pdf\b", result.stderr)


def test_untracked_file_marks_the_build_dirty(project):
    (project / "content" / "images" / "extra.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>\n")
    result = build(project, "html")
    assert result.returncode == 0, result.output
    page = (project / "output" / "manuscript.html").read_text(encoding="utf-8")
    assert '<meta name="livingreview-dirty" content="true" />' in page
    assert "/v/" not in page


def test_rebuild_of_clean_commit_is_reproducible(project):
    first = build(project, "html")
    assert first.returncode == 0, first.output
    page1 = (project / "output" / "manuscript.html").read_bytes()
    second = build(project, "html")
    assert second.returncode == 0, second.output
    assert (project / "output" / "manuscript.html").read_bytes() == page1
    assert not list((project / "output").rglob("*.part"))
