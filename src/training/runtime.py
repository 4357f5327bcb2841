"""Where and how a stage computes: the device, CPU threads, determinism, precision, memory layout."""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from src.params import TrainParams


HALF = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # train.half → dtype
HALF_NAMES = {dtype: name for name, dtype in HALF.items() if dtype is not None}


@dataclass(frozen=True)
class Runtime:
    """What `setup_runtime` chose; recorded in metrics/train.json."""

    device: torch.device
    threads: int
    amp: bool  # bf16 autocast
    channels_last: bool
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...
    half: torch.dtype | None = None  # weights and activations in this dtype end to end (BatchNorm fp32)

    @property
    def precision(self) -> str:
        if self.half is not None:
            return f"{HALF_NAMES[self.half]} weights"
        return "bf16" if self.amp else "fp32"

    def describe(self) -> str:
        """One line for the log: where, how many threads, which precision and why."""
        where = str(self.device)
        bf16 = ", native bf16" if has_native_bf16(self.device) else ", no native bf16"
        if self.device.type == "cpu":
            where += f" ({self.cpu_capability}{bf16})"
        elif self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)}{bf16})"
        return (
            f"{where}, {self.threads} thread{'s' if self.threads > 1 else ''}, {self.precision}"
            f"{' autocast' if self.amp else ''}, {'channels_last' if self.channels_last else 'NCHW'}"
        )


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def _cpuinfo_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_native_bf16() -> bool:
    """True when PyTorch runs bf16 natively on this CPU: it reports an AVX-512 (or newer) kernel
    level (`torch.backends.cpu.get_cpu_capability()`, which ATEN_CPU_CAPABILITY lowers), oneDNN
    has bf16 kernels (ONEDNN_MAX_CPU_ISA lowers that), and the CPU has AVX512-BF16 or AMX. There
    bf16 autocast is ~1.8x faster for the fast net; on an AVX2 laptop CPU bf16 would be emulated."""
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2", "ZVECTOR", "VSX"):
        return False
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = True  # no such check in this build: trust the CPU flags
    return onednn_bf16 and _cpuinfo_has_bf16()


# set (and not to false/none/disabled), these make OpenMP bind its threads: GNU's, and Intel's KMP_AFFINITY
_OPENMP_BINDING = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")
_NOT_BINDING = ("", "false", "none", "disabled")


@functools.cache
def _openmp_default_threads() -> int:
    """OpenMP's own thread count, read once per process: before `set_threads` first changes it."""
    return torch.get_num_threads()


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count). Where the
    environment binds OpenMP's threads (as HPC modules often do), OpenMP pinned the main thread to
    one core when torch was loaded, so the mask then says 1. OpenMP's own count from before it
    pinned is what the process may use: torch's default threads, remembered from before the
    project first set a count (`set_threads`), so a later runtime in the same process sees it too."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if any(os.environ.get(k, "").lower() not in _NOT_BINDING for k in _OPENMP_BINDING):
        cores = max(cores, _openmp_default_threads())
    return cores


def set_threads(n: int) -> None:
    """Set torch's intra-op threads to `n`; the one place the project changes them, so that
    `available_cores` still knows OpenMP's own count afterwards."""
    _openmp_default_threads()
    torch.set_num_threads(n)


def cuda_has_native_bf16() -> bool:
    """True on Ampere (compute capability 8.0) or newer. Older GPUs (Colab's free T4 is 7.5) only
    emulate bf16: slow in eager mode, and torch.compile skips bf16 graphs there with a warning."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def has_native_bf16(device: torch.device) -> bool:
    """bf16 runs in hardware on `device`: an Ampere-or-newer GPU, or a CPU PyTorch runs bf16 on natively."""
    if device.type == "cuda":
        return cuda_has_native_bf16()
    return device.type == "cpu" and cpu_has_native_bf16()


def uses_channels_last(setting: str, device: torch.device) -> bool:
    """train.channels_last resolved for `device`: auto is on for the CPU and CUDA (faster there), off on MPS."""
    return setting == "on" or (setting == "auto" and device.type in ("cpu", "cuda"))


# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory(wanted: bool) -> bool:
    """Make glibc's malloc keep freed memory for the next allocations of this process, when
    `wanted` (`train.reuse_memory`; every computing stage passes it here).

    By default glibc serves every block over 32 MiB with an mmap of its own and unmaps it when it
    is freed. A training step of the CPU net allocates several such blocks (a batch's first-group
    activations and their gradients, 50 MB each) and frees them again, so every step the kernel
    maps fresh pages and zeroes each on its first touch. With blocks up to 1 GiB taken from the
    heap, and up to 2 GiB of free memory kept there, the same pages serve every step; the process
    holds on to its peak memory. False, changing nothing, where the C library is not glibc (macOS,
    Windows, musl) or not wanted; there is no way back to the default within the process."""
    if not wanted or not is_glibc():
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    # both, even if one is refused (an older glibc caps the mmap threshold at 32 MiB)
    done = [mallopt(_M_MMAP_THRESHOLD, 1 << 30), mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)]
    return all(done)


def is_glibc() -> bool:
    """True when this process runs on GNU libc (Linux, mostly); False on macOS, Windows, musl."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or no such name (macOS, musl)
        return False


def setup_runtime(tc: TrainParams, device: torch.device) -> Runtime:
    """Threads, determinism, the allocator and the fast paths for `device`, from the train section of params."""
    set_threads(int(tc.threads or available_cores()))
    reuse_freed_memory(tc.reuse_memory)
    torch.use_deterministic_algorithms(tc.deterministic, warn_only=True)  # also off again for a later runtime
    if tc.deterministic:
        # Deterministic mode also fills every new tensor with NaN, a debugging aid against reading
        # memory no op wrote: 4.5 % of an AVX2 training step (profiler), the same weights without it.
        torch.utils.deterministic.fill_uninitialized_memory = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    native_bf16 = has_native_bf16(device)
    amp = tc.amp == "bf16" or (tc.amp == "auto" and native_bf16)
    channels_last = uses_channels_last(tc.channels_last, device)
    half = HALF[tc.half]
    if half is torch.bfloat16 and device.type == "cuda" and not native_bf16:
        half = None  # bf16 weights (the GPU recipe's) on a pre-Ampere GPU, Colab's T4: fp32, compiled, not emulated
    return Runtime(
        device=device,
        threads=torch.get_num_threads(),
        amp=amp and half is None,
        channels_last=channels_last,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        half=half,
    )


def processor_name(device: torch.device) -> str | None:
    """The chip a run trained on, for telling machines apart in a review: the GPU's name, or the
    CPU's model ("AMD EPYC 7763 64-Core Processor"); None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    try:  # Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None  # Windows: "Intel64 Family 6 …"; macOS: only "arm" or "i386"


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA or the CPU when `amp`; a no-op otherwise."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
