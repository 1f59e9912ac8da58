"""``livingreview new --from-rootstock``: a Manubot repository, migrated in one command, builds as it looked."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
from pathlib import Path

from conftest import commit_all, git, run_cli
from test_new import doc_commands, run_as_author, tree_identical

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rootstock"
UNRESOLVED = ("doi:10.1000/never.found", "arxiv:9999.99999")


def rootstock_repository(where: Path) -> Path:
    """The fixture as a git repository: content on main, Manubot's outputs on an 'output' branch."""
    shutil.copytree(FIXTURE, where, ignore=shutil.ignore_patterns("output-branch", "README.md"))
    git(where, "init", "-q", "-b", "main")
    commit_all(where, "A rootstock manuscript")
    git(where, "checkout", "-q", "--orphan", "output")
    git(where, "rm", "-rq", "--cached", ".")
    for path in (FIXTURE / "output-branch").iterdir():
        shutil.copyfile(path, where / path.name)
    git(where, "add", "references.json", "citations.tsv")
    git(where, "commit", "-q", "--no-gpg-sign", "-m", "Manubot outputs")
    (where / "references.json").unlink()
    (where / "citations.tsv").unlink()
    git(where, "checkout", "-q", "-f", "main")
    return where


def test_migration_keeps_content_and_carries_what_changes_the_output(tmp_path: Path):
    source = rootstock_repository(tmp_path / "my-manuscript")
    target = tmp_path / "migrated"
    done = run_cli(tmp_path, "new", str(target), "--from-rootstock", str(source), "--repository", "grace/compilers")
    assert done.returncode == 0, done.output
    assert tree_identical(filecmp.dircmp(source / "content", target / "content"))
    assert (target / "build" / "assets" / "style.csl").read_bytes() == (source / "build/assets/style.csl").read_bytes()

    frozen = json.loads((target / "build" / "assets" / "manubot-references.json").read_text())
    # Keyed as manual references are; the manual one is not duplicated.
    assert sorted(item["id"] for item in frozen) == ["doi:10.1000/compilers.1952", "pubmed:12345678"]
    assert "froze 2 references" in done.output
    # Every key that stays unresolved is named, once.
    for key in UNRESOLVED:
        assert done.output.count(key) == 1, done.output
    assert "my-spellcheck.lua" in done.output  # a filter runs code: reported, not carried
    assert "analytics" in done.output
    config = (target / "manuscript.yaml").read_text()
    assert "repository: grace/compilers" in config and "unresolved: warn" in config
    assert "number-sections: true" in (target / "build" / "assets" / "pandoc-defaults.yaml").read_text()
    assert not (target / "analyses").exists()

    built = run_cli(target, "build", "--format", "html")
    assert built.returncode == 0, built.output
    html = (target / "output" / "manuscript.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "⟨Hopper 1952⟩" in text  # the repository's own citation style
    assert "REF: Grace Murray Hopper" in text and "REF: Herman Goldstine" in text
    assert 'class="header-section-number"' in html  # number-sections, carried over
    assert "Grace Hopper" in html  # its own front matter (not a checkout yet: no stamp source)
    for key in UNRESOLVED:
        assert key in text  # shown to the reader, as rootstock does
    assert built.output.count("unresolved") >= 1


def test_the_migration_guide_works_as_written(tmp_path: Path):
    rootstock_repository(tmp_path / "my-manuscript")
    done = run_as_author(doc_commands("migration.md"), tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-6000:]}"
    html = (tmp_path / "my-review" / "output" / "manuscript.html").read_text()
    assert "⟨Hopper 1952⟩" in re.sub(r"<[^>]+>", "", html) and "A Fixture Manuscript From Rootstock" in html
    assert (tmp_path / "my-review" / "output" / "manuscript.pdf").is_file()
