"""One training run on several processes, started by PyTorch's torchrun (never a launcher of ours).

Under `torchrun --standalone --nproc_per_node=N -m stages.train` every process trains on its slice of
each global batch (DistributedDataParallel averages the gradients), so the global batch and the
schedule are those of one process. `Dist` is everything the training loop asks about the other
processes: its rank, the world size, and what it does with them (`wrap` the model, `shard` a batch,
`sum_` counts, `agree` after a step, `on_main` for what rank 0 alone does); with one process (plain
`python`, or torchrun with N=1) each of these does nothing and training is exactly the
single-process code path.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from src.errors import ParamsError

T = TypeVar("T")


class Agreement(NamedTuple):
    """What every process acts on after a step."""

    stop: str | None  # the name of a signal some process got, or None
    nonfinite: float | None  # the loss to report when some process's loss was not finite, else None
    total_steps: int | None  # the schedule's length (rank 0's: its clock sizes a time budget)


def _nothing(*args, **kwargs) -> None:
    return None


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

    def describe(self) -> str:
        """For the log line naming where training runs ("" with one process)."""
        return f", {self.world} processes (torchrun)" if self.active else ""

    def on_main(self, fn: Callable[..., T]) -> Callable[..., T | None]:
        """`fn` on the main process; elsewhere a function that does nothing (and returns None)."""
        return fn if self.is_main else _nothing

    def own_share(self, total: T, zero: T) -> T:
        """This process's part of a `total` that will be summed over the processes again (`sum_`):
        rank 0 holds it all, the others `zero`."""
        return total if self.is_main else zero

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as the training steps call it: under DistributedDataParallel (gradients averaged
        over the processes, each seeing its slice of the batch) with several, itself with one."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch (the batch divides evenly: checked)."""
        if not self.active:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n : (self.rank + 1) * n]

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """`t` summed (or maxed) over the processes, in place; itself with one process."""
        if self.active:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MAX)
        return t

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Each 0-d tensor summed over the processes, in place (in float64, so counts stay exact);
        nothing with one process."""
        if not self.active:
            return
        totals = self.all_reduce(torch.stack([tensor.double() for tensor in tensors]))
        for tensor, total in zip(tensors, totals):
            tensor.copy_(total if tensor.is_floating_point() else total.round())

    def agree(
        self,
        device: torch.device,
        *,
        loss: torch.Tensor | None = None,
        read_loss: bool = False,
        stop_flag: dict | None = None,
        total_steps: int | None = None,
    ) -> Agreement:
        """After a step (or a validation), what every process acts on: a signal any of them got
        (`stop_flag`), a non-finite `loss` any of them saw, and rank 0's `total_steps`. With one
        process: no signal (the loop reads its flag before each step: `signal_before_step`), its
        loss checked only where `read_loss` (on a GPU a read waits for the queue), its own schedule."""
        if not self.active:
            bad = read_loss and loss is not None and not math.isfinite(loss.item())
            return Agreement(None, loss.item() if bad else None, total_steps)
        stop = stop_flag.get("stop") if stop_flag is not None else None
        bad = loss is not None and not math.isfinite(loss.item())
        total = total_steps if self.is_main and total_steps is not None else -1
        flags = self.all_reduce(
            torch.tensor([float(bool(stop)), float(bad), float(total)], dtype=torch.float64, device=device), op="max"
        ).tolist()
        return Agreement(
            stop=(stop or "a signal to another training process") if flags[0] > 0 else None,
            nonfinite=(loss.item() if bad else float("nan")) if flags[1] > 0 else None,
            total_steps=int(flags[2]) if flags[2] >= 0 else None,
        )

    def signal_before_step(self, stop_flag: dict | None) -> str | None:
        """A signal to stop on before the next step: one process reads its flag here; several read
        theirs after each step and act on it together (`agree`)."""
        if self.active or stop_flag is None:
            return None
        return stop_flag.get("stop")

    @contextmanager
    def closing(self) -> Iterator[None]:
        """Leave the process group after the block. A collective broken by a process that died
        exits this one quietly (LOST_PEER_EXIT), without the barrier a dead peer would break too: torchrun
        names the dead process, and the stage that started torchrun says what to do."""
        try:
            yield
        except BaseException as exc:
            if self.active and isinstance(exc, RuntimeError) and lost_peer(exc):
                raise SystemExit(LOST_PEER_EXIT) from None
            self.close()
            raise
        self.close()

    def close(self) -> None:
        if self.active:
            import torch.distributed as td

            if td.is_initialized():
                td.barrier()  # nobody leaves while another still talks to it (gloo aborts on a closed peer)
                td.destroy_process_group()


def under_torchrun() -> bool:
    """True in a process that torchrun started (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


LOST_PEER_EXIT = 3  # a process whose collective broke because another died: not itself the failure

# what gloo and NCCL say when the other end of a collective went away, reading from it or writing to
# it (not a setup or usage error, whose message the user must see)
_PEER_GONE = ("by peer", "connection reset", "connection closed", "broken pipe", "remote process exited")


def lost_peer(exc: BaseException) -> bool:
    """A collective that failed because another training process died: torchrun reports that one."""
    return any(s in str(exc).lower() for s in _PEER_GONE)


def check_world_size(nproc: int, follower_wait_s: float = 60.0) -> None:
    """Under torchrun started by hand, its process count must be `train.nproc`: the checks of the
    batch (it divides among the processes) and of frozen stages ran for that count, and the
    results (BatchNorm statistics per process) depend on it. Rank 0 says so in one line; the
    others wait for torchrun to stop them, because one that exits first makes torchrun stop rank 0
    before it has spoken."""
    if not under_torchrun() or (world := int(os.environ["WORLD_SIZE"])) == nproc:
        return
    if os.environ.get("RANK", "0") != "0":
        try:
            time.sleep(follower_wait_s)
        except KeyboardInterrupt:  # Ctrl-C reaches every process: rank 0's line is the one to read
            raise SystemExit(130) from None
        raise SystemExit(2)
    raise ParamsError(
        f"params.yaml: train.nproc={nproc}, but torchrun started {world} processes; "
        f"set train.nproc={world} (then python -m stages.train starts torchrun itself), "
        f"or start torchrun with --nproc_per_node={nproc}"
    )


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
