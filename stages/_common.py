"""What every stage does first: load and check params, and turn known errors into one line."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from src.data import DataError
from src.params import ParamsError, load_params, Params
from src.training import CheckpointError, NonFiniteLoss, TrainingInterrupted


@contextmanager
def stage(name: str) -> Iterator[Params]:
    """Yield validated params; known failures print one line to stderr and exit non-zero."""
    try:
        yield load_params("params.yaml")
    except (ParamsError, DataError, CheckpointError, NonFiniteLoss) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"{name}: interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
