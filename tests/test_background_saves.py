"""Figures saved in forked processes (src.figures.background): the same bytes as saved in turn,
a failed save raises its own error in the stage, and nothing is left running or open."""

from __future__ import annotations

import os
import signal

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from src.errors import OutputError  # noqa: E402
from src.figures import background  # noqa: E402
from src.figures.background import processes_for, saved_in_background  # noqa: E402
from src.io import save_figure  # noqa: E402

pytestmark = pytest.mark.skipif(not background.forks_here(), reason="figures are saved in forked processes on Linux")


@pytest.fixture(autouse=True)
def _no_open_figures():
    """Other test files may leave figures open; these tests check that none of theirs stays open."""
    plt.close("all")


@pytest.fixture
def left_behind():
    """The child processes (zombies included) a test leaves that were not there when it began: one
    that an earlier test left after failing is not this test's."""
    assert os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")  # else _children() sees none
    before = set(_children())
    return lambda: sorted(set(_children()) - before)


def figures(n: int):
    """n small figures with an image, a title and ticks: (name, figure) in order."""
    rng = np.random.default_rng(0)
    for i in range(n):
        fig, ax = plt.subplots(figsize=(2.5, 2))
        ax.imshow(rng.random((8, 8)), cmap="viridis")
        ax.set_title(f"figure {i}")
        yield f"f{i}.png", fig


def save_all(folder, processes: int, save=None) -> None:
    save = save or (lambda fig, name: save_figure(fig, folder / name, 80))
    with saved_in_background(save, processes) as bg:
        for name, fig in figures(6):
            bg(fig, name)


def test_the_files_are_the_bytes_one_process_writes(tmp_path):
    one, forked = tmp_path / "one", tmp_path / "forked"
    one.mkdir()
    forked.mkdir()
    save_all(one, 0)
    save_all(forked, 2)
    names = sorted(p.name for p in one.iterdir())
    assert names == [f"f{i}.png" for i in range(6)]
    assert sorted(p.name for p in forked.iterdir()) == names
    for name in names:
        assert (forked / name).read_bytes() == (one / name).read_bytes(), name
    assert plt.get_fignums() == []  # each figure closed here once its save started


def test_a_failed_save_raises_its_own_error_after_the_others_finish(tmp_path, left_behind):
    def save(fig, name):
        if name == "f2.png":
            raise OutputError(f"cannot write {tmp_path / name}: a folder is in the way")
        save_figure(fig, tmp_path / name, 80)

    with pytest.raises(OutputError, match="a folder is in the way") as caught:
        save_all(tmp_path, 2, save)
    assert (tmp_path / "f1.png").exists() and not (tmp_path / "f2.png").exists()
    assert left_behind() == [] and plt.get_fignums() == []
    if hasattr(caught.value, "__notes__"):  # Python 3.11+: where in the child it failed
        note = caught.value.__notes__[-1]
        assert note.startswith("in the process that saved f2.png:\nTraceback") and "raise OutputError" in note


def test_a_failed_save_is_not_lost_inside_an_except_block(tmp_path):
    """A stage that saves while handling an exception of its own (an `except` block up the stack)
    still hears of a save that failed."""

    def save(fig, name):
        raise OutputError(f"cannot write {name}")

    try:
        raise KeyError("handled up the stack")
    except KeyError:
        with pytest.raises(OutputError, match="cannot write f0.png"):
            save_all(tmp_path, 2, save)


def test_where_fork_fails_the_figure_is_saved_here_and_nothing_leaks(tmp_path, monkeypatch):
    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    fds = len(os.listdir("/proc/self/fd"))
    save_all(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}.png" for i in range(6)]
    assert len(os.listdir("/proc/self/fd")) == fds and plt.get_fignums() == []


def test_a_process_pinned_to_one_core_saves_in_turn(monkeypatch):
    """OpenMP's binding pins the main thread to one core and a fork inherits the mask: no forks."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert processes_for(2) == 0


def test_an_error_that_does_not_pickle_still_names_the_figure(tmp_path):
    class Odd(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def save(fig, name):
        raise Odd("the disk is full")

    with pytest.raises(RuntimeError, match=r"^saving f0\.png: \S*Odd: the disk is full$"):
        save_all(tmp_path, 1, save)


def test_a_save_killed_by_a_signal_is_an_error(tmp_path, left_behind):
    def save(fig, name):
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(RuntimeError, match=r"saving f0\.png: the process saving it was killed by signal 9"):
        save_all(tmp_path, 1, save)
    assert left_behind() == [] and plt.get_fignums() == []


def test_an_error_in_the_stage_wins_and_the_saves_are_waited_for(tmp_path, left_behind):
    save = lambda fig, name: save_figure(fig, tmp_path / name, 80)  # noqa: E731
    with pytest.raises(ValueError, match="the stage's own"), saved_in_background(save, 2) as bg:
        for name, fig in figures(3):
            bg(fig, name)
        raise ValueError("the stage's own error")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "f1.png", "f2.png"]
    assert left_behind() == []


def test_one_core_or_none_saves_in_this_process(tmp_path):
    seen = []

    def save(fig, name):
        seen.append(os.getpid())
        plt.close(fig)

    assert processes_for(1) == 0 and processes_for(2) == 2
    save_all(tmp_path, processes_for(1), save)
    assert seen == [os.getpid()] * 6


def test_a_ctrl_c_between_fork_and_the_bookkeeping_is_raised_after_it(tmp_path, left_behind, monkeypatch):
    """Ctrl-C right after fork, before the stage has recorded the child, would leave a process no one
    waits for (a zombie in a long-lived process): it is raised once the child is recorded, and the
    child is waited for. The child saves with Ctrl-C's handler as before, and so goes on the stage.
    Another thread runs meanwhile, as OpenMP's do in a stage: it would take the signal were it only
    blocked in this one."""
    import threading
    import time

    done = threading.Event()
    threading.Thread(target=done.wait, daemon=True).start()

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fork = os.fork

    def fork_then_ctrl_c():
        pid = fork()
        if pid:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # Python runs its handler for the signal here
        return pid

    def save(fig, name):
        (tmp_path / name).write_text(str(signal.getsignal(signal.SIGINT) is signal.default_int_handler))

    monkeypatch.setattr(os, "fork", fork_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_all(tmp_path, 2, save)
    assert left_behind() == [] and (tmp_path / "f0.png").read_text() == "True"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    done.set()


def test_an_interrupt_while_waiting_for_a_save_still_waits_for_its_process(tmp_path, left_behind):
    """Ctrl-C while the stage waits for a slow save (one process, so the second figure waits for
    the first): KeyboardInterrupt, and no process left behind, not even a zombie."""
    import threading
    import time

    def slow(fig, name):
        time.sleep(1.5)
        save_figure(fig, tmp_path / name, 80)

    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        save_all(tmp_path, 1, slow)
    assert left_behind() == [] and (tmp_path / "f0.png").exists()


def _children() -> list[int]:
    """Child processes of this one still alive (zombies included), from /proc."""
    pid = os.getpid()
    tasks = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(tasks).read().split()] if os.path.exists(tasks) else []


def test_forked_work_returns_its_result_from_another_process_or_raises_its_error(tmp_path, left_behind):
    def work():
        (tmp_path / "by.txt").write_text(str(os.getpid()))
        return {"drawn": [1, 2], "pid": os.getpid()}

    with background.forked(work, "the examples", 2) as result:
        here = os.getpid()
        got = result()
    assert got["drawn"] == [1, 2] and got["pid"] != here == os.getpid()
    assert (tmp_path / "by.txt").read_text() == str(got["pid"])

    def fails():
        raise OutputError("cannot write f0.png: the disk is full")

    with (
        pytest.raises(OutputError, match="the disk is full") as caught,
        background.forked(fails, "f0.png", 2) as result,
    ):
        result()
    assert caught.value.__notes__[0].startswith("in the process that saved f0.png:\nTraceback")
    with pytest.raises(OutputError, match="the disk is full"), background.forked(fails, "f0.png", 2):
        pass  # never asked for its result: leaving the block waits for it and raises its error
    assert left_behind() == []


def test_forked_work_runs_in_this_process_on_one_core(monkeypatch):
    with background.forked(os.getpid, "nothing", 1) as result:  # train.threads: 1, or a queue's share
        assert result() == os.getpid()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # a process pinned to one core
    with background.forked(os.getpid, "nothing", 2) as result:
        assert result() == os.getpid()
