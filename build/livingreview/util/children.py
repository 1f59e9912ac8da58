"""Child processes that end with the command that started them, however it ends.

Ctrl-C and SIGTERM unwind the command, which stops what it started on the way out.
``kill -9`` runs no clean-up at all, so every child must notice by itself that its
parent is gone: on Linux each one asks the kernel, before it runs anything, for a signal
when its parent dies (``prctl(PR_SET_PDEATHSIG)``). The chain holds for grandchildren:
a Jupyter kernel dies with the worker process that started it and the worker with the
build; Chromium's helper processes exit with their browser process; a Dask
LocalCluster's workers watch a pipe from the build themselves (``distributed``'s
``AsyncProcess``). ``tests/test_processes.py`` checks each link.

The death signal is sent when the *thread* that started the child ends, not its
process, so children are started from threads that outlive them: the main thread, the
rebuild thread of ``serve``, a worker's task thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return prctl


# Looked up here, once: a child between fork and exec should only call it.
_PRCTL = _find_prctl()


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """In a new child of ``parent``: be sent ``signum`` when the parent's thread that started us ends."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    # The parent may have died between fork and prctl; then no signal would ever come.
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def preexec(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child is killed when this process (thread) ends."""
    parent = os.getpid()
    return lambda: die_with_parent(parent, signum)


# Process groups of the Jupyter kernels this process started and has not yet shut down.
_groups: set[int] = set()


def track_group(pgid: int) -> None:
    """Have ``kill_groups`` kill process group ``pgid`` (a kernel and whatever it started) until it is forgotten."""
    _groups.add(pgid)


def forget_group(pgid: int | None) -> None:
    _groups.discard(pgid)


def kill_groups() -> None:
    for pgid in list(_groups):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def end_thread() -> NoReturn:
    """End a thread whose worker processes ``stop_all`` stopped: nobody waits for its build any more.

    Exactly ``SystemExit``: threading ends a thread on it without a traceback (not on a subclass).
    """
    raise SystemExit


_stoppers: dict[Callable[[], None], threading.Thread] = {}
_stopping = threading.Event()
STOP_WAIT = 10.0  # seconds stop_all waits for a stopped thread to unwind


@contextlib.contextmanager
def stoppable(stop: Callable[[], None]) -> Iterator[None]:
    """While inside: ``stop_all`` calls ``stop`` (which must end the processes it stands for, quickly)."""
    _stoppers[stop] = threading.current_thread()
    try:
        yield
    finally:
        _stoppers.pop(stop, None)


def stop_all() -> None:
    """Stop the worker processes of builds still running in other threads (serve's rebuild), and wait for them.

    Waiting means that nothing writes into output/ once the command has said it stopped.
    """
    _stopping.set()
    stopped = dict(_stoppers)
    for stop in stopped:
        stop()
    deadline = time.monotonic() + STOP_WAIT
    for thread in set(stopped.values()) - {threading.current_thread()}:
        thread.join(max(0.0, deadline - time.monotonic()))


def stopping() -> bool:
    return _stopping.is_set()
