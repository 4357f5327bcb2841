"""Checkpoints: what a saved model holds, loading with clear errors, and the files of a run in progress.

A checkpoint is a dict: {"format", "model" (state dict), "model_name", "classes", "mean", "std",
"params" (the data/augment/model/train sections it was trained with), ...}.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from src.errors import CheckpointError
from src.io import atomic_torch_save

CHECKPOINT_VERSION = 1


def fingerprint(obj: dict) -> str:
    """A stable hash of the params (and data facts) a run depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(path: str | Path, model_state: dict, meta: dict, **extra: Any) -> None:
    """Write a checkpoint atomically: the weights, the run's `meta` and any `extra` fields."""
    atomic_torch_save({"format": CHECKPOINT_VERSION, **meta, **extra, "model": model_state}, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """torch.load with a clear error for a missing, truncated or foreign file."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; run the train stage (dvc repro train)") from None
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); delete it and train again"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_VERSION or "model" not in ck:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format {CHECKPOINT_VERSION})")
    return ck


def load_weights(model: nn.Module, ck: dict, path: Path, classes: list[str] | None = None) -> None:
    """Load weights, naming what does not match (model name, class count, layer shapes)."""
    if classes is not None and ck.get("classes") != classes:
        raise CheckpointError(
            f"{path}: trained on classes {ck.get('classes')}, but the data has {classes}; retrain (dvc repro train)"
        )
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(
            f"{path}: weights of model {ck.get('model_name')!r} do not fit this model "
            f"({first}); retrain (dvc repro train)"
        ) from None


def load_trained(path: Path, classes: list[str]) -> tuple[nn.Module, dict]:
    """The model saved in checkpoint `path`, rebuilt from the params it was trained with; the
    checkpoint dict comes back with "model_params" and "augment_params" parsed."""
    from pydantic import ValidationError

    from src.models import build_model, check_model_files
    from src.params import AugmentParams, ModelParams, ParamsError, every_error, not_from_params_yaml

    def unfit(why: str) -> CheckpointError:  # the checkpoint's params are at fault here, not params.yaml
        return CheckpointError(
            f"{path}: its params do not fit this version of the code ({why}); retrain (dvc repro train)"
        )

    ck = load_checkpoint(path)
    parsed = {}
    for name, schema in (("model", ModelParams), ("augment", AugmentParams)):
        try:
            raw = ck["params"][name]
        except (KeyError, TypeError):
            raise unfit(f"no {name} section") from None
        try:
            parsed[name] = schema.model_validate(raw)
        except ValidationError as exc:
            raise unfit(every_error(exc, raw, schema, (name,))) from None
    if not isinstance(ck.get("classes"), list):
        raise unfit("no class list")
    check_model_files()  # a broken file in src/models/ is that file's line, not a reason to retrain
    try:
        # the model's own section is checked when it is built: a key added since the run shows here
        model = build_model(parsed["model"], len(ck["classes"]))
    except ParamsError as exc:
        raise unfit(not_from_params_yaml(str(exc))) from None
    load_weights(model, ck, path, classes)
    return model, {**ck, "model_params": parsed["model"], "augment_params": parsed["augment"]}


class Stateful(Protocol):
    """What a resume point holds the state of: a model, an optimizer, an EMA, a lookahead."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class RunFiles:
    """The files of a training run in progress, in `run_dir`: resume.pt (everything needed to go on
    after an interruption, tagged with the params fingerprint) and best.pt (the best epoch so far).
    Only the `writer` (rank 0 of several processes) writes or removes them; every process reads."""

    def __init__(self, run_dir: Path, fingerprint: str, meta: dict, writer: bool = True):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.resume, self.best = self.dir / "resume.pt", self.dir / "best.pt"
        self.fingerprint, self.meta, self.writer = fingerprint, meta, writer

    def load_resume(self, log: Callable[[str], None]) -> dict | None:
        """The resume checkpoint when it was written with the same params; else None (and the
        writer removes it, and best.pt with it)."""
        if not self.resume.exists():
            return None
        checkpoint = load_checkpoint(self.resume)
        if checkpoint.get("fingerprint") == self.fingerprint:
            return checkpoint
        log(f"train: {self.resume} is from other params; starting fresh")
        if self.writer:
            self.resume.unlink(missing_ok=True)
            self.best.unlink(missing_ok=True)
        return None

    def resume_into(
        self,
        model: Stateful,
        optimizer: Stateful,
        ema: Stateful | None,
        lookahead: Stateful | None,
        log: Callable[[str], None],
    ) -> dict | None:
        """Load the resume point of an interrupted run with the same params into these; returns the
        run state it was saved with, or None when there is none to continue."""
        checkpoint = self.load_resume(log)
        if checkpoint is None:
            return None
        try:  # same params, other code (the project updated between the interruption and now)
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if ema is not None and checkpoint.get("ema") is not None:
                ema.load_state_dict(checkpoint["ema"])
            if lookahead is not None and checkpoint.get("lookahead") is not None:
                lookahead.load_state_dict(checkpoint["lookahead"])
            return dict(checkpoint["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise self.unfit_resume(type(exc).__name__) from None

    def unfit_resume(self, why: str) -> CheckpointError:
        """The resume point of these params that this code cannot continue: one line, and how to start afresh."""
        return CheckpointError(
            f"{self.resume}: an interrupted run of these params that this version of the code cannot continue "
            f"({why}); delete {self.resume.parent} to start the run afresh"
        )

    def save_resume(
        self, model: Stateful, optimizer: Stateful, ema: Stateful | None, lookahead: Stateful | None, state: dict
    ) -> None:
        if self.writer:
            save_checkpoint(
                self.resume,
                model.state_dict(),
                self.meta,
                fingerprint=self.fingerprint,
                optimizer=optimizer.state_dict(),
                ema=ema.state_dict() if ema is not None else None,
                state=state,
                lookahead=lookahead.state_dict() if lookahead is not None else None,
            )

    def save_best(self, model: nn.Module, epoch: int, val_acc: float) -> None:
        if self.writer:
            save_checkpoint(self.best, model.state_dict(), self.meta, epoch=epoch, val_acc=val_acc)
