"""One command at a time per project: those that write ``output/`` and ``webpage/`` hold ``output/.lock``.

The lock is an OS lock (``flock``) on that file, held while the command runs. The
system drops it when the process ends, however it ends (``kill -9`` included), so it is
never stale. The holder writes its pid and command into the file, for the message of
whoever waits, and removes the file when it is done.

While the lock is held no other livingreview process writes into ``output/`` or
``webpage/``, so the temporary files and staging folders found there were left by a
command that was killed: the new holder removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from livingreview.util.errors import BusyError, Location, Problem


class Project(Protocol):
    """What the lock needs of a project (utilities may not import the loading layer)."""

    @property
    def output_dir(self) -> Path: ...

    @property
    def site_dir(self) -> Path: ...


LOCK_NAME = ".lock"

# What interrupted writers leave: atomic.atomic_path's ".<name>.<random>.part" files;
# staging folders (".staging-*": analyses, notebook pages, site versions); results.commit's
# ".old-*"; atomic.replace_tree's ".<name>.<random>" and ".<name>.old" folders.
_LEFT_FILE = re.compile(r"\..+\.part")
_LEFT_FOLDER = re.compile(r"\.staging-.*|\.old-.*|\..+\.old|\..+\.[a-z0-9_]{8}")
_SITE_DEPTH = 2  # webpage/v/<version>/ folders are renamed into place whole: nothing is left inside them


def _holder(fd: int) -> str:
    """'livingreview build (pid 1234)' from the lock file.

    The holder writes it right after taking the lock, over what a killed holder may have left.
    """
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        if len(text) >= 2 and text[0].isdigit() and _alive(int(text[0])):
            return f"livingreview {text[1]} (pid {text[0]})"
        time.sleep(0.05)
    return "another livingreview command"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def held(project: Project, command: str, wait: bool = True, report: Callable[[str], None] = print) -> Iterator[None]:
    """Hold ``project``'s lock while inside: wait for it (saying for whom), or raise BusyError if not ``wait``."""
    path = project.output_dir / LOCK_NAME
    fd = _acquire(path, wait, report)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        remove_leftovers(project)
        yield
    finally:
        # Removed while still held (a waiter then finds its file gone and starts again), and
        # output/ with it if the command wrote nothing else: a failed check leaves no output/.
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        os.close(fd)


def _acquire(path: Path, wait: bool, report: Callable[[str], None]) -> int:
    """A descriptor of ``path`` that holds the lock; the file is the one at ``path`` now, not one since removed."""
    announced = None
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the holder removed output/ as it finished
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise BusyError(
                        Problem(
                            Location(path),
                            f"{holder} is using this project",
                            "run again when it has finished, or without --no-wait to wait for it",
                        )
                    ) from None
                if holder != announced:
                    report(f"waiting for {holder} to finish with this project…")
                    announced = holder
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (found.st_dev, found.st_ino)


def remove_leftovers(project: Project) -> None:
    """Remove what killed commands left in ``output/`` and ``webpage/``; only the lock's holder may."""
    site = project.site_dir
    # Written also by commands that run without the lock (params, diff): their files may be in flight.
    unlocked = {project.output_dir / ".cache", project.output_dir / "diff", site / "diffs"}
    for top, depth in ((project.output_dir, None), (site, _SITE_DEPTH)):
        for folder, dirs, files in os.walk(top):
            if Path(folder) in unlocked:
                dirs.clear()
                continue
            for name in files:
                if _LEFT_FILE.fullmatch(name):
                    (Path(folder) / name).unlink(missing_ok=True)
            for name in [d for d in dirs if _LEFT_FOLDER.fullmatch(d)]:
                shutil.rmtree(Path(folder) / name, ignore_errors=True)
                dirs.remove(name)
            if depth is not None and len(Path(folder).relative_to(top).parts) >= depth:
                dirs.clear()
