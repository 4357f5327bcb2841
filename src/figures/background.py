"""Saving figures in forked processes while the stage draws the next one.

Saving is most of a figure stage's time (matplotlib draws the canvas, the PNG is compressed) and
runs on one core; building the next figure does not need the last one saved. So each figure is
handed, once built, to a forked copy of the process that saves it and exits, while this one goes
on: the figures are built in the same order with the same random numbers as one process would, so
the files are byte for byte the same whatever the number of cores.

Only on Linux: Windows has no fork, and on macOS Apple's frameworks are not safe in a forked child
(Python starts processes by spawning there). The child runs matplotlib, NumPy and Pillow only, never
torch, whose OpenMP threads do not survive a fork."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Save = Callable[[Any, str], None]


def processes_for(threads: int) -> int:
    """Saving processes for a stage given `threads` cores: one a core, none on one core (there the
    forks would only add their cost)."""
    return threads if threads > 1 and forks_here() else 0


def forks_here() -> bool:
    """Whether this platform saves figures in forked processes (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


@contextmanager
def saved_in_background(save: Save, processes: int) -> Iterator[Save]:
    """A `save(fig, name)` that runs the given one in up to `processes` forked children at once,
    closing the figure here; leaving the block waits for them all. A save that fails raises its own
    exception here (at the next figure or on leaving). `processes` < 1, or no fork: `save` itself."""
    if processes < 1 or not forks_here():
        yield save
        return
    import matplotlib.pyplot as plt

    running: dict[int, tuple[str, int]] = {}  # pid → (figure name, read end of its error pipe)

    def start(fig: Any, name: str) -> None:
        while len(running) >= processes:
            _reap(running)
        read, write = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child holds a copy of what is buffered
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; the tests see its files and errors
            os.close(read)
            os._exit(_child(save, fig, name, write))
        os.close(write)
        running[pid] = (name, read)
        plt.close(fig)

    try:
        yield start
    finally:
        failure = None
        while running:
            try:
                _reap(running)
            except BaseException as exc:  # wait for the rest first; report the first
                failure = failure or exc
        if failure is not None and sys.exc_info()[1] is None:
            raise failure


def _child(save: Save, fig: Any, name: str, write: int) -> int:
    """In the forked child: save, and on failure send the exception through the pipe. The exit code."""
    try:
        save(fig, name)
        return 0
    except BaseException as exc:
        try:
            data = pickle.dumps(exc)
        except Exception:  # an exception that does not pickle still says what went wrong
            data = pickle.dumps(RuntimeError(f"saving {name}: {type(exc).__name__}: {exc}"))
        os.write(write, data)
        return 1


def _reap(running: dict[int, tuple[str, int]]) -> None:
    """Wait for the oldest child (its pipe first: an exception larger than the pipe's buffer would
    block the child's exit); raise its exception if its save failed."""
    pid = next(iter(running))
    name, read = running.pop(pid)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()  # to the end: the child has exited or closed its end
    status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return
    try:
        failure = pickle.loads(data) if data else None
    except Exception:  # an exception class that does not rebuild from its arguments
        failure = None
    how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
    raise failure or RuntimeError(f"saving {name}: the process saving it {how}")
