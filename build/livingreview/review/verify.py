"""``livingreview verify``: re-run the analyses from scratch and check the published numbers.

A reviewer's question is "do the numbers in this version still come out of its code?".
Answering it means three steps, each in its own function below:

1. *Published values* (``load_published``): the current build's manifests in
   ``output/analyses/`` by default, or a version of the site (``webpage/v/<version>/
   values.json``), or a ``values.json`` / ``manifest.json`` file named by path.
2. *Re-run* (``reproduce``): the project's files are copied into a temporary folder and
   every selected analysis is executed there with ``force=True`` and an empty cache, by
   the same plan and execute stages as a build. Each analysis runs with the profile it
   was published with, unless ``--profile`` says otherwise. Without a GPU, a profile
   listed in ``gpu_profiles`` falls back to ``ci``, and the report says so.
3. *Comparison* (``compare_records``), record by record, with each record's own rule:

   - floats: ``|reproduced - published| <= tolerance``, or, for a relative tolerance,
     ``|reproduced - published| / |published| <= tolerance``. A float recorded without a
     tolerance must agree to 1e-12 relative, and its row says so;
   - ints, strings and bools: exactly equal, with the same type;
   - tables: same columns and rows, float cells by the table's tolerance (1e-12
     relative if none), every other cell exactly;
   - figures: their file hashes are reported as information, never as a failure: the
     same plot gives different bytes with other fonts, libraries or machines;
   - a key published but not recorded by the re-run, or recorded but not published,
     fails; so does an analysis present on one side only.

Profiles. Values computed at another size (say ``ci`` against a ``full`` publication)
differ legitimately, so they are not compared: their rows read ``skipped (profile ci vs
full)``. The keys and types are still checked. Such rows fail the verification, which
therefore never passes on numbers it did not compare, unless ``--allow-profile-fallback``
accepts them; either way they are listed.

The result is a table on the terminal and ``output/verify/report.json`` and
``report.html``; the re-run's executed notebooks and figures are kept in
``output/verify/analyses/``. Any failing row raises ``VerificationError`` (exit 6).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from livingreview.execution.plan import Selection, check_names, check_profile, device_class
from livingreview.execution.run import run_analyses
from livingreview.load.config import CONFIG_NAME, CPU_PROFILE
from livingreview.load.project import RESOURCES, Project
from livingreview.load.results import (
    AnalysisValues,
    FigureRecord,
    Manifest,
    Record,
    TableRecord,
    ValueRecord,
    all_manifests,
    load_manifest,
    parse_manifest,
    parse_records,
    parse_values,
    read_manifest,
    results_dir,
)
from livingreview.publish.site import version_folders
from livingreview.util import atomic
from livingreview.util.errors import (
    AnalysisError,
    ConfigError,
    ContentError,
    Location,
    Problem,
    VerificationError,
    did_you_mean,
)
from livingreview.util.gitinfo import git_output
from livingreview.util.progress import Progress
from livingreview.util.templates import page_templates
from livingreview.util.words import counted

# A float recorded without a tolerance must agree to this relative precision.
DEFAULT_RELATIVE = 1e-12
# A version may be named by a prefix of its commit, as git allows, from this length on.
MIN_PREFIX = 4

PASS, FAIL, SKIPPED, INFO = "pass", "fail", "skipped", "info"

FIGURE_NOTE = "informational: figure bytes change with fonts, libraries and machines"


# --------------------------------------------------------------------------- published values


@dataclass
class PublishedValues:
    """The values a re-run is compared with, and where they came from."""

    source: str  # for people: "output/analyses (current build)", "webpage/v/<sha>/values.json", ...
    version: str | None  # the site version's name, when one was named
    analyses: dict[str, AnalysisValues]
    files: dict[str, dict[str, str]]  # name -> {relative file: sha256}, where known
    single: bool = False  # a single manifest.json: only its analysis is in scope


def site_versions(project: Project) -> list[Path]:
    """The version folders of ``webpage/v/`` (not ``latest``, ``freeze`` or staging folders)."""
    return version_folders(project.site_dir)


def find_version(project: Project, name: str) -> Path | None:
    """The folder of site version ``name``: a full name, ``latest``, or a unique commit prefix.

    None when nothing matches; a prefix that matches several versions is an error.
    """
    versions = project.site_dir / "v"
    if "/" in name or not name:
        return None
    if name == "latest" and (versions / name).is_symlink():
        return (versions / name).resolve()
    folders = site_versions(project)
    exact = [f for f in folders if f.name == name]
    if exact:
        return exact[0]
    matches = [f for f in folders if len(name) >= MIN_PREFIX and f.name.startswith(name.lower())]
    if len(matches) > 1:
        raise ConfigError(
            Problem(
                Location(f"{project.config.site_dir}/v"),
                f"{name!r} names several versions: {', '.join(f.name[:12] for f in matches)}",
                "give more characters of the commit",
            )
        )
    return matches[0] if matches else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContentError(Problem(Location(path), f"cannot read: {exc.strerror}")) from None
    except json.JSONDecodeError as exc:
        raise ContentError(Problem(Location(path, exc.lineno), f"invalid JSON: {exc.msg}")) from None


def _from_values_file(path: Path, display: str, version: str | None) -> PublishedValues:
    data = _read_json(path)
    try:
        if isinstance(data, dict) and "records" in data and "analysis" in data:
            # A manifest.json, sealed or not: one analysis, with its file hashes.
            manifest = parse_manifest(data)
            name = manifest.analysis
            return PublishedValues(display, version, {name: manifest.as_values()}, {name: manifest.files}, single=True)
        analyses = parse_values(data)
    except ValidationError as exc:
        raise ContentError(
            Problem(
                Location(path),
                "not a values.json ({analysis: {provenance, records}}) nor an analysis manifest.json",
                _first_error(exc),
            )
        ) from None
    files = {}
    for name in analyses:
        # A site version keeps each analysis's manifest, with its file hashes, next to values.json.
        published = read_manifest(path.parent / "analyses" / name)
        if published is not None:
            files[name] = published.files
    return PublishedValues(display, version, analyses, files)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    where = ".".join(str(part) for part in errors[0]["loc"]) or "top level"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {errors[0]['msg']}{more}"


def load_published(project: Project, against: str | None = None) -> PublishedValues:
    """The published values: the current build, a site version, or a values/manifest file."""
    if against is None:
        manifests = all_manifests(project)
        if not manifests:
            raise ContentError(
                Problem(
                    Location(os.path.relpath(project.output_dir / "analyses", Path.cwd())),
                    "no analysis results to verify against",
                    "run 'livingreview build' first, or name a published version with --against",
                )
            )
        return PublishedValues(
            f"{project.config.output_dir}/analyses (current build)",
            None,
            {name: m.as_values() for name, m in manifests.items()},
            {name: m.files for name, m in manifests.items()},
        )
    path = Path(against)
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else project.root / path
    if path.is_file():
        return _from_values_file(path, against, None)
    folder = find_version(project, against)
    if folder is None:
        names = [f.name for f in site_versions(project)]
        shown = ", ".join(n[:12] for n in names) or "none (run 'livingreview build' to publish one)"
        candidates = names + (["latest"] if names else [])
        raise ConfigError(
            Problem(
                Location("command line", key=f"--against {against}"),
                f"neither a published version under {project.config.site_dir}/v/ nor a values file",
                did_you_mean(against, candidates, f"versions: {shown}"),
            )
        )
    values = folder / "values.json"
    if not values.is_file():
        raise ContentError(
            Problem(
                Location(os.path.relpath(values, Path.cwd())),
                "this version has no values.json",
                "it was published without analyses, or by another tool",
            )
        )
    return _from_values_file(values, f"{project.config.site_dir}/v/{folder.name}/values.json", folder.name)


# --------------------------------------------------------------------------- comparison


@dataclass
class Row:
    """One line of the report: a record compared, or an analysis that could not be."""

    analysis: str
    key: str  # "*" for a row about the whole analysis
    kind: str  # float, int, str, bool, table, figure, analysis
    published: str
    reproduced: str
    difference: str
    tolerance: str
    verdict: str  # pass, fail, skipped, info
    reason: str
    published_value: Any = None
    reproduced_value: Any = None

    @property
    def name(self) -> str:
        return f"{self.analysis}.{self.key}" if self.key != "*" else self.analysis

    @property
    def label(self) -> str:
        """The verdict as shown: ``pass``, ``FAIL``, ``skipped (profile ci vs full)``, ..."""
        if self.verdict == FAIL:
            return "FAIL"
        if self.verdict == SKIPPED:
            return f"skipped ({self.reason.split(': ', 1)[0]})"
        if self.verdict == INFO:
            return "info"
        return "pass"


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.12g}"
    if isinstance(value, list):
        return f"table of {counted(len(value), 'row')}"
    return str(value)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tolerance(record: ValueRecord | TableRecord) -> tuple[float, bool, str]:
    """(tolerance, relative?, label) of a float record or table."""
    tolerance = record.tolerance
    if tolerance is None:
        return DEFAULT_RELATIVE, True, f"{DEFAULT_RELATIVE:g} rel (none recorded)"
    relative = record.relative
    return float(tolerance), relative, f"{float(tolerance):g} {'rel' if relative else 'abs'}"


def _distance(published: float, reproduced: float, relative: bool) -> float:
    delta = abs(reproduced - published)
    if not relative or delta == 0:
        return delta
    return delta / abs(published) if published != 0 else math.inf


def _compare_value(analysis: str, key: str, pub: ValueRecord, rep: Record) -> Row:
    kind = pub.type
    # Whatever the types, as recorded: the type check below is what says they are comparable.
    old: Any = pub.value
    new: Any = rep.value
    row = Row(analysis, key, kind, _show(old), _show(new), "", "exact", PASS, "equal", old, new)
    if not isinstance(rep, ValueRecord) or rep.type != kind:
        row.verdict, row.reason = FAIL, f"type changed: {kind} → {rep.type}"
        return row
    if kind == "float":
        tolerance, relative, row.tolerance = _tolerance(pub)
        distance = _distance(float(old), float(new), relative)
        row.difference = (f"{new - old:+.3g}" + (f" ({distance:.3g} rel)" if relative else "")) if new != old else "0"
        if distance <= tolerance:
            row.reason = "within tolerance" if distance else "equal"
        else:
            scale = "relative " if relative else ""
            row.verdict = FAIL
            row.reason = f"differs by {scale}{distance:.3g}, beyond the tolerance {tolerance:g}"
        return row
    if kind == "int":
        row.difference = (f"{new - old:+d}" if new != old else "0") if _is_number(old) and _is_number(new) else ""
    if old != new:
        row.verdict, row.reason = FAIL, "differs (compared exactly)"
        row.difference = row.difference or "differs"
    return row


def _compare_table(analysis: str, key: str, pub: TableRecord, rep: Record) -> Row:
    old, new = pub.value, rep.value or []
    tolerance, relative, label = _tolerance(pub)
    row = Row(analysis, key, "table", _show(old), _show(new), "", f"{label} (float cells)", PASS, "equal", old, new)
    if not isinstance(rep, TableRecord):
        row.verdict, row.reason = FAIL, f"type changed: table → {rep.type}"
        return row
    new = rep.value
    if pub.columns != rep.columns:
        row.verdict, row.reason = FAIL, f"columns changed: {pub.columns} → {rep.columns}"
        return row
    if len(old) != len(new):
        row.verdict, row.reason = FAIL, f"{counted(len(old), 'row')} published, {len(new)} reproduced"
        return row
    worst = 0.0
    mismatches = []
    columns = list(pub.columns)
    for index, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        for column in columns + sorted((set(a) | set(b)) - set(columns)):
            x, y = a.get(column), b.get(column)
            if _is_number(x) and _is_number(y) and (isinstance(x, float) or isinstance(y, float)):
                distance = _distance(float(x), float(y), relative)
                worst = max(worst, distance)
                if distance > tolerance:
                    mismatches.append(f"row {index}, {column}: {_show(x)} → {_show(y)}")
            elif x != y or type(x) is not type(y) and (isinstance(x, bool) or isinstance(y, bool)):
                mismatches.append(f"row {index}, {column}: {_show(x)} → {_show(y)}")
    row.difference = f"max {worst:.3g}" + (" rel" if relative else "")
    if mismatches:
        row.verdict = FAIL
        more = f" (and {len(mismatches) - 3} more)" if len(mismatches) > 3 else ""
        differ = "differs" if len(mismatches) == 1 else "differ"
        row.reason = f"{counted(len(mismatches), 'cell')} {differ}: " + "; ".join(mismatches[:3]) + more
    elif worst:
        row.reason = "within tolerance"
    return row


def _compare_figure(
    analysis: str, key: str, pub: FigureRecord, rep: Record, pub_files: dict[str, str] | None, rep_files: dict[str, str]
) -> Row:
    names = sorted(set(pub.files.values()) | set(rep.files.values() if isinstance(rep, FigureRecord) else []))
    svg = next((n for n in names if n.endswith(".svg")), names[0] if names else "")
    old = (pub_files or {}).get(svg)
    new = rep_files.get(svg)
    row = Row(analysis, key, "figure", (old or "—")[:8], (new or "—")[:8], "", "—", INFO, FIGURE_NOTE)
    if pub_files is None or not any(n in pub_files for n in names):
        row.difference = "no published hashes"
        return row
    changed = [n for n in names if pub_files.get(n) != rep_files.get(n)]
    row.difference = ("changed: " + ", ".join(changed)) if changed else "identical"
    return row


def compare_records(
    analysis: str,
    published: Mapping[str, Record | Mapping[str, Any]],
    reproduced: Mapping[str, Record | Mapping[str, Any]],
    published_files: dict[str, str] | None = None,
    reproduced_files: dict[str, str] | None = None,
    profiles: tuple[str, str] | None = None,
) -> list[Row]:
    """One row per key of either side, from records or their JSON. ``profiles`` = (reproduced, published) when they differ."""
    pubs, reps = parse_records(published), parse_records(reproduced)
    rows = []
    for key in list(pubs) + [k for k in reps if k not in pubs]:
        if key not in reps:
            pub = pubs[key]
            rows.append(
                Row(
                    analysis,
                    key,
                    pub.type,
                    _show(pub.value),
                    "—",
                    "",
                    "",
                    FAIL,
                    "published, but the re-run did not record it",
                    pub.value,
                )
            )
            continue
        if key not in pubs:
            rep = reps[key]
            rows.append(
                Row(
                    analysis,
                    key,
                    rep.type,
                    "—",
                    _show(rep.value),
                    "",
                    "",
                    FAIL,
                    "recorded by the re-run, but not published",
                    None,
                    rep.value,
                )
            )
            continue
        pub, rep = pubs[key], reps[key]
        if isinstance(pub, FigureRecord):
            rows.append(_compare_figure(analysis, key, pub, rep, published_files, reproduced_files or {}))
            continue
        if isinstance(pub, TableRecord):
            row = _compare_table(analysis, key, pub, rep)
        else:
            row = _compare_value(analysis, key, pub, rep)
        if profiles and not row.reason.startswith("type changed"):
            # Values at another size legitimately differ: show them, judge nothing.
            row.verdict = SKIPPED
            row.reason = f"profile {profiles[0]} vs {profiles[1]}: values of different profiles are not compared"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- re-run


@dataclass
class AnalysisCheck:
    """How one analysis was re-run, and what the report must say about it."""

    name: str
    notebook: str
    published_profile: str | None
    profile: str
    notes: list[str] = field(default_factory=list)
    published_parameters: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    published_commit: str | None = None
    ran: bool = False

    @property
    def comparable(self) -> bool:
        return self.published_profile is None or self.published_profile == self.profile


def choose_profile(
    project: Project, name: str, published_profile: str | None, requested: str | None, gpu: bool
) -> tuple[str, list[str]]:
    """The profile to re-run ``name`` with, and the notes that explain the choice."""
    notes = []
    wanted = requested or published_profile or project.config.profile
    if requested and published_profile and requested != published_profile:
        notes.append(f"--profile {requested} was asked for; the values were published with profile {published_profile}")
    if wanted in project.config.analyses[name].gpu_profiles and not gpu:
        notes.append(
            f"no GPU on this machine: profile {wanted} wants one (gpu_profiles), so this re-run uses profile {CPU_PROFILE}"
        )
        wanted = CPU_PROFILE
    return wanted, notes


def _project_files(project: Project) -> list[str]:
    """The project's files as git sees them (tracked and untracked, not ignored), else the analyses' own."""
    listing = git_output(project.root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    generated = tuple(str(folder).rstrip("/") + "/" for folder in (project.config.output_dir, project.config.site_dir))
    if listing is not None:
        names = [n for n in listing.split("\0") if n and not n.startswith(generated)]
        return sorted({n for n in names if (project.root / n).is_file() or (project.root / n).is_symlink()})
    # Not a git checkout: what the plan and the kernels read.
    files = {CONFIG_NAME, *(str(p) for p in project.config.environment)}
    for config in project.config.analyses.values():
        folder = (project.root / config.notebook).parent
        files.update(str(p.relative_to(project.root)) for p in folder.rglob("*") if p.is_file())
        files.update(str(p) for p in config.inputs)
    return sorted(f for f in files if (project.root / f).is_file() and not f.startswith(generated))


def _workspace(project: Project, scratch: Path) -> Project:
    """A copy of the project in ``scratch``, with no output/: nothing cached can be reused."""
    for name in _project_files(project):
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.root / name, target, follow_symlinks=False)
    # The copy is not a git checkout: its results carry the provenance of the real one.
    return Project(root=scratch, config=project.config, checkout=project.checkout or project.root)


def reproduce(
    project: Project, progress: Progress, checks: list[AnalysisCheck], jobs: int | None, keep: Path
) -> tuple[dict[str, Manifest], list[Problem]]:
    """Run ``checks`` from scratch in a temporary copy; return their manifests and any failures.

    The fresh result folders are copied to ``keep``/<name>/ for the reviewer to open.
    """

    manifests: dict[str, Manifest] = {}
    problems: list[Problem] = []
    by_profile: dict[str, list[str]] = {}
    for check in checks:
        by_profile.setdefault(check.profile, []).append(check.name)
    with tempfile.TemporaryDirectory(prefix="livingreview-verify-") as scratch:
        workspace = _workspace(project, Path(scratch))
        progress.console.print(f"  re-running in a fresh copy of the project: {scratch}", highlight=False, markup=False)
        for profile, names in by_profile.items():
            try:
                run_analyses(workspace, progress, Selection(tuple(names), profile, force=True, jobs=jobs))
            except AnalysisError as exc:
                # The other analyses ran to the end and are still compared.
                problems.extend(exc.problems)
        for check in checks:
            folder = results_dir(workspace, check.name)
            manifest = load_manifest(folder)
            if manifest is None:
                continue
            manifests[check.name] = manifest
            atomic.replace_tree(folder, keep / check.name)
    return manifests, problems


# --------------------------------------------------------------------------- the whole check


@dataclass
class Report:
    published: PublishedValues
    checks: list[AnalysisCheck]
    rows: list[Row]
    allow_profile_fallback: bool
    device: dict[str, str]
    started: str
    problems: list[Problem] = field(default_factory=list)  # analyses that failed to run

    def failing(self) -> list[Row]:
        bad = {FAIL} if self.allow_profile_fallback else {FAIL, SKIPPED}
        return [row for row in self.rows if row.verdict in bad]

    @property
    def ok(self) -> bool:
        return not self.failing() and not self.problems

    def counts(self) -> dict[str, int]:
        return {verdict: sum(1 for r in self.rows if r.verdict == verdict) for verdict in (PASS, FAIL, SKIPPED, INFO)}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": self.started,
            "published": {"source": self.published.source, "version": self.published.version},
            "device": self.device,
            "allow_profile_fallback": self.allow_profile_fallback,
            "rules": {
                "float": "absolute or relative difference within the record's tolerance",
                "float_without_tolerance": f"relative difference within {DEFAULT_RELATIVE:g}",
                "int, str, bool": "exactly equal",
                "table": "same columns and rows; float cells within the table's tolerance, others exact",
                "figure": FIGURE_NOTE,
                "profile": "values re-run with another profile than the published one are skipped; skipped rows fail "
                "unless --allow-profile-fallback",
            },
            "analyses": {c.name: asdict(c) | {"comparable": c.comparable} for c in self.checks},
            "summary": self.counts(),
            "rows": [asdict(r) | {"name": r.name, "label": r.label} for r in self.rows],
            "errors": [str(p) for p in self.problems],
        }


def _commit_note(check: AnalysisCheck, project: Project) -> str | None:
    revision = project.revision
    now = revision.commit if revision else None
    if check.published_commit and now and check.published_commit != now:
        dirty = " with uncommitted changes" if revision and revision.dirty else ""
        return f"published from commit {check.published_commit[:12]}; re-run from commit {now[:12]}{dirty}"
    if revision and revision.dirty:
        return "re-run from a working tree with uncommitted changes"
    return None


def _parameter_note(check: AnalysisCheck) -> str | None:
    old, new = check.published_parameters, check.parameters
    if old is None or new is None or old == new:
        return None
    changes = [
        f"{k} {old.get(k, '—')!r} → {new.get(k, '—')!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return "parameters differ from the published ones: " + ", ".join(changes)


def verify(
    project: Project,
    progress: Progress,
    selection: Selection | None = None,
    against: str | None = None,
    allow_profile_fallback: bool = False,
) -> Report:
    """Re-run the analyses and compare every record with the published one (see the module docstring).

    ``selection`` names the analyses (default: all), the profile (default: each one's published
    profile) and the jobs; every analysis runs from scratch with its configured parameters.
    """
    selection = selection or Selection()
    names, profile, jobs = list(selection.names), selection.profile, selection.jobs
    registry = project.config.analyses
    check_names(project, names)
    if not registry and not names:
        raise ConfigError(Problem(Location(CONFIG_NAME, key="analyses"), "the project has no analyses to verify"))
    if profile:
        check_profile(project, list(names or registry), profile)
    published = load_published(project, against)
    if names:
        scope = list(names)
    elif published.single:
        scope = list(published.analyses)
    else:
        scope = list(dict.fromkeys([*published.analyses, *registry]))
    dev_class, dev_name = device_class()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    progress.console.print(f"verifying against {published.source}", highlight=False, markup=False)

    rows: list[Row] = []
    checks: list[AnalysisCheck] = []
    for name in scope:
        entry = published.analyses.get(name)
        if name not in registry:
            rows.append(
                Row(
                    name,
                    "*",
                    "analysis",
                    "published",
                    "—",
                    "",
                    "",
                    FAIL,
                    f"published, but {CONFIG_NAME} has no analysis of that name",
                )
            )
            continue
        if entry is None:
            rows.append(
                Row(
                    name,
                    "*",
                    "analysis",
                    "—",
                    "not run",
                    "",
                    "",
                    FAIL,
                    f"in {CONFIG_NAME}, but {published.source} has no values for it",
                )
            )
            continue
        provenance = entry.provenance
        chosen, notes = choose_profile(project, name, provenance.profile, profile, dev_class == "cuda")
        check = AnalysisCheck(
            name,
            str(registry[name].notebook),
            provenance.profile,
            chosen,
            notes,
            published_parameters=provenance.parameters,
            published_commit=provenance.git.commit if provenance.git else None,
        )
        if not check.comparable:
            check.notes.append(
                f"profile {check.profile} differs from the published {check.published_profile}: values are not "
                "compared, only keys and types"
                + (
                    " (accepted by --allow-profile-fallback)"
                    if allow_profile_fallback
                    else "; this fails the verification unless --allow-profile-fallback is given"
                )
            )
        checks.append(check)

    keep = project.output_dir / "verify" / "analyses"
    manifests, problems = reproduce(project, progress, checks, jobs, keep) if checks else ({}, [])
    for check in checks:
        manifest = manifests.get(check.name)
        if manifest is None:
            rows.append(
                Row(
                    check.name,
                    "*",
                    "analysis",
                    "published",
                    "failed",
                    "",
                    "",
                    FAIL,
                    "the re-run of this analysis failed; see the error below",
                )
            )
            continue
        check.ran = True
        check.parameters = manifest.parameters
        for note in (_parameter_note(check), _commit_note(check, project)):
            if note:
                check.notes.append(note)
        entry = published.analyses[check.name]
        profiles = None if check.comparable else (check.profile, check.published_profile or "?")
        rows.extend(
            compare_records(
                check.name, entry.records, manifest.records, published.files.get(check.name), manifest.files, profiles
            )
        )
    return Report(
        published, checks, rows, allow_profile_fallback, {"class": dev_class, "name": dev_name}, started, problems
    )


# --------------------------------------------------------------------------- output


def write_reports(project: Project, report: Report) -> tuple[Path, Path]:
    """``output/verify/report.json`` and ``report.html``, written atomically."""
    folder = project.output_dir / "verify"
    data = report.to_json()
    json_path, html_path = folder / "report.json", folder / "report.html"
    atomic.write_text(json_path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    environment = page_templates(RESOURCES / "reports")
    page = environment.get_template("verify.html").render(report=data, rows=report.rows, checks=report.checks)
    atomic.write_text(html_path, page)
    return json_path, html_path


STYLES = {PASS: "green", FAIL: "bold red", SKIPPED: "yellow", INFO: "cyan"}


def print_report(report: Report, console) -> None:
    """The notes of each analysis, then the table of every row, then a one-line summary."""
    for check in report.checks:
        for note in check.notes:
            console.print(f"[yellow]note:[/] {check.name}: {note}", highlight=False)
    table = Table(title=f"Verification against {report.published.source}", title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("key", "left"),
        ("published", "right"),
        ("reproduced", "right"),
        ("difference", "right"),
        ("tolerance", "left"),
        ("verdict", "left"),
    )
    for column, justify in columns:
        # The key names what a reader looks up: never broken across lines.
        table.add_column(column, justify=justify, overflow="fold", no_wrap=column == "key")
    for row in report.rows:
        verdict = {FAIL: f"FAIL: {row.reason}", INFO: "info (not judged)"}.get(row.verdict, row.label)
        table.add_row(
            row.name,
            row.published,
            row.reproduced,
            row.difference,
            row.tolerance,
            f"[{STYLES[row.verdict]}]{escape(verdict)}[/]",
        )
    console.print(table)
    if any(row.verdict == INFO for row in report.rows):
        console.print(f"figures: sha256 of the SVG, {FIGURE_NOTE}", highlight=False, markup=False)
    counts = report.counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    state = "[green]all values agree[/]" if report.ok else "[bold red]verification failed[/]"
    console.print(f"{state} ({summary or 'nothing compared'})", highlight=False)


def _shown_path(path: Path) -> str:
    """Relative to the current folder when inside it, as terminals link paths; else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _problem(project: Project, row: Row, hint: str | None) -> Problem:
    registry = project.config.analyses
    where = Location(str(registry[row.analysis].notebook) if row.analysis in registry else CONFIG_NAME, key=row.name)
    if row.verdict == SKIPPED:
        return Problem(where, f"{row.label}: values of different profiles are not compared", hint)
    values = f" (published {row.published}, reproduced {row.reproduced})" if row.key != "*" else ""
    return Problem(where, row.reason + values, hint)


def raise_if_failed(project: Project, report: Report, html_path: Path) -> None:
    """AnalysisError (5) if an analysis did not run; VerificationError (6) if any row fails."""
    if report.problems:
        raise AnalysisError(report.problems)
    failing = report.failing()
    if failing:
        hint = f"full report: {_shown_path(html_path)}"
        if any(r.verdict == SKIPPED for r in failing):
            hint += "; --allow-profile-fallback accepts values re-run with another profile as skipped"
        raise VerificationError(
            [_problem(project, r, hint if i == len(failing) - 1 else None) for i, r in enumerate(failing)]
        )
