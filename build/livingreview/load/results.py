"""Analysis results on disk: ``output/analyses/<name>/`` and its ``manifest.json``.

A result folder is trusted only if its manifest exists, is sealed (its own digest,
so a value edited by hand is noticed and the analysis re-run rather than published),
names the expected cache key, and every file it lists still has the recorded hash. Folders are built under a
temporary name and renamed into place whole, so an interrupted run leaves at most a
``.staging-*`` folder, which nothing trusts and the next run removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SEAL = "seal"


def results_dir(project, name: str) -> Path:
    return project.output_dir / "analyses" / name


def _digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its seal (re)computed: only the build's own commit step calls this."""
    return {**manifest, SEAL: _digest(manifest)}


def is_sealed(manifest: dict[str, Any]) -> bool:
    return manifest.get(SEAL) == _digest(manifest)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest in folder ``path`` as written, sealed or not (None if unreadable)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def load_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest in folder ``path``, only if its seal holds: nothing edited is ever used."""
    manifest = read_manifest(path)
    return manifest if manifest is not None and is_sealed(manifest) else None


def verify_files(folder: Path, manifest: dict[str, Any]) -> str | None:
    """None if every listed file is intact, else why not."""
    from livingreview.util.hashing import sha256_file

    for relative, digest in manifest.get("files", {}).items():
        file = folder / relative
        if not file.is_file():
            return f"missing {relative}"
        if sha256_file(file) != digest:
            return f"{relative} was modified"
    return None


def cached_manifest(project, name: str, key: str) -> tuple[dict[str, Any] | None, str]:
    folder = results_dir(project, name)
    manifest = read_manifest(folder)
    if manifest is None:
        return None, "never run" if not folder.exists() else "no valid manifest"
    if not is_sealed(manifest):
        return None, "manifest.json was changed after the run"
    if manifest.get("key") != key:
        return None, "inputs changed"
    problem = verify_files(folder, manifest)
    if problem:
        return None, f"corrupt cache entry: {problem}"
    return manifest, "up to date"


def commit(staging: Path, target: Path) -> None:
    """Seal the staging folder's manifest and swap the folder into place."""
    manifest = read_manifest(staging)
    if manifest is not None:
        text = json.dumps(sealed(manifest), indent=2, ensure_ascii=False)
        (staging / MANIFEST).write_text(text + "\n", encoding="utf-8")
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
