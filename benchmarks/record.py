"""What every benchmark's results file records about the machine and the code, and how its command
line answers bad input: one line, as the pipeline's stages do.

An "emulated AVX2" number needs both of PyTorch's and oneDNN's switches: with only
`ATEN_CPU_CAPABILITY=avx2`, torch reports AVX2 while oneDNN's convolutions still run AVX-512
kernels (1.12x faster on a 2-core EPYC), so the file records both variables and the run warns."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EMULATION_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
RESULTS = Path("benchmarks/results")


def results_path(name: str) -> Path:
    """benchmarks/results/<name>.json for a plain file name, checked before a run spends its time
    (a name with "../" wrote outside the folder; a 300-character one failed after training)."""
    from src.errors import ParamsError

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", name):
        raise ParamsError(
            f"--name {name[:60]!r}: not a plain file name; allowed: letters, digits, '.', '_' and '-', up to 100 "
            f"(the results go to {RESULTS}/<name>.json)"
        )
    return RESULTS / f"{name}.json"


def half_emulation_warning() -> str | None:
    """A warning when only one of the two AVX2-emulation variables is set."""
    set_ = [k for k in EMULATION_VARS if os.environ.get(k)]
    if len(set_) == 1:
        missing = next(k for k in EMULATION_VARS if k not in set_)
        return (
            f"warning: {set_[0]} is set but {missing} is not: torch's kernels are limited, oneDNN's "
            f"convolutions are not, so this is not an AVX2 CPU's speed (set both)"
        )
    return None


def machine_record(device: torch.device | None = None) -> dict:
    """The machine and code a result comes from: torch, `device` (None: the one "auto" picks), its
    processor's name, threads, kernel level, native bf16, the emulation variables and the commit."""
    import torch

    from src.training.runtime import cpu_has_native_bf16, processor_name, resolve_device

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device = device or resolve_device("auto")
    return {
        "torch": torch.__version__,
        "commit": commit or None,
        "device": str(device),
        "processor": processor_name(device),  # a real AVX2 CPU and an emulating AVX-512 one read alike below
        "threads": torch.get_num_threads(),
        # an AVX2 run on a bigger CPU (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA) reads AVX2 here
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "env": {k: os.environ.get(k) for k in EMULATION_VARS},
    }


def write_results(
    path: Path, module: str, argv: list[str] | None, body: dict, device: torch.device | None = None
) -> None:
    """Write a results file whole or not at all (temp file + rename, as the stages write): the command
    that made it, the machine (`machine_record` of the run's `device`) and `body`, whose keys win;
    `argv` None means this process's own arguments."""
    from src.io import write_json

    command = shlex.join(["python", "-m", f"benchmarks.{module}", *(sys.argv[1:] if argv is None else argv)])
    write_json(path, {"command": command, **machine_record(device), **body})
    print(f"wrote {path}")


def run_cli(name: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """`main(argv)`, with bad params or data as one line (`<name>: error: …`, exit 2) and the
    half-set emulation warned about first."""
    from src.errors import DataError, ParamsError

    warning = half_emulation_warning()
    if warning:
        print(f"{name}: {warning}", file=sys.stderr)
    try:
        return main(argv)
    except (ParamsError, DataError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
