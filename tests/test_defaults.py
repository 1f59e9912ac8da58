"""What a project gets without copying anything from the flagship: front matter, cross-references, honest links."""

from __future__ import annotations

import re
from pathlib import Path

from pypdf import PdfReader

from conftest import build, commit_all, git

METADATA = """\
title: "A Bare Review"
authors:
  - name: Ada Lovelace
    orcid: 0000-0002-1825-0097
    github: ada
    email: ada@example.org
    corresponding: true
    affiliations: [Analytical Engines Ltd]
"""
SECTION = """\
## Results

As @fig:flow shows, it works.

![A flow.](images/flow.svg){#fig:flow}
"""
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>\n'
NOTEBOOK = """\
# %% tags=["parameters"]
n: int = 3

# %%
from livingreview import record

record.value("n", n)
"""


def bare_project(root: Path, *, metadata: str = METADATA, manuscript: str = "formats: [html, pdf]\n") -> Path:
    (root / "content" / "images").mkdir(parents=True)
    (root / "content" / "metadata.yaml").write_text(metadata)
    (root / "content" / "01.results.md").write_text(SECTION)
    (root / "content" / "images" / "flow.svg").write_text(SVG)
    (root / "manuscript.yaml").write_text(manuscript)
    return root


def test_without_front_matter_authors_and_stamp_still_show(tmp_path: Path):
    root = bare_project(tmp_path)
    (root / ".gitignore").write_text("/output/\n/webpage/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "remote", "add", "origin", "https://github.com/ada/bare-review.git")
    commit = commit_all(root)
    done = build(root, "html")
    assert done.returncode == 0, done.output
    html = (root / "output" / "manuscript.html").read_text()
    assert "Ada Lovelace" in html and "Analytical Engines Ltd" in html
    assert "orcid.org/0000-0002-1825-0097" in html and "data:image/svg+xml;base64," in html  # icons need no files
    assert f"https://ada.github.io/bare-review/v/{commit}/" in html  # the permalink, from the origin remote
    assert f"ada/bare-review@{commit[:7]}" in html
    assert "ada@example.org" in html  # the corresponding author
    assert "no repository is known" not in done.output


def test_cross_references_read_like_rootstock_by_default(tmp_path: Path):
    root = bare_project(tmp_path)
    assert build(root, "html").returncode == 0
    text = re.sub(r"<[^>]+>", "", (root / "output" / "manuscript.html").read_text())
    assert re.search(r"As fig\.\s1 shows", text), "a bare '@fig:flow' reads 'fig. 1'"

    bare_off = bare_project(tmp_path / "off", metadata=METADATA + "pandoc:\n  xnos-cleveref: false\n")
    assert build(bare_off, "html").returncode == 0
    text = re.sub(r"<[^>]+>", "", (bare_off / "output" / "manuscript.html").read_text())
    assert re.search(r"As 1 shows", text), "metadata.yaml can still turn it off"

    # Rootstock's own style names the target in the text: the name is not said twice.
    named = bare_project(tmp_path / "named")
    (named / "content" / "01.results.md").write_text(SECTION.replace("As @fig:flow", "As Figure @fig:flow"))
    assert build(named, "html").returncode == 0
    text = re.sub(r"<[^>]+>", "", (named / "output" / "manuscript.html").read_text())
    assert re.search(r"As Figure 1 shows", text)


def test_without_a_repository_no_url_is_invented(tmp_path: Path):
    root = bare_project(tmp_path)  # no git, no remote, no repository key
    done = build(root)
    assert done.returncode == 0, done.output
    assert done.output.count("no repository is known") == 1
    assert "fatal:" not in done.output
    html = (root / "output" / "manuscript.html").read_text()
    assert "github.io" not in html and "local/" not in html and ">permalink</a>" not in html
    assert "Ada Lovelace" in html
    uris = [
        annotation.get_object().get("/A", {}).get("/URI")
        for page in PdfReader(root / "output" / "manuscript.pdf").pages
        for annotation in page.get("/Annots") or []
    ]
    uris = [u for u in uris if u]
    assert "https://orcid.org/0000-0002-1825-0097" in uris  # real links stay
    assert not [u for u in uris if "invalid" in u or "github.io" in u], uris


def test_a_project_without_a_lock_file_is_told(tmp_path: Path):
    root = bare_project(
        tmp_path,
        manuscript="formats: [html]\nnotebook_pages: false\nanalyses:\n  demo:\n    notebook: analyses/demo.py\n",
    )
    (root / "analyses").mkdir()
    (root / "analyses" / "demo.py").write_text(NOTEBOOK)
    (root / "content" / "01.results.md").write_text(SECTION + "\nWe ran {{ demo.n }} times.\n")
    done = build(root)
    assert done.returncode == 0, done.output
    assert "no lock file ci/requirements.lock" in done.output and "environment" in done.output
    (root / "ci").mkdir()
    (root / "ci" / "requirements.lock").write_text("numpy==2.0.0\n")
    done = build(root)
    assert done.returncode == 0, done.output
    assert "no lock file" not in done.output
