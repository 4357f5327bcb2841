"""What every stage does: load and check params, run its `main`, and turn known errors into one
line that says what to do next (repeating the command the user actually ran)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

from src.errors import CheckpointError, DataError, NonFiniteLoss, ParamsError, TrainingInterrupted
from src.params import Params, load_params


def launching_command() -> Optional[str]:
    """The command that started this stage: the nearest `dvc …` process above this one (Linux
    /proc), else this process's own `python -m …`; None under DVC's queue workers, where no single
    command reruns the experiment."""
    pid = os.getppid()
    for _ in range(10):
        try:
            args = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        for i, a in enumerate(args):
            rest = args[i + 1:] if Path(a).name == "dvc" else args[i + 2:] if args[i:i + 2] == ["-m", "dvc"] else None
            if rest is not None:
                return None if "queue-worker" in rest else shlex.join(["dvc", *rest])
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # this one's parent
        if pid <= 1:
            break
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return shlex.join(["python", "-m", spec.name, *sys.argv[1:]]) if spec else shlex.join(["python", *sys.argv])


def _undo_hint(cmd: Optional[str]) -> str:
    """After `dvc exp run -S …` the bad value stays in params.yaml: say how to get back."""
    words = (cmd or "").split()
    if words[:3] == ["dvc", "exp", "run"] and any(w.startswith(("-S", "--set-param")) for w in words):
        return " (`dvc exp run -S` left this value in params.yaml: `git checkout params.yaml` restores the committed ones)"
    return ""


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Call `main(params)`; a known failure prints `<name>: error: <one line>` and exits non-zero."""
    try:
        main(load_params("params.yaml"))
    except ParamsError as exc:
        print(f"{name}: error: {exc}{_undo_hint(launching_command())}", file=sys.stderr)
        sys.exit(2)
    except (DataError, CheckpointError, NonFiniteLoss) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        cmd = launching_command()
        again = f"run the same command again to resume: {cmd}" if cmd else "run the experiment again to resume"
        print(f"{name}: interrupted: {exc}; {again}", file=sys.stderr)
        sys.exit(130)
