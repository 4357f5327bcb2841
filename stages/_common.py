"""What every stage does: load and check params, run its `main`, and turn known errors into one line."""
from __future__ import annotations

import sys
from typing import Callable

from src.errors import CheckpointError, DataError, NonFiniteLoss, ParamsError, TrainingInterrupted
from src.params import Params, load_params


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Call `main(params)`; a known failure prints `<name>: error: <one line>` and exits non-zero."""
    try:
        main(load_params("params.yaml"))
    except (ParamsError, DataError, CheckpointError, NonFiniteLoss) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"{name}: interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
