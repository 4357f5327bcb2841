"""One training run on several processes, started by PyTorch's torchrun (never a launcher of ours).

Under `torchrun --standalone --nproc_per_node=N -m stages.train` every process trains on its slice of
each global batch (DistributedDataParallel averages the gradients), so the global batch and the
schedule are those of one process. `Dist` is what the training loop needs to know: its rank, the
world size, and a few collectives; with one process (plain `python`, or torchrun with N=1) every
collective is a no-op and training is exactly the single-process code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """The process that validates, logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch (the batch divides evenly: checked)."""
        if not self.active:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """`t` summed (or maxed) over the processes, in place; itself with one process."""
        if self.active:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MAX)
        return t

    def close(self) -> None:
        if self.active:
            import torch.distributed as td

            if td.is_initialized():
                td.barrier()  # nobody leaves while another still talks to it (gloo aborts on a closed peer)
                td.destroy_process_group()


def under_torchrun() -> bool:
    """True in a process that torchrun started (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: torch.device, timeout_s: float = 120.0) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (gloo on the CPU, NCCL on CUDA); returns this
    process's Dist and device (cuda:LOCAL_RANK on GPUs). A single process needs no group."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(), device
    import torch.distributed as td

    local = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return Dist(td.get_rank(), td.get_world_size()), device
