"""The project configuration: ``manuscript.yaml`` read into one typed, validated schema.

Loading collects every problem (with key path, line and a "did you mean" for unknown
keys) and raises them together, before any build work starts.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from livingreview.util import yamlfile
from livingreview.util.errors import ConfigError, Location, Problem, ToolError, did_you_mean

CONFIG_NAME = "manuscript.yaml"
DEFAULT_SITE_DIR = "webpage"
DEFAULT_TIMEOUT = 1800  # seconds: half an hour bounds a stuck analysis in CI without cutting off real ones
# The profile every analysis has, even without a profiles entry, and the one that runs anywhere,
# even when listed in gpu_profiles.
CPU_PROFILE = "ci"

Renderer = Literal["lua", "rootstock"]
RENDERERS: tuple[str, ...] = get_args(Renderer)
# Overrides pandoc.renderer for a whole session without editing manuscript.yaml (the tests use it);
# the --renderer flag overrides both.
RENDERER_ENV = "LIVINGREVIEW_RENDERER"

# What a build can make: the page and its print (Chromium), and what pandoc writes from the
# same processed manuscript for co-authors (Word), PubMed Central (JATS XML) and journals
# (a LaTeX bundle).
Format = Literal["html", "pdf", "docx", "jats", "latex"]
FORMATS: tuple[str, ...] = get_args(Format)

UnresolvedPolicy = Literal["strict", "warn"]
UNRESOLVED_POLICIES: tuple[str, ...] = get_args(UnresolvedPolicy)
# What Manubot's loader reads itself; any other extension goes to pandoc-citeproc, which the
# build does not have, and would load nothing without an error.
REFERENCE_SUFFIXES = (".json", ".yaml")


class _Section(BaseModel):
    # Frozen: the command line's overrides are applied once, as the project loads, and every
    # stage then sees the same settings.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PandocConfig(_Section):
    renderer: Renderer = Field(
        "lua",
        description="How the HTML is made: 'lua' (the current pandoc with Lua filters) or 'rootstock' (rootstock's "
        "reference chain: pandoc 2.19.2 with the xnos filters and Manubot's cite filter).",
    )
    defaults: list[Path] = Field(
        default_factory=list,
        description="Extra pandoc defaults files, applied after the built-in ones (relative to the project).",
    )
    csl: Path | None = Field(None, description="CSL style for citations; the built-in numeric style if unset.")
    html_theme: Path | None = Field(
        None, description="HTML file included in <head> (CSS); the built-in theme if unset."
    )
    html_plugins: Path | None = Field(
        None, description="HTML file included at the end of <body> (scripts); the built-in plugins if unset."
    )


class PdfConfig(_Section):
    chromium: str | None = Field(None, description="Path or name of the Chromium executable; found on PATH if unset.")
    timeout: float = Field(180, gt=0, description="Seconds before PDF rendering is abandoned.")


class DocxConfig(_Section):
    reference_doc: Path | None = Field(
        None,
        description="A .docx inside the project whose styles (fonts, headings, captions, margins) the Word "
        "manuscript takes, as pandoc's --reference-doc; pandoc's own if unset.",
    )


class CitationsConfig(_Section):
    unresolved: UnresolvedPolicy = Field(
        "strict",
        description="A citation key no reference resolves: 'strict' fails the build (exit 3) naming where it is "
        "cited; 'warn' renders it as the key in bold with '?', lists the keys once as a warning, notes them on "
        "the published version and builds.",
    )
    references: list[Path] = Field(
        default_factory=list,
        description="Extra CSL JSON (.json) or CSL YAML (.yaml) reference files, relative to the project, used with "
        "content/manual-references*.json (which take precedence over them for the same id).",
    )


class ResultsConfig(_Section):
    store: str = Field(
        "git",
        description="Where complete analysis results are stored for other machines: 'git' (a branch of the "
        "remote, see branch and remote) or a folder path (a shared filesystem, a cluster's scratch).",
    )
    branch: str = Field("results", description="With store git: the branch that holds the entries.")
    remote: str = Field("origin", description="With store git: the remote whose branch it is.")
    fallback: Literal["fail", "ci"] = Field(
        "fail",
        description="When publish_profile is set and an analysis has no stored result for the current code: "
        "'fail' the build, or run it with the ci profile and mark it on the page and in version.json as not "
        "at publication scale.",
    )


class AnalysisConfig(_Section):
    notebook: Path = Field(
        description="Notebook under analyses/: Jupytext percent (.py), MyST (.md) or .ipynb; it needs a cell tagged 'parameters'."
    )
    inputs: list[Path] = Field(
        default_factory=list, description="Input files it reads; a change to any of them re-runs it."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the defaults in the notebook's parameters cell."
    )
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named parameter overrides, e.g. ci (fast) and full (publication)."
    )
    gpu_profiles: list[str] = Field(
        default_factory=list, description="Profiles that want a GPU (run smaller settings on CPU)."
    )
    timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds this analysis's whole notebook may run, with any profile, before its kernel is killed "
        "and it fails; executor.timeout if unset.",
    )
    profile_timeouts: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Seconds it may run with a given profile, e.g. {full: 7200}; overrides timeout for that profile.",
    )


class ExecutorConfig(_Section):
    kind: Literal["local", "dask"] = Field(
        "local",
        description="Where stale analyses run: 'local' (worker processes on this machine) or 'dask' (a Dask cluster).",
    )
    scheduler: str | None = Field(
        None,
        description="With kind dask: address of a running Dask scheduler (tcp://host:8786); "
        "unset: a LocalCluster of 'jobs' worker processes on this machine.",
    )
    retries: int = Field(
        2,
        ge=0,
        description="With kind dask: how many times an analysis whose worker died (or whose task raised) is "
        "run again on another worker before it fails; for an external scheduler, worker deaths follow "
        "the scheduler's own distributed.scheduler.allowed-failures.",
    )
    gpu_resource: str = Field(
        "GPU",
        description="With kind dask: the worker resource that marks a GPU; an analysis run with one of its "
        "gpu_profiles (other than ci) needs one unit of it.",
    )
    timeout: float = Field(
        DEFAULT_TIMEOUT,
        gt=0,
        description="Seconds an analysis's whole notebook may run (wall clock, wherever it runs) before its kernel "
        "is killed and it fails; analyses.<name>.timeout and .profile_timeouts override it.",
    )

    @model_validator(mode="after")
    def _scheduler_needs_dask(self) -> ExecutorConfig:
        if self.scheduler and self.kind != "dask":
            raise ValueError("a scheduler address needs kind: dask")
        return self


class Config(_Section):
    repository: str | None = Field(
        None,
        description="GitHub slug owner/name, used in the permalink stamp. Taken from the 'origin' remote if unset.",
    )
    site_url: str | None = Field(
        None,
        description="Base URL of the published site (ending in /); permalinks are <site_url>v/<commit>/.",
    )
    formats: list[Format] = Field(
        default_factory=lambda: ["html", "pdf"],  # type: ignore[arg-type]  # pydantic checks the literals
        description="Output formats to build: html, pdf, docx (Word), jats (JATS XML) and latex (a LaTeX bundle).",
    )
    content_dir: Path = Field(Path("content"), description="Folder with NN.name.md sections and metadata.yaml.")
    output_dir: Path = Field(Path("output"), description="Folder for generated files (git-ignored).")
    site_dir: Path = Field(
        Path(DEFAULT_SITE_DIR),
        description="Folder of the published site: v/<commit>/ per version, versions.html, index.html (git-ignored).",
    )
    notebook_pages: bool = Field(
        True,
        description="Publish each analysis's executed notebook as a web page (Jupyter Book) that its values link to; "
        "false: they link to the executed .ipynb, and builds skip Jupyter Book.",
    )
    pandoc: PandocConfig = Field(default_factory=PandocConfig)
    pdf: PdfConfig = Field(default_factory=PdfConfig)
    docx: DocxConfig = Field(default_factory=DocxConfig)
    citations: CitationsConfig = Field(default_factory=CitationsConfig)
    analyses: dict[str, AnalysisConfig] = Field(
        default_factory=dict, description="The analyses registry: name -> notebook, inputs, parameters, profiles."
    )
    profile: str = Field(CPU_PROFILE, description="Profile used when none is given on the command line.")
    publish_profile: str | None = Field(
        None,
        description="The profile whose results the site publishes, e.g. full: a build takes them from the results "
        "store instead of running them, and follows results.fallback when none matches.",
    )
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    environment: list[Path] = Field(
        default_factory=lambda: [Path("ci/requirements.lock")],
        description="Lock files of the analysis environment; a change re-runs every analysis.",
    )
    jobs: int | None = Field(
        None,
        ge=1,
        description="Analyses run at once (with executor kind dask and no scheduler: the LocalCluster's worker "
        "processes); the number of CPU cores if unset.",
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("analyses")
    @classmethod
    def _names(cls, value: dict[str, AnalysisConfig]) -> dict[str, AnalysisConfig]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(
                    f"analysis name {name!r} must be an identifier (letters, digits, _), as it is used as {{{{ {name}.key }}}}"
                )
        return value

    @field_validator("repository")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise ValueError(f"{value!r} is not an owner/name repository slug")
        return value

    @field_validator("site_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"https?://", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one format is needed")
        return list(dict.fromkeys(value))


def _resolve(loc: tuple) -> tuple[type[BaseModel], str | None]:
    """The deepest (sub)model of Config that ``loc`` reaches, and the documentation of its last key found.

    List indexes end the walk; the names of a mapping of models (analyses.<name>) are skipped.
    """
    model: type[BaseModel] = Config
    described = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            break
        described = field.description or described
        annotation = field.annotation
        if get_origin(annotation) is dict and parts:
            annotation = get_args(annotation)[1]
            parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model, described


def _problems(exc: ValidationError, data: Any, path: Path) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        line = yamlfile.line_of(data, loc)
        key = yamlfile.key_path(loc)
        if error["type"] == "extra_forbidden":
            allowed = list(_resolve(loc[:-1])[0].model_fields)
            hint = did_you_mean(str(loc[-1]), allowed, f"known keys: {', '.join(allowed)}")
            problems.append(Problem(Location(path, line, key), "unknown key", hint))
        else:
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "literal_error":
                message = f"{error['input']!r}: {message}"
            # The key's documentation (docs/configuration.md has the same text) says what it takes.
            problems.append(Problem(Location(path, line, key), message, _resolve(loc)[1]))
    return problems


def load_config(root: Path) -> Config:
    """Read ``root/manuscript.yaml``; a project without one gets the defaults."""
    path = root / CONFIG_NAME
    if not path.exists():
        return Config()
    try:
        data = yamlfile.load(path)
    except yamlfile.YamlSyntaxError as exc:
        raise ConfigError(exc.problem) from None
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(Problem(Location(path, 1), "must be a mapping of keys to values"))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data, path)) from None
    problems = (
        _folder_problems(config, root, data, path)
        + _reference_problems(config, root, data, path)
        + _reference_doc_problems(config, root, data, path)
    )
    if problems:
        raise ConfigError(problems)
    return config


def _folder_problems(config: Config, root: Path, data: Any, path: Path) -> list[Problem]:
    """Neither generated folder may overlap a source: a build would overwrite or publish it."""
    root = root.resolve()
    output = (root / config.output_dir).resolve()
    sources = {
        "the project folder": root,
        f"the content folder ({config.content_dir})": (root / config.content_dir).resolve(),
        "analyses/": root / "analyses",
        ".git": root / ".git",
    }
    problems = []
    for key, folder, hint in (
        ("output_dir", output, "output"),
        ("site_dir", (root / config.site_dir).resolve(), DEFAULT_SITE_DIR),
    ):
        relation = _overlap(folder, root, sources)
        if relation is None and key == "site_dir" and folder == output:
            relation = f"is the output folder ({config.output_dir})"
        if relation:
            problems.append(
                Problem(
                    Location(path, yamlfile.line_of(data, [key]), key),
                    f"{str(getattr(config, key))!r} {relation}",
                    f"use a folder of its own, such as '{hint}'",
                )
            )
    return problems


def _reference_problems(config: Config, root: Path, data: Any, path: Path) -> list[Problem]:
    """Each citations.references file must be a readable CSL list inside the project.

    Checked here, not by the build, so that a wrong path fails every command at its line in
    manuscript.yaml; the items' CSL fields are checked with the manual references (load/content.py).
    """
    root = root.resolve()
    problems = []
    for index, relative in enumerate(config.citations.references):
        loc: list[str | int] = ["citations", "references", index]
        where = Location(path, yamlfile.line_of(data, loc), yamlfile.key_path(loc))
        message, hint = _reference_problem(root, relative)
        if message:
            problems.append(Problem(where, f"{str(relative)!r} {message}", hint))
    return problems


def _reference_problem(root: Path, relative: Path) -> tuple[str | None, str | None]:
    """Why the reference file ``relative`` cannot be used, with a hint; (None, None) if it can."""
    inside = "give a path inside the project, relative to its folder"
    if relative.is_absolute():
        return "is an absolute path", inside
    # resolve() follows symlinks, so a link inside the project that points out of it is caught too.
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        through_link = Path(os.path.normpath(root / relative)).is_relative_to(root)
        return ("leads out of the project through a symlink" if through_link else "lies outside the project"), inside
    if target.suffix not in REFERENCE_SUFFIXES:
        return "is not a .json or .yaml file", "give CSL JSON (.json) or CSL YAML (.yaml) references"
    if not target.is_file():
        return "not found", "create it, or remove it from the list"
    if target.suffix == ".json":
        try:
            items = json.loads(target.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError) as exc:
            detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            return f"is not valid JSON ({detail})", "give a JSON array of CSL items"
    else:
        try:
            items = yamlfile.load(target)
        except yamlfile.YamlSyntaxError as exc:
            return f"is not valid YAML ({exc.problem.location}: {exc.problem.message})", "give a list of CSL items"
    if not isinstance(items, list):
        return "is not a list of CSL items", 'give a list of items, each with an "id"'
    return None, None


def _reference_doc_problems(config: Config, root: Path, data: Any, path: Path) -> list[Problem]:
    """docx.reference_doc must be a Word document inside the project: pandoc reads it on every build."""
    relative = config.docx.reference_doc
    if relative is None:
        return []
    root = root.resolve()
    loc = ["docx", "reference_doc"]
    where = Location(path, yamlfile.line_of(data, loc), yamlfile.key_path(loc))
    inside = "give a path inside the project, relative to its folder, e.g. ci/reference.docx"
    target = (root / relative).resolve()
    message, hint = None, inside
    if relative.is_absolute():
        message = "is an absolute path"
    elif not target.is_relative_to(root):
        through_link = Path(os.path.normpath(root / relative)).is_relative_to(root)
        message = "leads out of the project through a symlink" if through_link else "lies outside the project"
    elif target.suffix.lower() != ".docx":
        message, hint = "is not a .docx file", "give a Word document (.docx) whose styles the manuscript should take"
    elif not target.is_file():
        message, hint = (
            "not found",
            "create it (pandoc -o custom.docx --print-default-data-file reference.docx), or remove the key",
        )
    elif not zipfile.is_zipfile(target):
        message, hint = "is not a Word document (not a zip archive)", "save it from Word or LibreOffice as .docx"
    return [Problem(where, f"{str(relative)!r} {message}", hint)] if message else []


def _overlap(folder: Path, root: Path, sources: dict[str, Path]) -> str | None:
    """How ``folder`` overlaps the first source it does ("is the project folder", ...), or None."""
    for name, source in sources.items():
        if folder == source or source.is_relative_to(folder) or (source != root and folder.is_relative_to(source)):
            relation = "is" if folder == source else "contains" if source.is_relative_to(folder) else "lies inside"
            return f"{relation} {name}"
    return None


@dataclass(frozen=True)
class Overrides:
    """What the command line sets over manuscript.yaml (None: not given)."""

    renderer: str | None = None
    executor: str | None = None
    scheduler: str | None = None
    unresolved_citations: str | None = None
    fallback: str | None = None

    def apply(self, config: Config) -> Config:
        """``config`` with these settings, and LIVINGREVIEW_RENDERER's, in place of the file's."""
        renderer = self.renderer or _environment_renderer()
        if renderer:
            config = config.model_copy(update={"pandoc": config.pandoc.model_copy(update={"renderer": renderer})})
        if self.fallback:
            config = config.model_copy(
                update={"results": config.results.model_copy(update={"fallback": self.fallback})}
            )
        if self.unresolved_citations:
            citations = config.citations.model_copy(update={"unresolved": self.unresolved_citations})
            config = config.model_copy(update={"citations": citations})
        if self.executor or self.scheduler:
            config = config.model_copy(update={"executor": self._executor(config.executor)})
        return config

    def _executor(self, config: ExecutorConfig) -> ExecutorConfig:
        if self.scheduler and self.executor == "local":
            raise ConfigError(
                Problem(Location("command line", key="--scheduler"), "a scheduler address needs --executor dask")
            )
        if self.scheduler:
            return config.model_copy(update={"kind": "dask", "scheduler": self.scheduler})
        return config.model_copy(
            update={"kind": self.executor, "scheduler": config.scheduler if self.executor == "dask" else None}
        )


def _environment_renderer() -> str | None:
    name = os.environ.get(RENDERER_ENV, "").strip().lower()
    if name and name not in RENDERERS:
        raise ToolError(f"{RENDERER_ENV}={name!r} is not a renderer", f"use one of: {', '.join(RENDERERS)}")
    return name or None
