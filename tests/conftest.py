"""Fixture projects for driving the real ``livingreview`` CLI end to end.

Every test builds a small Manubot-style project in a temporary folder and runs
``python -m livingreview -C <project> build ...`` as a subprocess. Nothing here
touches the repository's own ``content/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The tests that compute with torch do so in the pytest process: its OpenMP threads must
# not spin while the other pytest-xdist worker has the cores (the build sets the same for
# its kernels). Read once, when torch loads, so set before any test module imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Git identity and a config that ignores the developer's ~/.gitconfig, so the
# fixture commit is the same on every machine and never tries to sign.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fixture Author",
    "GIT_AUTHOR_EMAIL": "fixture@example.org",
    "GIT_COMMITTER_NAME": "Fixture Author",
    "GIT_COMMITTER_EMAIL": "fixture@example.org",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

REPOSITORY = "owner/repo"
SITE_URL = "https://owner.github.io/repo/"
TITLE = "Fixture Review of Kernels"

MANUSCRIPT_YAML = f"""\
repository: {REPOSITORY}
site_url: {SITE_URL}
"""

METADATA_YAML = f"""\
---
title: "{TITLE}"
keywords:
  - kernels
  - living review
lang: en-US
authors:
  - name: Ada Example
    initials: AE
    orcid: 0000-0002-1825-0097
    github: ada-example
    affiliations:
      - Department of Statistics, Example University
  - name: Grace Sample
    initials: GS
    orcid: 0000-0001-5109-3700
    github: grace-sample
    email: grace@example.org
    affiliations:
      - Department of Computer Science, Sample Institute
    corresponding: true
"""

# Modelled on Manubot rootstock's content/00.front-matter.md: the same Jinja
# constructs (comments, appveyor/permalink branches, truncate, date comparison,
# the author loop with has_ids, and the corresponding-author select/max).
FRONT_MATTER = """\
{## Template to insert build date and source ##}

<small><em>
This manuscript
{% if manubot.ci_source is defined and manubot.ci_source.provider == "appveyor" -%}
([permalink]({{manubot.ci_source.artifact_url}}))
{% elif manubot.html_url_versioned is defined -%}
([permalink]({{manubot.html_url_versioned}}))
{% endif -%}
was automatically generated
{% if manubot.ci_source is defined -%}
from [{{manubot.ci_source.repo_slug}}@{{manubot.ci_source.commit | truncate(length=7, end='', leeway=0)}}](https://github.com/{{manubot.ci_source.repo_slug}}/tree/{{manubot.ci_source.commit}})
{% endif -%}
on {{manubot.generated_date_long}}.
</em></small>

{% if manubot.date_long != manubot.generated_date_long -%}
Published: {{manubot.date_long}}
{% endif %}

## Authors

{## Template for listing authors ##}

{% for author in manubot.authors %}
+ **{{author.name}}**
  {%- if author.corresponding is defined and author.corresponding == true -%}^[✉](#correspondence)^{%- endif -%}
  <br>
  {%- set has_ids = false %}
  {%- if author.orcid is defined and author.orcid is not none %}
    {%- set has_ids = true %}
    ![ORCID icon](images/orcid.svg){.inline_icon width=16 height=16}
    [{{author.orcid}}](https://orcid.org/{{author.orcid}})
  {%- endif %}
  {%- if author.github is defined and author.github is not none %}
    {%- set has_ids = true %}
    · [{{author.github}}](https://github.com/{{author.github}})
  {%- endif %}
  {%- if has_ids %}
  <br>
  {%- endif %}
  <small>
  {%- if author.affiliations is defined and author.affiliations|length %}
     {{author.affiliations | join('; ')}}
  {%- endif %}
  </small>
{% endfor %}

::: {#correspondence}
✉ — Correspondence possible via {% if manubot.ci_source is defined -%}[GitHub Issues](https://github.com/{{manubot.ci_source.repo_slug}}/issues){% else %}GitHub Issues{% endif %}
{% if manubot.authors|map(attribute='corresponding')|select|max -%}
or email to
{% for author in manubot.authors|selectattr("corresponding") -%}
{{ author.name }} \\<{{ author.email }}\\>{{ "," if not loop.last else "." }}
{% endfor %}
{% endif %}
:::
"""

ABSTRACT = """\
## Abstract {.page_break_before}

Kernel methods remain a compact lens on modern learning systems.
This fixture review exercises citations, equations, figures and tables.
"""

FILLER = (
    "Kernel machines compare examples through an inner product in a feature space, "
    "and the representer theorem keeps every solution inside the span of the data. "
    "Random features, the neural tangent kernel and in-context learning all revisit "
    "this picture from different directions, which is why a living review of the "
    "area needs to be rebuilt whenever a new result appears."
)

# Line numbers matter: tests/test_errors.py points at lines of this file.
METHODS = (
    """\
## Methods

Linear kernels were studied early [@doi:10.1000/xyz123].
Recent work revisits them @arxiv:2411.08870, as does a classic text [@smith2020].

The linear kernel is

$$ k(x,x') = \\langle x, x' \\rangle $$ {#eq:kernel}

Equation @eq:kernel is the simplest positive definite kernel.

![A figure caption](images/plot.svg){#fig:plot}

Figure @fig:plot shows the kernel values, and Table @tbl:results lists them.

| Kernel | Score |
|--------|------:|
| linear | 0.91  |
| rbf    | 0.95  |

Table: Results. {#tbl:results}

### Discussion

"""
    + "\n\n".join([FILLER] * 12)
    + "\n"
)

BACK_MATTER = """\
## References {.page_break_before}

<!-- Explicitly insert bibliography here -->
<div id="refs"></div>
"""

REFERENCES = [
    {
        "id": "doi:10.1000/xyz123",
        "type": "article-journal",
        "title": "Linear Kernels in Practice",
        "author": [{"family": "Lovelace", "given": "Ada"}],
        "container-title": "Journal of Examples",
        "issued": {"date-parts": [[2019, 5, 1]]},
        "DOI": "10.1000/xyz123",
    },
    {
        "id": "arxiv:2411.08870",
        "type": "manuscript",
        "title": "In-Context Learning as Kernel Regression",
        "author": [{"family": "Hopper", "given": "Grace"}],
        "issued": {"date-parts": [[2024, 11, 13]]},
        "URL": "https://arxiv.org/abs/2411.08870",
    },
    {
        "id": "smith2020",
        "type": "book",
        "title": "A Classic Text on Reproducing Kernels",
        "author": [{"family": "Smith", "given": "Jane"}],
        "publisher": "Example Press",
        "issued": {"date-parts": [[2020]]},
    },
]

ORCID_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16" width="16" height="16">
  <circle cx="8" cy="8" r="8" fill="#a6ce39"/>
  <text x="8" y="11" font-size="8" text-anchor="middle" fill="#fff">iD</text>
</svg>
"""

PLOT_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 100" width="400" height="200">
  <rect x="10" y="40" width="40" height="60" fill="#1a5fb4"/>
  <rect x="70" y="20" width="40" height="80" fill="#26a269"/>
  <line x1="0" y1="100" x2="200" y2="100" stroke="#000"/>
</svg>
"""

SECTIONS = {
    "00.front-matter.md": FRONT_MATTER,
    "01.abstract.md": ABSTRACT,
    "02.methods.md": METHODS,
    "90.back-matter.md": BACK_MATTER,
}


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` with the fixture identity; return stripped stdout."""
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return done.stdout.strip()


def commit_all(root: Path, message: str = "Fixture manuscript") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--no-gpg-sign", "-m", message)
    return git(root, "rev-parse", "HEAD")


def write_project(root: Path, *, commit: bool = True) -> Path:
    """Write a minimal valid project into ``root`` (and commit it as a git repo)."""
    content = root / "content"
    (content / "images").mkdir(parents=True, exist_ok=True)
    (root / "manuscript.yaml").write_text(MANUSCRIPT_YAML, encoding="utf-8")
    (root / ".gitignore").write_text("/output/\n/webpage/\n", encoding="utf-8")
    (content / "metadata.yaml").write_text(METADATA_YAML, encoding="utf-8")
    for name, text in SECTIONS.items():
        (content / name).write_text(text, encoding="utf-8")
    (content / "manual-references.json").write_text(json.dumps(REFERENCES, indent=2) + "\n", encoding="utf-8")
    (content / "images" / "orcid.svg").write_text(ORCID_SVG, encoding="utf-8")
    (content / "images" / "plot.svg").write_text(PLOT_SVG, encoding="utf-8")
    if commit:
        git(root, "init", "-q", "-b", "main")
        commit_all(root)
    return root


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(project: Path, *args: str, timeout: float = 300) -> Result:
    """Run ``python -m livingreview -C project ARGS`` as a subprocess."""
    env = {**os.environ, **GIT_ENV, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    env.pop("GITHUB_ACTIONS", None)
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def build(project: Path, *formats: str) -> Result:
    """``livingreview build`` with ``--format`` for each of ``formats`` (none: the configured ones)."""
    args = ["build"]
    for fmt in formats:
        args += ["--format", fmt]
    return run_cli(project, *args)


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh, committed, valid project (not yet built)."""
    return write_project(tmp_path / "project")


@dataclass
class Built:
    """A project built once, with the repository state recorded just before the build."""

    root: Path
    result: Result
    head: str
    content_before: dict[str, str]
    git_before: dict[str, str]

    @property
    def html(self) -> str:
        return (self.root / "output" / "manuscript.html").read_text(encoding="utf-8")

    @property
    def pdf(self) -> Path:
        return self.root / "output" / "manuscript.pdf"


def git_state(root: Path) -> dict[str, str]:
    """Everything about the repository that a build must not change."""
    return {
        "head": git(root, "rev-parse", "HEAD"),
        "count": git(root, "rev-list", "--count", "--all"),
        "remotes": git(root, "remote", "-v"),
        "branches": git(root, "branch", "--list", "--all"),
        "tags": git(root, "tag", "--list"),
        "status": git(root, "status", "--porcelain", "--untracked-files=all", "--ignored=no"),
        "config": git(root, "config", "--local", "--list"),
        "stash": git(root, "stash", "list"),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A valid project built once (HTML and PDF), shared by read-only tests."""
    root = write_project(tmp_path_factory.mktemp("built") / "project")
    content_before = tree_hashes(root / "content")
    git_before = git_state(root)
    result = build(root, "html", "pdf")
    assert result.returncode == 0, result.output
    return Built(root, result, git_before["head"], content_before, git_before)


# pytest-xdist hands out whole files (--dist loadfile) in collection order
# (--no-loadscope-reorder): the files that take longest go first, so that the short
# ones fill the end instead of a long one starting last. Seconds per file, 3 workers
# on 2 cores: the guides ~80 and ~45 (they install a project's venv), Appendix A's
# shared run ~35, the rest 45-150 spread over many tests.
SLOWEST_FILES = (
    "test_new.py",
    "test_migration.py",
    "test_appendix_a.py",
    "test_untrusted.py",
    "test_store.py",
    "test_logs.py",
    "test_analyses.py",
    "test_processes.py",
    "test_dask.py",
    "test_freshness.py",
    "test_site.py",
    "test_verify.py",
    "test_browser.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FILES)))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    # Many tests wait on their subprocesses (notebooks that sleep until a time limit, a
    # server, Chromium, git): one worker more than there are cores keeps the cores busy.
    return len(os.sched_getaffinity(0)) + 1
