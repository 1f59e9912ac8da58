"""A pull request's content is untrusted: it must not run code, read files outside
``content/`` or get them published (docs/threat-model.md).

Each test plants one attack (or one kind of bad input) in a fixture project, runs the
real CLI, and asserts the exit code, the message with its ``file:line``, and that
nothing ran, was read or was published. The PDF printer's side of the same rule is
tested in test_untrusted_print.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import build, commit_all, line_of, run_cli
from test_analyses import cli as analyses_cli
from test_analyses import write_project as write_analyses_project

SECRET = "SECRET-3c9e1f-do-not-publish"


def published_text(root: Path) -> str:
    """Every byte the build left for readers, as text: output/ and webpage/."""
    chunks = []
    for folder in (root / "output", root / "webpage"):
        for path in folder.rglob("*") if folder.is_dir() else []:
            if path.is_file():
                chunks.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(chunks)


def add_section(root: Path, text: str, name: str = "05.attack.md") -> Path:
    path = root / "content" / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


# --- templates -----------------------------------------------------------------------------

ESCAPES = [
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ lipsum.__globals__['os'].popen('touch MARKER') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ manubot.__class__ }}",
    "{{ manubot.update({'x': 1}) }}",
    "{% set l = [] %}{% do l.append('x') %}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ range(10**7) | list }}",
    "{{ 'x' * 100000000 }}",
    "{{ 2 ** (10 ** 9) }}",
]


@pytest.mark.parametrize("attack", ESCAPES)
def test_templates_cannot_escape_the_sandbox(project: Path, attack: str):
    marker = project / "MARKER"
    section = add_section(project, "## Attack\n\nText.\n\n" + attack.replace("MARKER", str(marker)) + "\n")
    for command in (["check"], ["build", "--format", "html"]):
        result = run_cli(project, *command)
        assert result.returncode == 3, result.output
        assert "content/05.attack.md:5: refused by the template sandbox" in result.output, result.output
        assert "Traceback" not in result.output
    assert not marker.exists()
    assert not (project / "output" / "manuscript.md").exists()
    assert section.read_text(encoding="utf-8").endswith(attack.replace("MARKER", str(marker)) + "\n")


@pytest.mark.parametrize(
    "statement",
    [
        "{% include 'metadata.yaml' %}",
        "{% include '../.git/config' %}",
        "{% import '/etc/passwd' as x %}",
        "{% extends 'nope.md' %}",
    ],
)
def test_templates_include_only_sections(project: Path, statement: str):
    add_section(project, f"## A\n\n{statement}\n")
    result = run_cli(project, "check")
    assert result.returncode == 3, result.output
    assert "content/05.attack.md:3: template" in result.output and "not found" in result.output
    assert "accept only the file name of another section" in result.output
    assert "Traceback" not in result.output


def test_a_section_may_include_another_section(project: Path):
    add_section(project, "Shared sentence from a partial.\n", "80.partial.md")
    add_section(project, "## Uses\n\n{% include '80.partial.md' %}\n")
    assert build(project, "html").returncode == 0
    html = (project / "output" / "manuscript.html").read_text(encoding="utf-8")
    assert html.count("Shared sentence from a partial.") == 2


def test_manubot_templates_render_byte_identically(project: Path):
    """Variables, filters, if/for, set, loop controls and {## ##} comments as Manubot renders them."""
    from manubot.process.util import template_with_jinja2

    from livingreview.load.content import read_content
    from livingreview.render.process import render_sections

    add_section(
        project,
        """\
{## a comment ##}
{% for author in manubot.authors if author.name is defined -%}
{{ loop.index }}. {{ author.name | upper }}{% if not loop.last %},{% endif %}
{% if loop.index > 5 %}{% break %}{% endif %}
{%- endfor %}
{% set names = manubot.authors | map(attribute='name') | list %}{{ names | join('; ') }}
{{ manubot.date | default('no date') }} {{ "%.2f" | format(3.14159) }} {{ "{:.1f}".format(2.25) }}
{{ manubot.authors | selectattr('corresponding', 'defined') | map(attribute='initials') | first }}
{{ (manubot.authors | length) * 2 }} {{ 2 ** 8 }} {{ 'ab' * 3 }}
""",
    )
    assert build(project, "html").returncode == 0
    # The variables a real build gives the templates (Manubot's, from metadata.yaml and git).
    variables = json.loads((project / "output" / "variables.json").read_text(encoding="utf-8"))
    content = read_content(project / "content")
    ours = render_sections(content, variables)
    theirs = "\n\n".join(template_with_jinja2(s.text, variables) for s in content.sections) + "\n"
    assert ours == theirs


# --- files outside content/ ----------------------------------------------------------------


def test_content_cannot_show_files_outside_content(project: Path, secret: Path):
    git_config = project / ".git" / "config"
    escape = os.path.relpath(secret, project / "content")
    lines = {
        "absolute": f"![a]({secret})",
        "file url": f"![b](file://{secret})",
        "dotdot": f"![c]({escape})",
        "git": "![d](../.git/config)",
        "iframe": '<iframe src="../.git/config"></iframe>',
        "object": f'<object data="file://{secret}"></object>',
        "embed": f"<embed src='{escape}'>",
        "stylesheet": '<link rel="stylesheet" href="../.git/config">',
        "style attr": f'<div style="background: url(file://{secret})">x</div>',
        "style element": f"<style>\n@import '{escape}';\n</style>",
        "video": f'<video poster="{secret}"></video>',
        "srcset": f'<img srcset="images/plot.svg 1x, {escape} 2x">',
        "svg image": '<svg><image href="../.git/config"/></svg>',
        "remote": '<script src="https://example.org/x.js"></script>',
        "link to the machine": f"[here](file://{secret})",
    }
    body = "## Attack\n\n" + "\n\n".join(lines.values()) + '\n\nA `<iframe src="/etc/passwd">` in code is only text.\n'
    section = add_section(project, body)
    before = git_config.read_bytes()
    for command in (["check"], ["build"]):
        result = run_cli(project, *command)
        assert result.returncode == 3, result.output
        for name, line in lines.items():
            needle = line.splitlines()[-1] if name == "style element" else line
            if name == "style element":
                needle = "@import"
            assert f"content/05.attack.md:{line_of(section, needle)}:" in result.output, (name, result.output)
        assert "/etc/passwd" not in result.output
    assert SECRET not in published_text(project)
    assert not (project / "webpage").exists()
    assert git_config.read_bytes() == before


def test_symlinks_out_of_content_are_refused(project: Path, secret: Path):
    images = project / "content" / "images"
    (images / "leak.svg").symlink_to(secret)
    (images / "config.svg").symlink_to(project / ".git" / "config")
    section = add_section(project, "## Leak\n\n![leak](images/leak.svg)\n")
    for command in (["check"], ["build", "--format", "html"]):
        result = run_cli(project, *command)
        assert result.returncode == 3, result.output
        assert (
            f"content/05.attack.md:{line_of(section, 'leak.svg')}: image images/leak.svg is a symlink out of content/"
            in result.output
        )
        # Unreferenced ones too: copying images/ would publish their target.
        assert "content/images/config.svg: symlink to something outside content/" in result.output
    assert SECRET not in published_text(project)


def test_a_symlinked_section_out_of_content_is_never_read(project: Path, secret: Path):
    (project / "content" / "06.leak.md").symlink_to(secret)
    result = run_cli(project, "build", "--format", "html")
    assert result.returncode == 3
    assert "content/06.leak.md: symlink to something outside content/" in result.output
    assert SECRET not in result.output + published_text(project)


def test_symlinks_inside_content_and_percent_encoded_names_work(project: Path):
    images = project / "content" / "images"
    (images / "a b.svg").write_text((images / "plot.svg").read_text())
    (images / "alias.svg").symlink_to("plot.svg")
    add_section(project, "## Fine\n\n![spaced](images/a%20b.svg)\n\n![alias](images/alias.svg)\n")
    commit_all(project)
    result = build(project, "html")
    assert result.returncode == 0, result.output
    html = (project / "output" / "manuscript.html").read_text(encoding="utf-8")
    assert 'src="images/a%20b.svg"' in html
    assert (project / "output" / "images" / "a b.svg").is_file()


def test_metadata_cannot_point_pandoc_outside_content(project: Path, secret: Path):
    metadata = project / "content" / "metadata.yaml"
    metadata.write_text(
        metadata.read_text()
        + f'bibliography: [{secret}, .git/config, content/refs.json]\nheader-includes: \'<link rel="stylesheet" href="../.git/config">\'\n'
    )
    result = run_cli(project, "check")
    assert result.returncode == 3, result.output
    assert f"content/metadata.yaml:{line_of(metadata, 'bibliography')}: bibliography:" in result.output
    assert f"content/metadata.yaml:{line_of(metadata, 'header-includes')}: header-includes:" in result.output
    assert f"'{secret}' lies outside" in result.output and "'.git/config' lies outside" in result.output
    assert "'content/refs.json' lies outside" not in result.output


# --- where outputs go ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder, relation",
    [
        (".", "is the project folder"),
        ("content", "is the content folder"),
        ("content/out", "lies inside the content folder"),
        ("analyses/out", "lies inside analyses/"),
        (".git", "is .git"),
        (".git/out", "lies inside .git"),
        ("..", "contains the project folder"),
    ],
)
@pytest.mark.parametrize("key", ["output_dir", "site_dir"])
def test_outputs_never_overlap_sources(project: Path, key: str, folder: str, relation: str):
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + f"{key}: {folder}\n")
    for command in ("check", "build"):
        result = run_cli(project, command)
        assert result.returncode == 2, result.output
        assert f"manuscript.yaml:{line_of(config, key)}: {key}: '{folder}' {relation}" in result.output


def test_the_site_is_not_the_output_folder(project: Path):
    config = project / "manuscript.yaml"
    config.write_text(config.read_text() + "output_dir: build\nsite_dir: build/\n")
    result = run_cli(project, "check")
    assert result.returncode == 2, result.output
    assert (
        f"manuscript.yaml:{line_of(config, 'site_dir')}: site_dir: 'build' is the output folder (build)"
        in result.output
    )


# --- bad input gets a located error, not a traceback ---------------------------------------


def test_a_section_that_is_not_utf8(project: Path):
    (project / "content" / "05.latin1.md").write_bytes("## Cafe\n\nLine two.\n\nna\u00efve\n".encode("latin-1"))
    result = run_cli(project, "check")
    assert result.returncode == 3
    assert "content/05.latin1.md:5: not UTF-8 text (byte 0xef at offset 22)" in result.output
    assert "Traceback" not in result.output


def test_an_empty_metadata_file(project: Path):
    (project / "content" / "metadata.yaml").write_text("")
    for command in ("check", "build"):
        result = run_cli(project, command)
        assert result.returncode == 3, result.output
        assert "content/metadata.yaml:1: is empty" in result.output
        assert "Traceback" not in result.output


def test_a_typo_inside_an_analysis_suggests_that_analysis_keys(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    config = root / "manuscript.yaml"
    config.write_text(config.read_text().replace("inputs:", "inptus:"))
    result = analyses_cli(root, "check")
    assert result.returncode == 2
    assert f"manuscript.yaml:{line_of(config, 'inptus')}: analyses.demo.inptus: unknown key" in result.stderr
    assert "did you mean 'inputs'?" in result.stderr


def test_an_unknown_profile(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    for command in (["run", "--profile", "ful"], ["build", "--profile", "ful"], ["verify", "--profile", "ful"]):
        result = analyses_cli(root, *command)
        assert result.returncode == 2, result.stderr
        assert "command line: --profile ful: no analysis has a profile named 'ful'" in result.stderr
        assert "did you mean 'full'?" in result.stderr
    assert not (root / "output" / "analyses" / "demo").exists()


# --- check rejects what build rejects ------------------------------------------------------


def test_check_rejects_what_build_rejects(project: Path):
    section = add_section(
        project, "## Bad\n\nCites @doi:10.9999/missing.\n\nSays {{ manubot.date_lon }}.\n\n{% if %}\n"
    )
    result = run_cli(project, "check")
    assert result.returncode == 3
    assert "content/05.attack.md:7: template syntax error" in result.output
    section.write_text("## Bad\n\nSays {{ manubot.date_lon }}.\n")
    result = run_cli(project, "check")
    assert result.returncode == 3
    assert "content/05.attack.md:3: undefined template variable 'date_lon'" in result.output
    assert "did you mean 'date_long'" in result.output
    section.write_text("## Bad\n\nCites @doi:10.9999/missing.\n")
    result = run_cli(project, "check")
    assert result.returncode == 3
    assert "content/05.attack.md:3: unresolved citation @doi:10.9999/missing" in result.output
    section.write_text("## Bad\n\n![gone](images/gone.svg)\n")
    result = run_cli(project, "check")
    assert result.returncode == 3
    assert "content/05.attack.md:3: image not found: images/gone.svg" in result.output
    # check writes nothing: no output folder, no manuscript.
    assert not (project / "output").exists()


def test_check_rejects_invalid_csl_items(project: Path):
    references = project / "content" / "manual-references.json"
    items = json.loads(references.read_text())
    items[0]["author"] = "Smith, J."
    items[0]["issued"] = "2020"
    references.write_text(json.dumps(items, indent=2))
    result = run_cli(project, "check")
    assert result.returncode == 3
    item = items[0]["id"]
    line = line_of(references, f'"id": "{item}"')
    assert (
        f"content/manual-references.json:{line}: [0] {item}.author: invalid CSL: 'Smith, J.' is not of type 'array'"
        in result.output
    )
    assert f"[0] {item}.issued: invalid CSL" in result.output


def test_check_knows_each_analysis_recorded_keys(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    section = root / "content" / "01.results.md"
    section.write_text(section.read_text() + "\nAlso {{ demo.totl }}.\n")
    # Never run: no keys to check against, so check accepts any key of demo ...
    assert analyses_cli(root, "check").returncode == 0
    assert not (root / "output" / "analyses").exists()
    section.write_text(section.read_text().replace("{{ demo.totl }}", "{{ demo.total }}"))
    assert analyses_cli(root, "run").returncode == 0
    # ... and once it has results, their keys.
    section.write_text(section.read_text().replace("Also {{ demo.total }}", "Also {{ demo.totl }}"))
    result = analyses_cli(root, "check")
    assert result.returncode == 3
    assert f"content/01.results.md:{line_of(section, 'demo.totl')}: undefined template variable 'totl'" in result.stderr
    assert "did you mean 'total'?" in result.stderr


# --- integrity of results ------------------------------------------------------------------


def test_a_hand_edited_manifest_is_rerun_not_published(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    assert analyses_cli(root, "build").returncode == 0
    manifest_path = root / "output" / "analyses" / "demo" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    true_total = manifest["records"]["total"]["formatted"]
    manifest["records"]["total"]["formatted"] = "31,337.0"
    manifest["records"]["total"]["value"] = 31337.0
    manifest_path.write_text(json.dumps(manifest, indent=2))
    result = analyses_cli(root, "build")
    assert result.returncode == 0, result.stderr
    assert "demo [ci]: run (manifest.json was changed after the run)" in result.stderr
    html = (root / "output" / "manuscript.html").read_text()
    assert "31,337.0" not in html and true_total in html
    assert "31337" not in (root / "webpage" / "v" / "latest" / "values.json").read_text()


def test_values_json_is_the_same_on_every_run(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    manifest = root / "output" / "analyses" / "demo" / "manifest.json"
    assert analyses_cli(root, "build").returncode == 0
    published = json.loads((root / "webpage" / "v" / "latest" / "values.json").read_text())["demo"]["records"]
    first = json.loads(manifest.read_text())["records"]
    assert analyses_cli(root, "run", "--force").returncode == 0
    second = json.loads(manifest.read_text())["records"]
    # Cell ids follow the cell's place, so a re-run gives the same ids (and the same links).
    assert first == second == published
    assert {entry["cell_id"] for entry in first.values()} == {f"cell-{entry['cell']}" for entry in first.values()}


def test_a_result_from_a_dirty_tree_says_so_under_a_clean_permalink(tmp_path: Path):
    root = write_analyses_project(tmp_path / "p")
    section = root / "content" / "01.results.md"
    section.write_text(section.read_text() + "\nA sentence written before committing.\n")
    assert analyses_cli(root, "build").returncode == 0  # runs the analysis in a dirty tree
    dirty_manifest = json.loads((root / "output" / "analyses" / "demo" / "manifest.json").read_text())
    assert dirty_manifest["git"]["dirty"] is True
    base = dirty_manifest["git"]["commit"]
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=T", "-c", "user.email=t@e.org", "commit", "-qam", "prose"], check=True
    )
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = analyses_cli(root, "build")
    assert result.returncode == 0
    assert "demo [ci]: cached" in result.stderr
    html = (root / "webpage" / "v" / head / "manuscript.html").read_text()
    assert (
        f"computed in a working tree with uncommitted changes, based on commit {base[:12]}; "
        f"code, parameters and inputs identical at this version ({head[:12]})"
    ) in html
    assert "(dirty)" not in html
