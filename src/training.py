"""The training loop: one-cycle schedule over steps, optional time budget, EMA, resume.

    fit():  while steps remain:
                train_epoch():  for each step: stop requested? → train_step() → TimeBudget.after_step()
                end_epoch():    validate → keep the best → TimeBudget.after_epoch() → save resume point

Every random draw of step `s` comes from generators seeded by (seed, s), and the data order of
epoch `e` from (seed, e): a run resumed from any checkpoint continues exactly as an
uninterrupted one would, on the CPU.
"""
from __future__ import annotations

import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Optional, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.augment import alternating_flips, augment_batch, mixup
from src.autoaugment import AutoAugmentCIFAR10
from src.checkpoints import RunFiles
from src.data import normalize
from src.distributed import Dist
from src.errors import NonFiniteLoss, TrainingInterrupted
from src.evaluation import evaluate
from src.optim import Lookahead, make_optimizer, set_hparams
from src.runtime import Runtime, autocast_for, setup_runtime

if TYPE_CHECKING:
    from src.params import AugmentParams, TrainParams

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, 32, 32), int64 labels (N,)


@dataclass
class FitConfig:
    """Everything `fit` needs besides the model and data."""
    train: "TrainParams"
    augment: "AugmentParams"
    run_dir: Path            # where resume.pt / best.pt live during the run
    fingerprint: str         # of the params: a resume point from other params is not used
    meta: dict               # stored in every checkpoint (model name, classes, mean/std, params)
    eval_batch_size: int = 1000
    progress: bool = True
    on_epoch: Optional[Callable[["EpochRow"], None]] = None
    log: Callable[[str], None] = print


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
    total_steps: Optional[int] = None  # None while a time budget is still measuring the speed
    elapsed: float = 0.0
    train_time: float = 0.0
    images: int = 0
    history: list = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    partial_epoch: tuple = (0.0, 0, 0)  # loss sum, correct, seen of an epoch interrupted mid-way
    lrs: list = field(default_factory=list)  # the learning rate of every step so far


@dataclass
class FitResult:
    steps: int
    steps_per_epoch: int
    history: list[EpochRow]
    best_val_acc: float
    best_epoch: int
    seconds: float           # the whole loop, validation included
    train_seconds: float     # training steps only
    images_seen: int
    runtime: Runtime
    model_state: dict
    optimizer_state: dict
    lrs: list[float]         # per step

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
    old = {}

    def handler(signum, frame):
        if flag["stop"] is not None and escalate:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        flag["stop"] = signal.Signals(signum).name

    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class TimeBudget:
    """"Train for N seconds": follow a provisional schedule for a few steps while measuring the speed,
    then size the schedule so the training steps, the remaining validation passes and the whole
    one-cycle fit; re-measure after every epoch; make the step where time runs out the last one."""

    WARMUP_STEPS = 2     # not timed: first-call allocations
    MEASURE_STEPS = 8    # timed before sizing (or 5 % of the budget, if that comes first)

    def __init__(self, seconds: float, steps_per_epoch: int, val_cost_in_steps: float):
        self.seconds = seconds
        self.steps_per_epoch = steps_per_epoch
        self.val_cost_in_steps = val_cost_in_steps  # one validation pass, in training steps
        self._from: Optional[tuple[float, int]] = None  # (time, step) when measuring began

    def provisional_total(self) -> int:
        """The schedule's length while the speed is not known yet."""
        return max(10 * self.steps_per_epoch, 1000)

    def after_step(self, st: RunState, elapsed: float) -> None:
        now = time.perf_counter()
        if self._from is None and st.step >= self.WARMUP_STEPS:
            self._from = (now, st.step)
        elif st.total_steps is None and self._from is not None and \
                (st.step - self._from[1] >= self.MEASURE_STEPS or elapsed > 0.05 * self.seconds):
            sec_per_step = (now - self._from[0]) / (st.step - self._from[1])
            self._resize(st, elapsed, sec_per_step, sec_per_step * self.val_cost_in_steps)
        if elapsed > self.seconds:
            st.total_steps = st.step  # out of time: this was the last step

    def after_epoch(self, st: RunState, elapsed: float, eval_seconds: float) -> None:
        """Re-size with the real numbers of the epochs so far."""
        if st.total_steps is not None and st.step < st.total_steps:
            self._resize(st, elapsed, st.train_time / max(st.step, 1), eval_seconds)

    def _resize(self, st: RunState, elapsed: float, sec_per_step: float, eval_seconds: float) -> None:
        left = self.seconds - elapsed
        steps_left = max(0, int(left / sec_per_step))
        evals_left = max(1, math.ceil(steps_left / self.steps_per_epoch))
        steps_left = max(0, int((left - evals_left * eval_seconds) / sec_per_step))
        st.total_steps = max(st.step + 1, st.step + steps_left)


class _EpochMeter:
    """Running training loss and accuracy of one epoch, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device, partial: tuple = (0.0, 0, 0)):
        self.loss_sum = torch.tensor(float(partial[0]), device=device)
        self.correct = torch.tensor(int(partial[1]), device=device)
        self.seen = int(partial[2])

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss * y.shape[0]
        self.correct += (out.argmax(1) == y).sum()
        self.seen += y.shape[0]

    def snapshot(self) -> tuple:
        return (self.loss_sum.item(), int(self.correct.item()), self.seen)

    def reduce(self, dist: Dist) -> None:
        """Sum over the processes (each counted its slice of every batch)."""
        if dist.active:
            t = dist.all_reduce(torch.stack([self.loss_sum.double(), self.correct.double(),
                                             torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss_sum.device)]))
            self.loss_sum.copy_(t[0])
            self.correct.copy_(t[1].round().long())
            self.seen = int(round(t[2].item()))


def mixup_weight(alpha: float, seed: int) -> float:
    """MixUp's λ ~ Beta(α, α) for one step, drawn on the host from the step's seed (so a GPU is
    never asked for a number mid-step)."""
    return float(np.random.default_rng(seed).beta(alpha, alpha))


class Batch(NamedTuple):
    """A normalised training batch: images, labels and, under MixUp, the mixed-in labels and λ."""
    x: torch.Tensor
    y: torch.Tensor
    y_mix: Optional[torch.Tensor] = None
    lam: float = 1.0


def train_step(model: nn.Module, forward: Callable, opt: torch.optim.Optimizer, ema: Optional[nn.Module],
               b: Batch, tc: "TrainParams", rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, logits), detached. Nothing here waits for the device."""
    with autocast_for(rt.device, rt.amp):
        out = forward(b.x)
        loss = F.cross_entropy(out.float(), b.y, label_smoothing=tc.label_smoothing)
        if b.y_mix is not None:
            loss = b.lam * loss + (1 - b.lam) * F.cross_entropy(out.float(), b.y_mix, label_smoothing=tc.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    opt.step()
    if ema is not None:
        ema.update_parameters(model)
    return loss.detach(), out.detach()


class Trainer:
    """The state of one `fit`: model, optimizer, EMA, data on the device, run state, budget."""

    def __init__(self, model: nn.Module, train: Split, val: Split, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, cfg: FitConfig, dist: Dist = Dist()):
        from tqdm import tqdm

        self.cfg, self.tc, self.ac, self.dist = cfg, cfg.train, cfg.augment, dist
        self.log = cfg.log if dist.is_main else (lambda line: None)
        self.rt = setup_runtime(self.tc, device)
        self.log(f"train: on {self.rt.describe()}" + (f", {dist.world} processes (torchrun)" if dist.active else ""))
        self.model = model.to(device)
        if self.rt.half is not None:  # weights and activations in half precision, BatchNorm in fp32
            to_half(self.model, self.rt.half)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.lookahead = Lookahead(model, self.tc.lookahead_steps, self.tc.lookahead_decay) \
            if self.tc.lookahead_steps else None
        self.ema = None
        if self.tc.ema_decay:
            self.ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(self.tc.ema_decay), use_buffers=True)
        self.opt = make_optimizer(model, self.tc)
        self.forward = model
        if dist.active:  # gradients averaged over the processes; each sees its slice of the batch
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if self.tc.compile:
            self.forward = torch.compile(self.forward)
        self.eval_model = self.ema.module if self.ema is not None else model
        self.train_x, self.train_y = (t.to(device) for t in train)
        self.val_x, self.val_y = val
        self.mean, self.std = mean.to(device), std.to(device)
        self.autoaugment = AutoAugmentCIFAR10() if self.ac.autoaugment else None  # its tables, built once
        self.flips = alternating_flips(self.train_x.shape[0], self.tc.seed, device) if self.ac.hflip == "alternate" else None
        # a GPU runs ahead of the host: read the loss back only at epoch ends (a CPU has no queue to drain)
        self.host_checks = device.type == "cpu"
        self.spe = max(1, self.train_x.shape[0] // self.tc.batch_size)  # the last partial batch is dropped
        self.files = RunFiles(cfg.run_dir, cfg.fingerprint, cfg.meta)
        self.st = RunState(total_steps=None if self.tc.time_budget_s else self.tc.epochs * self.spe)
        self.budget = None if self.tc.time_budget_s is None else TimeBudget(
            self.tc.time_budget_s, self.spe, self.val_x.shape[0] / self.tc.batch_size / 3)
        self.resume()
        self.t_start = time.perf_counter() - self.st.elapsed
        self.bar = tqdm(total=self.st.total_steps or 0, initial=self.st.step, unit="step", desc="train",
                        disable=not (cfg.progress and dist.is_main), dynamic_ncols=True)
        self.stop_requested: Optional[str] = None  # agreed by every process (see sync)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    @property
    def finished(self) -> bool:
        return self.st.total_steps is not None and self.st.step >= self.st.total_steps

    def resume(self) -> None:
        """Continue from the resume point of an interrupted run with the same params, if any."""
        ck = self.files.load_resume(self.log, owner=self.dist.is_main)
        if ck is None:
            return
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.ema is not None and ck.get("ema") is not None:
            self.ema.load_state_dict(ck["ema"])
        if self.lookahead is not None and ck.get("lookahead") is not None:
            self.lookahead.load_state_dict(ck["lookahead"])
        self.st = RunState(**ck["state"])
        self.log(f"train: resuming from {self.files.resume} at step {self.st.step}/{self.st.total_steps} "
                     f"(epoch {self.st.step // self.spe + 1})")
        for row in self.st.history:  # replay the log of the epochs already done
            if self.cfg.on_epoch and self.dist.is_main:
                self.cfg.on_epoch(row)

    def save_resume(self) -> None:
        self.st.elapsed = self.elapsed()
        if self.dist.is_main:
            self.files.save_resume(self.model, self.opt, self.ema, self.st.__dict__,
                                   self.lookahead.state_dict() if self.lookahead is not None else None)

    def batch(self, order: torch.Tensor, i: int, gen: torch.Generator) -> Batch:
        """Batch i of the epoch's order: augmented, mixed (MixUp), normalised, in the run's memory
        layout — the whole global batch, drawn alike in every process, then this process's slice."""
        bs = self.tc.batch_size
        idx = order[i * bs:(i + 1) * bs]
        flip = None if self.flips is None else self.flips[idx] ^ bool(self.st.step // self.spe % 2)
        xb = normalize(augment_batch(self.train_x[idx], self.ac, gen, self.autoaugment, flip), self.mean, self.std)
        yb, y_mix, lam = self.train_y[idx], None, 1.0
        if self.ac.mixup_alpha > 0:
            lam = mixup_weight(self.ac.mixup_alpha, step_seed(self.tc.seed, self.st.step))
            xb, yb, y_mix = mixup(xb, yb, lam, gen)
            y_mix = self.dist.shard(y_mix)
        xb, yb = self.dist.shard(xb), self.dist.shard(yb)
        if self.rt.half is not None:
            xb = xb.to(self.rt.half)
        if self.rt.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return Batch(xb, yb, y_mix, lam)

    def train_epoch(self, stop_flag: Optional[dict]) -> tuple[_EpochMeter, float]:
        """The steps of the current epoch, from where the run is to the epoch's end (or the run's)."""
        st, tc = self.st, self.tc
        order = epoch_order(self.train_x.shape[0], tc.seed, st.step // self.spe).to(self.rt.device)
        self.model.train()
        meter = _EpochMeter(self.rt.device, st.partial_epoch if self.dist.is_main else (0.0, 0, 0))
        st.partial_epoch = (0.0, 0, 0)
        t_epoch, lr = time.perf_counter(), 0.0
        for i in range(st.step % self.spe, self.spe):
            stop = self.stop_requested or (stop_flag.get("stop") if stop_flag is not None and not self.dist.active else None)
            if stop:  # before a step: epoch ends stay whole
                self.interrupt(stop, meter)
            total = st.total_steps if st.total_steps is not None else self.budget.provisional_total()
            lr = set_hparams(self.opt, tc, st.step, total)
            st.lrs.append(lr)
            gen = _step_generator(self.rt.device, step_seed(tc.seed, st.step))
            torch.manual_seed(step_seed(tc.seed, st.step))  # dropout and friends
            b = self.batch(order, i, gen)
            loss, out = train_step(self.model, self.forward, self.opt, self.ema, b, tc, self.rt)
            meter.add(loss, out, b.y)
            st.step += 1
            st.images += tc.batch_size  # the global batch, whatever this process's share of it
            self.after_step(loss, lr, stop_flag)
            if self.lookahead is not None:  # after the budget has had its say: the last step is known
                self.lookahead.after_step(self.model, st.step, st.total_steps or self.budget.provisional_total())
            if self.finished:
                break
        st.train_time += time.perf_counter() - t_epoch
        return meter, lr

    def after_step(self, loss: torch.Tensor, lr: float, stop_flag: Optional[dict] = None) -> None:
        st = self.st
        if self.host_checks and not self.dist.active and not math.isfinite(loss.item()):
            self.nonfinite(loss.item())
        self.bar.update(1)
        if self.host_checks and self.cfg.progress and self.dist.is_main and st.step % 10 == 0:
            self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        if self.budget is not None and self.dist.is_main:
            self.budget.after_step(st, self.elapsed())
        if self.dist.active:
            self.sync(loss, stop_flag)
        if self.budget is not None:
            self.bar.total = st.total_steps or 0

    def sync(self, loss: Optional[torch.Tensor] = None, stop_flag: Optional[dict] = None) -> None:
        """With several processes, agree after each step: stop if any process got a signal or a
        non-finite loss, and take the schedule's length from rank 0's clock (the time budget)."""
        st = self.st
        stop = stop_flag.get("stop") if stop_flag is not None else None
        total = st.total_steps if self.dist.is_main and st.total_steps is not None else -1
        bad = loss is not None and not math.isfinite(loss.item())
        flags = self.dist.all_reduce(torch.tensor([float(bool(stop)), float(bad), float(total)], dtype=torch.float64,
                                                  device=self.rt.device), op="max").tolist()
        if flags[1] > 0:
            self.nonfinite(float("nan") if not bad else loss.item())
        if flags[0] > 0 and not self.stop_requested:
            self.stop_requested = stop or "a signal to another training process"
        st.total_steps = int(flags[2]) if flags[2] >= 0 else None

    def nonfinite(self, value: float) -> None:
        raise NonFiniteLoss(f"the training loss became {value} at step {self.st.step} "
                            f"(epoch {(self.st.step - 1) // self.spe + 1}); the last good checkpoint is "
                            f"{self.files.resume}. Lower train.lr or set train.grad_clip, then run again")

    def interrupt(self, signal_name: str, meter: _EpochMeter) -> None:
        meter.reduce(self.dist)
        self.st.partial_epoch = meter.snapshot()
        self.save_resume()
        self.bar.close()
        raise TrainingInterrupted(f"{signal_name} at step {self.st.step}: saved {self.files.resume}")

    def end_epoch(self, meter: _EpochMeter, lr: float) -> Optional[EpochRow]:
        """Validate, keep the best epoch, re-size the budget, save the resume point, log (rank 0;
        with several processes the others wait for its schedule)."""
        st = self.st
        epoch = (st.step - 1) // self.spe + 1
        meter.reduce(self.dist)
        if not math.isfinite(meter.loss_sum.item()):
            raise NonFiniteLoss(f"the training loss became non-finite in epoch {epoch}; the last good "
                                f"checkpoint is {self.files.resume}. Lower train.lr or set train.grad_clip")
        row = self.validate(meter, epoch, lr) if self.dist.is_main else None
        if self.dist.active:
            self.sync()
        self.save_resume()
        if row is not None and self.cfg.on_epoch:
            self.cfg.on_epoch(row)
        if row is not None and self.cfg.progress:
            self.bar.write(f"epoch {epoch}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
                           f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}")
        return row

    def validate(self, meter: _EpochMeter, epoch: int, lr: float) -> EpochRow:
        """The epoch's row: training numbers, validation loss and accuracy; the best model kept."""
        st = self.st
        t_eval = time.perf_counter()
        val = evaluate(self.eval_model, self.val_x, self.val_y, self.mean, self.std,
                       batch_size=self.cfg.eval_batch_size, amp=self.rt.amp, channels_last=self.rt.channels_last)
        eval_seconds = time.perf_counter() - t_eval
        row = EpochRow(epoch=epoch, step=st.step, train_loss=meter.loss_sum.item() / max(meter.seen, 1),
                       train_acc=meter.correct.item() / max(meter.seen, 1), val_loss=val["loss"],
                       val_acc=val["acc"], lr=lr, partial=st.step % self.spe != 0)
        st.history.append(row)
        if val["acc"] >= st.best_val_acc:  # on a tie, the later (further annealed) epoch
            st.best_val_acc, st.best_epoch = val["acc"], epoch
            self.files.save_best(self.eval_model, epoch, val["acc"])
        if self.budget is not None:
            self.budget.after_epoch(st, self.elapsed(), eval_seconds)
            self.bar.total = st.total_steps
        return row

    def result(self) -> FitResult:
        self.bar.close()
        st = self.st
        return FitResult(steps=st.step, steps_per_epoch=self.spe, history=st.history, best_val_acc=st.best_val_acc,
                         best_epoch=st.best_epoch, seconds=st.elapsed, train_seconds=st.train_time,
                         images_seen=st.images, runtime=self.rt, model_state=self.model.state_dict(),
                         optimizer_state=self.opt.state_dict(), lrs=st.lrs)


def to_half(model: nn.Module, dtype: torch.dtype) -> None:
    """Weights in `dtype` except BatchNorm's, which stay fp32 (as the speed runs keep them: its
    statistics need the precision, and cuDNN takes half inputs with fp32 BatchNorm params)."""
    model.to(dtype)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.float()


def _step_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device if device.type == "cuda" else "cpu")
    g.manual_seed(seed)
    return g


def fit(model: nn.Module, train: Split, val: Split, mean: torch.Tensor, std: torch.Tensor,
        device: torch.device, cfg: FitConfig, stop_flag: Optional[dict] = None, dist: Dist = Dist()) -> FitResult:
    """Train `model` on the uint8 `train` split, choosing the best epoch on `val`.

    Writes cfg.run_dir/{resume,best}.pt as it goes and resumes from resume.pt when it was written
    with the same `cfg.fingerprint`. `stop_flag["stop"]` set (see `stop_on_signals`) saves a
    resume point and raises TrainingInterrupted.
    """
    t = Trainer(model, train, val, mean, std, device, cfg, dist)
    while not t.finished:
        meter, lr = t.train_epoch(stop_flag)
        t.end_epoch(meter, lr)
    return t.result()


def init_from_data(model: nn.Module, train_x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   n: int = 5000) -> None:
    """Give a model its data-dependent initialisation (LabModel.init_from_data) from the first `n`
    training images (uint8), normalised as training will see them."""
    model.init_from_data(normalize(train_x[:n], mean.cpu(), std.cpu()))
