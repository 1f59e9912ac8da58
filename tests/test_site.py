"""The versioned site (webpage/) and its deploy to gh-pages, end to end through the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import tree_hashes as tree
from test_analyses import GIT, cli, write_project


def head(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def commit(root: Path, message: str) -> str:
    subprocess.run([*GIT, "-C", str(root), "commit", "-qam", message], check=True)
    return head(root)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_project(tmp_path_factory.mktemp("site") / "p", notebook_pages=True, figure=True)
    result = cli(root, "build")
    assert result.returncode == 0, result.stderr
    return root


def test_version_folder_holds_manuscript_notebooks_and_values(site: Path):
    sha = head(site)
    version = site / "webpage" / "v" / sha
    for name in [
        "manuscript.html",
        "index.html",
        "values.json",
        "version.json",
        "notebooks/index.html",
        "notebooks/demo.html",
        "analyses/demo/demo.ipynb",
        "analyses/demo/manifest.json",
        "analyses/demo/figures/curve_demo.svg",
    ]:
        assert (version / name).is_file(), name
    assert (site / "webpage" / "v" / "latest").resolve() == version.resolve()
    assert "url=v/latest/" in (site / "webpage" / "index.html").read_text()
    assert (site / "webpage" / ".nojekyll").is_file()

    record = json.loads((version / "version.json").read_text())
    assert record["commit"] == sha and record["dirty"] is False and record["message"] == "fixture"
    values = json.loads((version / "values.json").read_text())
    assert values["demo"]["records"]["total"]["value"] == 573.0
    assert values["demo"]["provenance"]["git"]["commit"] == sha

    page = (version / "manuscript.html").read_text()
    # The stamp's permalink is this folder's address on the site.
    assert f"https://owner.github.io/repo/v/{sha}/" in page
    # Every value links to the cell that recorded it, in this version's notebook page.
    links = set(re.findall(r'href="notebooks/demo\.html#(cell-\d+)"', page))
    assert links
    notebook_page = (version / "notebooks" / "demo.html").read_text()
    for anchor in links:
        assert f'id="{anchor}"' in notebook_page
    # Math in notebook pages is typeset by the local KaTeX, never a CDN.
    assert "cdn.jsdelivr" not in notebook_page and "render-math.js" in notebook_page
    assert (version / "notebooks" / "_static" / "katex" / "katex.min.js").is_file()

    versions = (site / "webpage" / "versions.html").read_text()
    assert f'data-version="{sha}"' in versions and "fixture" in versions
    assert f'href="v/{sha}/notebooks/index.html"' in versions


def test_rebuilding_a_commit_reproduces_its_permalink(site: Path, tmp_path: Path):
    sha = head(site)
    published = site / "webpage" / "v" / sha
    before = tree(published)

    # A fresh clone of the same commit, analyses executed again from nothing.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(site), str(clone)], check=True)
    assert cli(clone, "build").returncode == 0
    again = tree(clone / "webpage" / "v" / sha)
    differing = {p for p in before.keys() | again.keys() if before.get(p) != again.get(p)}
    # Only what records when the notebook ran may differ (docs/architecture.md, "Permalinks"):
    # in the page, only the values' tooltips, which say when and where each was computed.
    assert differing <= {
        "analyses/demo/demo.ipynb",
        "notebooks/_sources/demo.ipynb",
        "analyses/demo/manifest.json",
        "values.json",
        "manuscript.html",
        "index.html",
    }
    assert "notebooks/demo.html" not in differing
    without_tooltips = [
        re.sub(r' title="[^"]*"', "", (folder / "manuscript.html").read_text())
        for folder in (published, clone / "webpage" / "v" / sha)
    ]
    assert without_tooltips[0] == without_tooltips[1]

    # Re-running the analyses in the original project does not touch the published folder.
    result = cli(site, "build", "--force")
    assert result.returncode == 0, result.stderr
    assert tree(published) == before
    assert "already published" in result.stderr


def test_dirty_tree_publishes_a_local_version_only(site: Path):
    sha = head(site)
    section = site / "content" / "01.results.md"
    original = section.read_text()
    section.write_text(original + "\nAn uncommitted sentence.\n")
    try:
        result = cli(site, "build")
        assert result.returncode == 0, result.stderr
        local = site / "webpage" / "v" / "local"
        assert json.loads((local / "version.json").read_text())["dirty"] is True
        assert "An uncommitted sentence." in (local / "manuscript.html").read_text()
        assert "An uncommitted sentence." not in (site / "webpage" / "v" / sha / "manuscript.html").read_text()
        assert (site / "webpage" / "v" / "latest").resolve().name == sha
        assert 'data-version="local"' in (site / "webpage" / "versions.html").read_text()
    finally:
        section.write_text(original)


def test_site_refuses_a_build_of_another_commit(tmp_path: Path):
    root = write_project(tmp_path / "p")
    assert cli(root, "build").returncode == 0
    (root / "content" / "01.results.md").write_text("## Results\n\nNew text {{ demo.total }} {{ demo.n }}.\n")
    commit(root, "second")
    result = cli(root, "site")
    assert result.returncode == 3
    assert "output/build.json" in result.stderr and "was built from" in result.stderr
    assert "run 'livingreview build' first" in result.stderr


def test_deploy_keeps_every_version_byte_for_byte(tmp_path: Path):
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    root = write_project(tmp_path / "p")
    subprocess.run(["git", "-C", str(root), "remote", "add", "origin", str(origin)], check=True)
    first = head(root)
    assert cli(root, "build").returncode == 0
    result = cli(root, "deploy")
    assert result.returncode == 0, result.stderr
    assert "pushed to origin gh-pages (1 new" in result.stderr

    pages = tmp_path / "pages-1"
    subprocess.run(["git", "clone", "-q", "--branch", "gh-pages", str(origin), str(pages)], check=True)
    first_tree = tree(pages / "v" / first)
    assert "manuscript.html" in first_tree

    section = root / "content" / "01.results.md"
    section.write_text(section.read_text() + "\nA second version.\n")
    second = commit(root, "Second version of the prose")
    assert cli(root, "build").returncode == 0
    result = cli(root, "deploy")
    assert result.returncode == 0, result.stderr

    pages = tmp_path / "pages-2"
    subprocess.run(["git", "clone", "-q", "--branch", "gh-pages", str(origin), str(pages)], check=True)
    assert tree(pages / "v" / first) == first_tree
    assert "A second version." in (pages / "v" / second / "manuscript.html").read_text()
    assert (pages / "v" / "latest").resolve().name == second
    versions = (pages / "versions.html").read_text()
    assert f'data-version="{first}"' in versions and f'data-version="{second}"' in versions
    assert (pages / ".nojekyll").is_file()
    # The versions page links what changed between the two versions, word by word.
    changes = f"diffs/{first}..{second}.html"
    assert f'href="{changes}"' in versions
    assert "A second version." in (pages / changes).read_text()
    log = subprocess.run(["git", "-C", str(pages), "log", "--format=%B"], capture_output=True, text=True).stdout
    assert f"Source commit: {second}" in log and f"Source commit: {first}" in log

    # Nothing to add: deploying again pushes nothing.
    result = cli(root, "deploy")
    assert result.returncode == 0 and "is up to date" in result.stderr
    # The source repository gained no branch, remote or commit.
    branches = subprocess.run(
        ["git", "-C", str(root), "branch", "--format=%(refname:short)"], capture_output=True, text=True
    ).stdout
    assert branches.split() == ["main"] or branches.split() == ["master"]
    assert head(root) == second


def test_deploy_refuses_a_dirty_tree(tmp_path: Path):
    root = write_project(tmp_path / "p")
    (root / "content" / "02.extra.md").write_text("## Extra\n")
    result = cli(root, "deploy")
    assert result.returncode == 3
    assert "uncommitted changes" in result.stderr


def test_site_dir_moves_the_published_site(tmp_path: Path):
    """With site_dir set, build publishes there, verify finds versions there, and the folder never makes the tree dirty."""
    root = write_project(tmp_path / "p")
    with (root / "manuscript.yaml").open("a") as handle:
        handle.write("site_dir: public\n")
    sha = commit(root, "publish into public/")
    result = cli(root, "build")
    assert result.returncode == 0, result.stderr
    # public/ is neither committed nor ignored: only site_dir keeps it from making the build "local".
    assert (root / "public" / "v" / sha / "manuscript.html").is_file()
    assert (root / "public" / "versions.html").is_file()
    assert not (root / "webpage").exists()
    verified = cli(root, "verify", "--against", sha[:8])
    assert verified.returncode == 0, verified.stderr
    assert f"verifying against public/v/{sha}/values.json" in verified.stderr


def test_without_notebook_pages_values_link_to_the_published_notebook(tmp_path: Path):
    """notebook_pages: false skips Jupyter Book; each value links to the executed .ipynb of its version."""
    root = write_project(tmp_path / "p")  # the fixture's manuscript.yaml says notebook_pages: false

    def value_links(version: Path) -> set[str]:
        page = (version / "manuscript.html").read_text()
        tags = re.findall(r'<a\b[^>]*class="lr-value"[^>]*>', page)
        assert tags, "the page shows injected values"
        return {re.search(r'href="([^"]*)"', tag)[1] for tag in tags}

    assert cli(root, "build").returncode == 0
    version = root / "webpage" / "v" / head(root)
    assert value_links(version) == {"analyses/demo/demo.ipynb"}
    assert (version / "analyses" / "demo" / "demo.ipynb").is_file()
    assert not (version / "notebooks").exists() and not (root / "output" / "notebooks").exists()
    assert '<meta name="livingreview-notebooks"' not in (version / "manuscript.html").read_text()  # no link

    yaml = root / "manuscript.yaml"
    yaml.write_text(yaml.read_text().replace("notebook_pages: false\n", ""))
    sha = commit(root, "publish the notebook pages")
    assert cli(root, "build").returncode == 0
    version = root / "webpage" / "v" / sha
    links = value_links(version)
    assert links and all(re.fullmatch(r"notebooks/demo\.html#cell-\d+", link) for link in links), links
    assert (version / "notebooks" / "demo.html").is_file()
