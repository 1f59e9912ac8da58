"""What a build stage last ran on, so that a rebuild skips a stage whose inputs did not change.

Each stage has a fingerprint: one digest of everything that can change what it writes
(its input files' bytes, its slice of the configuration, the upstream stage's output,
the tool itself). ``output/.build-state.json`` keeps, per stage, the fingerprint of its
last successful run and the hashes of the files it wrote. A stage is fresh when its
fingerprint is the recorded one and every output is still there, byte for byte; a
stage that is not fresh runs, and only the stages downstream of an output that actually
changed follow it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from livingreview.util import atomic
from livingreview.util.hashing import sha256_file

STATE_FILE = ".build-state.json"
PACKAGE = Path(__file__).resolve().parents[1]


def _file_part(path: Path) -> str | None:
    try:
        return sha256_file(path) if path.is_file() else None
    except OSError:
        return None


def files_digest(paths: Iterable[Path], base: Path) -> dict[str, str | None]:
    """``{path relative to base: sha256}`` of each file (None: missing), for a fingerprint."""
    return {os.path.relpath(p, base): _file_part(p) for p in sorted(set(paths))}


def _output_part(path: Path) -> str | None:
    if path.is_dir():
        return "tree:" + tree_digest(path)
    return _file_part(path)


def _tree_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Each file under ``folder`` (bytecode caches aside) in a fixed order, with its path relative to ``folder``."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield os.path.relpath(path, folder), path


def tree_digest(folder: Path) -> str:
    """One digest of every file under ``folder``: names, bytes, and where links point."""
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "absent"
    for relative, path in _tree_files(folder):
        digest.update(relative.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            digest.update((_file_part(path) or "unreadable").encode())
    return digest.hexdigest()


@cache  # once a process: the tool does not change while it runs
def tool_stats() -> str:
    """One digest of the names, sizes and modification times of the tool's files."""
    digest = hashlib.sha256()
    for relative, path in _tree_files(PACKAGE):
        stat = path.lstat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


@cache
def tool_digest(cache_file: Path | None = None) -> str:
    """The running livingreview's code and resources: a new version (or an edit) rebuilds everything.

    The bytes are hashed again only when a file's size or modification time differs from
    what ``cache_file`` (written by ``keep_tool_digest``) recorded with the digest, as git's
    index does: every build checks this first, and hashing the whole tool took a no-op
    rebuild 10 ms.
    """
    if cache_file:
        try:
            kept = json.loads(cache_file.read_text(encoding="utf-8"))
            if kept.get("package") == str(PACKAGE) and kept.get("stats") == tool_stats() and kept.get("digest"):
                return str(kept["digest"])
        except (OSError, ValueError, AttributeError):
            pass
    return tree_digest(PACKAGE)


@cache  # once a process: the tool does not change while it runs
def keep_tool_digest(cache_file: Path) -> None:
    """Record the tool's digest with its files' sizes and times, for ``tool_digest(cache_file)``."""
    kept = {"package": str(PACKAGE), "stats": tool_stats(), "digest": tool_digest(cache_file)}
    with contextlib.suppress(OSError, ValueError):
        if json.loads(cache_file.read_text(encoding="utf-8")) == kept:
            return
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cache_file, json.dumps(kept) + "\n")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class BuildState:
    """The fingerprints and output hashes of the last successful run of each stage."""

    def __init__(self, root: Path, output_dir: Path):
        self.path = output_dir / STATE_FILE
        self.base = root
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self.stages: dict[str, dict[str, Any]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.stages = {}

    def fresh(self, stage: str, key: str) -> bool:
        """Whether ``stage`` last ran on ``key`` and its outputs are as it left them."""
        entry = self.stages.get(stage)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return False
        outputs = entry.get("outputs")
        if not isinstance(outputs, dict):
            return False
        return all(sha is not None and _output_part(self.base / name) == sha for name, sha in outputs.items())

    def output_digest(self, stage: str) -> str | None:
        """The recorded outputs of ``stage``, as one digest for the stages that read them."""
        entry = self.stages.get(stage)
        return fingerprint(entry.get("outputs")) if isinstance(entry, dict) else None

    def done(self, stage: str, key: str, outputs: Iterable[Path], **data: Any) -> None:
        """Record a successful run; ``data`` (warnings, ...) is what a skipped run reports again."""
        found = {os.path.relpath(p, self.base): _output_part(p) for p in sorted(set(outputs)) if p.exists()}
        self.stages[stage] = {"key": key, "outputs": found, "data": data}
        self._save()

    def data(self, stage: str) -> dict[str, Any]:
        entry = self.stages.get(stage)
        found = entry.get("data") if isinstance(entry, dict) else None
        return found if isinstance(found, dict) else {}

    def forget(self, *stages: str) -> None:
        """Stages whose outputs are being replaced: a failure half-way leaves them stale, never fresh."""
        if any(self.stages.pop(stage, None) is not None for stage in stages):
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path, json.dumps(self.stages, indent=1, sort_keys=True) + "\n")
