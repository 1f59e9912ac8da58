"""Analysis results on disk: ``output/analyses/<name>/`` and its ``manifest.json``.

A result folder is trusted only if its manifest exists, is sealed (its own digest,
so a value edited by hand is noticed and the analysis re-run rather than published),
names the expected cache key, and every file it lists still has the recorded hash. Folders are built under a
temporary name and renamed into place whole, so an interrupted run leaves at most a
``.staging-*`` folder, which nothing trusts and the next run removes.

The manifest is typed (``Manifest``): every stage that reads results reads it through
``load_manifest`` (sealed) or ``read_manifest`` / ``parse_manifest`` (a published
copy), and its JSON is ``dump(manifest)``. ``values.json`` of a site version holds one
``AnalysisValues`` per analysis: the manifest's ``provenance`` and its records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from livingreview.util.hashing import sha256_file

if TYPE_CHECKING:
    from livingreview.load.project import Project

MANIFEST = "manifest.json"
SEAL = "seal"


# --------------------------------------------------------------------------- the model


class _Model(BaseModel):
    # Keys this version does not know are kept, not refused, so that an older or newer
    # manifest or values.json stays readable and is written back with the same keys.
    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)


class GitInfo(_Model):
    """The commit an analysis ran at, and whether the working tree had uncommitted changes."""

    commit: str | None = None
    dirty: bool = False


class Device(_Model):
    class_: str = Field("", alias="class")  # cpu, cuda, mps
    name: str = ""
    host: str = ""


class ExecutorInfo(_Model):
    kind: str = "local"  # local, dask
    worker: str | None = None  # the Dask worker's address


class KeyParts(_Model):
    """What the cache key hashes besides the parameters, inputs and modules, which the manifest lists anyway.

    Kept so that a stale result can say what changed ("code changed"), not only that its key did.
    """

    version: str = ""  # the layout of cached results (plan.KEY_VERSION)
    code: str = ""  # sha256 of the notebook's code cells
    environment: dict[str, str] = Field(default_factory=dict)  # lock file -> sha256
    device: str = ""  # cpu, cuda


class _Record(_Model):
    """What every record has. Each kind narrows ``kind`` and ``type`` and ends with ``cell``
    and ``cell_id``, which ``execute`` adds after the fields ``record.py`` writes: the JSON's order."""

    kind: str
    key: str
    type: str


# Tolerances are int | float, not float: pydantic would turn the 0 that record.value
# writes for an int into 0.0, and the JSON, so the seal and values.json, would change.
class ValueRecord(_Record):
    """``record.value``: a scalar, as recorded and as the notebook formatted it."""

    kind: Literal["value"]
    type: Literal["float", "int", "bool", "str"]
    value: bool | int | float | str
    fmt: str = "{}"
    formatted: str | None = None
    unit: str = ""
    tolerance: int | float | None = None
    relative: bool = False
    description: str = ""
    cell: int | None = None
    cell_id: str | None = None

    @property
    def shown(self) -> str:
        """As the manuscript shows it: formatted by the notebook, with its unit."""
        text = self.formatted if self.formatted is not None else str(self.value)
        return text + (f" {self.unit}" if self.unit else "")


class TableRecord(_Record):
    """``record.table``: rows of cells by column."""

    kind: Literal["table"]
    type: Literal["table"]
    value: list[dict[str, Any]]
    columns: list[str] = Field(default_factory=list)
    fmt: dict[str, str] = Field(default_factory=dict)  # column -> str.format spec
    caption: str = ""
    tolerance: int | float | None = None
    relative: bool = False
    cell: int | None = None
    cell_id: str | None = None


class FigureRecord(_Record):
    """``record.figure``: its files (``svg``, ``png``), relative to the result folder."""

    kind: Literal["figure"]
    type: Literal["figure"]
    caption: str = ""
    files: dict[str, str] = Field(default_factory=dict)
    cell: int | None = None
    cell_id: str | None = None

    @property
    def value(self) -> None:
        """A figure has no value: every record can be asked for one."""
        return None


Record = Annotated[ValueRecord | TableRecord | FigureRecord, Field(discriminator="kind")]
_RECORDS: TypeAdapter[dict[str, Record]] = TypeAdapter(dict[str, Record])


class Provenance(_Model):
    """Where an analysis's records come from: everything in its manifest but the records, file hashes and seal.

    Fields are in the order ``execute`` writes them, which is the order of the JSON.
    """

    analysis: str
    notebook: str | None = None  # relative to the project root
    executed_notebook: str = ""  # in the result folder
    key: str | None = None  # the cache key
    profile: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)  # path -> sha256
    modules: dict[str, str] = Field(default_factory=dict)  # path -> sha256
    key_parts: KeyParts | None = None  # absent from manifests older than it: their re-runs say only "inputs changed"
    git: GitInfo | None = None
    packages: dict[str, str] = Field(default_factory=dict)  # name -> version
    device: Device | None = None
    executor: ExecutorInfo | None = None  # absent from manifests older than the executors
    started: str | None = None
    wall_time_s: float | None = None


_NOT_PROVENANCE = {"records", "files", "seal"}


class Manifest(Provenance):
    """``manifest.json``: the provenance, the records by key, the hash of every file of the folder, the seal."""

    records: dict[str, Record]
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    seal: str | None = None

    @property
    def provenance(self) -> Provenance:
        """The manifest without its records, file hashes and seal: what ``values.json`` keeps once per analysis."""
        return Provenance.model_validate(dump(self, exclude=_NOT_PROVENANCE))

    def as_values(self) -> AnalysisValues:
        return AnalysisValues(provenance=self.provenance, records=self.records)


class AnalysisValues(_Model):
    """One analysis of a site version's ``values.json``."""

    provenance: Provenance
    records: dict[str, Record]


_VALUES: TypeAdapter[dict[str, AnalysisValues]] = TypeAdapter(dict[str, AnalysisValues])


def dump(model: BaseModel, exclude: set[str] | None = None) -> dict[str, Any]:
    """The JSON object of ``model``: only the keys that were given (read or set), so a manifest reads back as written."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude=exclude)


def parse_manifest(data: Any) -> Manifest:
    """A manifest from its JSON, sealed or not; ``ValidationError`` if it is not one."""
    return Manifest.model_validate(data)


def parse_values(data: Any) -> dict[str, AnalysisValues]:
    """A ``values.json`` from its JSON; ``ValidationError`` if it is not one."""
    return _VALUES.validate_python(data)


def parse_records(records: Mapping[str, Any]) -> dict[str, Record]:
    """Records by key, as parsed models or as their JSON, whose ``key`` may be left to the mapping's."""
    return _RECORDS.validate_python(
        {key: {"key": key, **entry} if isinstance(entry, Mapping) else entry for key, entry in records.items()}
    )


# --------------------------------------------------------------------------- provenance, as people read it


def computed_at(git: GitInfo | None, current: str | None) -> str:
    """Where a result was computed, said truthfully when it is reused by a later build.

    A cached result is reused only when its code, parameters, inputs and environment
    hash to the same key, so a result from another commit (or from a working tree with
    uncommitted changes) is this version's result; the text says both facts.
    """
    git = git or GitInfo()
    commit = git.commit
    if not commit:
        return "computed outside git"
    short = commit[:12]
    if git.dirty:
        where = f"computed in a working tree with uncommitted changes, based on commit {short}"
    else:
        where = f"commit {short}"
    if current and (git.dirty or commit != current):
        where += f"; code, parameters and inputs identical at this version ({current[:12]})"
    return where


def describe(
    analysis: str, provenance: Provenance, record: Record, current: str | None = None, *, brief: bool = False
) -> str:
    """Where ``record`` came from: a value's tooltip in the manuscript, or (``brief``) a line of a diff.

    ``current`` is the commit being built (None for a dirty tree), which the tooltip
    compares with the commit the result was computed at.
    """
    params = ", ".join(f"{k}={v!r}" for k, v in provenance.parameters.items())
    if brief:
        git = provenance.git or GitInfo()
        commit = (git.commit or "no commit")[:12] + (" (dirty)" if git.dirty else "")
        return (
            f"{provenance.notebook or analysis} cell {record.cell}, "
            f"profile {provenance.profile} ({params}), commit {commit}"
        )
    return (
        f"{analysis}.{record.key} = {record.value!r} | "
        f"notebook {provenance.notebook}, cell {record.cell} | "
        f"profile {provenance.profile}: {params} | {computed_at(provenance.git, current)}"
        f"{_where_and_when(provenance)}"
    )


def _where_and_when(provenance: Provenance) -> str:
    """ " | on cuda (NVIDIA H200) at gpu-box, 2026-12-04T18:00:00+00:00": a result may come from the results store."""
    device, parts = provenance.device, []
    if device and (device.class_ or device.name):
        parts.append(f"on {device.class_}" + (f" ({device.name})" if device.name else ""))
    if device and device.host:
        parts.append(f"at {device.host}")
    if provenance.started:
        parts.append(str(provenance.started))
    return " | " + " ".join(parts) if parts else ""


# --------------------------------------------------------------------------- result folders


def results_dir(project: Project, name: str) -> Path:
    return project.output_dir / "analyses" / name


# The seal is computed over the JSON object as written (never over a model), so that it
# stays the digest of the file's own content whatever this version's model knows.
def _digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its seal (re)computed: only the build's own commit step calls this."""
    return {**manifest, SEAL: _digest(manifest)}


def is_sealed(manifest: dict[str, Any]) -> bool:
    return manifest.get(SEAL) == _digest(manifest)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object of the manifest in folder ``path``, as written (None if unreadable)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _parsed(data: dict[str, Any] | None) -> Manifest | None:
    if data is None:
        return None
    try:
        return parse_manifest(data)
    except ValidationError:
        return None


def read_manifest(path: Path) -> Manifest | None:
    """The manifest in folder ``path``, sealed or not, as a published copy is (None if unreadable or invalid)."""
    return _parsed(_read_json(path))


def load_manifest(path: Path) -> Manifest | None:
    """The manifest in folder ``path``, only if its seal holds: nothing edited is ever used."""
    data = _read_json(path)
    return _parsed(data) if data is not None and is_sealed(data) else None


def verify_files(folder: Path, manifest: Manifest) -> str | None:
    """None if every listed file is intact, else why not."""
    for relative, digest in manifest.files.items():
        file = folder / relative
        if not file.is_file():
            return f"missing {relative}"
        if sha256_file(file) != digest:
            return f"{relative} was modified"
    return None


def cached_manifest(
    project: Project, name: str, key: str, changed: Callable[[Manifest], str] | None = None
) -> tuple[Manifest | None, str]:
    """The result of analysis ``name`` if it is valid for ``key``, else None; and why, as the plan reports it.

    ``changed`` says what changed when the previous result has another key.
    """
    folder = results_dir(project, name)
    data = _read_json(folder)
    if data is None:
        return None, "never run" if not folder.exists() else "no valid manifest"
    if not is_sealed(data):
        return None, "manifest.json was changed after the run"
    manifest = _parsed(data)
    if manifest is None:
        return None, "no valid manifest"
    if manifest.key != key:
        return None, changed(manifest) if changed else "inputs changed"
    problem = verify_files(folder, manifest)
    if problem:
        return None, f"corrupt cache entry: {problem}"
    return manifest, "up to date"


def commit(staging: Path, target: Path) -> None:
    """Seal the staging folder's manifest and swap the folder into place."""
    manifest = _read_json(staging)
    if manifest is not None:
        text = json.dumps(sealed(manifest), indent=2, ensure_ascii=False)
        (staging / MANIFEST).write_text(text + "\n", encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(project: Project) -> None:
    base = project.output_dir / "analyses"
    if base.is_dir():
        for leftover in base.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in base.glob(".old-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def all_manifests(project: Project) -> dict[str, Manifest]:
    found = {}
    for name in project.config.analyses:
        manifest = load_manifest(results_dir(project, name))
        if manifest is not None:
            found[name] = manifest
    return found
