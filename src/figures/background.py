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
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Save = Callable[[Any, str], None]


def processes_for(threads: int) -> int:
    """Saving processes for a stage given `threads` cores: one a core; none on one core, or where
    this process is pinned to one core (OpenMP's binding pins the main thread, and a fork inherits
    its mask), since there the forks would only add their cost."""
    return threads if threads > 1 and forks_here() and len(os.sched_getaffinity(0)) > 1 else 0


def forks_here() -> bool:
    """Whether this platform saves figures in forked processes (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


@contextmanager
def saved_in_background(save: Save, processes: int) -> Iterator[Save]:
    """A `save(fig, name)` that runs the given one in up to `processes` forked children at once,
    closing the figure here; leaving the block waits for them all. A save that fails raises its own
    exception here (at the next figure or on leaving), the child's traceback added as a note; an
    error of the block's own wins over theirs. `processes` < 1, or no fork: `save` itself."""
    if processes < 1 or not forks_here():
        yield save
        return
    running: dict[int, tuple[str, int]] = {}  # pid → (figure name, read end of its error pipe)
    try:
        yield lambda fig, name: _start(save, fig, name, running, processes)
    except BaseException:
        _wait_all(running)  # their files are in the stage's folders: done before it cleans up
        raise
    failure = _wait_all(running)
    if failure is not None:
        raise failure


@contextmanager
def figures_saved(folder: str | Path, dpi: int, threads: int) -> Iterator[Save]:
    """The figure stages' `save(fig, name)`: the PNG `folder/name` at `dpi` (src.io.save_figure),
    saved in forked processes as `threads` cores allow (`processes_for`)."""
    from src.io import save_figure

    png = lambda fig, name: save_figure(fig, Path(folder) / name, dpi)  # noqa: E731
    with saved_in_background(png, processes_for(threads)) as save:
        yield save


@contextmanager
def forked(work: Callable[[], Any], name: str, threads: int) -> Iterator[Callable[[], Any]]:
    """Run `work()`, which saves `name` (as messages say it), in a forked child while the block goes
    on; the block gets a function that waits for it and returns what it returned (pickled back) or
    raises its exception, the child's traceback added as a note. Leaving the block waits for the
    child in any case, and raises its exception if the block did not ask for its result. Where the
    stage may use one core only (`threads`, or the process's mask: `processes_for`), or cannot fork
    (no memory for another process): `work()` runs here, at once.

    For work that needs none of what the stage imports next: the theory stage's worked examples
    (NumPy and matplotlib) are drawn and saved while the stage imports torch, 2-3 s of one core."""
    if not processes_for(threads):
        result = work()
        yield lambda: result
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read, write = os.pipe()
    with _ctrl_c_held() as as_before:
        try:
            pid = os.fork()
        except OSError:
            pid = None
        if pid == 0:  # pragma: no cover - the child; the tests see its files and what it returned
            as_before()
            os.close(read)
            os._exit(_child_result(work, write))
    os.close(write)
    if pid is None:
        os.close(read)
        result = work()
        yield lambda: result
        return
    running = {pid: (name, read)}
    outcome: list[Any] = []

    def result() -> Any:
        if running:
            outcome.append(_reap(running))
        return outcome[0]

    try:
        yield result
    except BaseException:
        _wait_all(running)  # the block's own error wins
        raise
    failure = _wait_all(running)  # never asked for: its error is not lost
    if failure is not None:
        raise failure


def _child_result(work: Callable[[], Any], write: int) -> int:
    """In a forked child: `work()`'s result, or its exception and traceback, through the pipe; the
    exit code."""
    try:
        result = work()
        data, code = (b"" if result is None else pickle.dumps(result)), 0  # a save sends nothing
    except BaseException as exc:
        told = traceback.format_exc()
        try:
            data = pickle.dumps((exc, told))
        except Exception:  # an exception that does not pickle still says what went wrong
            data = pickle.dumps((None, told))
        code = 1
    try:
        with os.fdopen(write, "wb") as pipe:
            pipe.write(data)
    except OSError:  # the stage stopped reading (Ctrl-C): the exit code is all it hears
        pass
    return code


def _start(save: Save, fig: Any, name: str, running: dict[int, tuple[str, int]], processes: int) -> None:
    """Fork a child that saves `fig` (once fewer than `processes` run); where fork fails (no memory
    for another process), save it here. The figure is closed here either way."""
    import matplotlib.pyplot as plt

    try:
        while len(running) >= processes:
            _reap(running)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child holds a copy of what is buffered
        read, write = os.pipe()
        with _ctrl_c_held() as as_before:  # until the child is in `running`: else no one waits for it
            try:
                pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                pid = None
            if pid == 0:  # pragma: no cover - the child; the tests see its files and errors
                as_before()  # Ctrl-C stops the child's save
                os.close(read)
                os._exit(_child(save, fig, name, write))
            if pid is not None:
                os.close(write)
                running[pid] = (name, read)
        if pid is None:
            save(fig, name)
    finally:
        plt.close(fig)


@contextmanager
def _ctrl_c_held() -> Iterator[Callable[[], None]]:
    """A Ctrl-C (SIGINT) inside the block is noted and acted on when the block ends, not lost; yields
    the function that puts the handler from before back (for a forked child). Only the main thread
    may set a handler (the stages run there): elsewhere it changes nothing. The handler is swapped
    rather than the signal blocked: another thread (OpenMP's) would take a blocked signal, and Python
    would raise KeyboardInterrupt in the main thread all the same."""
    before = signal.getsignal(signal.SIGINT)
    if before is None or threading.current_thread() is not threading.main_thread():  # None: set outside Python
        yield lambda: None
        return
    noted: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: noted.append(frame))

    def as_before() -> None:
        signal.signal(signal.SIGINT, before)

    try:
        yield as_before
    finally:
        as_before()
        if noted and callable(before):
            before(signal.SIGINT, noted[0])  # Python's own: KeyboardInterrupt, here
        elif noted and before == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def _wait_all(running: dict[int, tuple[str, int]]) -> BaseException | None:
    """Wait for every child; the first failure among them, or None."""
    failure = None
    while running:
        try:
            _reap(running)
        except Exception as exc:  # a save's own error: wait for the rest, then report the first
            failure = failure or exc
    return failure


def _child(save: Save, fig: Any, name: str, write: int) -> int:
    """In the forked child: save (`_child_result`)."""
    return _child_result(lambda: save(fig, name), write)


def _reap(running: dict[int, tuple[str, int]]) -> Any:
    """Wait for the oldest child (its pipe first: an exception larger than the pipe's buffer would
    block the child's exit); raise its exception if its save failed, else return what it sent (a
    save sends nothing: None)."""
    pid = next(iter(running))
    name, read = running.pop(pid)  # first: an interrupt below must not leave a closed pipe to read again
    try:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()  # to the end: the child has exited or closed its end
    finally:  # an interrupt while reading still waits for the child, as for the others: no zombie
        status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return pickle.loads(data) if data else None
    try:
        failure, told = pickle.loads(data) if data else (None, "")
    except Exception:  # an exception class that does not rebuild from its arguments
        failure, told = None, ""
    if failure is None:
        last = told.strip().splitlines()[-1:] or [f"the process saving it {_how(code)}"]
        raise RuntimeError(f"saving {name}: {last[0]}")
    if hasattr(failure, "add_note"):  # Python 3.11+: the child's traceback under the parent's
        failure.add_note(f"in the process that saved {name}:\n{told.rstrip()}")
    raise failure


def _how(code: int) -> str:
    """How a child that failed without a word ended."""
    return f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
