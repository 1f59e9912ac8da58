"""Stage "plan": which analyses must run, with which parameters.

An analysis is re-executed only when something that can change its outputs changed.
Its cache key hashes: the notebook's code cells, the resolved parameters, the declared
input files, the local Python modules it imports (transitively), the environment lock
files. Not the device: where it ran (cpu or cuda, which machine) is provenance, so that a
result computed on a GPU serves a CPU-only build of the same code (the results store).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from livingreview.execution import notebook as nb
from livingreview.load.config import CONFIG_NAME, CPU_PROFILE
from livingreview.load.project import Project
from livingreview.load.results import KeyParts, Manifest, cached_manifest
from livingreview.util import atomic
from livingreview.util.errors import AnalysisError, ConfigError, Location, Problem, did_you_mean
from livingreview.util.hashing import sha256_file

KEY_VERSION = "2"  # bump when the layout of cached results or what the key hashes changes (2: no device)


@dataclass(frozen=True)
class Selection:
    """Which analyses to bring up to date, and how: what ``run``, ``build`` and ``verify`` were asked for."""

    names: tuple[str, ...] = ()  # none: every analysis in manuscript.yaml
    profile: str | None = None  # None: the configured profile (verify: the one each analysis was published with)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # analysis -> -p KEY=VALUE
    force: bool = False  # re-run even when the cache is up to date
    jobs: int | None = None  # None: the configured jobs


@dataclass
class Task:
    name: str
    notebook_path: Path
    parameters: dict[str, Any]
    profile: str
    key: str
    inputs: dict[str, str]
    modules: dict[str, str]
    gpu: bool = False  # its profile is one of its gpu_profiles: a cluster runs it on a GPU worker
    stale: bool = True
    reason: str = ""
    parts: KeyParts | None = None  # the rest of what the key hashes, for the manifest


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)

    @property
    def stale(self) -> list[Task]:
        return [t for t in self.tasks if t.stale]


@cache
def device_class() -> tuple[str, str]:
    """('cuda', GPU name) when an NVIDIA GPU is visible, else ('cpu', CPU model); no torch import."""
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return "cuda", done.stdout.strip().splitlines()[0]
    return "cpu", _cpu_model()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (so 3 is an int)."""
    if "=" not in text:
        raise ConfigError(Problem(Location("command line", key=f"-p {text}"), "expected key=value"))
    key, raw = text.split("=", 1)
    return key.strip(), YAML(typ="safe").load(raw) if raw.strip() else ""


def _check_type(param: nb.Parameter, value: Any) -> bool:
    expected = nb.TYPES.get(param.type)
    if expected is None:
        return True
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def resolve_parameters(
    project: Project, name: str, declared: dict[str, nb.Parameter], profile: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults < manuscript.yaml parameters < profile < command line, each checked by name and type."""
    config = project.config.analyses[name]
    layers = [
        (f"analyses.{name}.parameters", config.parameters),
        (f"analyses.{name}.profiles.{profile}", config.profiles.get(profile, {})),
        ("command line -p", overrides),
    ]
    values = {p.name: p.default for p in declared.values()}
    problems = []
    for where, layer in layers:
        for key, value in layer.items():
            location = Location(CONFIG_NAME if "command" not in where else "command line", key=f"{where}.{key}")
            if key not in declared:
                problems.append(
                    Problem(
                        location,
                        f"unknown parameter {key!r} of analysis {name!r}",
                        did_you_mean(key, declared, f"parameters: {', '.join(declared) or 'none'}"),
                    )
                )
            elif not _check_type(declared[key], value):
                problems.append(
                    Problem(
                        location,
                        f"parameter {key!r} must be {declared[key].type}, got {type(value).__name__} {value!r}",
                        f"see 'livingreview params {name}'",
                    )
                )
            else:
                values[key] = float(value) if declared[key].type == "float" else value
    if problems:
        raise ConfigError(problems)
    return values


def _local_module_files(project: Project, names: set[str], search: list[Path]) -> dict[str, str]:
    """Files of imported modules that live in the project (transitively), with their hashes."""
    found: dict[str, str] = {}
    pending = list(names)
    seen = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for base in search:
            candidates = (
                [base / f"{module}.py", *sorted((base / module).rglob("*.py"))]
                if (base / module).is_dir()
                else [base / f"{module}.py"]
            )
            for path in candidates:
                if path.is_file():
                    digest = sha256_file(path)
                    found[str(path.relative_to(project.root))] = digest
                    pending.extend(_imported(project, path, digest))
    return dict(sorted(found.items()))


def _imported(project: Project, path: Path, digest: str) -> list[str]:
    """The top-level modules a file imports, kept by its hash: parsing a large module costs a rebuild more
    than everything else it does when nothing changed."""
    cache_file = project.output_dir / ".cache" / "imports.json"
    known = _import_cache(cache_file)
    if digest not in known:
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.extend(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module.split(".")[0])
        known[digest] = sorted(set(names))
        with contextlib.suppress(OSError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(cache_file, json.dumps(known, sort_keys=True))
    return list(known[digest])


@cache
def _import_cache(path: Path) -> dict[str, list[str]]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _changed_files(kind: str, before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """'input changed: data.csv', 'module added: helper.py', ...: one per file whose hash differs."""
    found = []
    for path in sorted(before.keys() | now.keys()):
        if path not in before:
            found.append(f"{kind} added: {path}")
        elif path not in now:
            found.append(f"{kind} removed: {path}")
        elif before[path] != now[path]:
            found.append(f"{kind} changed: {path}")
    return found


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)


def what_changed(previous: Manifest, task: Task) -> str:
    """Why ``task`` must run again although it has a result: what differs from the run that made it.

    The parameters, inputs and modules of every manifest are compared; the code and the
    lock files only with a manifest that keeps its key's parts.
    """
    reasons = []
    parts = previous.key_parts
    now = task.parts or KeyParts()
    if parts is not None and parts.code != now.code:
        reasons.append("code changed")
    if previous.parameters != task.parameters:
        keys = sorted(previous.parameters.keys() | task.parameters.keys())
        detail = ", ".join(
            f"{key} {_shown(previous.parameters.get(key))} → {_shown(task.parameters.get(key))}"
            for key in keys
            if previous.parameters.get(key) != task.parameters.get(key)
        )
        reasons.append(f"parameters changed: {detail}")
    reasons += _changed_files("input", previous.inputs, task.inputs)
    reasons += _changed_files("module", previous.modules, task.modules)
    if parts is not None:
        reasons += _changed_files("environment", parts.environment, now.environment)
        if not reasons and parts.version != now.version:
            reasons.append("the layout of cached results changed (a new livingreview)")
    return "; ".join(reasons) or "inputs changed"


def check_profile(project: Project, names: list[str], given: str | None) -> None:
    """An unknown profile name is an error, not a silent run with the defaults."""
    profile = given or project.config.profile
    known = {CPU_PROFILE} | {p for name in names for p in project.config.analyses[name].profiles}
    if profile in known:
        return
    where = Location("command line", key=f"--profile {given}") if given else Location(CONFIG_NAME, key="profile")
    raise ConfigError(
        Problem(
            where,
            f"no analysis has a profile named {profile!r}",
            did_you_mean(profile, sorted(known), f"profiles: {', '.join(sorted(known))}"),
        )
    )


def check_names(project: Project, names: list[str]) -> None:
    """Every name is an analysis of the project, or one error lists those that are not."""
    registry = project.config.analyses
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ConfigError(
            [
                Problem(
                    Location(CONFIG_NAME, key=f"analyses.{name}"),
                    f"no analysis named {name!r}",
                    did_you_mean(name, registry, f"analyses: {', '.join(registry) or 'none'}"),
                )
                for name in unknown
            ]
        )


def plan(project: Project, selection: Selection | None = None) -> Plan:
    selection = selection or Selection()
    registry = project.config.analyses
    names = list(selection.names) or list(registry)
    check_names(project, names)
    check_profile(project, names, selection.profile)
    profile = selection.profile or project.config.profile
    result = Plan()
    problems: list[Problem] = []
    environment = {
        str(p): sha256_file(project.root / p) for p in project.config.environment if (project.root / p).is_file()
    }
    dev_class, _ = device_class()
    for name in names:
        config = registry[name]
        path = project.root / config.notebook
        try:
            summary = nb.summarize(path, project.output_dir / ".cache" / "notebooks")
            params = resolve_parameters(project, name, summary.parameters, profile, selection.overrides.get(name, {}))
        except (AnalysisError, ConfigError) as exc:
            problems.extend(exc.problems)
            continue
        inputs = {}
        for item in config.inputs:
            file = project.root / item
            if not file.is_file():
                problems.append(
                    Problem(Location(CONFIG_NAME, key=f"analyses.{name}.inputs"), f"input not found: {item}")
                )
            else:
                inputs[str(item)] = sha256_file(file)
        modules = _local_module_files(project, set(summary.imports), [path.parent, project.root])
        parts = KeyParts(version=KEY_VERSION, code=summary.code_digest, environment=environment, device=dev_class)
        material = {
            "version": parts.version,
            "code": parts.code,
            "parameters": params,
            "inputs": inputs,
            "modules": modules,
            "environment": parts.environment,
        }
        key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        gpu = profile in config.gpu_profiles and profile != CPU_PROFILE
        task = Task(name, path, params, profile, key, inputs, modules, gpu, parts=parts)
        manifest, why = cached_manifest(project, name, key, partial(what_changed, task=task))
        task.stale = selection.force or manifest is None
        task.reason = "forced" if selection.force else why
        result.tasks.append(task)
    if problems:
        raise ConfigError(problems)
    return result
