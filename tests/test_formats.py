"""``formats: [docx, jats, latex]``: the manuscript for Word, PubMed Central and journals.

One fixture project with citations, an equation, a table, a figure from content/ and one
from an analysis, and an injected value is built once through the real CLI; its outputs
are opened with real readers: python-docx for the DOCX, lxml for the JATS XML, a TeX
engine and pdftotext for the LaTeX bundle. The second half plants attacks in a
section (raw TeX and OpenXML, dangerous math, template-made image paths, metadata) and
checks that none reaches an output or runs when the bundle is compiled
(docs/threat-model.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path

import docx
import pytest
from lxml import etree

from conftest import SITE_URL, TITLE, build, commit_all, git, line_of, run_cli, write_project
from test_analyses import NOTEBOOK
from test_untrusted import SECRET, add_section, published_text


def _engine_is_complete(engine: str) -> bool:
    """Whether ``engine`` can compile: texlive-binaries ships ``lualatex`` without the
    luaotfload it needs to load any font (that comes with texlive-luatex), so a command on the
    PATH alone does not make an engine."""
    if not shutil.which(engine):
        return False
    support = {"lualatex": "luaotfload-main.lua"}.get(engine)
    return support is None or bool(subprocess.run(["kpsewhich", support], capture_output=True, text=True).stdout)


ENGINES = [e for e in ("pdflatex", "lualatex", "xelatex") if _engine_is_complete(e)]
NO_TEX = "no TeX engine (pdflatex, lualatex or xelatex) is installed: ./ci/quickstart.sh installs texlive when formats lists latex"

RESULTS = """\
## Results

The total is {{ demo.total }} for n = {{ demo.n }}, and the set $\\mathbb{R}$ holds it.
Its growth is quadratic (α ≈ 2).

{{ demo.curve_demo }}

As @fig:curve_demo shows, and @fig:plot before it.
"""

# ci profile: n=10 -> sum of squares 0..9 = 285, *2 + 2 data rows + header word = 573
VALUE = "573.0"


def write_formats_project(root: Path, formats: str = "[html, docx, jats, latex]") -> Path:
    """conftest's project (citations, equation, table, figure, authors) plus an analysis and its value."""
    write_project(root, commit=False)
    analyses = root / "analyses"
    analyses.mkdir()
    (analyses / "demo.py").write_text(NOTEBOOK.format(name="demo"))
    (analyses / "data.csv").write_text("x\n1\n2\n")
    (analyses / "helper.py").write_text("def square(x):\n    return x * x\n")
    config = root / "manuscript.yaml"
    config.write_text(
        config.read_text()
        + f"formats: {formats}\n"
        + textwrap.dedent(
            """\
            analyses:
              demo:
                notebook: analyses/demo.py
                inputs: [analyses/data.csv]
                profiles:
                  ci: {n: 10}
            environment: []
            """
        )
    )
    (root / "content" / "03.results.md").write_text(RESULTS, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    commit_all(root)
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture built once with every configured format (html, docx, jats, latex), and published."""
    root = write_formats_project(tmp_path_factory.mktemp("formats") / "project")
    result = build(root)
    assert result.returncode == 0, result.output
    return root


def head_of(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def docx_text(document: docx.document.Document) -> str:
    return "\n".join(p.text for p in document.paragraphs)


# --------------------------------------------------------------------------- DOCX


def test_docx_has_numbered_figures_citations_values_and_metadata(made: Path):
    document = docx.Document(str(made / "output" / "manuscript.docx"))
    text = docx_text(document)
    # Both orcid icons of the front matter, the content figure and the analysis's figure.
    assert len(document.inline_shapes) == 4
    captions = [p.text.replace("\xa0", " ") for p in document.paragraphs if p.style.name == "Image Caption"]
    assert captions == ["Figure 1: A figure caption", "Figure 2: Squares up to n."]
    assert "Table 1: Results." in [
        p.text.replace("\xa0", " ") for p in document.paragraphs if p.style.name == "Table Caption"
    ]
    # Cross-references read as in the HTML (the text names them itself, so bare numbers).
    assert "Figure 1 shows the kernel values, and Table 1 lists them." in text
    assert "As 2 shows, and 1 before it." in text
    assert "Linear kernels were studied early [1]." in text
    bibliography = [p.text for p in document.paragraphs if p.style.name == "Bibliography"]
    assert len(bibliography) == 3 and "Linear Kernels in Practice" in bibliography[0]
    # The injected value is its formatted text: no link to the notebook, no tooltip.
    assert f"The total is {VALUE} for n = 10" in text
    part = zipfile.ZipFile(made / "output" / "manuscript.docx")
    relations = part.read("word/_rels/document.xml.rels").decode()
    assert "notebooks/" not in relations and "file:" not in relations
    assert sorted(n for n in part.namelist() if n.startswith("word/media/"))  # embedded, not linked
    # Title, authors with their affiliations, the date and the permalink stamp.
    head = head_of(made)
    assert document.core_properties.title == TITLE
    authors = [p.text for p in document.paragraphs if p.style.name == "Author"]
    assert authors[0].splitlines() == ["Ada Example", "Department of Statistics, Example University"]
    subtitle = next(p.text for p in document.paragraphs if p.style.name == "Subtitle")
    assert f"owner/repo@{head[:7]}" in subtitle and f"{SITE_URL}v/{head}/" in subtitle
    assert document.core_properties.created.year > 2000  # the commit's date, not pandoc's sandbox's 1970
    assert f"{SITE_URL}v/{head}/" in part.read("docProps/custom.xml").decode()
    # Manubot's ## sections are Word's top level.
    assert [p.text for p in document.paragraphs if p.style.name == "Heading 1"][:3] == [
        "Authors",
        "Abstract",
        "Methods",
    ]


# --------------------------------------------------------------------------- JATS


def jats_tree(root: Path) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.parse(str(root / "output" / "jats" / "manuscript.jats.xml"), parser)


XLINK = "{http://www.w3.org/1999/xlink}href"


def test_jats_is_well_formed_with_one_ref_per_cited_reference(made: Path):
    tree = jats_tree(made)
    refs = tree.findall(".//back/ref-list/ref")
    cited = {x.get("rid") for x in tree.iter("xref") if x.get("ref-type") == "bibr"}
    assert len(refs) == 3 and {r.get("id") for r in refs} == cited
    # Every cross-reference points at an element of the document.
    ids = {e.get("id") for e in tree.iter() if e.get("id")}
    assert {x.get("rid") for x in tree.iter("xref")} <= ids


def test_jats_figures_have_labels_and_bundled_graphics(made: Path):
    tree = jats_tree(made)
    figures = tree.findall(".//body//fig")
    assert [f.findtext("label") for f in figures] == ["Figure 1", "Figure 2"]
    assert figures[1].findtext("caption/p") == "Squares up to n."
    assert [t.findtext("label") for t in tree.findall(".//table-wrap")] == ["Table 1"]
    folder = made / "output" / "jats"
    graphics = [g.get(XLINK) for g in tree.iter("graphic", "inline-graphic")]
    assert graphics and all(g.startswith("figures/") and (folder / g).is_file() for g in graphics)
    # The analysis's figure as its PNG (PubMed Central takes raster figures), not the SVG.
    assert figures[1].find("graphic").get(XLINK) == "figures/curve_demo.png"
    body = "".join(tree.find(".//body").itertext())
    assert f"The total is {VALUE}" in body


def test_jats_front_has_authors_affiliations_date_and_permalink(made: Path):
    tree = jats_tree(made)
    meta = tree.find(".//front/article-meta")
    assert meta.findtext("title-group/article-title") == TITLE
    contributors = meta.findall("contrib-group/contrib")
    assert [c.findtext("string-name") for c in contributors] == ["Ada Example", "Grace Sample"]
    assert contributors[0].findtext("contrib-id") == "0000-0002-1825-0097"
    affiliations = {a.get("id"): "".join(a.itertext()).strip() for a in meta.findall("contrib-group/aff")}
    assert affiliations[contributors[1].find("xref[@ref-type='aff']").get("rid")] == (
        "Department of Computer Science, Sample Institute"
    )
    assert contributors[1].get("corresp") == "yes" and contributors[1].findtext("email") == "grace@example.org"
    assert meta.find("pub-date").get("iso-8601-date")
    head = head_of(made)
    assert f"{SITE_URL}v/{head}/" in "".join(tree.find(".//front/notes").itertext())


# --------------------------------------------------------------------------- LaTeX


def compile_latex(bundle: Path, engine: str, *options: str) -> Path:
    """Compile ``manuscript.tex`` twice (citations and references need the second run)."""
    for _ in range(2):
        done = subprocess.run(
            [engine, "-interaction=nonstopmode", "-halt-on-error", *options, "manuscript.tex"],
            cwd=bundle,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout[-3000:]
    return bundle / "manuscript.pdf"


def pdftotext(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_latex_bundle_holds_tex_figures_and_cited_references(made: Path):
    bundle = made / "output" / "latex"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "figures",
        "manuscript.tex",
        "references.bib",
        "references.json",
    ]
    # SVG figures as PDF (rsvg-convert, which the Quickstart installs with TeX); the analysis's as its PNG.
    svg_as_pdf = ["orcid.pdf", "plot.pdf"] if shutil.which("rsvg-convert") else []
    assert sorted(p.name for p in (bundle / "figures").iterdir()) == sorted(["curve_demo.png", *svg_as_pdf])
    items = json.loads((bundle / "references.json").read_text())
    assert sorted(i["title"] for i in items) == sorted(
        [
            "Linear Kernels in Practice",
            "In-Context Learning as Kernel Regression",
            "A Classic Text on Reproducing Kernels",
        ]
    )
    assert len(re.findall(r"^@\w+\{", (bundle / "references.bib").read_text(), re.M)) == 3
    tex = (bundle / "manuscript.tex").read_text()
    assert "\\includegraphics" in tex and "figures/curve_demo.png" in tex
    # Greek letters and symbols of the text as math: LaTeX's text fonts lack them.
    assert "quadratic (\\(\\alpha\\) \\(\\approx\\) 2)" in tex
    assert "/" + str(made).strip("/") not in tex  # no path of the build machine
    with zipfile.ZipFile(made / "output" / "manuscript-latex.zip") as archive:
        assert "manuscript-latex/manuscript.tex" in archive.namelist()
        assert archive.read("manuscript-latex/manuscript.tex").decode() == tex


@pytest.mark.skipif(not ENGINES, reason=NO_TEX)
@pytest.mark.parametrize("engine", ENGINES)
def test_latex_bundle_compiles(made: Path, tmp_path: Path, engine: str):
    bundle = tmp_path / "bundle"
    with zipfile.ZipFile(made / "output" / "manuscript-latex.zip") as archive:
        archive.extractall(tmp_path)
    (tmp_path / "manuscript-latex").rename(bundle)
    text = pdftotext(compile_latex(bundle, engine))
    flat = re.sub(r"\s+", " ", text)
    assert TITLE in flat
    assert f"The total is {VALUE} for n = 10" in flat
    assert "Figure 2: Squares up to n." in flat and "Table 1: Results." in flat
    assert "Linear kernels were studied early [1]." in flat
    assert "Linear Kernels in Practice" in flat  # the reference list


FORMATS_LUA = Path(__file__).resolve().parents[1] / "build/livingreview/resources/pandoc/formats/formats.lua"


@pytest.mark.skipif(not ENGINES, reason=NO_TEX)
def test_every_math_command_let_through_is_defined_in_the_bundle(made: Path, tmp_path: Path):
    """Math with a command formats.lua allows must not stop the compile: each is defined by the .tex's preamble."""
    listed = re.search(r"for name in \(\[\[(.*?)\]\]\):gmatch", FORMATS_LUA.read_text(), re.S).group(1).split()
    assert {"frac", "mathbb", "begin"} <= set(listed) and "input" not in listed and "csname" not in listed
    tex = (made / "output" / "latex" / "manuscript.tex").read_text()
    checks = "".join(f"\\ifdefined\\{name}\\else\\typeout{{UNDEFINED {name}}}\\fi\n" for name in listed)
    (tmp_path / "check.tex").write_text(
        tex[: tex.index("\\begin{document}")] + f"\\begin{{document}}\n{checks}\\end{{document}}\n"
    )
    for engine in ENGINES:
        done = subprocess.run(
            [engine, "-interaction=nonstopmode", "check.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=240
        )
        assert "UNDEFINED" not in done.stdout, (engine, re.findall(r"UNDEFINED \w+", done.stdout))


# --------------------------------------------------------------------------- publishing


def test_every_format_is_published_and_linked(made: Path):
    head = head_of(made)
    folder = made / "webpage" / "v" / head
    for name in ("manuscript.docx", "manuscript-jats.zip", "manuscript-latex.zip"):
        assert (folder / name).is_file(), name
        assert (folder / name).read_bytes() == (made / "output" / name).read_bytes()
    assert (folder / "jats" / "manuscript.jats.xml").is_file() and (folder / "latex" / "manuscript.tex").is_file()
    page = (folder / "manuscript.html").read_text(encoding="utf-8")
    assert '<meta name="livingreview-docx" content="manuscript.docx" />' in page
    assert '<meta name="livingreview-jats" content="manuscript-jats.zip" />' in page
    assert '<meta name="livingreview-latex" content="manuscript-latex.zip" />' in page
    assert '<meta name="livingreview-pdf"' not in page  # not configured
    versions = (made / "webpage" / "versions.html").read_text(encoding="utf-8")
    for name, label in (
        ("manuscript.docx", "DOCX"),
        ("manuscript-jats.zip", "JATS"),
        ("manuscript-latex.zip", "LaTeX"),
    ):
        assert f'<a href="v/{head}/{name}">{label}</a>' in versions


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_the_links_bar_links_every_format(made: Path):
    from playwright.sync_api import sync_playwright

    folder = made / "webpage" / "v" / head_of(made)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route(
                "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
            )
            page.goto((folder / "manuscript.html").as_uri())
            bar = page.eval_on_selector_all(
                ".lr-links a", "all => all.map(a => [a.textContent, a.getAttribute('href')])"
            )
        finally:
            browser.close()
    assert [label for label, _ in bar] == ["DOCX", "JATS", "LaTeX", "Notebooks", "Versions"]
    for _, href in bar:
        assert (folder / href).is_file(), href


def test_one_format_alone_and_the_same_bytes_again(made: Path):
    before = {n: (made / "output" / n).read_bytes() for n in ("manuscript.docx", "manuscript-latex.zip")}
    html = (made / "output" / "manuscript.html").stat().st_mtime_ns
    # Made again from nothing (an intact output would be up to date, and kept).
    (made / "output" / "manuscript.docx").unlink()
    (made / "output" / "manuscript-latex.zip").unlink()
    result = build(made, "docx", "latex")
    assert result.returncode == 0, result.output
    assert re.search(r"✓ docx +pandoc: Word → output/manuscript.docx", result.stderr)
    assert re.search(r"✓ latex +pandoc", result.stderr)
    assert "✓ html" not in result.stderr and "✓ jats" not in result.stderr
    assert (made / "output" / "manuscript.html").stat().st_mtime_ns == html
    # A rebuild of the same commit gives the same bytes: the permalink folder is reproducible.
    assert {n: (made / "output" / n).read_bytes() for n in before} == before


# --------------------------------------------------------------------------- configuration


def test_reference_doc_styles_the_docx(project: Path):
    reference = project / "ci" / "reference.docx"
    reference.parent.mkdir()
    styles = docx.Document()  # python-docx's own template, with a font pandoc's has not
    styles.styles["Normal"].font.name = "Fixture Serif"
    styles.save(str(reference))
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + "docx:\n  reference_doc: ci/reference.docx\n")
    result = build(project, "docx")
    assert result.returncode == 0, result.output
    document = docx.Document(str(project / "output" / "manuscript.docx"))
    assert document.styles["Normal"].font.name == "Fixture Serif"


@pytest.mark.parametrize(
    "value, message",
    [
        ("/etc/hostname", "'/etc/hostname' is an absolute path"),
        ("../outside.docx", "'../outside.docx' lies outside the project"),
        ("ci/missing.docx", "'ci/missing.docx' not found"),
        ("manuscript.yaml", "'manuscript.yaml' is not a .docx file"),
    ],
)
def test_reference_doc_must_be_a_docx_inside_the_project(project: Path, value: str, message: str):
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + f"docx:\n  reference_doc: {value}\n")
    result = run_cli(project, "check")
    assert result.returncode == 2, result.output
    assert f"manuscript.yaml:{line_of(config, 'reference_doc')}: docx.reference_doc: {message}" in result.output
    assert "hint:" in result.output


def test_unknown_format_is_a_configuration_error(project: Path):
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + "formats: [html, odt]\n")
    result = run_cli(project, "check")
    assert result.returncode == 2, result.output
    assert f"manuscript.yaml:{line_of(config, 'formats')}: formats[1]: 'odt': Input should be" in result.output
    assert "'docx'" in result.output and "'latex'" in result.output


# --------------------------------------------------------------------------- untrusted input

MARKER = "MARKER-formats-attack"

RAW_ATTACKS = """\
## Attack

Inline \\input{SECRET_PATH} and \\openin5=SECRET_PATH and \\write18{touch MARKER_PATH} here.

\\immediate\\write18{touch MARKER_PATH}

```{=latex}
\\input{SECRET_PATH}
\\immediate\\write18{touch MARKER_PATH}
```

`\\input{SECRET_PATH}`{=latex}

```{=openxml}
<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>INCLUDETEXT "SECRET_PATH"</w:instrText></w:r></w:p>
```

```{=jats}
<inline-graphic xlink:href="file://SECRET_PATH"/>
```

Math $\\input{SECRET_PATH}$, $\\csname input\\endcsname{SECRET_PATH}$, $\\inp^^75t{SECRET_PATH}$,
$\\InputIfFileExists{SECRET_PATH}{}{}$ and $x % \\input{SECRET_PATH}$.

$$\\begin{input}SECRET_PATH\\end{input}$$

$$\\immediate\\write18{touch MARKER_PATH}$$

Fine math stays: $\\alpha^2 + \\mathbb{R}$.

<div id="x}\\input{SECRET_PATH}">A div with a bad id.</div>

``` {.python startFrom="1}\\input{SECRET_PATH}"}
print(1)
```
"""

FORBIDDEN = ("\\input{", "\\write18", "\\openin", "\\csname", "^^75", "\\InputIfFileExists", "\\begin{input}")


def unzipped(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return "\n".join(archive.read(n).decode("utf-8", errors="replace") for n in archive.namelist())


def test_raw_tex_openxml_and_dangerous_math_reach_no_output(project: Path, tmp_path: Path):
    secret = tmp_path / "secret.tex"
    secret.write_text(SECRET + "\n")
    marker = tmp_path / MARKER
    add_section(project, RAW_ATTACKS.replace("SECRET_PATH", str(secret)).replace("MARKER_PATH", str(marker)))
    result = build(project, "docx", "jats", "latex")
    assert result.returncode == 0, result.output
    assert "raw markup left out of the latex output" in result.output
    assert "math using \\input is shown as its source text" in result.output
    assert "math using ^^ notation is shown as its source text" in result.output
    out = project / "output"
    tex = (out / "latex" / "manuscript.tex").read_text()
    for needle in FORBIDDEN:
        assert needle not in tex, needle
    # The attacks are shown as text (escaped), not carried out.
    assert "\\texttt{\\textbackslash{}input\\{" in tex
    assert "\\(\\alpha^2 + \\mathbb{R}\\)" in tex
    document = unzipped(out / "manuscript.docx")
    assert "instrText" not in document and "INCLUDETEXT" not in document and "fldChar" not in document
    jats = (out / "jats" / "manuscript.jats.xml").read_text()
    assert "file://" not in jats and "inline-graphic" not in jats.split("<body>")[1].split("Attack")[1]
    assert SECRET not in published_text(project) + document
    if ENGINES:
        # Even with shell escape allowed, compiling runs nothing and reads nothing.
        pdf = compile_latex(out / "latex", ENGINES[0], "-shell-escape")
        assert SECRET not in pdftotext(pdf)
    assert not marker.exists()


TEMPLATE_IMAGES = """\
## Attack

Text.

{% set p = SECRET_ABS %}![absolute]({{ p }})

{% set q = '../../' ~ SECRET_NAME %}![dotdot]({{ q }})

{{ '![passwd](' ~ '/etc/passwd' ~ ')' }}

{{ '![url](' ~ 'file://' ~ SECRET_ABS ~ ')' }}
"""


def test_an_image_a_template_makes_must_be_a_file_of_the_build(project: Path):
    """The check stage refuses such paths written in a section; these only a template writes."""
    secret = project.parent / "secret.png"
    secret.write_bytes(SECRET.encode())
    text = TEMPLATE_IMAGES.replace("SECRET_ABS", repr(str(secret))).replace("SECRET_NAME", repr(secret.name))
    section = add_section(project, text)
    for fmt in ("docx", "jats", "latex"):
        result = build(project, fmt)
        assert result.returncode == 3, result.output
        # At the section's line where the path is written there, else at output/manuscript.md's.
        for where, path in (
            (f"content/05.attack.md:{line_of(section, 'absolute')}", re.escape(str(secret))),
            (r"output/manuscript\.md:\d+", r"\.\./\.\./secret\.png"),
            (f"content/05.attack.md:{line_of(section, 'passwd')}", "/etc/passwd"),
            (r"output/manuscript\.md:\d+", "file://" + re.escape(str(secret))),
        ):
            message = f"{where}: image {path} is not a file of content/images/ or of an analysis's results: "
            assert re.search(message + f"it may not go into the {fmt} output", result.output), (message, result.output)
    assert SECRET not in published_text(project)


def test_metadata_cannot_set_template_variables(project: Path, tmp_path: Path):
    """Pandoc metadata from metadata.yaml (its pandoc: mapping) or a section's own YAML block
    reaches no template variable (documentclass, header-includes, geometry...) and no raw TeX."""
    secret = tmp_path / "secret.tex"
    secret.write_text(SECRET + "\n")
    metadata = project / "content" / "metadata.yaml"
    metadata.write_text(
        metadata.read_text()
        + textwrap.dedent(
            f"""\
            pandoc:
              subtitle: 'A subtitle `\\input{{{secret}}}`{{=latex}}'
              documentclass: '{os.path.splitext(secret)[0]}'
              geometry: 'margin=1in}}\\input{{{secret}}}'
            """
        )
    )
    add_section(
        project,
        f"---\nheader-includes: '`\\input{{{secret}}}`{{=latex}}'\ninclude-before: '`\\input{{{secret}}}`{{=latex}}'\n"
        f"fontfamily: '{os.path.splitext(secret)[0]}'\n---\n\n## Attack\n\nText.\n",
    )
    result = build(project, "latex", "docx")
    assert result.returncode == 0, result.output
    assert "subtitle" in (project / "output" / "manuscript.md").read_text()  # the metadata did reach pandoc
    tex = (project / "output" / "latex" / "manuscript.tex").read_text()
    assert "\\input{" not in tex and str(secret.with_suffix("")) not in tex
    assert re.search(r"\\documentclass(\[[^\]]*\])?\{article\}", tex)
    assert "\\subtitle{A subtitle" in tex
    document = unzipped(project / "output" / "manuscript.docx")
    assert str(secret) not in document and SECRET not in document
    if ENGINES:
        assert SECRET not in pdftotext(compile_latex(project / "output" / "latex", ENGINES[0]))
