"""``citations:`` in manuscript.yaml and ``--unresolved-citations``, through the real CLI.

Under ``strict`` (the default) an unresolved key fails the build with every ``file:line``
that cites it (tests/test_errors.py checks the messages). Under ``warn`` the build
succeeds as rootstock's does: the key shows in bold with "?", the keys are one warning
and one hint, and the published version says so. ``citations.references`` adds reference
files from anywhere inside the project. Every build here is HTML only, with no analyses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import commit_all, line_of, replace_in, run_cli, write_project

CONFIG_ERROR = 2
CONTENT_ERROR = 3
MISSING = "doi:10.9999/missing"
OTHER = "nokey2099"
# A reference that Manubot once resolved online, frozen outside content/ (as the migration does).
FROZEN = {
    "id": MISSING,
    "type": "article-journal",
    "title": "A Frozen Reference Found Online",
    "author": [{"family": "Turing", "given": "Alan"}],
    "issued": {"date-parts": [[2021]]},
    "DOI": "10.9999/missing",
}


def config(root: Path, citations: str = "") -> None:
    """manuscript.yaml with html as the only format, so an html build publishes its version."""
    text = "repository: owner/repo\nsite_url: https://owner.github.io/repo/\nformats: [html]\n"
    (root / "manuscript.yaml").write_text(text + citations, encoding="utf-8")


def cite_unresolved(root: Path) -> tuple[Path, list[int], int]:
    """Cite MISSING in two places and OTHER in one: the sections file and MISSING's and OTHER's lines."""
    methods = root / "content" / "02.methods.md"
    replace_in(methods, "as does a classic text [@smith2020].", f"as does a classic text [@smith2020; @{MISSING}].")
    replace_in(methods, "### Discussion", f"### Discussion\n\nAgain [@{MISSING}], and once @{OTHER}.")
    lines = [n for n, text in enumerate(methods.read_text().splitlines(), 1) if MISSING in text]
    return methods, lines, line_of(methods, OTHER)


@pytest.fixture
def unresolved(tmp_path: Path) -> tuple[Path, list[int], int]:
    """A committed project that cites two keys no reference has (one in two places), under the default policy."""
    root = write_project(tmp_path / "project")
    config(root)
    _, lines, other = cite_unresolved(root)
    commit_all(root, "cite two unknown keys")
    return root, lines, other


def warnings_of(stderr: str) -> tuple[list[str], list[str]]:
    lines = stderr.splitlines()
    return [line for line in lines if line.startswith("warning:")], [line for line in lines if "hint:" in line]


def assert_one_warning(stderr: str, root: Path, lines: list[int], other: int) -> None:
    """One warning line naming both keys with every place each is cited, and one hint line."""
    warnings, hints = warnings_of(stderr)
    assert len(warnings) == 1, stderr
    assert len(hints) == 1, stderr
    methods = root.resolve() / "content" / "02.methods.md"
    assert warnings[0] == (
        f"warning: 2 unresolved citations, shown as the key in bold with '?': "
        f"@{MISSING} ({methods}:{','.join(map(str, lines))}); @{OTHER} ({methods}:{other})"
    )
    assert "content/manual-references.json" in hints[0] and "citations.references" in hints[0]
    assert "Citeproc" not in stderr and "Traceback" not in stderr


def visible_keys(html: str) -> None:
    assert f"<strong>{MISSING}?</strong>" in html
    assert f"<strong>{OTHER}?</strong>" in html
    assert f'<meta name="livingreview-unresolved-citations" content="{MISSING} {OTHER}" />' in html


@pytest.mark.parametrize("renderer", ["lua", "rootstock"])
def test_warn_flag_builds_and_shows_keys_with_either_renderer(unresolved, renderer):
    root, lines, other = unresolved
    result = run_cli(root, "build", "--format", "html", "--renderer", renderer, "--unresolved-citations", "warn")
    assert result.returncode == 0, result.output
    assert_one_warning(result.stderr, root, lines, other)
    html = (root / "output" / "manuscript.html").read_text(encoding="utf-8")
    visible_keys(html)
    # The resolvable keys are still resolved: the reference list holds exactly them.
    assert html.count('class="csl-entry"') == 3
    record = json.loads((root / "output" / "build.json").read_text())
    assert record["unresolved_citations"] == [MISSING, OTHER]


def test_warn_in_manuscript_yaml_publishes_the_keys_on_the_version(unresolved):
    root, lines, other = unresolved
    config(root, "citations:\n  unresolved: warn\n")
    sha = commit_all(root, "citations policy: warn")
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    assert_one_warning(result.stderr, root, lines, other)

    site = root / "webpage"
    version = site / "v" / sha
    visible_keys((version / "manuscript.html").read_text(encoding="utf-8"))
    record = json.loads((version / "version.json").read_text())
    assert record["unresolved_citations"] == [MISSING, OTHER]
    listing = json.loads((site / "versions.json").read_text())
    assert listing[0]["unresolved_citations"] == [MISSING, OTHER]
    page = (site / "versions.html").read_text(encoding="utf-8")
    row = page[page.index(f'data-version="{sha}"') :]
    row = row[: row.index("</tr>")]
    assert "2 unresolved citations" in row
    assert f"<code>@{MISSING}</code>, <code>@{OTHER}</code>" in row

    # Once the keys resolve, the next version carries no note.
    (root / "content" / "manual-references.json").write_text(
        json.dumps([*json.loads((root / "content" / "manual-references.json").read_text()), FROZEN])
    )
    replace_in(root / "content" / "02.methods.md", f", and once @{OTHER}", "")
    fixed = commit_all(root, "resolve them")
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    assert warnings_of(result.stderr) == ([], [])
    assert "unresolved_citations" not in json.loads((site / "v" / fixed / "version.json").read_text())
    page = (site / "versions.html").read_text(encoding="utf-8")
    assert page.count('<details class="unresolved">') == 1


def test_flag_strict_overrides_warn_in_manuscript_yaml(unresolved):
    root, lines, _ = unresolved
    config(root, "citations:\n  unresolved: warn\n")
    result = run_cli(root, "build", "--format", "html", "--unresolved-citations", "strict")
    assert result.returncode == CONTENT_ERROR, result.output
    where = root.resolve() / "content" / "02.methods.md"
    for line in lines:
        assert f"{where}:{line}: unresolved citation @{MISSING}" in result.stderr
    assert not (root / "output" / "manuscript.html").exists()


def test_check_fails_under_strict_and_warns_once_under_warn(unresolved):
    root, lines, other = unresolved
    strict = run_cli(root, "check")
    assert strict.returncode == CONTENT_ERROR, strict.output
    assert f"02.methods.md:{lines[0]}: unresolved citation @{MISSING}" in strict.stderr

    warn = run_cli(root, "check", "--unresolved-citations", "warn")
    assert warn.returncode == 0, warn.output
    assert_one_warning(warn.stderr, root, lines, other)
    assert "configuration and 4 sections are valid" in warn.stderr
    # check renders into a scratch folder: output/ is never made.
    assert not (root / "output").exists()

    config(root, "citations:\n  unresolved: warn\n")
    assert run_cli(root, "check").returncode == 0


def test_references_outside_content_resolve_keys_and_yield_to_manual_ones(tmp_path: Path):
    root = write_project(tmp_path / "project")
    cite_unresolved(root)
    replace_in(root / "content" / "02.methods.md", f", and once @{OTHER}", "")
    frozen = root / "build" / "assets" / "manubot-references.json"
    frozen.parent.mkdir(parents=True)
    # The same id as a manual reference: content/manual-references.json wins, as the docs say.
    shadowed = {"id": "smith2020", "type": "book", "title": "Shadowed Frozen Title", "issued": {"date-parts": [[1999]]}}
    frozen.write_text(json.dumps([FROZEN, shadowed], indent=2))
    config(root, "citations:\n  references:\n    - build/assets/manubot-references.json\n")

    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    html = (root / "output" / "manuscript.html").read_text(encoding="utf-8")
    assert "A Frozen Reference Found Online" in html
    assert "A Classic Text on Reproducing Kernels" in html and "Shadowed Frozen Title" not in html
    assert "unresolved" not in result.stderr
    assert run_cli(root, "check").returncode == 0

    # The cached resolution (output/.cache/manual-references.json) follows an edit of the file.
    frozen.write_text(json.dumps([{**FROZEN, "title": "An Edited Frozen Title"}], indent=2))
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == 0, result.output
    assert "An Edited Frozen Title" in (root / "output" / "manuscript.html").read_text(encoding="utf-8")


def test_diff_compares_configured_references_at_each_commit(tmp_path: Path):
    root = write_project(tmp_path / "project")
    (root / "refs.json").write_text(json.dumps([FROZEN], indent=2))
    config(root, "citations:\n  references: [refs.json]\n")
    old = commit_all(root, "frozen references")
    (root / "refs.json").write_text(json.dumps([{**FROZEN, "title": "A Retitled Reference"}], indent=2))
    new = commit_all(root, "retitle")
    result = run_cli(root, "diff", old, new)
    assert result.returncode == 0, result.output
    assert "content/manual-references*.json and refs.json at each commit" in result.stdout
    assert "A Retitled Reference" in result.stdout


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("../outside.json", "'../outside.json' lies outside the project"),
        ("/etc/hostname.json", "'/etc/hostname.json' is an absolute path"),
        ("linked/refs.json", "'linked/refs.json' leads out of the project through a symlink"),
        ("missing.json", "'missing.json' not found"),
        ("broken.json", "'broken.json' is not valid JSON (line 1: "),
    ],
)
def test_unusable_references_path_is_a_configuration_error_at_its_line(tmp_path: Path, entry: str, message: str):
    root = write_project(tmp_path / "project", commit=False)
    (tmp_path / "outside.json").write_text("[]")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "refs.json").write_text("[]")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "broken.json").write_text('[{"id": ')
    config(root, f"citations:\n  unresolved: warn\n  references:\n    - {entry}\n")
    result = run_cli(root, "build", "--format", "html")
    assert result.returncode == CONFIG_ERROR, result.output
    assert "error: invalid configuration" in result.stderr
    where = root.resolve() / "manuscript.yaml"
    assert f"{where}:7: citations.references[0]: {message}" in result.stderr
    assert not (root / "output").exists()


def test_invalid_policy_names_the_key(tmp_path: Path):
    root = write_project(tmp_path / "project", commit=False)
    config(root, "citations:\n  unresolved: lenient\n")
    result = run_cli(root, "check")
    assert result.returncode == CONFIG_ERROR, result.output
    assert "manuscript.yaml:5: citations.unresolved: 'lenient': Input should be 'strict' or 'warn'" in result.stderr


def test_build_check_and_serve_take_the_flag(tmp_path: Path):
    for command in ("build", "check", "serve"):
        result = run_cli(tmp_path, command, "--help")
        assert result.returncode == 0, result.output
        assert "--unresolved-citations {strict,warn}" in result.stdout
