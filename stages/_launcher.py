"""How this stage process was started, read from Linux /proc: the command the user ran (to repeat
in a message) and how many of DVC's queue workers share the machine.

Here rather than in src/: only the stage processes ask who launched them (the explorer, src.compare
and the benchmarks never do), and walking the live process tree is not the lab's subject. The
leading underscore: a helper, not a stage. Standard library only, and nothing runs at import time,
so every stage can import it through stages/_common.py without depending on torch code.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

QUEUE_COMMANDS = ("queue-worker", "exec-run")  # what DVC's experiment queue runs a queued experiment under


def _cmdline(pid: int | str) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _dvc_args(args: list[str]) -> list[str] | None:
    """The arguments after `dvc` in a command line (`dvc …`, `python -m dvc …`), else None."""
    for i, a in enumerate(args):
        if Path(a).name == "dvc":
            return args[i + 1 :]
        if args[i : i + 2] == ["-m", "dvc"]:
            return args[i + 2 :]
    return None


def launching_command() -> str | None:
    """The command that started this stage: the nearest `dvc …` process above this one (Linux
    /proc), else this process's own `python -m …`; None under DVC's queue, where no single command
    reruns the experiment."""
    pid = os.getppid()
    for _ in range(10):
        rest = _dvc_args(_cmdline(pid))
        if rest is not None:
            return None if any(c in rest for c in QUEUE_COMMANDS) else shlex.join(["dvc", *rest])
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        except OSError:
            break
        if pid <= 1:
            break
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return shlex.join(["python", "-m", spec.name, *sys.argv[1:]]) if spec else shlex.join(["python", *sys.argv])


def queue_workers() -> int:
    """How many of DVC's experiment-queue workers are alive on this machine (`dvc queue start -j N`
    starts N; each runs one experiment at a time). 0 outside the queue."""
    if not Path("/proc").is_dir():
        return 0
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            rest = _dvc_args(_cmdline(entry.name)) or []
            count += rest[:2] == ["exp", "queue-worker"]
    return count


def share_of_cores(threads: int | None, cores: int | None = None) -> tuple[int, str]:
    """Threads for a stage and why: `threads` (`train.threads`) when set; else the `cores` this
    process may use (None: its affinity mask, which is whole until torch loads OpenMP), shared
    among DVC's queue workers when it runs in the queue (two runs with all cores each oversubscribe
    a laptop: each runs at well under half the speed of one). Torch-free, so a stage can ask before
    it imports torch."""
    if threads:
        return threads, "train.threads"
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = queue_workers() if launching_command() is None else 0
    if workers > 1:
        return max(1, cores // workers), f"{cores} cores shared by {workers} queue workers"
    return cores, f"the {cores} cores this process may use"
