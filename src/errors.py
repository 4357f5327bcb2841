"""The failures a stage turns into one line for the user (no heavy imports: every stage loads this)."""

from __future__ import annotations

KNOWN_FAILURE_EXIT = 2  # a stage's exit code after the one line of a failure it knows (stages/_common.py)


class ParamsError(ValueError):
    """A params.yaml value that is not allowed; the message is one line for the user. `key`, where
    the raiser knows it, is the dotted key at fault (`train.batch_size`), for code that must tell
    whose value it was without reading the message."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class ModelCodeError(ParamsError):
    """A mistake in a model file's code (src/models/): the fix is in that file, not in params.yaml."""


class DataError(RuntimeError):
    """Data that can't be used; the message says which file and what to do."""


class OutputError(OSError):
    """An output that can't be written where the stage writes it (a file where its folder should
    be, no permission); the message names the path and what is in the way. An OSError, so a tool
    that words its own failed writes (`src.compare --out`) still catches it."""


class CheckpointError(RuntimeError):
    """A checkpoint that can't be used with these params."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a resumable checkpoint was saved."""


class DistributedFailure(RuntimeError):
    """A process of a multi-process (torchrun) training run failed; `resumable`: a resume point is kept."""

    def __init__(self, message: str, resumable: bool = True):
        super().__init__(message)
        self.resumable = resumable


class ReportedFailure(RuntimeError):
    """Training processes stopped on an error whose one line their rank 0 has printed already."""
