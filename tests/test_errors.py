"""``livingreview build`` on broken projects: one fixture project per failure mode.

Each test checks the exit code (ConfigError 2, ContentError/CitationError/
TemplateError 3), the exact message with its ``file:line``, and that the failed
build left no new ``output/manuscript.html`` behind (outputs are atomic).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Result, build, line_of, replace_in, tree_hashes

CONFIG_ERROR = 2
CONTENT_ERROR = 3


def assert_failed(result: Result, project: Path, exit_code: int, title: str) -> list[str]:
    """The build failed with ``exit_code`` and ``title``, and wrote no HTML; return stderr lines."""
    assert result.returncode == exit_code, result.output
    lines = result.stderr.splitlines()
    assert f"error: {title}" in lines, result.stderr
    assert "Traceback" not in result.output
    output = project / "output"
    assert not (output / "manuscript.html").exists()
    assert not (output / "manuscript.pdf").exists()
    assert not list(project.rglob("*.part")), "a temporary output was left behind"
    return lines


def where(project: Path, relative: str, line: int | None = None) -> str:
    """How the tool names a place: the resolved project path, then ``:line``."""
    text = str(project.resolve() / relative)
    return f"{text}:{line}" if line is not None else text


def write_config(project: Path, text: str) -> None:
    (project / "manuscript.yaml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- citations


def test_unresolved_citation_names_key_and_line(project):
    methods = project / "content" / "02.methods.md"
    replace_in(
        methods, "as does a classic text [@smith2020].", "as does a classic text [@smith2020; @doi:10.9999/missing]."
    )
    line = line_of(methods, "@doi:10.9999/missing")
    assert line == 4
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "unresolved citations")
    assert f"{where(project, 'content/02.methods.md', line)}: unresolved citation @doi:10.9999/missing" in lines
    assert (
        '    hint: add a CSL JSON item with "id": "doi:10.9999/missing" to content/manual-references.json '
        "(the build never looks references up online)"
    ) in lines
    # Only the missing key is reported: the resolvable ones are fine.
    assert "@smith2020" not in result.stderr and "xyz123" not in result.stderr
    assert "✗ html" in result.stderr


def test_unresolved_citation_cited_twice_reports_both_lines(project):
    methods = project / "content" / "02.methods.md"
    replace_in(
        methods,
        "Linear kernels were studied early",
        "Missing one @doi:10.9999/missing.\nLinear kernels were studied early",
    )
    replace_in(methods, "### Discussion", "### Discussion\n\nAgain [@doi:10.9999/missing].")
    first, second = (n for n, text in enumerate(methods.read_text().splitlines(), 1) if "10.9999/missing" in text)
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "unresolved citations")
    for line in (first, second):
        assert f"{where(project, 'content/02.methods.md', line)}: unresolved citation @doi:10.9999/missing" in lines


def test_failed_build_keeps_previous_html(project):
    """An earlier good manuscript.html survives a failing build byte for byte."""
    assert build(project, "html").returncode == 0
    html = project / "output" / "manuscript.html"
    before = html.read_bytes()
    images_before = tree_hashes(project / "output" / "images")
    replace_in(project / "content" / "02.methods.md", "[@smith2020]", "[@doi:10.9999/missing]")
    result = build(project, "html")
    assert result.returncode == CONTENT_ERROR, result.output
    assert "unresolved citation @doi:10.9999/missing" in result.stderr
    assert html.read_bytes() == before
    assert tree_hashes(project / "output" / "images") == images_before
    assert not list((project / "output").glob(".*.part"))


# --------------------------------------------------------------------------- YAML files


def test_malformed_metadata_yaml_names_file_and_line(project):
    metadata = project / "content" / "metadata.yaml"
    replace_in(metadata, "  - name: Grace Sample", "   - name: Grace Sample")
    line = line_of(metadata, "   - name: Grace Sample")
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "invalid manuscript content")
    assert (
        f"{where(project, 'content/metadata.yaml', line)}: cannot parse YAML: "
        "expected <block end>, but found '<block sequence start>'"
    ) in lines
    assert "    hint: check indentation, and quote values containing ':' or '#'" in lines
    assert "✗ check" in result.stderr
    assert not (project / "output").exists()


def test_malformed_manuscript_yaml_names_line(project):
    write_config(project, "repository: owner/repo\nsite_url: https://owner.github.io/repo/\nformats: html: pdf\n")
    result = build(project, "html")
    lines = assert_failed(result, project, CONFIG_ERROR, "invalid configuration")
    assert f"{where(project, 'manuscript.yaml', 3)}: cannot parse YAML: mapping values are not allowed here" in lines
    assert "    hint: check indentation, and quote values containing ':' or '#'" in lines
    # Configuration is checked before any stage starts.
    assert "✓ check" not in result.stderr and "✗ check" not in result.stderr
    assert not (project / "output").exists()


@pytest.mark.parametrize(
    ("config", "line", "message", "hint"),
    [
        pytest.param(
            "repository: owner/repo\nsite_url: https://owner.github.io/repo/\nformts: [html]\n",
            3,
            "formts: unknown key",
            "did you mean 'formats'?",
            id="unknown key",
        ),
        pytest.param(
            "repository: owner/repo\npdf:\n  timeout: 60\n  chromuim: /usr/bin/chromium\n",
            4,
            "pdf.chromuim: unknown key",
            "did you mean 'chromium'?",
            id="unknown nested key",
        ),
        # A wrongly typed value: its key path, and the key's documentation (docs/configuration.md) as the hint.
        pytest.param(
            "repository: owner/repo\nsite_url: https://owner.github.io/repo/\nformats: [html, odt]\n",
            3,
            "formats[1]: 'odt': Input should be 'html', 'pdf', 'docx', 'jats' or 'latex'",
            "Output formats to build: html, pdf, docx (Word), jats (JATS XML) and latex (a LaTeX bundle).",
            id="wrongly typed value",
        ),
        pytest.param(
            "analyses:\n  demo:\n    notebook: analyses/demo.py\n    inputs: data.csv\n",
            4,
            "analyses.demo.inputs: Input should be a valid list",
            "Input files it reads; a change to any of them re-runs it.",
            id="wrongly typed analysis key",
        ),
    ],
)
def test_a_configuration_error_names_file_line_and_key_with_a_hint(project, config, line, message, hint):
    write_config(project, config)
    result = build(project, "html")
    lines = assert_failed(result, project, CONFIG_ERROR, "invalid configuration")
    assert f"{where(project, 'manuscript.yaml', line)}: {message}" in lines
    assert f"    hint: {hint}" in lines


def test_two_config_errors_are_both_reported(project):
    write_config(
        project,
        "repository: owner/repo\nsite_url: https://owner.github.io/repo/\nformts: [html]\npdf:\n  timeout: -1\n",
    )
    result = build(project, "html")
    lines = assert_failed(result, project, CONFIG_ERROR, "invalid configuration")
    assert f"{where(project, 'manuscript.yaml', 3)}: formts: unknown key" in lines
    assert f"{where(project, 'manuscript.yaml', 5)}: pdf.timeout: Input should be greater than 0" in lines
    assert result.stderr.count("error:") == 1


def test_two_content_errors_are_both_reported(project):
    replace_in(project / "content" / "metadata.yaml", "  - name: Ada Example", "  - nme: Ada Example")
    replace_in(project / "content" / "02.methods.md", "images/plot.svg", "images/missing-plot.svg")
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "invalid manuscript content")
    metadata_line = line_of(project / "content" / "metadata.yaml", "nme: Ada Example")
    image_line = line_of(project / "content" / "02.methods.md", "missing-plot.svg")
    assert f"{where(project, 'content/metadata.yaml', metadata_line)}: authors[0]: author has no 'name'" in lines
    assert f"{where(project, 'content/02.methods.md', image_line)}: image not found: images/missing-plot.svg" in lines


# --------------------------------------------------------------------------- content


def test_missing_image_names_file_line_and_path(project):
    methods = project / "content" / "02.methods.md"
    replace_in(methods, "images/plot.svg", "images/missing-plot.svg")
    line = line_of(methods, "images/missing-plot.svg")
    assert line == 12
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "invalid manuscript content")
    assert f"{where(project, 'content/02.methods.md', line)}: image not found: images/missing-plot.svg" in lines
    assert "    hint: paths are relative to content/" in lines


def test_empty_content_folder_is_a_clear_error(project):
    for section in (project / "content").glob("*.md"):
        section.unlink()
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "invalid manuscript content")
    assert f"{where(project, 'content')}: no manuscript sections found" in lines
    assert "    hint: add Markdown files named like 01.introduction.md" in lines


def test_missing_content_folder_is_a_clear_error(tmp_path):
    project = tmp_path / "bare"
    project.mkdir()
    write_config(project, "repository: owner/repo\n")
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "invalid manuscript content")
    assert f"{where(project, 'content')}: content folder not found" in lines


def test_undefined_template_variable_names_file_and_line(project):
    abstract = project / "content" / "01.abstract.md"
    replace_in(abstract, "Kernel methods remain", "{{ manubot.titel }} Kernel methods remain")
    line = line_of(abstract, "manubot.titel")
    assert line == 3
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "template error")
    assert (
        f"{where(project, 'content/01.abstract.md', line)}: undefined template variable 'titel' "
        "in {{ manubot.titel }}"
    ) in lines
    assert "    hint: guard optional values with '{% if x is defined %}'" in lines
    assert "✗ process" in result.stderr


def test_undefined_top_level_variable_suggests_close_name(project):
    abstract = project / "content" / "01.abstract.md"
    replace_in(abstract, "Kernel methods remain", "{{ manubt.date }} Kernel methods remain")
    result = build(project, "html")
    lines = assert_failed(result, project, CONTENT_ERROR, "template error")
    assert (
        f"{where(project, 'content/01.abstract.md', 3)}: undefined template variable 'manubt' in {{{{ manubt.date }}}}"
    ) in lines
    assert "    hint: did you mean 'manubot'?" in lines
