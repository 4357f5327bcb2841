"""PyTorch's torchrun (`torch.distributed.run`), with its own report in one line: what the train
stage starts for `train.nproc` > 1 (stages/_parallel.py). Same arguments as torchrun.

torchrun itself answers a Ctrl-C with the traceback of its SignalException and a dead process
with a ChildFailedError traceback and table, 30-40 lines above the stage's own line. Here the
agent's log is quiet, a signal ends it with exit 130 and nothing printed (the stage
says where training stopped), and a failed process is one line: its rank, pid and exit code or
signal — or nothing, when every process stopped on an error the stage has already put in one line
(exit 2). The workers' own output is theirs, untouched."""

from __future__ import annotations

import logging
import sys

from src.errors import KNOWN_FAILURE_EXIT


def own_failures(failures: dict) -> dict:
    """The processes that failed on their own: not those torchrun stopped with SIGTERM after the
    first failure, nor those that left because a peer died (all of them if that leaves none)."""
    from src.training.distributed import LOST_PEER_EXIT

    def follower(f) -> bool:
        return f.signal_name() == "SIGTERM" or f.exitcode == LOST_PEER_EXIT

    return {r: f for r, f in failures.items() if not follower(f)} or failures


def reported_already(failures: dict) -> bool:
    """Whether the run stopped on an error rank 0 has put in one line: rank 0 failed on its own,
    and every process that did exited as a stage does after such a line (the others followed)."""
    own = own_failures(failures)
    return 0 in own and {f.exitcode for f in own.values()} == {KNOWN_FAILURE_EXIT}


def failure_line(failures: dict) -> str:
    """`rank 1 (pid 4321) was killed by SIGKILL (torchrun stopped the others)` from
    ChildFailedError.failures (rank → ProcessFailure): the processes torchrun stopped with SIGTERM
    after the first failure, and those that left because a peer died, are not what went wrong."""
    own = own_failures(failures)
    parts = []
    for rank, f in sorted(own.items()):
        how = f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with {f.exitcode}"
        parts.append(f"rank {rank} (pid {f.pid}) {how}")
    stopped = " (torchrun stopped the others)" if len(own) < len(failures) else ""
    return "; ".join(parts) + stopped


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its failures: the one line below
    try:
        run(parse_args(argv))
    except (SignalException, KeyboardInterrupt):
        return 130  # the processes got the signal too and stopped at a step boundary
    except ChildFailedError as exc:
        if reported_already(exc.failures):
            return KNOWN_FAILURE_EXIT
        print(f"torchrun: {failure_line(exc.failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
