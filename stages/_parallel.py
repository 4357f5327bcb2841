"""How many threads and processes a computing stage (train, evaluate, visualize) uses: its CPU
threads, shared among DVC's queue workers, and starting train again under torchrun."""

from __future__ import annotations

import os
import sys

from src import paths
from src.errors import KNOWN_FAILURE_EXIT, DistributedFailure, ReportedFailure, TrainingInterrupted
from src.params import Params
from src.training.runtime import available_cores, reuse_freed_memory, set_threads
from stages._launcher import share_of_cores


def cpu_threads(p: Params) -> tuple[int, str]:
    """Threads for this stage and why (`share_of_cores`): `train.threads` when set; else the cores
    this process may use (`available_cores`, which knows OpenMP's binding), shared among DVC's
    queue workers when it runs in the queue."""
    return share_of_cores(p.train.threads, available_cores())


def use_cpu(p: Params) -> None:
    """Set up a computing stage that has no training runtime (evaluate, visualize, report): its
    CPU threads (`cpu_threads`) and glibc's reuse of freed memory (`train.reuse_memory`)."""
    set_threads(cpu_threads(p)[0])
    reuse_freed_memory(p.train.reuse_memory)


def run_under_torchrun(name: str, nproc: int) -> None:
    """Run this stage again as `torchrun --standalone --nproc_per_node=N -m stages.<name>` (PyTorch's
    own launcher, through stages/_torchrun.py) and wait for it. SIGTERM is passed on (Ctrl-C
    reaches every process of the terminal's group by itself). A process that dies makes torchrun
    stop the others: that is a DistributedFailure here; after a signal, TrainingInterrupted (rank 0
    saved a resume point); when all stopped on an error rank 0 has printed, ReportedFailure."""
    import signal
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "stages._torchrun",  # torchrun with its own report in one line
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        f"stages.{name}",
    ]
    print(f"{name}: {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m stages.{name}", flush=True)
    got: dict = {}
    # each process gets its share of the cores, unless the user set OMP_NUM_THREADS
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    proc = subprocess.Popen(cmd, env=env)

    def note(signum, frame):
        got["signal"] = signal.Signals(signum).name
        if signum == signal.SIGTERM:
            proc.send_signal(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if code == 0:
        return
    resume = paths.RUN_CACHE / "resume.pt"
    if got:
        raise TrainingInterrupted(
            f"{got['signal']}: the {nproc} training processes stopped at a step boundary; rank 0 saved {resume}"
        )
    if code == KNOWN_FAILURE_EXIT:
        raise ReportedFailure()  # the line above says what to change: resuming would fail again
    kept = f"the last resume point is {resume}" if resume.exists() else "no epoch had ended: the next run starts afresh"
    raise DistributedFailure(
        f"a training process failed (torchrun exited with {code}: the line above); {kept}", resumable=resume.exists()
    )
