"""``livingreview diff A B`` on two built and published commits of a fixture project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_analyses import GIT, cli, write_project

TEXT = """\
## Results

The total is {{ demo.total }} for n = {{ demo.n }}, as counted by an early method [@smith2020].

{{ demo.curve_demo }}

See @fig:curve_demo.

## References

<div id="refs"></div>
"""

SMITH = {
    "id": "smith2020",
    "type": "book",
    "title": "Counting Squares by Hand",
    "author": [{"family": "Smith", "given": "Jane"}],
    "issued": {"date-parts": [[2020]]},
}
JONES = {
    "id": "jones2021",
    "type": "article-journal",
    "title": "Sums of Squares Revisited",
    "author": [{"family": "Jones", "given": "Sam"}],
    "issued": {"date-parts": [[2021]]},
}


def head(root: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(root: Path, message: str) -> str:
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", message], check=True)
    return head(root)


def plain(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two commits, each built and published: a prose edit, n 10 -> 12, a new reference."""
    root = write_project(tmp_path_factory.mktemp("diff") / "p", text=TEXT, figure=True)
    (root / "content" / "manual-references.json").write_text(json.dumps([SMITH], indent=2))
    first = commit(root, "Cite the early method")
    built = cli(root, "build")
    assert built.returncode == 0, built.stderr

    section = root / "content" / "01.results.md"
    section.write_text(
        section.read_text().replace(
            "as counted by an early method [@smith2020].",
            "as tallied by an early method [@smith2020] and confirmed later [@jones2021].",
        )
    )
    (root / "content" / "manual-references.json").write_text(json.dumps([SMITH, JONES], indent=2))
    config = root / "manuscript.yaml"
    config.write_text(config.read_text().replace("ci: {n: 10}", "ci: {n: 12}"))
    second = commit(root, "Twelve terms and a second source")
    built = cli(root, "build")
    assert built.returncode == 0, built.stderr
    return root, first, second


def test_diff_of_two_published_commits(versions):
    root, first, second = versions
    result = cli(root, "diff", first[:10], second)
    assert result.returncode == 0, result.stderr
    text = plain(result.stdout)

    # Prose, word by word, located in the Markdown source.
    assert "Prose (Markdown sources" in text
    assert "1 section changed, 0 unchanged" in text
    assert "01.results.md: changed, +6 −2 words" in text
    assert "[-counted-]{+tallied+}" in text
    assert "line 3: …n = {{ demo.n }}, as [-counted-]{+tallied+} by an early method" in text
    assert "[-[@smith2020].-]{+[@smith2020] and confirmed later [@jones2021].+}" in text
    # The value changed with n: 285*2+3 -> 506*2+3, old and new provenance, and the parameter named.
    assert "demo.total: 573.0 → 1,015.0" in text
    assert "demo.n: 10 → 12" in text
    assert f"commit {first[:12]}" in text and f"commit {second[:12]}" in text
    assert "parameter n: 10 → 12" in text
    # The curve has more points: its files changed.
    assert "analyses/demo/figures/curve_demo: changed" in text
    assert "figures/curve_demo.svg" in text
    # The new reference, from manual-references.json.
    assert "+ jones2021: Sums of Squares Revisited (Jones, 2021)" in text
    assert "smith2020" not in text.split("References (")[1]

    # Both are site versions: the page is written for the reader and for the site.
    name = f"{first}..{second}.html"
    for page_path in (root / "output" / "diff" / name, root / "webpage" / "diffs" / name):
        assert page_path.is_file(), page_path
        assert re.search(r"page: (output/diff|webpage/diffs)/" + re.escape(name), result.stderr)
    page = (root / "webpage" / "diffs" / name).read_text()
    assert "<del>counted</del><ins>tallied</ins>" in page
    assert re.search(
        r'data-key="demo.total" data-status="changed">.*?<del>573.0</del>.*?<ins>1,015.0</ins>', page, re.S
    )
    assert 'data-reference="jones2021" data-status="added"' in page
    assert 'data-figure="analyses/demo/figures/curve_demo"' in page
    # Figures are shown from the immutable version folders, by relative links that resolve.
    links = re.findall(r'<img src="([^"]+)"', page)
    assert f"../v/{first}/analyses/demo/figures/curve_demo.svg" in links
    for link in links:
        assert ((root / "webpage" / "diffs") / link).resolve().is_file(), link
    # The version folders themselves are never written to.
    assert not (root / "webpage" / "v" / second / "diff.html").exists()


def test_unpublished_commit_has_prose_and_references_but_no_values(versions, tmp_path: Path):
    root, _, second = versions
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    section = clone / "content" / "01.results.md"
    section.write_text(section.read_text().replace("See @fig:curve_demo.", "Figure @fig:curve_demo shows the terms."))
    third = commit(clone, "Reword the figure sentence")
    # The clone has the commits but no webpage/: nothing was published there.
    result = cli(clone, "diff", second, "HEAD")
    assert result.returncode == 0, result.stderr
    text = plain(result.stdout)
    # Words are whitespace-separated tokens: "@fig:curve_demo." and "@fig:curve_demo" differ.
    assert "line 7: …" in text
    assert (
        "{{ demo.curve_demo }} [-See @fig:curve_demo.-]{+Figure @fig:curve_demo shows the terms.+} ## References"
        in text
    )
    assert "values unavailable" in text and "figures unavailable" in text
    assert "References (content/manual-references*.json at each commit): none changed" in text
    assert (clone / "output" / "diff" / f"{second}..{third}.html").is_file()
    assert not (clone / "webpage").exists()


def test_site_versions_without_their_commits_compare_the_html(versions, tmp_path: Path):
    root, first, second = versions
    # A copy of the site alone: its versions' commits are in no repository here.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns(".git", "output"))
    result = cli(copy, "diff", first[:8], "latest")
    assert result.returncode == 0, result.stderr
    text = plain(result.stdout)
    assert "text of each version's manuscript.html" in text
    assert "Results: changed" in text
    assert "[-counted-]{+tallied+}" in text
    assert "References (bibliography of each version's manuscript.html): 1 added" in text
    assert "Sums of Squares Revisited" in text.split("References (")[1]
    assert "demo.total: 573.0 → 1,015.0" in text


def test_unknown_version_is_a_configuration_error(versions):
    root, first, _ = versions
    result = cli(root, "diff", first, "no-such-version")
    assert result.returncode == 2
    assert "no-such-version: neither a version under webpage/v/ nor a commit of the repository" in plain(result.stderr)
