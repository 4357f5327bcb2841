"""The training loop: one-cycle schedule over steps, optional time budget, EMA, resume.

    fit():  trainer = build_trainer()    runtime → Learner (model, optimizer, EMA, lookahead, DDP)
                                         → Batches → RunFiles → TimeBudget → resume
            while steps remain:
                trainer.train_epoch():   for each step: stop? → schedule → step() → after_step()
                                         (progress, TimeBudget.after_step, Dist.agree)
                trainer.end_epoch():     validate → keep the best → TimeBudget.after_epoch
                                         → save the resume point
            trainer.result()

Every random draw of step `s` comes from generators seeded by (seed, s), and the data order of
epoch `e` from (seed, e): a run resumed from any checkpoint continues exactly as an
uninterrupted one would, on the CPU. What differs with several processes lives in `Dist`
(src/training/distributed.py) and `RunFiles` (src/training/checkpoints.py); the loop reads the same for one.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.data.augment import alternating_flips, augment_batch, color_jitter, mixup
from src.data.autoaugment import AutoAugmentCIFAR10
from src.data.cifar import normalize
from src.errors import NonFiniteLoss, TrainingInterrupted
from src.models.base import conv_layers, freeze_plan, normalised_convs
from src.params import FEW_STEPS
from src.training.checkpoints import RunFiles
from src.training.distributed import Dist
from src.training.evaluation import evaluate
from src.training.optim import Lookahead, make_optimizer, set_hparams
from src.training.runtime import Runtime, autocast_for, setup_runtime
from src.training.startup import Laps

if TYPE_CHECKING:
    from src.params import AugmentParams, TrainParams

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, 32, 32), int64 labels (N,)


@dataclass
class FitConfig:
    """Everything `fit` needs besides the model and data."""

    train: TrainParams
    augment: AugmentParams
    run_dir: Path  # where resume.pt / best.pt live during the run
    fingerprint: str  # of the params: a resume point from other params is not used
    meta: dict  # stored in every checkpoint (model name, classes, mean/std, params)
    eval_batch_size: int = 1000
    progress: bool = True
    on_epoch: Callable[[EpochRow], None] | None = None
    log: Callable[[str], None] = print

    def epoch_done(self, row: EpochRow) -> None:
        if self.on_epoch is not None:
            self.on_epoch(row)


class EpochRow(TypedDict):
    """One epoch in the history (and in DVCLive's logs)."""

    epoch: int
    step: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    partial: bool  # the run ended inside this epoch (time budget)


@dataclass
class RunState:
    """Where the run is; saved in the resume checkpoint."""

    step: int = 0
    total_steps: int | None = None  # None while a time budget is still measuring the speed
    elapsed: float = 0.0
    train_time: float = 0.0
    images: int = 0
    history: list = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    partial_epoch: tuple = (0.0, 0, 0)  # loss sum, correct, seen of an epoch interrupted mid-way
    lrs: list = field(default_factory=list)  # the learning rate of every step so far

    @property
    def finished(self) -> bool:
        return self.total_steps is not None and self.step >= self.total_steps


@dataclass
class FitResult:
    steps: int
    steps_per_epoch: int
    history: list[EpochRow]
    best_val_acc: float
    best_epoch: int
    seconds: float  # the whole loop, validation included
    train_seconds: float  # training steps only
    images_seen: int
    runtime: Runtime
    model_state: dict
    optimizer_state: dict
    lrs: list[float]  # per step
    startup: dict[str, float]  # seconds of `fit`'s set-up phases and its first step (`build_trainer`)

    @classmethod
    def of(
        cls, state: RunState, steps_per_epoch: int, runtime: Runtime, learner: Learner, startup: dict[str, float]
    ) -> FitResult:
        return cls(
            steps=state.step,
            steps_per_epoch=steps_per_epoch,
            history=state.history,
            best_val_acc=state.best_val_acc,
            best_epoch=state.best_epoch,
            seconds=state.elapsed,
            train_seconds=state.train_time,
            images_seen=state.images,
            runtime=runtime,
            model_state=learner.model.state_dict(),
            optimizer_state=learner.optimizer.state_dict(),
            lrs=state.lrs,
            startup=startup,
        )

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def epochs_equivalent(self) -> float:
        return self.steps / self.steps_per_epoch

    @property
    def images_per_s(self) -> float:
        return self.images_seen / max(self.train_seconds, 1e-9)


def step_seed(seed: int, step: int) -> int:
    """The seed of every random draw of training step `step`."""
    return (seed * 1_000_003 + step) % (2**63)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits the n training images."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch + 1))


@contextmanager
def stop_on_signals(escalate: bool = True) -> Iterator[dict]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (with `escalate`, a second one
    kills at once; under torchrun a Ctrl-C arrives twice — from the terminal and from torchrun —
    so there the process finishes its step and saves instead)."""
    flag = {"stop": None}
    previous = {}

    def handler(signum, frame):
        if flag["stop"] is not None and escalate:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        flag["stop"] = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


class TimeBudget:
    """ "Train for N seconds": follow a provisional schedule for a few steps while measuring the speed,
    then size the schedule so the training steps, the remaining validation passes and the whole
    one-cycle fit; re-size from the speed measured since the last epoch's end every tenth of the
    budget and after every epoch; make the step where time runs out the last one.
    Only the process that `measures` (rank 0) sizes it; the others take its length (Dist.agree)."""

    WARMUP_STEPS = 2  # not timed: first-call allocations
    MEASURE_STEPS = 8  # timed before sizing (or 5 % of the budget, if that comes first)
    RESIZE_EVERY = 0.1  # of the budget: a first estimate from one slow step must not set the whole run

    def __init__(self, seconds: float, steps_per_epoch: int, val_cost_in_steps: float, measures: bool = True):
        self.seconds = seconds
        self.steps_per_epoch = steps_per_epoch
        self.val_cost_in_steps = val_cost_in_steps  # one validation pass, in training steps, until one is timed
        self.measures = measures
        self._from: tuple[float, int] | None = None  # (time, step) the speed is measured from
        self._eval_seconds: float | None = None  # the last validation pass, timed
        self._next_resize = 0.0  # elapsed seconds
        self._since: tuple[float, int, float] | None = None  # the last speed change: time, step, validation s since

    def provisional_total(self) -> int:
        """The schedule's length while the speed is not known yet."""
        return max(10 * self.steps_per_epoch, 1000)

    def after_step(self, state: RunState, elapsed: float) -> None:
        if not self.measures:
            return
        now = time.perf_counter()
        if self._from is None:
            if state.step >= self.WARMUP_STEPS:
                self._from = (now, state.step)
        else:
            measured = state.step - self._from[1]
            # re-size after enough steps or a long enough time: a short budget on a slow machine may hold
            # fewer steps than MEASURE_STEPS between two re-sizes
            enough = measured >= self.MEASURE_STEPS or now - self._from[0] > 0.05 * self.seconds
            sizing = state.total_steps is None and (enough or elapsed > 0.05 * self.seconds)
            checking = state.total_steps is not None and enough and elapsed >= self._next_resize
            if sizing or checking:
                sec_per_step = (now - self._from[0]) / measured
                timed = self._eval_seconds
                self._resize(
                    state, elapsed, sec_per_step, sec_per_step * self.val_cost_in_steps if timed is None else timed
                )
        if elapsed > self.seconds:
            state.total_steps = state.step  # out of time: this was the last step

    def speed_changed(self, state: RunState) -> None:
        """The steps from here on run at another speed (`train.freeze_at` froze a stage): re-size as
        soon as the new speed is measured, and let the epoch ends average only the steps since."""
        self._from, self._next_resize = None, 0.0
        self._since = (time.perf_counter(), state.step, 0.0)

    def after_epoch(self, state: RunState, elapsed: float, eval_seconds: float) -> None:
        """Re-size with the real numbers of the epochs so far (since the last speed change); measure
        the speed afresh from here."""
        self._from, self._eval_seconds = None, eval_seconds
        if state.total_steps is None or state.step >= state.total_steps:
            return
        if self._since is None:
            self._resize(state, elapsed, state.train_time / max(state.step, 1), eval_seconds)
            return
        started, step, evals = self._since
        evals += eval_seconds
        self._since = (started, step, evals)
        if state.step - step >= self.MEASURE_STEPS:  # else the next steps' measure re-sizes
            sec_per_step = (time.perf_counter() - started - evals) / (state.step - step)
            self._resize(state, elapsed, sec_per_step, eval_seconds)

    def _resize(self, state: RunState, elapsed: float, sec_per_step: float, eval_seconds: float) -> None:
        left = self.seconds - elapsed
        steps_left = max(0, int(left / sec_per_step))
        # validation passes still to come: at every epoch end the run crosses, and one at its end
        evals_left = max(
            1, math.ceil((state.step + steps_left) / self.steps_per_epoch) - state.step // self.steps_per_epoch
        )
        steps_left = max(0, int((left - evals_left * eval_seconds) / sec_per_step))
        state.total_steps = max(state.step + 1, state.step + steps_left)
        self._next_resize = elapsed + self.RESIZE_EVERY * self.seconds


def nonfinite_loss(what: str, last_good: Path) -> NonFiniteLoss:
    """The one error for a loss that became NaN or infinite, `what` saying when."""
    saved = f"the last good checkpoint is {last_good}" if last_good.exists() else "before the first epoch's checkpoint"
    return NonFiniteLoss(
        f"the training loss became {what}; {saved}. Lower train.lr or set train.grad_clip, then run again"
    )


class _EpochMeter:
    """Running training loss and accuracy of one epoch, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device, partial: tuple = (0.0, 0, 0)):
        self.loss_sum = torch.tensor(float(partial[0]), device=device)
        self.correct = torch.tensor(int(partial[1]), device=device)
        self.seen = int(partial[2])

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss * labels.shape[0]
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += labels.shape[0]

    def row(self, epoch: int, step: int, val: dict, lr: float, partial: bool) -> EpochRow:
        """The epoch's row in the history: these training numbers, `val`'s loss and accuracy."""
        return EpochRow(
            epoch=epoch,
            step=step,
            train_loss=self.loss_sum.item() / max(self.seen, 1),
            train_acc=self.correct.item() / max(self.seen, 1),
            val_loss=val["loss"],
            val_acc=val["acc"],
            lr=lr,
            partial=partial,
        )

    def check_finite(self, epoch: int, last_good: Path) -> None:
        if not math.isfinite(self.loss_sum.item()):
            raise nonfinite_loss(f"non-finite in epoch {epoch}", last_good)

    def snapshot(self) -> tuple:
        return (self.loss_sum.item(), int(self.correct.item()), self.seen)

    def reduce(self, dist: Dist) -> None:
        """Sum over the processes (each counted its slice of every batch); as is with one."""
        seen = torch.tensor(self.seen, device=self.loss_sum.device)
        dist.sum_(self.loss_sum, self.correct, seen)
        self.seen = int(seen.item())


def mixup_weight(alpha: float, seed: int) -> float:
    """MixUp's λ ~ Beta(α, α) for one step, drawn on the host from the step's seed (so a GPU is
    never asked for a number mid-step)."""
    return float(np.random.default_rng(seed).beta(alpha, alpha))


class Batch(NamedTuple):
    """A normalised training batch: images, labels and, under MixUp, the mixed-in labels and λ."""

    x: torch.Tensor
    y: torch.Tensor
    y_mix: torch.Tensor | None = None
    lam: float = 1.0


def train_step(
    model: nn.Module,
    forward: Callable,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    batch: Batch,
    train_params: TrainParams,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, logits), detached. Nothing here waits for the device."""
    smoothing = train_params.label_smoothing
    with autocast_for(runtime.device, runtime.amp):
        logits = forward(batch.x)
        loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=smoothing)
        if batch.y_mix is not None:
            loss = batch.lam * loss + (1 - batch.lam) * F.cross_entropy(
                logits.float(), batch.y_mix, label_smoothing=smoothing
            )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if train_params.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), train_params.grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
    return loss.detach(), logits.detach()


@dataclass(eq=False)
class Learner:
    """The model and what updates it. `forward` is the model as the steps call it: under DDP with
    several processes, compiled with train.compile."""

    model: nn.Module
    forward: Callable
    optimizer: torch.optim.Optimizer
    ema: torch.optim.swa_utils.AveragedModel | None = None
    lookahead: Lookahead | None = None
    freezes: list[tuple[float, nn.Module]] = field(default_factory=list)  # (fraction of the steps, stage)
    frozen: int = 0  # how many of `freezes` have happened
    muon_convs: list[str] | None = None  # optimizer muon: the convs it trains (`normalised_convs`)

    @property
    def eval_model(self) -> nn.Module:
        """What validation (and best.pt) sees: the EMA's weights when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def parts(self) -> tuple:
        """What a resume point holds the state of (RunFiles): model, optimizer, EMA, lookahead."""
        return self.model, self.optimizer, self.ema, self.lookahead

    def step(self, batch: Batch, train_params: TrainParams, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(self.model, self.forward, self.optimizer, self.ema, batch, train_params, runtime)

    def freeze_due(self, step: int, total_steps: int) -> list[int]:
        """FreezeOut (`train.freeze_at`): stop training each stage whose fraction of the schedule has
        passed, for good; returns the stages frozen now (0-based). A frozen stage's parameters get no
        gradient, so the optimizer leaves them be, and as the stages freeze from the input side,
        autograd skips their whole backward pass. A resumed run catches up at its first step."""
        now = []
        while self.frozen < len(self.freezes) and step >= self.freezes[self.frozen][0] * total_steps:
            self.freezes[self.frozen][1].requires_grad_(False)
            now.append(self.frozen)
            self.frozen += 1
        return now

    def after_step(self, step: int, total_steps: int) -> None:
        if self.lookahead is not None:
            self.lookahead.after_step(self.model, step, total_steps)


def build_learner(model: nn.Module, train_params: TrainParams, runtime: Runtime, dist: Dist) -> Learner:
    """The model on the device in the run's precision and memory layout, its optimizer, EMA,
    lookahead and the stages `train.freeze_at` freezes."""
    freezes = freeze_plan(model, train_params.freeze_at)
    # traced on the host in fp32, before the model moves or turns bf16 (its BatchNorm stays fp32)
    muon_convs = normalised_convs(model) if train_params.optimizer == "muon" else None
    model = model.to(runtime.device)
    if runtime.half is not None:  # weights and activations in half precision, BatchNorm in fp32
        to_half(model, runtime.half)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    lookahead = (
        Lookahead(model, train_params.lookahead_steps, train_params.lookahead_decay)
        if train_params.lookahead_steps
        else None
    )
    ema = None
    if train_params.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(train_params.ema_decay), use_buffers=True
        )
    optimizer = make_optimizer(model, train_params, muon_convs)
    forward = dist.wrap(model, runtime.device)
    if train_params.compile:
        forward = torch.compile(forward)
    return Learner(model, forward, optimizer, ema, lookahead, freezes, muon_convs=muon_convs)


class Batches:
    """The training images on the device and the batches made of them: batch i of an epoch's order
    augmented, mixed (MixUp), normalised, in the run's memory layout — the whole global batch, drawn
    alike in every process, then this process's slice."""

    def __init__(
        self,
        train: Split,
        mean: torch.Tensor,
        std: torch.Tensor,
        train_params: TrainParams,
        augment_params: AugmentParams,
        runtime: Runtime,
        dist: Dist,
    ):
        device = runtime.device
        self.images, self.labels = (tensor.to(device) for tensor in train)
        self.mean, self.std = mean.to(device), std.to(device)
        self.train_params, self.augment_params, self.runtime, self.dist = train_params, augment_params, runtime, dist
        self.autoaugment = AutoAugmentCIFAR10() if augment_params.autoaugment else None  # its tables, built once
        self.flips = (
            alternating_flips(self.images.shape[0], train_params.seed, device)
            if augment_params.hflip == "alternate"
            else None
        )
        self.steps_per_epoch = max(
            1, self.images.shape[0] // train_params.batch_size
        )  # the last partial batch is dropped

    def make(self, order: torch.Tensor, i: int, step: int, generator: torch.Generator) -> Batch:
        """Batch i of the epoch's `order`, for training step `step`."""
        batch_size, augment_params = self.train_params.batch_size, self.augment_params
        indices = order[i * batch_size : (i + 1) * batch_size]
        flip = None if self.flips is None else self.flips[indices] ^ bool(step // self.steps_per_epoch % 2)
        images = normalize(
            augment_batch(self.images[indices], augment_params, generator, self.autoaugment, flip), self.mean, self.std
        )
        images = color_jitter(images, augment_params.brightness, augment_params.contrast, generator)
        labels, mixed_labels, lam = self.labels[indices], None, 1.0
        if augment_params.mixup_alpha > 0:
            lam = mixup_weight(augment_params.mixup_alpha, step_seed(self.train_params.seed, step))
            images, labels, mixed_labels = mixup(images, labels, lam, generator)
            mixed_labels = self.dist.shard(mixed_labels)
        images, labels = self.dist.shard(images), self.dist.shard(labels)
        if self.runtime.half is not None:
            images = images.to(self.runtime.half)
        if self.runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return Batch(images, labels, mixed_labels, lam)


class Progress:
    """The progress bar and the line after each epoch (rank 0, with cfg.progress; else silent)."""

    def __init__(self, total: int, initial: int, show: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", desc="train", disable=not show, dynamic_ncols=True)

    def step(self, step: int, lr: float, loss: torch.Tensor | None) -> None:
        """One step done; every 10th shows the loss, when it may be read back (`loss` given)."""
        self.bar.update(1)
        if loss is not None and not self.bar.disable and step % 10 == 0:
            self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")

    def resize(self, total: int | None) -> None:
        self.bar.total = total

    def note(self, text: str) -> None:
        if not self.bar.disable:
            self.bar.write(text)

    def epoch(self, row: EpochRow) -> None:
        self.note(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
            f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}"
        )

    def close(self) -> None:
        self.bar.close()


def muon_note(model: nn.Module, muon_convs: list[str]) -> str | None:
    """A line when optimizer muon leaves trained convs to SGD (no BatchNorm takes their output, so
    Muon's rescaling of their filters would change the net); None when it trains them all."""
    trained = [n for n, m in conv_layers(model) if m.weight.requires_grad]
    if not muon_convs:
        return "train: note: no conv of this model feeds a BatchNorm (Muon's rescaling needs one): it trains with SGD"
    others = [n for n in trained if n not in muon_convs]
    if not others:
        return None
    shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
    return (
        f"train: note: Muon trains {len(trained) - len(others)} of the {len(trained)} trained convs, those a "
        f"BatchNorm takes the output of; SGD trains the others ({shown})"
    )


def build_trainer(
    model: nn.Module,
    train: Split,
    val: Split,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    cfg: FitConfig,
    dist: Dist = Dist(),
) -> Trainer:
    """Set up one `fit`: runtime, learner, batches, run files, time budget; then continue from the
    resume point of an interrupted run with the same params, if any. Each phase timed (`Trainer.laps`)."""
    train_params, log, laps = cfg.train, dist.on_main(cfg.log), Laps()
    runtime = setup_runtime(train_params, device)
    laps.lap("runtime")  # torch.use_deterministic_algorithms imports torch's compiler (its config)
    log(f"train: on {runtime.describe()}{dist.describe()}")
    learner = build_learner(model, train_params, runtime, dist)
    if train_params.optimizer == "muon" and (note := muon_note(learner.model, learner.muon_convs or [])):
        log(note)
    laps.lap("optimizer")  # the model on its device; a process's first optimizer imports torch._dynamo
    batches = Batches(train, mean, std, train_params, cfg.augment, runtime, dist)
    laps.lap("batches")
    steps_per_epoch = batches.steps_per_epoch
    files = RunFiles(cfg.run_dir, cfg.fingerprint, cfg.meta, writer=dist.is_main)
    budget = (
        None
        if train_params.time_budget_s is None
        else TimeBudget(
            train_params.time_budget_s,
            steps_per_epoch,
            val[0].shape[0] / train_params.batch_size / 3,
            measures=dist.is_main,
        )
    )
    state = resume(files, learner, log, dist.on_main(cfg.epoch_done), steps_per_epoch) or RunState(
        total_steps=None if train_params.time_budget_s else train_params.epochs * steps_per_epoch
    )
    if state.total_steps is not None and state.total_steps < FEW_STEPS:  # a quick try that cannot learn much
        log(
            f"train: note: {state.total_steps} optimizer step{'s' * (state.total_steps != 1)} in all "
            f"({train_params.epochs} epoch{'s' * (train_params.epochs != 1)} of {steps_per_epoch} steps): the "
            "one-cycle schedule warms up and cools down within them, so the model can learn little; more epochs "
            "or images, or a smaller batch_size"
        )
    started = time.perf_counter() - state.elapsed
    progress = Progress(state.total_steps or 0, state.step, show=cfg.progress and dist.is_main)
    # a GPU runs ahead of the host: read the loss back only at epoch ends (a CPU has no queue to drain)
    host_checks = device.type == "cpu"
    trainer = Trainer(
        cfg, dist, runtime, learner, batches, val, files, state, budget, progress, started, host_checks, laps=laps
    )
    laps.lap("files")  # the run's folder, the time budget, a resume point read
    return trainer


def resume(
    files: RunFiles,
    learner: Learner,
    log: Callable[[str], None],
    on_epoch: Callable[[EpochRow], None],
    steps_per_epoch: int,
) -> RunState | None:
    """The run state of an interrupted run with the same params, its weights and optimizer loaded
    into `learner` and the log of its epochs replayed; None when there is none."""
    saved = files.resume_into(*learner.parts(), log)
    if saved is None:
        return None
    try:
        state = RunState(**saved)
    except TypeError:  # a run state with other fields: written by another version of the code
        raise files.unfit_resume("its run state's fields differ") from None
    log(
        f"train: resuming from {files.resume} at step {state.step}/{state.total_steps} "
        f"(epoch {state.step // steps_per_epoch + 1})"
    )
    for row in state.history:
        on_epoch(row)
    return state


@dataclass(eq=False)
class Trainer:
    """One `fit` in progress (made by `build_trainer`): `train_epoch` and `end_epoch` until
    `state.finished`."""

    cfg: FitConfig
    dist: Dist
    runtime: Runtime
    learner: Learner
    batches: Batches
    val: Split  # on the host: `evaluate` moves it in batches
    files: RunFiles
    state: RunState
    budget: TimeBudget | None
    progress: Progress
    started: float  # perf_counter() at the run's start (earlier when resumed)
    host_checks: bool  # read the loss back after every step
    stop: str | None = None  # a signal to stop on, agreed by every process (Dist.agree)
    laps: Laps = field(default_factory=Laps)  # the set-up's phases (`build_trainer`), then "first_step"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def schedule_length(self) -> int:
        return self.state.total_steps if self.state.total_steps is not None else self.budget.provisional_total()

    def train_epoch(self, stop_flag: dict | None) -> tuple[_EpochMeter, float]:
        """The steps of the current epoch, from where the run is to the epoch's end (or the run's)."""
        state, train_params, steps_per_epoch = self.state, self.cfg.train, self.steps_per_epoch
        order = epoch_order(self.batches.images.shape[0], train_params.seed, state.step // steps_per_epoch)
        order = order.to(self.runtime.device)
        self.learner.model.train()
        meter = _EpochMeter(self.runtime.device, self.dist.own_share(state.partial_epoch, (0.0, 0, 0)))
        state.partial_epoch = (0.0, 0, 0)
        epoch_started, lr = time.perf_counter(), 0.0
        for i in range(state.step % steps_per_epoch, steps_per_epoch):
            stop = self.stop or self.dist.signal_before_step(stop_flag)
            if stop:  # before a step: epoch ends stay whole
                self.interrupt(stop, meter, epoch_started)
            for k in self.learner.freeze_due(state.step, self.schedule_length()):
                self.progress.note(f"train.freeze_at: stage {k + 1} of the model frozen from step {state.step + 1}")
                if self.budget is not None:
                    self.budget.speed_changed(state)
            lr = set_hparams(self.learner.optimizer, train_params, state.step, self.schedule_length())
            state.lrs.append(lr)
            seed = step_seed(train_params.seed, state.step)
            generator = _step_generator(self.runtime.device, seed)
            torch.manual_seed(seed)  # dropout and friends
            batch = self.batches.make(order, i, state.step, generator)
            loss, logits = self.learner.step(batch, train_params, self.runtime)
            meter.add(loss, logits, batch.y)
            state.step += 1
            state.images += train_params.batch_size  # the global batch, whatever this process's share of it
            self.after_step(loss, lr, stop_flag)
            self.learner.after_step(state.step, self.schedule_length())  # after the budget: the last step is known
            if state.finished:
                break
        state.train_time += time.perf_counter() - epoch_started
        return meter, lr

    def after_step(self, loss: torch.Tensor, lr: float, stop_flag: dict | None = None) -> None:
        """Progress, the time budget's clock, then what every process agrees on before the next step."""
        state = self.state
        if "first_step" not in self.laps.seconds:  # this process's: kernels chosen, buffers allocated
            self.laps.lap("first_step")
        self.progress.step(state.step, lr, loss if self.host_checks else None)
        if self.budget is not None:
            self.budget.after_step(state, self.elapsed())
        agreed = self.dist.agree(
            self.runtime.device,
            loss=loss,
            read_loss=self.host_checks,
            stop_flag=stop_flag,
            total_steps=state.total_steps,
        )
        if agreed.nonfinite is not None:
            raise nonfinite_loss(
                f"{agreed.nonfinite} at step {state.step} (epoch {(state.step - 1) // self.steps_per_epoch + 1})",
                self.files.resume,
            )
        self.stop = self.stop or agreed.stop
        state.total_steps = agreed.total_steps
        self.progress.resize(state.total_steps or 0)  # a time budget re-sizes the schedule

    def interrupt(self, signal_name: str, meter: _EpochMeter, epoch_started: float) -> None:
        meter.reduce(self.dist)
        self.state.partial_epoch = meter.snapshot()
        # the steps done in this epoch count their images, so their time too (images/s after a resume)
        self.state.train_time += time.perf_counter() - epoch_started
        self.save_resume()
        self.progress.close()
        raise TrainingInterrupted(f"{signal_name} at step {self.state.step}: saved {self.files.resume}")

    def save_resume(self) -> None:
        self.state.elapsed = self.elapsed()
        self.files.save_resume(*self.learner.parts(), vars(self.state))

    def end_epoch(self, meter: _EpochMeter, lr: float) -> EpochRow | None:
        """Validate, keep the best epoch, re-size the budget, save the resume point, log (rank 0
        validates; the others take the schedule it leaves)."""
        state, epoch = self.state, (self.state.step - 1) // self.steps_per_epoch + 1
        meter.reduce(self.dist)
        meter.check_finite(epoch, self.files.resume)
        row = self.dist.on_main(_validate)(self, meter, epoch, lr)
        state.total_steps = self.dist.agree(self.runtime.device, total_steps=state.total_steps).total_steps
        self.save_resume()
        if row is not None:  # rank 0
            self.cfg.epoch_done(row)
            self.progress.epoch(row)
        return row

    def result(self) -> FitResult:
        self.progress.close()
        return FitResult.of(self.state, self.steps_per_epoch, self.runtime, self.learner, self.laps.seconds)


def _validate(t: Trainer, meter: _EpochMeter, epoch: int, lr: float) -> EpochRow:
    """The epoch's row (on the main process, for `Trainer.end_epoch`): training numbers, validation
    loss and accuracy; the best model kept."""
    state, eval_model, runtime = t.state, t.learner.eval_model, t.runtime
    eval_started = time.perf_counter()
    b, amp, cl = t.batches, runtime.amp, runtime.channels_last
    val = evaluate(eval_model, *t.val, b.mean, b.std, batch_size=t.cfg.eval_batch_size, amp=amp, channels_last=cl)
    eval_seconds = time.perf_counter() - eval_started
    row = meter.row(epoch, state.step, val, lr, partial=state.step % t.steps_per_epoch != 0)
    state.history.append(row)
    if val["acc"] >= state.best_val_acc:  # on a tie, the later (further annealed) epoch
        state.best_val_acc, state.best_epoch = val["acc"], epoch
        t.files.save_best(eval_model, epoch, val["acc"])
    if t.budget is not None:
        t.budget.after_epoch(state, t.elapsed(), eval_seconds)
        t.progress.resize(state.total_steps)
    return row


def to_half(model: nn.Module, dtype: torch.dtype) -> None:
    """Weights in `dtype` except BatchNorm's, which stay fp32 (as the speed runs keep them: its
    statistics need the precision, and cuDNN takes half inputs with fp32 BatchNorm params)."""
    model.to(dtype)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.float()


def _step_generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu")
    generator.manual_seed(seed)
    return generator


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    cfg: FitConfig,
    stop_flag: dict | None = None,
    dist: Dist = Dist(),
) -> FitResult:
    """Train `model` on the uint8 `train` split, choosing the best epoch on `val`.

    Writes cfg.run_dir/{resume,best}.pt as it goes and resumes from resume.pt when it was written
    with the same `cfg.fingerprint`. `stop_flag["stop"]` set (see `stop_on_signals`) saves a
    resume point and raises TrainingInterrupted.
    """
    trainer = build_trainer(model, train, val, mean, std, device, cfg, dist)
    try:
        while not trainer.state.finished:
            meter, lr = trainer.train_epoch(stop_flag)
            trainer.end_epoch(meter, lr)
    except BaseException:
        trainer.progress.close()  # ends the bar's line: the stage's error line starts a line of its own
        raise
    return trainer.result()


def init_from_data(
    model: nn.Module, train_x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, n: int = 5000
) -> None:
    """Give a model its data-dependent initialisation (LabModel.init_from_data) from the first `n`
    training images (uint8), normalised as training will see them."""
    model.init_from_data(normalize(train_x[:n], mean.cpu(), std.cpu()))
