"""The Lua renderer says what rootstock's filter chain says: same numbers, references,
citations and reference list.

Rootstock numbers figures, tables and equations with pandoc-fignos/eqnos/tablenos and
resolves Manubot citation keys with pandoc-manubot-cite, four Python JSON filters run by
pandoc 2.19; the build's default renderer does both with Lua filters inside the current
pandoc (``resources/pandoc/lua/``). These tests render the same content both ways and
compare what a reader gets (``tests/equivalence.py``: the visible text, every
internal link and every numbered target; markup may differ):

* the crossref filter alone against the three xnos filters, on a document written to
  exercise every reference form and every xnos option that changes HTML;
* whole builds of a fixture project through the CLI, with citations of every kind of
  Manubot key, aliases, repeated citations, captions and a footnote;

and they check the numbers themselves, so that two equally wrong outputs cannot pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REFERENCES, Result, build, commit_all, git, replace_in, write_project

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "build"))

from equivalence import differences
from livingreview.load.config import Overrides
from livingreview.load.project import Project
from livingreview.render import citekeys
from livingreview.render.html import brace_needles, may_have_footnotes, pandoc_executable, tool_env
from livingreview.util.errors import ToolError

LUA = Path(__file__).resolve().parent.parent / "build" / "livingreview" / "resources" / "pandoc" / "lua"

# --------------------------------------------------------------------------- crossref.lua alone

# Every reference form the xnos filters know: plain, +/*/! modifiers, braces, brackets
# (with prefix and suffix, and with attributes after them), nolink, references in
# emphasis, captions, headers, lists, quotes and footnotes, unknown labels, a div
# figure, tagged targets, unnumbered and unlabelled ones, and math followed by braces
# that are not attributes.
STRESS = """\
---
title: Cross-reference forms
header-includes: |
  <meta name="generator-note" content="kept" />
---

# Introduction

Plain @fig:one, plus +@fig:one, bang !@fig:one, braces {@fig:one}, both {+@fig:two} and [@fig:one].
With a prefix [see @fig:two, p. 3], then @tbl:alpha, +@tbl:alpha and @eq:second.

*@fig:two opens this paragraph.

An unknown @fig:nothere, a section @sec:intro and a tag @eq:tagged.
Without a link @fig:one{nolink=True}, in emphasis *near @fig:one here* and **bold +@tbl:alpha**.
With attributes [@fig:one]{.kept} after the brackets.

![First figure, with $x^2$ in its caption.](a.png){#fig:one}

![Second figure, with *emphasis*.](b.png){#fig:two width="50%"}

![A tagged figure.](c.png){#fig:tagged tag="B.1"}

![An unlabelled figure.](d.png)

![A titled figure](e.png "The title"){#fig:titled}

The kernel is

$$ k(x, x') = x^\\top x' $$ {#eq:first}

and inline $a=b$ {#eq:second} sits beside $c$ {.nothing} and $d$ {plain words}.

$$ e = mc^2 $$ {#eq:tagged tag="A.1"}

| A | B |
|---|---|
| 1 | 2 |

Table: A caption that cites @fig:one. {#tbl:alpha}

| C |
|---|
| 3 |

Table: An unlabelled table.

::: {#fig:div}
A figure made of a div.
:::

# Second {-}

## Subsection

The div @fig:div, the titled *@fig:titled and the tagged @fig:tagged.

- a list item with @fig:two
- and a second one

> A quotation with +@eq:first.

## About @fig:one

A footnote.^[It cites @tbl:alpha.]
"""

OPTIONS = {
    "defaults": [],
    "cleveref": ["-M", "xnos-cleveref=true"],
    "capitalise": ["-M", "xnos-cleveref=true", "-M", "xnos-capitalise=true"],
    "names": ["-M", "fignos-cleveref=true", "-M", "fignos-plus-name=Abb.", "-M", "tablenos-star-name=Tab"],
    "by-section": ["-M", "xnos-number-by-section=true", "-M", "xnos-number-offset=2"],
    "captions": ["-M", "fignos-caption-name=Fig.", "-M", "xnos-caption-separator=period"],
    "eqref": ["-M", "tablenos-caption-separator=quad", "-M", "eqnos-eqref=true"],
}


def pandoc(source: Path, *args: str, env: dict[str, str] | None = None, renderer: str = "lua") -> str:
    """HTML of ``source`` by the pandoc that ``renderer`` runs (rootstock's 2.19 for the xnos filters)."""
    done = subprocess.run(
        [str(pandoc_executable(renderer)), str(source), "-s", "-t", "html5", "--wrap=preserve", "--mathml", *args],
        capture_output=True,
        text=True,
        env=env or tool_env(),
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def stress(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stress") / "stress.md"
    path.write_text(STRESS, encoding="utf-8")
    return path


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_crossref_filter_matches_the_xnos_filters(stress: Path, options: list[str]):
    xnos = pandoc(
        stress, *options, "-F", "pandoc-fignos", "-F", "pandoc-eqnos", "-F", "pandoc-tablenos", renderer="rootstock"
    )
    lua = pandoc(stress, *options, "-L", str(LUA / "crossref.lua"))
    assert differences(xnos, lua) == []


def test_crossref_filter_still_matches_byte_for_byte_on_pandoc_2(stress: Path):
    """On rootstock's own pandoc the filter reproduces the xnos filters' markup too."""
    old = ["-F", "pandoc-fignos", "-F", "pandoc-eqnos", "-F", "pandoc-tablenos"]
    xnos = pandoc(stress, *old, renderer="rootstock")
    assert pandoc(stress, "-L", str(LUA / "crossref.lua"), renderer="rootstock") == xnos


def test_equivalence_notices_a_wrong_number(stress: Path):
    page = pandoc(stress, "-L", str(LUA / "crossref.lua"))
    assert differences(page, page) == []
    wrong = page.replace("<span>Figure\xa01:</span>", "<span>Figure\xa07:</span>", 1)
    moved = page.replace('href="#fig:two"', 'href="#fig:one"', 1)
    assert wrong != page and moved != page
    assert any("text differs" in d for d in differences(page, wrong))
    assert any("links differ" in d for d in differences(page, moved))


def test_crossref_filter_numbers_what_it_should(stress: Path):
    page = pandoc(stress, "-L", str(LUA / "crossref.lua"))
    body = page[page.index("<body>") :]
    # Targets, numbered in document order; tags kept; unlabelled ones left alone.
    assert '<figcaption aria-hidden="true"><span>Figure\xa01:</span> First figure' in body
    assert '<div id="fig:one" class="fignos">\n<figure>\n<img src="a.png"' in body
    assert "<span>Figure\xa0B.1:</span> A tagged figure." in body
    assert "<span>Figure\xa03:</span> A titled figure" in body
    assert '<figcaption aria-hidden="true">An unlabelled figure.</figcaption>' in body
    assert '<span id="eq:first" class="eqnos">' in body and '<span class="eqnos-number">(1)</span>' in body
    assert '<span class="eqnos-number">(A.1)</span>' in body
    assert "<caption><span>Table\xa01:</span> A caption that cites" in body
    # References: the forms and their names.
    assert 'Plain <a href="#fig:one">1</a>, plus fig.\xa0<a href="#fig:one">1</a>' in body
    assert '<p>Figure\xa0<a href="#fig:two">2</a> opens this paragraph.</p>' in body
    assert '[see <a href="#fig:two">2</a>, p.\xa03]' in body
    assert "An unknown ??" in body
    assert '<span class="kept"><a href="#fig:one">1</a></span>' in body
    assert "Without a link 1, in emphasis" in body
    assert 'The div <a href="#fig:div">4</a>' in body
    # Braces after math that are not attributes vanish, as with pandoc-eqnos.
    assert "{plain words}" not in body and "{.nothing}" not in body
    assert "pandoc-eqnos: equation style" in page


def test_crossref_filter_is_fast_path_safe_without_footnotes(tmp_path: Path):
    """With LIVINGREVIEW_NO_NOTES the filter passes over paragraphs whose text shows nothing to do."""
    source = tmp_path / "plain.md"
    source.write_text(STRESS.replace("A footnote.^[It cites @tbl:alpha.]", "No footnote."), encoding="utf-8")
    xnos = pandoc(source, "-F", "pandoc-fignos", "-F", "pandoc-eqnos", "-F", "pandoc-tablenos", renderer="rootstock")
    lua = pandoc(source, "-L", str(LUA / "crossref.lua"), env=tool_env(LIVINGREVIEW_NO_NOTES="1"))
    assert differences(xnos, lua) == []
    assert lua == pandoc(source, "-L", str(LUA / "crossref.lua"))


# References in every container and every form, math whose braces are TeX and math
# followed by attributes or by braces that are not, spans and images followed by braces:
# the paragraphs the filter defers, passes over or takes in hand on the build's hints.
HINTED = """\
# One

Plain @fig:one and @eq:first and @tbl:alpha, in a [link to @fig:one](#x), in "quotes @fig:two", in *emphasis
@fig:two*, in **bold @eq:first**, in [a span @tbl:alpha]{.s}, ~~struck @fig:one~~ and ~sub @fig:one~.

Citation-like [@fig:one; @eq:first] and [see @fig:two, p. 3] and @fig:one [p. 5], -@fig:one and a@fig:one.org.

Math $\\frac{1}{n} \\sum_{i} x_{i}$ beside @eq:first, $a$ {#eq:inline} and $b$ {.gone} and $c$ {plain words}.

Inline ![an image with @fig:one](a.png) and then @fig:two, and [a span]{.s}{.t} after it.

Modifiers +@fig:one, *@fig:two, !@eq:first, braces {@tbl:alpha} and @fig:one{nolink=True}.

![First figure, with $x^{2}$.](a.png){#fig:one}

![Second figure.](b.png){#fig:two}

$$ k(x, x') = x^\\top x' $$ {#eq:first}

| A |
|---|
| 1 |

Table: A caption that cites @fig:one. {#tbl:alpha}

## About @eq:inline and $y_{1}$

Last: @eq:inline, @fig:nothere and @tbl:alpha.
"""


@pytest.mark.parametrize("options", [[], OPTIONS["cleveref"], OPTIONS["eqref"]], ids=["defaults", "cleveref", "eqref"])
def test_crossref_filter_gives_the_same_on_the_builds_hints(tmp_path: Path, options: list[str]):
    """With LIVINGREVIEW_NO_NOTES and LIVINGREVIEW_BRACES (as the build sets them), the filter
    defers plain references to a walk and passes over paragraphs whose braces are TeX's,
    and says just what it says without them, and what the xnos filters say."""
    source = tmp_path / "hinted.md"
    source.write_text(HINTED, encoding="utf-8")
    needles = brace_needles(HINTED)
    assert needles != "{"  # the math braces do not count
    hinted = pandoc(
        source,
        *options,
        "-L",
        str(LUA / "crossref.lua"),
        env=tool_env(LIVINGREVIEW_NO_NOTES="1", LIVINGREVIEW_BRACES=needles),
    )
    assert hinted == pandoc(source, *options, "-L", str(LUA / "crossref.lua"))
    # (The xnos filters keep the "-" of "-@fig:one", which the Lua filter drops, hinted or not.)
    source.write_text(HINTED.replace(" -@fig:one", ""), encoding="utf-8")
    xnos = pandoc(
        source, *options, "-F", "pandoc-fignos", "-F", "pandoc-eqnos", "-F", "pandoc-tablenos", renderer="rootstock"
    )
    hinted = pandoc(
        source,
        *options,
        "-L",
        str(LUA / "crossref.lua"),
        env=tool_env(LIVINGREVIEW_NO_NOTES="1", LIVINGREVIEW_BRACES=needles),
    )
    assert differences(xnos, hinted) == []


def test_brace_needles_hold_every_brace_an_attribute_block_may_start():
    text = (
        "a $x$ {#eq:a} and $$ y $$ {#eq:b} and ${a}$ $\\{a\\}$ and ![x](y){#fig:a}{.b} [s]{.c}\\{d\n"
        'and $a$&#123;q ![i](j){t="}{x"\n .k}{zz} [u]{k="v".c}{yy} x...{no} $f(x) {w}$'
    )
    assert set(brace_needles(text).splitlines()) == {
        "{#eq:",
        "{#fig",
        "{.b",
        "{.c",
        "{d",
        "{q",
        "{t=",
        "{zz",
        "{k=",
        "{yy",
    }
    # Braces of formulas only (a "$" after a space opens math, it cannot close it).
    assert brace_needles("see $\\frac{1}{n}$ and $x_{i}^{2}$ and $\\{a\\}$.") == ""
    # Too many distinct ones, or one that shows nothing after the brace: any "{" counts.
    assert brace_needles("$x$ { #eq:a}") == "{"
    assert brace_needles(" ".join(f"$x$ {{#eq:n{i:03d}}}" for i in range(40))) == "{#eq:"


# --------------------------------------------------------------------------- whole builds

RESULTS = """\
## Results

The fitted curve in @fig:fit follows @eq:ridge, and +@tbl:errors lists the errors [@doi:10.1000/XYZ123; @pmid:29424689].
A second view {@fig:residuals} and the number alone, !@fig:fit, agree [see @10.1000/abc456, p. 4].
Bracketed, [@fig:fit] keeps its brackets; @fig:residuals{nolink=True} is no link.

*@fig:residuals opens this paragraph.

![Kernel ridge fit to noisy data [@smith2020].](images/plot.svg){#fig:fit}

The ridge estimator solves

$$ \\hat f = \\arg\\min_{f} \\sum_{i} (y_i - f(x_i))^2 + \\lambda \\|f\\|^2 $$ {#eq:ridge}

and its dual form, @eq:dual, needs inner products only:

$$ \\hat\\alpha = (K + \\lambda I)^{-1} y $$ {#eq:dual tag="D"}

| Method | Error |
|--------|------:|
| ridge  | 0.12  |
| lasso  | 0.15  |

Table: Errors of two estimators [@url:https://example.org/kernels]. {#tbl:errors}

![Residuals of the fit in +@fig:fit.](images/plot.svg){#fig:residuals}

Every kind of key: a DOI in lower case @doi:10.1000/xyz123, a PubMed id [@pmid:29424689], a URL [@url:https://example.org/kernels], an alias defined below [@ridge-book], an alias from the metadata [@survey], repeated keys [@smith2020; @arxiv:2411.08870] and an unknown label @tbl:missing.
FOOTNOTE

[@ridge-book]: doi:10.1000/book.77
The alias definition above leaves this sentence behind.
"""

EXTRA_REFERENCES = [
    {
        "id": "doi:10.1000/abc456",
        "type": "article-journal",
        "title": "Inferred Prefixes for Bare DOIs",
        "author": [{"family": "Noether", "given": "Emmy"}],
        "issued": {"date-parts": [[2018]]},
    },
    {
        "id": "pmid:29424689",
        "type": "article-journal",
        "title": "Kernels in Genomics",
        "author": [{"family": "Franklin", "given": "Rosalind"}],
        "issued": {"date-parts": [[2018, 2]]},
    },
    {
        "id": "url:https://example.org/kernels",
        "type": "webpage",
        "title": "A Web Page About Kernels",
        "URL": "https://example.org/kernels",
        "issued": {"date-parts": [[2021]]},
    },
    # Matched through the standard_id in its note, as Manubot allows.
    {
        "id": "ridge-book-item",
        "type": "book",
        "title": "Ridge Regression, the Book",
        "note": "standard_id: doi:10.1000/book.77",
        "author": [{"family": "Hoerl", "given": "Arthur"}],
        "issued": {"date-parts": [[1970]]},
    },
    {
        "id": "arxiv:2101.00001",
        "type": "manuscript",
        "title": "A Survey Cited Through an Alias",
        "author": [{"family": "Ride", "given": "Sally"}],
        "issued": {"date-parts": [[2021, 1]]},
    },
    {
        "id": "doi:10.1000/uncited",
        "type": "article-journal",
        "title": "Never Cited",
        "issued": {"date-parts": [[2000]]},
    },
]

BUILDS = {
    # Bare numbers (the default is cleveref, as in rootstock's template), with a footnote
    # (so no fast path in crossref.lua).
    "bare": ("  xnos-cleveref: false\n", "^[A note citing @pmid:29424689 and @tbl:errors.]"),
    # The flagship's settings, without footnotes.
    "cleveref": ("  xnos-cleveref: true\n", ""),
}


def write_rich_project(root: Path, metadata: str, footnote: str, results: str = RESULTS) -> Path:
    write_project(root, commit=False)
    content = root / "content"
    (content / "03.results.md").write_text(results.replace("FOOTNOTE", footnote), encoding="utf-8")
    references = json.loads((content / "manual-references.json").read_text())
    (content / "manual-references.json").write_text(json.dumps(references + EXTRA_REFERENCES, indent=2))
    with (content / "metadata.yaml").open("a", encoding="utf-8") as handle:
        handle.write("pandoc:\n  citekey-aliases:\n    survey: arxiv:2101.00001\n" + metadata)
    git(root, "init", "-q", "-b", "main")
    commit_all(root)
    return root


def test_the_renderer_comes_from_the_config_then_the_environment_then_the_flag(tmp_path: Path, monkeypatch):
    (tmp_path / "manuscript.yaml").write_text("pandoc:\n  renderer: rootstock\n")
    monkeypatch.delenv("LIVINGREVIEW_RENDERER", raising=False)
    assert Project.load(tmp_path).config.pandoc.renderer == "rootstock"
    monkeypatch.setenv("LIVINGREVIEW_RENDERER", "lua")
    assert Project.load(tmp_path).config.pandoc.renderer == "lua"
    assert Project.load(tmp_path, Overrides(renderer="rootstock")).config.pandoc.renderer == "rootstock"
    monkeypatch.setenv("LIVINGREVIEW_RENDERER", "pandoc4")
    with pytest.raises(ToolError, match="LIVINGREVIEW_RENDERER='pandoc4' is not a renderer"):
        Project.load(tmp_path)


def build_html(project: Path, renderer: str) -> Result:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIVINGREVIEW_RENDERER", renderer)
        return build(project, "html")


def build_with(project: Path, renderer: str) -> dict[str, str]:
    result = build_html(project, renderer)
    assert result.returncode == 0, result.output
    out = project / "output"
    return {
        "html": (out / "manuscript.html").read_text(encoding="utf-8"),
        "references": (out / "references.json").read_text(encoding="utf-8"),
        "citekeys": (out / "citations.tsv").read_text(encoding="utf-8"),
        "stderr": result.stderr,
    }


@pytest.fixture(scope="module", params=BUILDS.keys())
def both(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], dict[str, str]]:
    metadata, footnote = BUILDS[request.param]
    project = write_rich_project(tmp_path_factory.mktemp(request.param) / "project", metadata, footnote)
    return request.param, build_with(project, "rootstock"), build_with(project, "lua")


def test_builds_say_the_same(both):
    _, rootstock, lua = both
    assert differences(rootstock["html"], lua["html"]) == []


def test_builds_write_the_same_reference_list_and_key_table(both):
    _, rootstock, lua = both
    assert json.loads(lua["references"]) == json.loads(rootstock["references"])
    assert lua["references"] == rootstock["references"]
    assert sorted(lua["citekeys"].splitlines()) == sorted(rootstock["citekeys"].splitlines())
    assert "ridge-book\tdoi:10.1000/book.77\tdoi:10.1000/book.77\t" in lua["citekeys"]


def text_of(page: str) -> str:
    body = page[page.index("<body>") :]
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    body = re.sub(r"<annotation\b.*?</annotation>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", body)).replace("\xa0", " ")


def test_numbers_and_citations_are_right(both):
    variant, _, lua = both
    text = text_of(lua["html"])
    fig, tbl, eq = ("fig. ", "table ", "eq. ") if variant == "cleveref" else ("", "", "")
    # The fixture's methods section holds Figure 1, Table 1 and Equation 1, and cites
    # references 1 to 3; this section's targets and new references come after them.
    assert f"The fitted curve in {fig}2 follows {eq}2, and table 2 lists the errors [1,4]." in text
    assert f"A second view {fig}3 and the number alone, 2, agree [see 5, p. 4]." in text
    assert f"Bracketed, [{fig}2] keeps its brackets; {fig}3 is no link." in text
    assert "Figure 3 opens this paragraph." in text
    assert "Figure 2: Kernel ridge fit to noisy data [3]." in text
    assert "Figure 3: Residuals of the fit in fig. 2." in text
    assert "Table 2: Errors of two estimators [6]." in text
    assert "(D)" in text and f"its dual form, {eq}D, needs" in text
    # Every key form resolves; equal keys share a number; the unknown label shows ??.
    assert "a DOI in lower case [1], a PubMed id [4], a URL [6], an alias defined below [7]" in text
    assert f"an alias from the metadata [8], repeated keys [2,3] and an unknown label {tbl}??." in text
    refs = lua["html"][lua["html"].index('<div id="refs"') :]
    titles = re.findall(r'<div id="ref-[^"]+" class="csl-entry"', refs)
    assert len(titles) == 8  # the uncited reference is not listed
    assert "Never Cited" not in refs and "Ridge Regression, the Book" in refs
    assert "[@ridge-book]" not in text and "doi:10.1000/book.77" not in text
    assert "<p>The alias definition above leaves this sentence behind.</p>" in lua["html"]


def test_lua_build_reports_only_pandoc_warnings(both):
    _, _, lua = both
    assert "bad reference: @tbl:missing" in lua["stderr"]
    assert "Traceback" not in lua["stderr"]


# The same section with every reference cited by one key only (no alias paragraph, one
# spelling of each DOI): the html stage hands citeproc the references under the keys as
# cited, and renames them in the page after pandoc (citekeys.rename_page).
AS_CITED = (
    RESULTS.replace("[@ridge-book]: doi:10.1000/book.77\n", "")
    .replace("[@ridge-book]", "[@doi:10.1000/book.77]")
    .replace("@doi:10.1000/XYZ123", "@doi:10.1000/xyz123")
)


@pytest.fixture(scope="module")
def as_cited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, str]]:
    project = write_rich_project(tmp_path_factory.mktemp("as-cited") / "project", "", "", AS_CITED)
    return project, build_with(project, "rootstock"), build_with(project, "lua")


def test_references_as_cited_say_the_same(as_cited):
    project, rootstock, lua = as_cited
    markdown = (project / "output" / "manuscript.md").read_text(encoding="utf-8")
    metadata = yaml.safe_load(markdown.split("\n...\n", 1)[0])
    resolver = citekeys.resolver_for(project, metadata, markdown, None)
    keys = resolver.as_cited()
    assert keys is not None and "doi:10.1000/book.77" in keys  # the html stage took this path
    assert differences(rootstock["html"], lua["html"]) == []
    assert lua["references"] == rootstock["references"]
    assert sorted(lua["citekeys"].splitlines()) == sorted(rootstock["citekeys"].splitlines())
    # Every key cited was renamed to its item's id, as the filter would have.
    for key, item_id in keys.items():
        assert f'"#ref-{key}"' not in lua["html"] and f'id="ref-{key}"' not in lua["html"]
        assert f'id="ref-{item_id}"' in lua["html"]
    assert 'data-cites="survey"' not in lua["html"]


def test_rename_page_gives_up_on_a_page_without_its_reference_list():
    resolver = citekeys.Resolver({}, [], aliases=False)
    page = '<span class="citation" data-cites="a b"><a href="#ref-a" role="doc-biblioref">1</a></span>'
    listed = page + '<div id="ref-a" class="csl-entry">'
    assert citekeys.rename_page(page, "", resolver, {"a": "X"}) is None
    renamed, report = citekeys.rename_page(listed, "", resolver, {"a": "X"}) or ("", None)
    assert renamed == listed.replace("ref-a", "ref-X").replace('"a b"', '"X b"')
    assert report == citekeys.Report([("a", "a"), ("b", "b")], [("b", "b")])


def test_unresolved_citation_as_cited_fails_with_every_place(tmp_path: Path):
    results = AS_CITED.replace("[see @10.1000/abc456, p. 4]", "[see @doi:10.1000/nowhere, p. 4]")
    project = write_rich_project(tmp_path / "project", "", "", results)
    result = build_html(project, "lua")
    assert result.returncode == 3, result.output
    section = project / "content" / "03.results.md"
    line = next(n for n, text in enumerate(section.read_text().splitlines(), 1) if "@doi:10.1000/nowhere" in text)
    assert f"{section.resolve()}:{line}: unresolved citation @doi:10.1000/nowhere" in result.stderr
    assert not (project / "output" / "manuscript.html").exists()


def test_unresolved_citation_fails_with_every_place(tmp_path: Path):
    project = write_rich_project(tmp_path / "project", "", "")
    results = project / "content" / "03.results.md"
    replace_in(results, "[@ridge-book]: doi:10.1000/book.77", "[@ridge-book]: doi:10.1000/nowhere")
    result = build_html(project, "lua")
    assert result.returncode == 3, result.output
    line = next(
        n
        for n, text in enumerate(results.read_text().splitlines(), 1)
        if "[@ridge-book]." in text or "[@ridge-book]," in text
    )
    assert f"{results.resolve()}:{line}: unresolved citation @ridge-book" in result.stderr
    assert '"id": "doi:10.1000/nowhere"' in result.stderr
    assert not (project / "output" / "manuscript.html").exists()


# --------------------------------------------------------------------------- the Python half


def test_candidate_keys_cover_what_pandoc_may_read():
    text = (
        "See @doi:10.1000/XYZ123. and [@url:https://example.org/a/b; @smith2020], "
        "mail a@b.org, braced @{odd key}, end @arxiv:2411.08870v2?\n"
        "[@tag]: doi:10.1/alias\n"
    )
    keys = citekeys.candidate_keys(text)
    assert {
        "doi:10.1000/XYZ123",
        "url:https://example.org/a/b",
        "smith2020",
        "arxiv:2411.08870v2",
        "tag",
        "doi:10.1/alias",
    } <= keys
    assert "b.org" not in keys and "doi:10.1000/XYZ123." not in keys


def test_a_key_the_pattern_missed_is_added_and_pandoc_runs_again():
    references = {"doi:10.1000/x": {"id": "short1"}}
    resolver = citekeys.Resolver(references, [], True, {"doi:10.1000/y"}, aliases=False)
    report = citekeys.Report(
        cited=[("doi:10.1000/X", "doi:10.1000/X")], unresolved=[("doi:10.1000/X", "doi:10.1000/X")]
    )
    assert citekeys.prepare_retry(resolver, report)
    assert "doi:10.1000/X" in resolver.keys and resolver.aliases
    # Second time round nothing is left to try: the key is reported with its standard id.
    missing = citekeys.Report(cited=[("nope", "nope")], unresolved=[("nope", "nope")])
    assert not citekeys.prepare_retry(resolver, missing)
    assert citekeys.unresolved_items(resolver, missing) == [{"input_id": "nope", "standard_id": "nope"}]


def test_footnote_detection_tells_superscripts_from_notes():
    assert not may_have_footnotes("x^[✉](#correspondence)^ y and 2^10^")
    assert may_have_footnotes("text^[an inline note]")
    assert may_have_footnotes("text[^1]\n\n[^1]: a note")
    assert may_have_footnotes("text^[unclosed")


def test_manual_references_are_cached_until_they_change(tmp_path: Path):
    (tmp_path / "refs.json").write_text(json.dumps(REFERENCES))
    cache = tmp_path / "cache.json"
    first = citekeys.load_references(tmp_path, ["refs.json"], [], cache)
    assert cache.is_file() and "doi:10.1000/xyz123" in first
    stored = json.loads(cache.read_text())
    stored["references"]["doi:10.1000/xyz123"]["title"] = "read from the cache"
    cache.write_text(json.dumps(stored))
    assert citekeys.load_references(tmp_path, ["refs.json"], [], cache)["doi:10.1000/xyz123"]["title"] == (
        "read from the cache"
    )
    (tmp_path / "refs.json").write_text(json.dumps(REFERENCES[:1]))
    assert set(citekeys.load_references(tmp_path, ["refs.json"], [], cache)) == {"doi:10.1000/xyz123"}
