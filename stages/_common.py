"""What every stage does: load and check params, run its `main`, and turn known errors into one
line that says what to do next (repeating the command the user actually ran)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

from src.errors import CheckpointError, DataError, DistributedFailure, NonFiniteLoss, ParamsError, TrainingInterrupted
from src.params import Params, load_params


def _cmdline(pid: int | str) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _dvc_args(args: list[str]) -> Optional[list[str]]:
    """The arguments after `dvc` in a command line (`dvc …`, `python -m dvc …`), else None."""
    for i, a in enumerate(args):
        if Path(a).name == "dvc":
            return args[i + 1:]
        if args[i:i + 2] == ["-m", "dvc"]:
            return args[i + 2:]
    return None


QUEUE_COMMANDS = ("queue-worker", "exec-run")  # what DVC's experiment queue runs a queued experiment under


def launching_command() -> Optional[str]:
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


def cpu_threads(p: Params) -> tuple[int, str]:
    """Threads for this stage and why: `train.threads` when set; else the cores this process may
    use, shared among DVC's queue workers when it runs in the queue (two runs with all cores each
    oversubscribe a laptop: each runs at well under half the speed of one)."""
    if p.train.threads:
        return p.train.threads, "train.threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = queue_workers() if launching_command() is None else 0
    if workers > 1:
        return max(1, cores // workers), f"{cores} cores shared by {workers} queue workers"
    return cores, f"the {cores} cores this process may use"


def newest_experiment() -> Optional[str]:
    """The name of the newest `dvc exp` experiment on the current commit (DVC keeps them as git refs
    refs/exps/<commit[:2]>/<commit[2:]>/<name>), or None."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        if not head:
            return None
        refs = subprocess.run(["git", "for-each-ref", "--sort=-committerdate", "--count=1", "--format=%(refname)",
                               f"refs/exps/{head[:2]}/{head[2:]}/"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    name = refs.stdout.strip().rsplit("/", 1)[-1]
    return name or None


def _undo_hint(cmd: Optional[str]) -> str:
    """After `dvc exp run -S …` the bad value stays in params.yaml (and DVC has removed this stage's
    output): say how to get back to where the user was, not only to the committed values."""
    words = (cmd or "").split()
    if not (words[:3] == ["dvc", "exp", "run"] and any(w.startswith(("-S", "--set-param")) for w in words)):
        return ""
    back = "`git checkout params.yaml && dvc checkout` restores the committed values"
    exp = newest_experiment()
    if exp:
        back = (f"`dvc exp apply {exp}` brings back the newest experiment (or name another from `dvc exp show`); "
                f"{back}")
    return f" (`dvc exp run -S` left this value in params.yaml: {back})"


def run_under_torchrun(name: str, nproc: int) -> None:
    """Run this stage again as `torchrun --standalone --nproc_per_node=N -m stages.<name>` (PyTorch's
    own launcher) and wait for it. SIGTERM is passed on (Ctrl-C reaches every process of the
    terminal's group by itself). A process that dies makes torchrun stop the others: that is a
    DistributedFailure here; after a signal, TrainingInterrupted (rank 0 saved a resume point)."""
    import signal
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", f"stages.{name}"]
    print(f"{name}: {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m stages.{name}", flush=True)
    got: dict = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, cores // nproc)))}
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
    if got:
        raise TrainingInterrupted(f"{got['signal']}: the {nproc} training processes stopped at a step boundary; "
                                  f"rank 0 saved .cache/train/resume.pt")
    raise DistributedFailure(f"a training process failed (torchrun exited with {code}; its report is above); "
                             f"the last resume point is .cache/train/resume.pt if an epoch had ended")


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Call `main(params)`; a known failure prints `<name>: error: <one line>` and exits non-zero
    (under torchrun, only rank 0 speaks)."""
    speak = os.environ.get("RANK", "0") == "0"  # torchrun's rank 0, or a single process
    relaunched = "RANK" in os.environ           # the process that started torchrun reports interruptions
    try:
        main(load_params("params.yaml"))
    except ParamsError as exc:
        print(f"{name}: error: {exc}{_undo_hint(launching_command())}", file=sys.stderr)
        sys.exit(2)
    except (DataError, CheckpointError, NonFiniteLoss) as exc:
        if speak:
            print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except DistributedFailure as exc:
        cmd = launching_command()
        again = f"; run the same command again to resume: {cmd}" if cmd else ""
        print(f"{name}: error: {exc}{again}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        cmd = launching_command()
        again = f"run the same command again to resume: {cmd}" if cmd else "run the experiment again to resume"
        if not relaunched:
            print(f"{name}: interrupted: {exc}; {again}", file=sys.stderr)
        sys.exit(130)
