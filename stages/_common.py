"""What every stage does: load and check params, run its `main`, and turn known errors into one
line that says what to do next (repeating the command the user actually ran, found by
stages/_launcher.py)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from src.errors import (
    KNOWN_FAILURE_EXIT,
    CheckpointError,
    DataError,
    DistributedFailure,
    ModelCodeError,
    NonFiniteLoss,
    OutputError,
    ParamsError,
    ReportedFailure,
    TrainingInterrupted,
)
from src.io import output_problem
from src.params import Params, load_params
from stages._launcher import launching_command


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Call `main(params)`; a known failure prints `<name>: error: <one line>` and exits non-zero
    (under torchrun, only rank 0 speaks). A process torchrun started leaves without the
    interpreter's teardown (`leave_now`)."""
    by_torchrun = "RANK" in os.environ  # a process torchrun started (it sets RANK)
    code = _outcome(name, main, by_torchrun)
    if by_torchrun:
        leave_now(code)
    if code:
        sys.exit(code)


def leave_now(code: int) -> NoReturn:
    """Exit with `code` once stdout and stderr are flushed, skipping Python's and libtorch's
    teardown. Why: after `destroy_process_group` libtorch still holds gloo's process group, and its
    teardown at exit now and then aborts a process whose work is done ("terminate called without an
    active exception", SIGABRT: 1 run of 33 in one test loop, once in a full CI), which torchrun
    reports as a failed run. Everything the stage writes is written (atomically) before this."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _outcome(name: str, main: Callable[[Params], None], by_torchrun: bool) -> int:
    """Run the stage; its exit code (0, or 2 / 130 after the one line a known failure prints)."""
    speak = os.environ.get("RANK", "0") == "0"  # torchrun's rank 0, or a single process
    # What the stage imported (torch, matplotlib: about 240,000 objects the collector tracks) lives
    # until exit: frozen, the collector stops walking it in every full collection and again at
    # exit, 0.4-0.6 s of a figure stage on a 2-core CPU.
    gc.freeze()
    try:
        check_outputs(name)
        main(load_params("params.yaml"))
    except ModelCodeError as exc:  # the fix is in the model's file: undoing a -S value would not help
        if speak:
            print(f"{name}: error: {exc}", file=sys.stderr)
        return KNOWN_FAILURE_EXIT
    except ParamsError as exc:
        if speak:
            print(f"{name}: error: {exc}{_undo_hint(launching_command())}", file=sys.stderr)
        return KNOWN_FAILURE_EXIT
    except (DataError, CheckpointError, NonFiniteLoss, OutputError) as exc:
        if speak:
            print(f"{name}: error: {exc}", file=sys.stderr)
        return KNOWN_FAILURE_EXIT
    except ReportedFailure:
        return KNOWN_FAILURE_EXIT
    except DistributedFailure as exc:
        cmd = launching_command()
        again = f"; run the same command again{' to resume' if exc.resumable else ''}: {cmd}" if cmd else ""
        print(f"{name}: error: {exc}{again}", file=sys.stderr)
        return KNOWN_FAILURE_EXIT
    except TrainingInterrupted as exc:
        cmd = launching_command()
        again = f"run the same command again to resume: {cmd}" if cmd else "run the experiment again to resume"
        if not by_torchrun:  # the process that started torchrun reports interruptions
            print(f"{name}: interrupted: {exc}; {again}", file=sys.stderr)
        return 130
    return 0


def check_outputs(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> None:
    """An OutputError before any work where something stands in the way of one of the stage's
    outputs in dvc.yaml: a file where its folder should be, or, for an output dvc.lock records as a
    folder (or a file), a file (or a folder) of its name. A stage run by hand would otherwise write
    its first outputs and fail at the next (DVCLive with a traceback). `dvc repro` finds that itself;
    no dvc.yaml here (a test's folder): nothing to check."""
    spec = _stage_entry(_yaml(dvc_yaml), stage)
    if not spec:
        return
    folders = _recorded_folders(_yaml(dvc_yaml.with_name("dvc.lock")), stage)
    for kind in ("outs", "metrics", "plots"):
        for out in spec.get(kind) or []:
            path = next(iter(out)) if isinstance(out, dict) else out
            problem = output_problem(path, folders.get(path)) if isinstance(path, str) and "${" not in path else None
            if problem:
                raise OutputError(problem)


def _yaml(path: Path) -> dict:
    """A YAML file's mapping; {} where it is missing or not a mapping of valid YAML."""
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 1 ms for dvc.yaml, not 11
        data = yaml.load(path.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _stage_entry(doc: dict, stage: str) -> dict:
    """The mapping `stages: {stage: …}` of a parsed dvc.yaml or dvc.lock holds for `stage`; {} where
    there is none."""
    stages = doc.get("stages")
    entry = stages.get(stage) if isinstance(stages, dict) else None
    return entry if isinstance(entry, dict) else {}


def _recorded_folders(lock: dict, stage: str) -> dict[str, bool]:
    """{output path: whether the stage's last run wrote a folder there} from dvc.lock (a folder's
    hash ends in ".dir")."""
    outs = _stage_entry(lock, stage).get("outs")
    recorded = [o for o in outs or [] if isinstance(o, dict) and isinstance(o.get("path"), str)]
    return {o["path"]: str(o.get("md5", "")).endswith(".dir") for o in recorded if o.get("md5")}


def _undo_hint(cmd: str | None) -> str:
    """After `dvc exp run -S …` the bad value stays in params.yaml (and DVC has removed this stage's
    output): say how to get back to where the user was, not only to the committed values."""
    words = (cmd or "").split()
    if not (words[:3] == ["dvc", "exp", "run"] and any(w.startswith(("-S", "--set-param")) for w in words)):
        return ""
    # not `git checkout params.yaml`: after a failed run DVC leaves git's index holding the changed
    # files' sizes and times with the committed contents, so git sees nothing to restore; read-tree
    # drops that and the checkout then compares contents
    back = "`git read-tree HEAD && git checkout -- params.yaml && dvc checkout` restores the committed params.yaml"
    exp = newest_experiment()
    if exp:
        back = f"`dvc exp apply {exp}` brings back the newest experiment (or name another from `dvc exp show`); {back}"
    return f" (`dvc exp run -S` left this value in params.yaml: {back})"


def newest_experiment() -> str | None:
    """The name of the newest `dvc exp` experiment on the current commit (DVC keeps them as git refs
    refs/exps/<commit[:2]>/<commit[2:]>/<name>), or None."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        if not head:
            return None
        refs = subprocess.run(
            [
                "git",
                "for-each-ref",
                "--sort=-committerdate",
                "--count=1",
                "--format=%(refname)",
                f"refs/exps/{head[:2]}/{head[2:]}/",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    name = refs.stdout.strip().rsplit("/", 1)[-1]
    return name or None
