"""Analysis results on disk: ``output/analyses/<name>/`` and its ``manifest.json``.

A result folder is trusted only if its manifest exists, names the expected cache key,
and every file it lists still has the recorded hash. Folders are built under a
temporary name and renamed into place whole, so an interrupted run leaves at most a
``.staging-*`` folder, which nothing trusts and the next run removes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def results_dir(project, name: str) -> Path:
    return project.output_dir / "analyses" / name


def load_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def verify_files(folder: Path, manifest: dict[str, Any]) -> str | None:
    """None if every listed file is intact, else why not."""
    from livingreview.plan import sha256_file

    for relative, digest in manifest.get("files", {}).items():
        file = folder / relative
        if not file.is_file():
            return f"missing {relative}"
        if sha256_file(file) != digest:
            return f"{relative} was modified"
    return None


def cached_manifest(project, name: str, key: str) -> tuple[dict[str, Any] | None, str]:
    folder = results_dir(project, name)
    manifest = load_manifest(folder)
    if manifest is None:
        return None, "never run" if not folder.exists() else "no valid manifest"
    if manifest.get("key") != key:
        return None, "inputs changed"
    problem = verify_files(folder, manifest)
    if problem:
        return None, f"corrupt cache entry: {problem}"
    return manifest, "up to date"


def commit(staging: Path, target: Path) -> None:
    """Swap a complete staging folder into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(project) -> None:
    base = project.output_dir / "analyses"
    if base.is_dir():
        for leftover in base.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in base.glob(".old-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def all_manifests(project) -> dict[str, dict[str, Any]]:
    found = {}
    for name in project.config.analyses:
        manifest = load_manifest(results_dir(project, name))
        if manifest is not None:
            found[name] = manifest
    return found
