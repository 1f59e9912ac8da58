"""The shortcut of a no-op rebuild: ``build`` run again, the same way, in a project where no file changed.

A rebuild that finds every stage up to date still loads the configuration, asks git, and
hashes every input and output: about 0.4 s, most of it importing pydantic and rich. So a
build, as it ends, records in ``output/.cache/up-to-date.json`` its command line and the
names, sizes, modification times and inodes of every file a build could read or has
written, as git's index records the working tree. The same command, run in the same
folder, finds each of them as it was, prints what a no-op rebuild reports, and stops
before anything else is imported; anything else falls through to the full check.

What is looked at: every file of the project but the output and site folders, virtual
environments, git's objects and tool caches; git's HEAD, index, refs and config; the
output folder; the published version folder; the tool's own files; the date; the
environment variables and interpreter the build runs with.

A build records only if no input changed while it ran, and none had changed within
0.1 s before it started: a file changed twice within the resolution of its timestamp
looks unchanged the second time, so a change that close to the start might have been
read, or not (git's "racy" files). Outputs are exempt: livingreview alone writes them,
under the project's lock, and renames each into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import chain
from pathlib import Path

from livingreview.util import atomic
from livingreview.util.fingerprint import PACKAGE, tool_stats
from livingreview.util.lock import LOCK_NAME

STAMP = Path(".cache") / "up-to-date.json"
_CONFIG = "manuscript.yaml"  # load/config.py's CONFIG_NAME, which would import pydantic
_RACY_NS = 100_000_000  # far more than a file system's timestamp resolution
_ENTRIES = 8  # command lines remembered per project (build, build --format html, ...)
# Folders whose files no build reads: git's own (its state is looked at below), caches, environments.
_SKIPPED = {
    ".git",
    "__pycache__",
    "node_modules",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".import_linter_cache",
}
_CONTROL = dict.fromkeys([*range(0x20), 0x7F])
_ENV_PREFIXES = ("LIVINGREVIEW", "PYTHON", "PATH", "SOURCE_DATE_EPOCH", "TZ", "LANG", "LC_", "NO_COLOR", "TERM")


@dataclass(frozen=True)
class Look:
    """What a build's files look like at one moment: a digest of its inputs, one of its outputs,
    and the newest modification time among the inputs that may be edited in place."""

    inputs: str
    outputs: str
    newest_ns: int


@dataclass(frozen=True)
class Layout:
    """Where the project's files are, as the configuration placed them."""

    root: Path
    output_dir: Path
    site_dir: Path
    published: tuple[Path, ...] = ()  # folders a build published into the site folder


def _files(top: Path, skip: frozenset[Path] = frozenset()) -> Iterator[tuple[str, os.stat_result | None]]:
    """Each file under ``top``, sorted, with its stat (the target's, for a link; None when it is gone)."""
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if path in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name in _SKIPPED or (path / "pyvenv.cfg").exists():
                continue
            yield entry.path + "/", None
            yield from _files(path, skip)
        else:
            try:
                yield entry.path, entry.stat()
            except OSError:
                yield entry.path, None


def _git_dirs(root: Path) -> tuple[Path, Path] | None:
    """The git folder of the checkout ``root`` is in, and the one its refs are in (they differ in a worktree)."""
    for folder in (root, *root.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot, dot
        if dot.is_file():
            match = re.match(r"gitdir: (.+)", dot.read_text(encoding="utf-8", errors="replace").strip())
            if not match:
                return None
            gitdir = (folder / match.group(1)).resolve()
            common = gitdir / "commondir"
            return gitdir, ((gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir)
    return None


def _git_files(root: Path) -> Iterator[tuple[str, os.stat_result | None]]:
    """What tells the commit, whether the tree is dirty, the remotes and the branches (the results store's)."""
    found = _git_dirs(root)
    if found is None:
        yield "no git", None
        return
    gitdir, common = found
    for path in (gitdir / "HEAD", gitdir / "index", common / "config", common / "packed-refs"):
        try:
            yield str(path), path.stat()
        except OSError:
            yield str(path), None
    yield from _files(common / "refs")


def _digest(found: Iterator[tuple[str, os.stat_result | None]]) -> tuple[str, int]:
    digest = hashlib.sha256()
    newest = 0
    for name, stat in found:
        if stat is None:
            digest.update(f"{name}\0-\n".encode())
        else:
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\n".encode())
            newest = max(newest, stat.st_mtime_ns)
    return digest.hexdigest(), newest


def look(layout: Layout) -> Look:
    """The files of a build of ``layout``'s project, as they are now."""
    output = layout.output_dir
    inputs, newest = _digest(_files(layout.root, frozenset({output, layout.site_dir})))
    # Git writes each of its files whole and renames it into place (a new inode every time), so a
    # recent one is no hazard; and git status rewrites the index whenever it refreshes it.
    git, _ = _digest(_git_files(layout.root))
    # The outputs are written by livingreview alone, under the project's lock, and renamed into place.
    outputs, _ = _digest(
        chain(_files(output, frozenset({output / STAMP.parent, output / LOCK_NAME})), *map(_files, layout.published))
    )
    return Look(f"{inputs} {git}", outputs, newest)


def _conditions() -> str:
    """One digest of what, besides the files and the command line (the record's key), a rebuild's outcome
    depends on; no secret is kept."""
    conditions = {
        "python": sys.executable,
        "tool": str(PACKAGE),
        "tool_files": tool_stats(),
        "date": date.today().isoformat(),  # an undated manuscript is stamped with the day it is built
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
    }
    return hashlib.sha256(json.dumps(conditions, sort_keys=True).encode()).hexdigest()


def _key(argv: Sequence[str]) -> str:
    return json.dumps([os.getcwd(), list(argv)])


def record(argv: Sequence[str], layout: Layout, before: Look, started_ns: int, report: Sequence[str]) -> None:
    """Remember that ``argv`` left every output up to date, if no input changed since ``before``.

    ``started_ns``: when the command started, before it read anything; ``before`` was looked
    at after that, before the build read the files; ``report`` is what a rebuild that finds
    everything up to date prints.
    """
    path, key = layout.output_dir / STAMP, _key(argv)
    entries = _load(path)
    entries.pop(key, None)
    now = look(layout)
    if now.inputs == before.inputs and now.newest_ns < started_ns - _RACY_NS:
        entries[key] = {
            "conditions": _conditions(),
            "layout": [str(layout.root), str(layout.output_dir), str(layout.site_dir)],
            "published": [str(p) for p in layout.published],
            "files": f"{now.inputs} {now.outputs}",
            "report": list(report),
        }
        # The newest last: the oldest command lines are the ones forgotten.
        entries = dict(list(entries.items())[-_ENTRIES:])
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(entries) + "\n")


def _load(path: Path) -> dict[str, dict]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _project_dir(argv: Sequence[str]) -> str | None:
    """The project folder of a plain ``build`` command line (-C/--project), or None for any other command."""
    project = "."
    args = iter(argv)
    for arg in args:
        if arg == "build":
            rest = list(args)
            return None if any(a in ("--force", "-h", "--help") for a in rest) else project
        if arg in ("-C", "--project"):
            project = next(args, "")
        elif arg.startswith("--project="):
            project = arg.partition("=")[2]
        elif arg.startswith("-C") and len(arg) > 2:
            project = arg[2:]
        elif arg not in ("-v", "--verbose"):
            return None
    return None


def _output_dir(root: Path) -> Path | None:
    """``output_dir`` as manuscript.yaml sets it on a plain top-level line, else the default; None if unclear."""
    try:
        text = (root / _CONFIG).read_text(encoding="utf-8")
    except OSError:
        return None
    if "output_dir" not in text:
        return root / "output"
    found = re.findall(r"^output_dir:[ \t]*([\w./-]+)[ \t]*(?:#.*)?$", text, re.M)
    return root / found[0] if len(found) == 1 and text.count("output_dir") == 1 else None


def replay(argv: Sequence[str]) -> bool:
    """Print the report of the last no-op rebuild by ``argv`` and return True, if no file changed since."""
    folder = _project_dir(argv)
    if folder is None:
        return False
    root = Path(folder).resolve()
    output = _output_dir(root)
    if output is None or (output / LOCK_NAME).exists():
        return False
    entry = _load(output / STAMP).get(_key(argv))
    if not isinstance(entry, dict) or entry.get("conditions") != _conditions():
        return False
    try:
        root_s, output_s, site_s = entry["layout"]
        layout = Layout(Path(root_s), Path(output_s), Path(site_s), tuple(Path(p) for p in entry["published"]))
        report = [str(line) for line in entry["report"]]
    except (KeyError, TypeError, ValueError):
        return False
    if (layout.root, layout.output_dir) != (root, output):
        return False
    now = look(layout)
    if f"{now.inputs} {now.outputs}" != entry.get("files"):
        return False
    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    print(f"– {'build':<8} up to date: no file it reads or writes changed since the last build", file=sys.stderr)
    for line in report:
        # As rich prints them: no control characters from the record reach the terminal.
        line = line.translate(_CONTROL)
        if colour and line.startswith("warning:"):
            line = "\x1b[33mwarning:\x1b[0m" + line.removeprefix("warning:")
        print(line, file=sys.stderr)
    return True
