"""Where and how a stage computes: the device, CPU threads, determinism, precision, memory layout."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from src.params import TrainParams


@dataclass(frozen=True)
class Runtime:
    """What `setup_runtime` chose; recorded in metrics/train.json."""
    device: torch.device
    threads: int
    amp: bool            # bf16 autocast
    channels_last: bool

    @property
    def precision(self) -> str:
        return "bf16" if self.amp else "fp32"


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast is ~1.8x
    faster for the fast net; on a plain AVX2 laptop CPU it would be emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def setup_runtime(tc: "TrainParams", device: torch.device) -> Runtime:
    """Threads, determinism and the fast paths for `device`, from the train section of params."""
    torch.set_num_threads(int(tc.threads or available_cores()))
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = tc.amp == "bf16" or (tc.amp == "auto" and (device.type == "cuda"
                                                     or (device.type == "cpu" and cpu_has_bf16())))
    channels_last = tc.channels_last == "on" or (tc.channels_last == "auto" and device.type in ("cpu", "cuda"))
    return Runtime(device=device, threads=torch.get_num_threads(), amp=amp, channels_last=channels_last)


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA or the CPU when `amp`; a no-op otherwise."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
