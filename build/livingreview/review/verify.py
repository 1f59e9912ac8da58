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
     same plot gives different bytes with other fonts, libraries or machines. The report
     shows the published and the re-run figure side by side, for a person to judge;
   - a key published but not recorded by the re-run, or recorded but not published,
     fails; so does an analysis present on one side only.

Profiles. Values computed at another size (say ``ci`` against a ``full`` publication)
differ legitimately, so they are not compared: their rows read ``skipped (profile ci vs
full)``. The keys and types are still checked. Such rows fail the verification, which
therefore never passes on numbers it did not compare, unless ``--allow-profile-fallback``
accepts them; either way they are listed.

The terminal gets the counts and the records that do not agree (a table on a terminal;
in a log or a pipe, each record in full on lines of its own; ``-v`` lists every record).
``output/verify/report.json`` and ``report.html`` have everything; the re-run's executed
notebooks and figures are kept in ``output/verify/analyses/``, copies of the published
figures in ``output/verify/published/``. Any failing row raises ``VerificationError`` (exit 6).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from livingreview.execution.plan import Selection, check_names, check_profile, device_class
from livingreview.execution.run import run_analyses
from livingreview.execution.store import fetch, open_store
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
from livingreview.util.words import counted, plural

# A float recorded without a tolerance must agree to this relative precision.
DEFAULT_RELATIVE = 1e-12
# A version may be named by a prefix of its commit, as git allows, from this length on.
MIN_PREFIX = 4

PASS, FAIL, SKIPPED, INFO = "pass", "fail", "skipped", "info"
# How the summary counts records: a FAIL there is a value that differs, not one missing on a side.
OUTCOMES = ("pass", "info", "skipped", "FAIL", "missing", "extra")

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
    folders: dict[str, Path] = field(default_factory=dict)  # name -> its result folder, where it exists
    missing: dict[str, str] = field(default_factory=dict)  # name -> why the source has no values for it


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
            return PublishedValues(
                display,
                version,
                {name: manifest.as_values()},
                {name: manifest.files},
                single=True,
                folders={name: path.parent},
            )
        analyses = parse_values(data)
    except ValidationError as exc:
        raise ContentError(
            Problem(
                Location(path),
                "not a values.json ({analysis: {provenance, records}}) nor an analysis manifest.json",
                _first_error(exc),
            )
        ) from None
    files, folders = {}, {}
    for name in analyses:
        # A site version keeps each analysis's manifest, with its file hashes, next to values.json.
        folder = path.parent / "analyses" / name
        published = read_manifest(folder)
        if published is not None:
            files[name] = published.files
            folders[name] = folder
    return PublishedValues(display, version, analyses, files, folders=folders)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    where = ".".join(str(part) for part in errors[0]["loc"]) or "top level"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {errors[0]['msg']}{more}"


STORE = "store"


def load_stored(project: Project, names: list[str]) -> PublishedValues:
    """The results store's entries for the current code at the publication profile (``--against store``)."""
    profile = project.config.publish_profile or project.config.profile
    folder = project.output_dir / "verify" / STORE
    fetched = fetch(project, Selection(tuple(names), profile), folder)
    manifests = {name: load_manifest(folder / name) for name in fetched.pulled}
    found = {name: m for name, m in manifests.items() if m is not None}
    return PublishedValues(
        f"the results store ({open_store(project).description}), profile {profile}",
        None,
        {name: m.as_values() for name, m in found.items()},
        {name: m.files for name, m in found.items()},
        folders={name: folder / name for name in found},
        missing=fetched.missing,
    )


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
            folders={name: results_dir(project, name) for name in manifests},
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

NOT_RERUN = "published, but the re-run did not record it"
NOT_PUBLISHED = "recorded by the re-run, but not published"


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
    published_value: Any = None  # a figure's: the sha256 of its file
    reproduced_value: Any = None
    mismatches: list[str] = field(default_factory=list)  # a table's: every cell that differs
    # A figure's file, relative to its result folder; once the report is written, a copy of it is
    # in output/verify/published/<analysis>/ (published) or output/verify/analyses/<analysis>/ (re-run).
    published_figure: str | None = None
    reproduced_figure: str | None = None
    # The profiles compared: "full" when the re-run's is the published one, "ci vs full" (re-run vs published) when not.
    profile: str = ""

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

    @property
    def outcome(self) -> str:
        """What the summary counts it as: pass, info, skipped, FAIL, missing (from the re-run) or extra."""
        if self.verdict == FAIL and self.reason in (NOT_RERUN, NOT_PUBLISHED):
            return "missing" if self.reason == NOT_RERUN else "extra"
        return self.label if self.verdict != SKIPPED else SKIPPED


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # repr, the shortest text that reads back as the same float: a value rounded for
        # display could look equal on both sides of a row that fails.
        return repr(value)
    if isinstance(value, list):
        return f"table of {counted(len(value), 'row')}"
    return str(value)


def _literal(value: Any) -> str:
    """A value as a reviewer must see it to tell two apart: strings quoted, so that spaces show."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _show(value)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: float, b: float) -> bool:
    # A NaN reproduced as NaN is the same result, though NaN != NaN.
    return a == b or (math.isnan(a) and math.isnan(b))


def _tolerance(record: ValueRecord | TableRecord) -> tuple[float, bool, str]:
    """(tolerance, relative?, label) of a float record or table."""
    tolerance = record.tolerance
    if tolerance is None:
        return DEFAULT_RELATIVE, True, f"{DEFAULT_RELATIVE:g} rel (none recorded)"
    relative = record.relative
    return float(tolerance), relative, f"{float(tolerance):g} {'rel' if relative else 'abs'}"


def _distance(published: float, reproduced: float, relative: bool) -> float:
    if _same(published, reproduced):
        return 0.0
    delta = abs(reproduced - published)
    if not relative or delta == 0:
        return delta
    return delta / abs(published) if published != 0 else math.inf


def _within(distance: float, tolerance: float) -> bool:
    # Written so that a NaN distance (one side NaN) is never within any tolerance.
    return distance <= tolerance


def _magnitude(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return "∞" if math.isinf(x) else f"{x:.2e}"


def _signed(x: float) -> str:
    if isinstance(x, int):
        return f"{x:+d}"
    return ("+∞" if x > 0 else "-∞") if math.isinf(x) else f"{x:+.2e}"


def _numeric_difference(old: float, new: float, tolerance: float | None, relative: bool) -> str:
    """Both the absolute and the relative difference, and the test that judged them.

    ``tolerance`` None: compared exactly (ints).
    """
    delta = new - old
    size = abs(delta)
    ratio = size / abs(old) if old else math.inf
    if tolerance is None:
        return f"|Δ| = {size} > 0 (compared exactly); Δ = {_signed(delta)}, relative {_magnitude(ratio)}"
    within = _within(_distance(old, new, relative), tolerance)
    test = "≤" if within else ">"
    if relative:
        return f"|Δ|/|published| = {_magnitude(ratio)} {test} tol {tolerance:g} (rel); Δ = {_signed(delta)}"
    return (
        f"|Δ| = {_magnitude(size)} {test} tol {tolerance:g} (abs); Δ = {_signed(delta)}, relative {_magnitude(ratio)}"
    )


def _compare_value(analysis: str, key: str, pub: ValueRecord, rep: Record) -> Row:
    kind = pub.type
    # Whatever the types, as recorded: the type check below is what says they are comparable.
    old: Any = pub.value
    new: Any = rep.value
    same = "0" if _is_number(old) else ""
    row = Row(analysis, key, kind, _show(old), _show(new), same, "exact", PASS, "equal", old, new)
    if not isinstance(rep, ValueRecord) or rep.type != kind:
        row.verdict, row.reason = FAIL, f"type changed: {kind} → {rep.type}"
        row.difference = f"differs in type: {kind} {_literal(old)} → {rep.type} {_literal(new)}"
        return row
    if kind == "float":
        tolerance, relative, row.tolerance = _tolerance(pub)
        if _same(float(old), float(new)):
            return row
        distance = _distance(float(old), float(new), relative)
        row.difference = _numeric_difference(float(old), float(new), tolerance, relative)
        if _within(distance, tolerance):
            row.reason = "within tolerance"
        else:
            scale = "relative " if relative else ""
            row.verdict = FAIL
            row.reason = f"differs by {scale}{distance:.3g}, beyond the tolerance {tolerance:g}"
        return row
    if old != new:
        row.verdict, row.reason = FAIL, "differs (compared exactly)"
        if _is_number(old) and _is_number(new):
            row.difference = _numeric_difference(old, new, None, False)
        elif isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) > LONG_TEXT:
            row.difference = _text_difference(old, new)
        else:
            row.difference = f"differs: {_literal(old)} → {_literal(new)}"
    return row


# Strings longer than this are shown whole in the value columns; their difference says where they part.
LONG_TEXT = 60
CONTEXT = 12


def _text_difference(old: str, new: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    start = max(0, at - CONTEXT)
    lead = "…" if start else ""

    def around(text: str) -> str:
        end = at + CONTEXT
        return json.dumps(lead + text[start:end] + ("…" if end < len(text) else ""), ensure_ascii=False)

    return f"differs from character {at + 1} on (length {len(old)} → {len(new)}): {around(old)} → {around(new)}"


def _compare_table(analysis: str, key: str, pub: TableRecord, rep: Record) -> Row:
    old, new = pub.value, rep.value or []
    tolerance, relative, label = _tolerance(pub)
    row = Row(analysis, key, "table", _show(old), _show(new), "0", f"{label} (float cells)", PASS, "equal", old, new)
    if not isinstance(rep, TableRecord):
        row.verdict, row.reason = FAIL, f"type changed: table → {rep.type}"
        row.difference = f"differs in type: table → {rep.type} {_literal(rep.value)}"
        return row
    new = rep.value
    if pub.columns != rep.columns:
        row.verdict, row.reason = FAIL, f"columns changed: {pub.columns} → {rep.columns}"
        row.difference = f"differs: columns {pub.columns} → {rep.columns}"
        return row
    if len(old) != len(new):
        row.verdict, row.reason = FAIL, f"{counted(len(old), 'row')} published, {len(new)} reproduced"
        row.difference = f"differs: {counted(len(old), 'row')} → {counted(len(new), 'row')}"
        return row
    worst = 0.0
    far = exact = 0  # float cells beyond the tolerance; other cells that differ
    mismatches = []
    columns = list(pub.columns)
    for index, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        for column in columns + sorted((set(a) | set(b)) - set(columns)):
            x, y = a.get(column), b.get(column)
            if _is_number(x) and _is_number(y) and (isinstance(x, float) or isinstance(y, float)):
                distance = _distance(float(x), float(y), relative)
                worst = max(worst, distance, key=lambda d: math.inf if math.isnan(d) else d)
                if not _within(distance, tolerance):
                    far += 1
                    mismatches.append(f"row {index}, {column}: {_literal(x)} → {_literal(y)}")
            elif x != y or type(x) is not type(y) and (isinstance(x, bool) or isinstance(y, bool)):
                exact += 1
                mismatches.append(f"row {index}, {column}: {_literal(x)} → {_literal(y)}")
    parts = []
    if worst:
        what, scale = ("|Δ|/|published|", "rel") if relative else ("|Δ|", "abs")
        test = ">" if far else "≤"
        parts.append(f"float cells: max {what} = {_magnitude(worst)} {test} tol {tolerance:g} ({scale})")
    if exact:
        parts.append(f"{counted(exact, 'other cell')} {'differs' if exact == 1 else 'differ'} (compared exactly)")
    row.difference = "; ".join(parts) or "0"
    row.mismatches = mismatches
    if mismatches:
        row.verdict = FAIL
        more = f" (and {len(mismatches) - 3} more)" if len(mismatches) > 3 else ""
        differ = "differs" if len(mismatches) == 1 else "differ"
        row.reason = f"{counted(len(mismatches), 'cell')} {differ}: " + "; ".join(mismatches[:3]) + more
    elif worst:
        row.reason = "within tolerance"
    return row


def _figure_file(record: Record) -> str | None:
    """The file a page shows: the SVG, else whatever else was saved."""
    if not isinstance(record, FigureRecord) or not record.files:
        return None
    return record.files.get("svg") or next(iter(record.files.values()))


def _compare_figure(
    analysis: str, key: str, pub: FigureRecord, rep: Record, pub_files: dict[str, str] | None, rep_files: dict[str, str]
) -> Row:
    names = sorted(set(pub.files.values()) | set(rep.files.values() if isinstance(rep, FigureRecord) else []))
    svg = next((n for n in names if n.endswith(".svg")), names[0] if names else "")
    old = (pub_files or {}).get(svg)
    new = rep_files.get(svg)
    row = Row(analysis, key, "figure", (old or "—")[:8], (new or "—")[:8], "", "—", INFO, FIGURE_NOTE, old, new)
    row.published_figure, row.reproduced_figure = _figure_file(pub), _figure_file(rep)
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
            row = Row(analysis, key, pub.type, _show(pub.value), "—", "missing from the re-run", "", FAIL, NOT_RERUN)
            row.published_value, row.published_figure = pub.value, _figure_file(pub)
            rows.append(row)
            continue
        if key not in pubs:
            rep = reps[key]
            row = Row(analysis, key, rep.type, "—", _show(rep.value), "not published", "", FAIL, NOT_PUBLISHED)
            row.reproduced_value, row.reproduced_figure = rep.value, _figure_file(rep)
            rows.append(row)
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

    def outcomes(self, analysis: str | None = None) -> dict[str, int]:
        """The records (not the rows about whole analyses) by outcome, of one analysis or all."""
        rows = [r for r in self.rows if r.key != "*" and analysis in (None, r.analysis)]
        return {outcome: sum(1 for r in rows if r.outcome == outcome) for outcome in OUTCOMES}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": self.started,
            "published": {"source": self.published.source, "version": self.published.version},
            "device": self.device,
            "allow_profile_fallback": self.allow_profile_fallback,
            "rules": {
                "float": "absolute or relative difference within the record's tolerance (NaN agrees only with NaN)",
                "float_without_tolerance": f"relative difference within {DEFAULT_RELATIVE:g}",
                "int, str, bool": "exactly equal",
                "table": "same columns and rows; float cells within the table's tolerance, others exact",
                "figure": FIGURE_NOTE,
                "profile": "values re-run with another profile than the published one are skipped; skipped rows fail "
                "unless --allow-profile-fallback",
            },
            "analyses": {c.name: asdict(c) | {"comparable": c.comparable} for c in self.checks},
            "summary": self.counts(),
            "outcomes": self.outcomes(),
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
    if against == STORE:
        published = load_stored(project, list(names or registry))
    else:
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
                    published.missing.get(name) or f"in {CONFIG_NAME}, but {published.source} has no values for it",
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
        compared = compare_records(
            check.name, entry.records, manifest.records, published.files.get(check.name), manifest.files, profiles
        )
        for row in compared:
            row.profile = " vs ".join(profiles) if profiles else check.profile
        rows.extend(compared)
    keep_figures(published, rows, project.output_dir / "verify")
    return Report(
        published, checks, rows, allow_profile_fallback, {"class": dev_class, "name": dev_name}, started, problems
    )


# --------------------------------------------------------------------------- output

FIGURE_SUFFIXES = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf")


def _inside(folder: Path, name: str) -> Path | None:
    """``folder``/``name`` if it is a figure file inside ``folder``, else None.

    The names come from a manifest, which a published values.json may have been edited
    to fill with ``../`` or links out: the report's folder is meant to be shared.
    """
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() not in FIGURE_SUFFIXES:
        return None
    path = folder / relative
    try:
        inside = path.resolve(strict=True).is_relative_to(folder.resolve(strict=True))
    except OSError:
        return None
    return path if inside and path.is_file() else None


def keep_figures(published: PublishedValues, rows: list[Row], folder: Path) -> None:
    """Copy each published figure into ``folder``/published/<analysis>/, next to the re-run's.

    The report then shows both from its own folder, opened from disk or published; the
    published files themselves may be replaced by the next build. A figure that has no
    file on a side is left out of the page (``None``).
    """
    with tempfile.TemporaryDirectory(prefix="livingreview-figures-") as scratch:
        # Not the temporary folder itself, which only its owner may read: its mode would be copied.
        staging = Path(scratch) / "published"
        staging.mkdir()
        for row in rows:
            if row.published_figure:
                source = published.folders.get(row.analysis)
                found = _inside(source, row.published_figure) if source else None
                if found is None:
                    row.published_figure = None
                else:
                    target = staging / row.analysis / row.published_figure
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(found, target)
            if row.reproduced_figure and _inside(folder / "analyses" / row.analysis, row.reproduced_figure) is None:
                row.reproduced_figure = None
        atomic.replace_tree(staging, folder / "published")


def write_reports(project: Project, report: Report) -> tuple[Path, Path]:
    """``output/verify/report.json`` and ``report.html``, written atomically."""
    folder = project.output_dir / "verify"
    data = report.to_json()
    json_path, html_path = folder / "report.json", folder / "report.html"
    atomic.write_text(json_path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    environment = page_templates(RESOURCES / "reports")
    page = environment.get_template("verify.html").render(
        report=data,
        rows=report.rows,
        failing=report.failing(),
        figures=[row for row in report.rows if row.kind == "figure"],
        checks=report.checks,
    )
    atomic.write_text(html_path, page)
    return json_path, html_path


STYLES = {"pass": "green", "info": "cyan", "skipped": "yellow", "FAIL": "bold red", "missing": "bold red"}
# Shown in every summary, even at 0: what a reviewer looks for first.
ALWAYS_COUNTED = ("pass", "FAIL", "missing")


def on_terminal(console: Console) -> bool:
    """Whether a person reads the output as it comes, rather than a CI log or a pipe.

    rich's own test (``is_terminal``) can be forced on (FORCE_COLOR, as some CI services
    set), so both standard streams must also be terminals.
    """
    if not console.is_terminal:
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is None or not stream.isatty():
                return False
        except (AttributeError, ValueError):  # replaced by a file-like object, or closed
            return False
    return True


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n:,} {outcome}" for outcome, n in counts.items() if n or outcome in ALWAYS_COUNTED)


def summary_lines(report: Report) -> list[str]:
    """The counts of every outcome, then one line per analysis with its counts and the profiles compared."""
    outcomes = report.outcomes()
    total = sum(outcomes.values())
    lines = [f"{total:,} {plural('value', total)} compared: {_counts_text(outcomes)}"]
    checks = {check.name: check for check in report.checks}
    whole = {row.analysis: row for row in report.rows if row.key == "*"}
    for name in dict.fromkeys([*checks, *(row.analysis for row in report.rows)]):
        if name in whole:
            lines.append(f"  {name}: {whole[name].reason}")
            continue
        check = checks[name]
        if check.comparable:
            profile = f"profile {check.profile}, as published"
        else:
            profile = f"re-run with profile {check.profile}, published with {check.published_profile}"
        counts = report.outcomes(name)
        values = sum(counts.values())
        lines.append(f"  {name} ({profile}): {values:,} {plural('value', values)}: {_counts_text(counts)}")
    return lines


def _full(row: Row, published: bool) -> str:
    """A value in full (floats to the last digit, strings quoted); a table or figure as the row shows it."""
    value, shown = (row.published_value, row.published) if published else (row.reproduced_value, row.reproduced)
    return _literal(value) if value is not None and row.kind in ("float", "int", "str", "bool") else shown


def row_lines(row: Row) -> list[str]:
    """One record, every field on its own line and nothing cut: what a log must show of a failing row."""
    what = "analysis" if row.key == "*" else row.kind
    lines = [f"{row.outcome} {row.name} ({what})"]
    if row.key != "*":
        lines.append(f"  published:  {_full(row, True)}")
        lines.append(f"  re-run:     {_full(row, False)}")
    if row.difference:
        lines.append(f"  difference: {row.difference}")
    lines.extend(f"    {cell}" for cell in row.mismatches)
    if row.tolerance:
        lines.append(f"  tolerance:  {row.tolerance}")
    verdict = f"{row.label}: {row.reason}" if row.verdict in (FAIL, SKIPPED) else row.label
    lines.append(f"  verdict:    {verdict}")
    return lines


def _one_line(row: Row) -> str:
    published, reproduced = _full(row, True), _full(row, False)
    difference = f"; {row.difference}" if row.difference and row.difference != "0" else ""
    return f"{row.outcome:<7} {row.name}: {published} → {reproduced}{difference}"


def print_report(report: Report, console: Console, verbose: bool = False, terminal: bool | None = None) -> None:
    """The notes of each analysis, the counts, the records that do not agree, then a one-line verdict.

    On a terminal the records are a table; in a log or a pipe (``terminal`` False), where
    a table is cut to the width rich assumes, each is printed in full on lines of its own.
    Records that agree are counted, not listed, unless ``verbose``.
    """
    terminal = on_terminal(console) if terminal is None else terminal
    for check in report.checks:
        for note in check.notes:
            console.print(f"[yellow]note:[/] {escape(check.name)}: {escape(note)}", highlight=False)
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False)
    # Skipped rows are counted above and explained by their analysis's note: listing a
    # thousand values that were not compared would hide the few that differ.
    failing = [row for row in report.rows if row.verdict == FAIL]
    listed = report.rows if verbose else failing
    # Too narrow a terminal for the table gets the lines a log gets.
    if listed and not (terminal and _print_table(report, listed, console, verbose)):
        if failing:
            agree = "does not agree" if len(failing) == 1 else "do not agree"
            console.print(f"{counted(len(failing), 'record')} {agree}:", highlight=False, markup=False)
        for row in failing:
            for line in row_lines(row):
                console.print(line, highlight=False, markup=False)
        if verbose:
            console.print("every record:", highlight=False, markup=False)
            for row in report.rows:
                console.print(_one_line(row), highlight=False, markup=False)
    if any(row.verdict == INFO for row in report.rows):
        console.print(f"figures: sha256 of the SVG, {FIGURE_NOTE}", highlight=False, markup=False)
    counts = report.counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    state = "[green]all values agree[/]" if report.ok else "[bold red]verification failed[/]"
    console.print(f"{state} ({summary or 'nothing compared'})", highlight=False)


# Widths below which a column of the terminal table would no longer be readable (a value
# is never narrower than its number, up to NUMBER_WIDTH), and above which a difference's
# explanation is better folded than given more room than the values.
KEY_WIDTH, TEXT_WIDTH, NUMBER_WIDTH, DIFFERENCE_ROOM = 16, 20, 24, 60


def _column_widths(cells: list[tuple[Row, str, str, str]], width: int) -> dict[str, int] | None:
    """Every column's width, to fit ``width``; None if some column could not be shown readably.

    Set here rather than by rich: its ratios and minimum widths, together, let a long
    string starve the other columns into slivers or push the table past the window.
    """

    def longest(texts: list[str]) -> int:
        return max((len(line) for text in texts for line in text.splitlines()), default=0)

    natural = {
        "verdict": longest(["verdict", *(row.outcome for row, *_ in cells)]),
        "key": longest(["key", *(row.name for row, *_ in cells)]),
        "published": longest(["published", *(cell[1] for cell in cells)]),
        "re-run": longest(["re-run", *(cell[2] for cell in cells)]),
        "difference": longest(["difference", *(cell[3] for cell in cells)]),
    }

    def value_floor(column: str, shown: list[tuple[Any, str]]) -> int:
        # A number folded across lines is misread; a long string folds safely, but not into slivers.
        numbers = longest([text for value, text in shown if _is_number(value)])
        return max(len(column), min(natural[column], TEXT_WIDTH), min(numbers, NUMBER_WIDTH))

    widths = {
        "verdict": natural["verdict"],
        "key": min(KEY_WIDTH, natural["key"]),
        "published": value_floor("published", [(row.published_value, text) for row, text, _, _ in cells]),
        "re-run": value_floor("re-run", [(row.reproduced_value, text) for row, _, text, _ in cells]),
        "difference": min(TEXT_WIDTH, natural["difference"]),
    }
    # Each column but the first is set off by padding, a rule's blank and padding.
    slack = width - sum(widths.values()) - 3 * (len(widths) - 1)
    if slack < 0:
        return None
    # The key first, the name a reader searches for, best unbroken; then the values and the
    # explanation alike, a character at a time, the explanation only up to DIFFERENCE_ROOM
    # until the values are whole.
    grown = min(slack, natural["key"] - widths["key"])
    widths["key"] += grown
    slack -= grown
    for limits in (
        {"published": natural["published"], "re-run": natural["re-run"], "difference": DIFFERENCE_ROOM},
        {"difference": natural["difference"]},
    ):
        growing = [column for column, limit in limits.items() if widths[column] < limit]
        while slack and growing:
            for column in growing:
                if slack and widths[column] < limits[column]:
                    widths[column] += 1
                    slack -= 1
            growing = [column for column in growing if widths[column] < limits[column]]
    return widths


def _print_table(report: Report, rows: list[Row], console: Console, verbose: bool) -> bool:
    """The rows as a table, if the terminal is wide enough to show every number whole; else False."""
    cells = [
        (row, _full(row, True), _full(row, False), "\n".join([row.difference or row.reason, *row.mismatches]))
        for row in rows
    ]
    widths = _column_widths(cells, console.width)
    if widths is None:
        return False
    total = sum(report.outcomes().values())
    # "verifying against ..." opened the output: the title stays short enough not to wrap.
    title = (
        f"every record ({total:,})"
        if verbose
        else f"records that do not agree: {len(rows)} of {total:,} (-v lists all)"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column, width in widths.items():
        justify: Literal["left", "right"] = "right" if column in ("published", "re-run") else "left"
        table.add_column(column, justify=justify, overflow="fold", width=width, no_wrap=column == "verdict")
    for row, published, reproduced, difference in cells:
        table.add_row(
            f"[{STYLES.get(row.outcome, 'bold red')}]{escape(row.outcome)}[/]",
            escape(row.name),
            escape(published),
            escape(reproduced),
            escape(difference),
        )
    # The CLI's console soft-wraps (never crops), which lets a table's edge pass the width by a blank.
    console.print(table, soft_wrap=False)
    return True


def _shown_path(path: Path) -> str:
    """Relative to the current folder when inside it, as terminals link paths; else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _where(project: Project, analysis: str, key: str) -> Location:
    registry = project.config.analyses
    return Location(str(registry[analysis].notebook) if analysis in registry else CONFIG_NAME, key=key)


def _problems(project: Project, failing: list[Row]) -> list[Problem]:
    """One problem per record that differs; one per analysis for its skipped records, however many."""
    problems = []
    skipped: dict[str, list[Row]] = {}
    for row in failing:
        if row.verdict == SKIPPED:
            skipped.setdefault(row.analysis, []).append(row)
            continue
        values = f" (published {row.published}, reproduced {row.reproduced})" if row.key != "*" else ""
        if max(len(row.published), len(row.reproduced)) > LONG_TEXT:
            # Printed whole above; here, where the two part.
            values = f" ({row.difference})"
        problems.append(Problem(_where(project, row.analysis, row.name), row.reason + values))
    for analysis, rows in skipped.items():
        labels = ", ".join(dict.fromkeys(row.label for row in rows))
        message = f"{counted(len(rows), 'value')} {labels}: values of different profiles are not compared"
        problems.append(Problem(_where(project, analysis, analysis), message))
    return problems


def raise_if_failed(project: Project, report: Report, html_path: Path) -> None:
    """AnalysisError (5) if an analysis did not run; VerificationError (6) if any row fails."""
    if report.problems:
        raise AnalysisError(report.problems)
    failing = report.failing()
    if failing:
        hint = f"full report: {_shown_path(html_path)}"
        if any(r.verdict == SKIPPED for r in failing):
            hint += "; --allow-profile-fallback accepts values re-run with another profile as skipped"
        problems = _problems(project, failing)
        problems[-1] = replace(problems[-1], hint=hint)
        raise VerificationError(problems)
