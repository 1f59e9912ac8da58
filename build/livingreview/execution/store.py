"""The results store: complete analysis results shared between machines, content-addressed.

A GPU machine or a cluster runs the publication profile once and pushes each analysis's
result folder (sealed manifest, records, figures, executed notebook); every other build of
the same code pulls it instead of running anything. An entry lives at
``entries/<analysis>/<key>/``, where the key is the plan's cache key: it hashes the code,
the resolved parameters (so the profile), the declared inputs, the local modules and the
environment lock files. The device is not part of it: where, when and on what an entry was
computed is its provenance (the manifest's ``device``, ``started``, and ``entry.json``), so
a GPU run serves a CPU-only CI build of the same commit.

Two kinds of store, one layout:
- ``git`` (default): the ``results`` branch of the project's remote, as rootstock keeps its
  ``output`` branch. Reading clones that branch into a scratch folder; writing commits and
  pushes there, never in the project's checkout.
- a folder: a path on a shared filesystem; writes take a lock on it.

The store is append-only: pushing other records under a key that is stored is refused,
naming the values that differ, unless forced. An entry is trusted on pull only if its
manifest is sealed, names the key it is stored under, and every file has its hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livingreview.execution.plan import Plan, Selection, Task, plan, what_changed
from livingreview.load.project import Project
from livingreview.load.results import (
    Manifest,
    commit,
    dump,
    load_manifest,
    read_manifest,
    results_dir,
    verify_files,
)
from livingreview.util.errors import AnalysisError, ConfigError, Location, Problem, ToolError
from livingreview.util.gitinfo import clone_branch, git, git_checked, stored_credentials

ENTRIES = "entries"
ENTRY = "entry.json"
_IDENTITY = ["-c", "user.name=livingreview results", "-c", "user.email=livingreview@localhost"]
_ATTEMPTS = 5  # pushes that lose a race to another push fetch the new tip and try again


@dataclass
class Entry:
    analysis: str
    key: str
    manifest: Manifest | None
    info: dict[str, Any]
    problem: str | None = None  # why it cannot be trusted


@dataclass
class Pushed:
    store: str
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


@dataclass
class Pulled:
    pulled: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # analysis -> why no stored result serves it


# --------------------------------------------------------------------------- the two stores


class _Store:
    description: str

    def snapshot(self) -> contextlib.AbstractContextManager[Path]:
        raise NotImplementedError

    def change(self, apply, message: str) -> None:
        raise NotImplementedError


class FolderStore(_Store):
    def __init__(self, path: Path):
        self.path = path
        self.description = str(path)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Path]:
        yield self.path

    def change(self, apply, message: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            apply(self.path)


class GitStore(_Store):
    def __init__(self, project: Project):
        config = project.config.results
        self.root, self.branch, self.remote = project.root, config.branch, config.remote
        done = git(project.root, "remote", "get-url", self.remote)
        self.url = done.stdout.strip() if done is not None and done.returncode == 0 else ""
        if not self.url:
            raise ConfigError(
                Problem(
                    Location("manuscript.yaml", key="results.remote"),
                    f"no git remote named {self.remote!r} for the results store",
                    "add the remote, or set results.store to a folder",
                )
            )
        self.description = f"{self.remote} {self.branch}"
        # In CI, the token that actions/checkout keeps in the checkout's config (the results workflow's).
        self.auth = stored_credentials(project.root)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="livingreview-store-") as scratch:
            folder = Path(scratch) / "store"
            try:
                clone_branch(self.root, self.url, self.branch, folder, self.auth, shallow=True)
            except ToolError:
                # Offline, or a remote that needs credentials a pull request does not get: the
                # branch as last fetched (actions/checkout with fetch-depth 0 fetches it) still
                # serves, and its entries are verified all the same.
                tracking = f"refs/remotes/{self.remote}/{self.branch}"
                if git_checked(self.root, "rev-parse", "--verify", "--quiet", tracking, check=False).returncode:
                    raise
                folder.mkdir()
                git_checked(self.root, "archive", "--format=tar", "-o", str(Path(scratch) / "store.tar"), tracking)
                with tarfile.open(Path(scratch) / "store.tar") as tar:
                    tar.extractall(folder, filter="data")
                self.description = f"{self.remote}/{self.branch} as last fetched ({self.remote} unreachable)"
            yield folder

    def change(self, apply, message: str) -> None:
        for attempt in range(_ATTEMPTS):
            with tempfile.TemporaryDirectory(prefix="livingreview-store-") as scratch:
                folder = Path(scratch) / "store"
                clone_branch(self.root, self.url, self.branch, folder, self.auth)
                apply(folder)
                git_checked(folder, "add", "--all")
                if git_checked(folder, "diff", "--cached", "--quiet", check=False).returncode == 0:
                    return
                git_checked(folder, "commit", "--quiet", "-m", message, config=_IDENTITY)
                pushed = git_checked(
                    folder, "push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", config=self.auth, check=False
                )
                if pushed.returncode == 0:
                    return
                if attempt == _ATTEMPTS - 1:
                    raise ToolError(
                        Problem(
                            Location("git", key=f"{self.remote} {self.branch}"),
                            f"pushing results failed {_ATTEMPTS} times: {pushed.stderr.strip()[-300:]}",
                        )
                    )
            # Another push won the race: start again from the branch as it is now.


def open_store(project: Project) -> _Store:
    store = project.config.results.store
    if store == "git":
        return GitStore(project)
    path = Path(store).expanduser()
    return FolderStore(path if path.is_absolute() else project.root / path)


# --------------------------------------------------------------------------- entries


def _entry_dir(base: Path, analysis: str, key: str) -> Path:
    return base / ENTRIES / analysis / key


def _read_entry(folder: Path, analysis: str, key: str) -> Entry:
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
    manifest = load_manifest(folder)
    if manifest is None:
        problem = "its manifest.json is missing, unreadable, or was changed after the run (seal mismatch)"
        return Entry(analysis, key, read_manifest(folder), info, problem)
    if manifest.key != key or manifest.analysis != analysis:
        return Entry(analysis, key, manifest, info, f"its manifest is for {manifest.analysis} {str(manifest.key)[:12]}")
    damaged = verify_files(folder, manifest)
    return Entry(analysis, key, manifest, info, f"a file does not match its hash: {damaged}" if damaged else None)


def entries(project: Project) -> list[Entry]:
    """Every entry of the store, checked."""
    with open_store(project).snapshot() as base:
        found = []
        for analysis_dir in sorted((base / ENTRIES).glob("*")) if (base / ENTRIES).is_dir() else []:
            for folder in sorted(p for p in analysis_dir.iterdir() if p.is_dir()):
                found.append(_read_entry(folder, analysis_dir.name, folder.name))
        return found


def _records(manifest: Manifest) -> dict[str, Any]:
    return {key: dump(record) for key, record in manifest.records.items()}


def _differences(stored: Manifest, local: Manifest) -> list[str]:
    old, new = _records(stored), _records(local)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            lines.append(f"{key}: {'only in the store' if b is None else 'not in the store'}")
            continue
        # Figures and notebooks differ in bytes between machines; the recorded values are what is compared.
        a_val, b_val = a.get("value", a.get("rows", a.get("sha256"))), b.get("value", b.get("rows", b.get("sha256")))
        if a_val != b_val:
            lines.append(f"{key}: stored {_short(a_val)}, this run {_short(b_val)}")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- push, pull


def push(project: Project, names: tuple[str, ...] = (), force: bool = False) -> Pushed:
    """Store the current result of each analysis (all by default) that is complete and intact."""
    registry = project.config.analyses
    selected = list(names) or list(registry)
    local: dict[str, tuple[Path, Manifest]] = {}
    problems = []
    for name in selected:
        folder = results_dir(project, name)
        manifest = load_manifest(folder)
        problem = "no sealed result" if manifest is None or manifest.key is None else verify_files(folder, manifest)
        if problem or manifest is None:
            problems.append(
                Problem(
                    Location(os.path.relpath(folder, Path.cwd())),
                    f"{name}: nothing to push ({problem})",
                    "run it first, e.g. livingreview run --profile full",
                )
            )
            continue
        local[name] = (folder, manifest)
    if problems:
        raise AnalysisError(problems)
    store = open_store(project)
    result = Pushed(store.description)
    revision = project.revision

    def apply(base: Path) -> None:
        # A retried push starts again from the store as it is now.
        for done in (result.added, result.kept, result.replaced):
            done.clear()
        refused = []
        for name, (folder, manifest) in local.items():
            key = str(manifest.key)
            target = _entry_dir(base, name, key)
            if target.is_dir():
                stored = _read_entry(target, name, key)
                differing = _differences(stored.manifest, manifest) if stored.manifest else ["unreadable entry"]
                if not differing and stored.problem is None:
                    result.kept.append(name)
                    continue
                if not force:
                    why = stored.problem or "other values are stored under the same key"
                    refused.append(
                        Problem(
                            Location(f"{store.description}: {ENTRIES}/{name}/{key[:12]}"),
                            why,
                            "; ".join(differing[:12]),
                        )
                    )
                    continue
                shutil.rmtree(target)
                result.replaced.append(name)
            else:
                result.added.append(name)
            staging = target.with_name(f".{key}.part")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(folder, staging)
            info = {
                "analysis": name,
                "key": key,
                "profile": manifest.profile,
                "pushed": datetime.now(UTC).isoformat(timespec="seconds"),
                "pushed_from": platform.node(),
                "commit": revision.commit if revision else None,
            }
            (staging / ENTRY).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(staging, target)
        if refused:
            raise AnalysisError(
                [*refused, Problem(Location("results push"), "the store is append-only", "pass --force to replace")]
            )

    message = "Store results: " + ", ".join(f"{n} {str(m.key)[:12]}" for n, (_, m) in local.items())
    store.change(apply, message)
    return result


def _why(base: Path, task: Task) -> str:
    """What changed since the latest stored result of the same analysis and profile, if there is one."""
    latest: tuple[str, Manifest] | None = None
    for folder in (base / ENTRIES / task.name).glob("*") if (base / ENTRIES / task.name).is_dir() else []:
        entry = _read_entry(folder, task.name, folder.name)
        if entry.manifest is None or entry.problem or entry.manifest.profile != task.profile:
            continue
        when = str(entry.info.get("pushed", ""))
        if latest is None or when > latest[0]:
            latest = (when, entry.manifest)
    if latest is None:
        return f"none was ever pushed for {task.profile}"
    return f"{what_changed(latest[1], task)} since the one pushed {latest[0] or 'earlier'}"


def _matching(base: Path, task: Task, result: Pulled) -> Path | None:
    """The intact entry stored for ``task``'s key; None, with why in ``result.missing``, if there is none."""
    folder = _entry_dir(base, task.name, task.key)
    if not folder.is_dir():
        result.missing[task.name] = f"no stored {task.profile} result for this code ({_why(base, task)})"
        return None
    entry = _read_entry(folder, task.name, task.key)
    if entry.problem:
        result.missing[task.name] = f"the stored entry {task.key[:12]} was rejected: {entry.problem}"
        return None
    return folder


def pull(project: Project, selection: Selection) -> Pulled:
    """Bring the stored result of every selected analysis that matches the current tree into output/."""
    current: Plan = plan(project, selection)
    result = Pulled()
    wanted = [t for t in current.tasks if t.stale]
    result.cached = [t.name for t in current.tasks if not t.stale]
    if not wanted:
        return result
    with open_store(project).snapshot() as base:
        for task in wanted:
            folder = _matching(base, task, result)
            if folder is None:
                continue
            target = results_dir(project, task.name)
            staging = target.with_name(f".staging-{task.name}-pull-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(ENTRY))
            commit(staging, target)
            result.pulled.append(task.name)
    return result


def fetch(project: Project, selection: Selection, into: Path) -> Pulled:
    """Copies of the stored results that match the current code, verified, in ``into``/<analysis>/.

    What ``verify --against store`` compares with: unlike ``pull``, it neither looks at nor
    touches ``output/analyses``, so a reviewer's own cached results never stand in for the store's.
    """
    wanted: Plan = plan(project, replace(selection, force=True))
    result = Pulled()
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    with open_store(project).snapshot() as base:
        for task in wanted.tasks:
            folder = _matching(base, task, result)
            if folder is None:
                continue
            shutil.copytree(folder, into / task.name)
            result.pulled.append(task.name)
    return result
