"""The training loop: one-cycle schedule over steps, optional time budget, EMA, checkpoints, resume.

Every random draw of step `s` comes from generators seeded by (seed, s), and the data order of
epoch `e` from (seed, e): a run resumed from any checkpoint continues exactly as an
uninterrupted one would, on the CPU.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from src.augment import augment_batch, mixup, normalize
from src.evaluation import autocast_for, cpu_has_bf16, evaluate
from src.io import atomic_torch_save

CHECKPOINT_VERSION = 1


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a resumable checkpoint was saved."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf."""


class CheckpointError(RuntimeError):
    """A checkpoint that can't be used with these params."""


# ----------------------------------------------------------------------------- device and runtime

def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def setup_runtime(cfg, device: torch.device) -> dict:
    """Threads, determinism and the fast paths for `device`; returns what was chosen."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cfg.threads or cores
    torch.set_num_threads(int(threads))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {
        "threads": torch.get_num_threads(),
        "amp": cfg.amp == "bf16" or (cfg.amp == "auto" and (device.type == "cuda"
                                                           or (device.type == "cpu" and cpu_has_bf16()))),
        "channels_last": cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type in ("cpu", "cuda")),
    }


# ----------------------------------------------------------------------------- schedule

def _anneal(start: float, end: float, pct: float, how: str) -> float:
    """From `start` (pct=0) to `end` (pct=1), by a cosine or a straight line (as OneCycleLR)."""
    if how == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _phase(step: int, total: int, pct_start: float) -> tuple[bool, float]:
    """(in the rising phase?, progress within that phase) of OneCycleLR's two phases."""
    up_end = float(pct_start * total) - 1
    if step <= up_end:
        return True, step / up_end if up_end > 0 else 1.0
    return False, min(1.0, (step - up_end) / max(total - 1 - up_end, 1e-12))


def one_cycle(step: int, total: int, peak: float, pct_start: float, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos") -> float:
    """The value of torch's OneCycleLR (two phases) at `step` of `total`, as a pure function,
    so the schedule can be sized after the run has started (time budget)."""
    initial = peak / div_factor
    rising, pct = _phase(step, total, pct_start)
    if rising:
        return _anneal(initial, peak, pct, anneal)
    return _anneal(peak, initial / final_div_factor, pct, anneal)


def cycle_momentum(step: int, total: int, pct_start: float, base: float = 0.85, top: float = 0.95,
                   anneal: str = "cos") -> float:
    """OneCycleLR's momentum: top → base while the lr rises, back to top while it falls."""
    rising, pct = _phase(step, total, pct_start)
    return _anneal(top, base, pct, anneal) if rising else _anneal(base, top, pct, anneal)


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_hparams(opt: torch.optim.Optimizer, cfg, step: int, total: int) -> float:
    lr = one_cycle(step, total, cfg.lr * cfg.max_lr_factor, cfg.pct_start, cfg.div_factor,
                   cfg.final_div_factor, cfg.anneal)
    for g in opt.param_groups:
        g["lr"] = lr
        if cfg.cycle_momentum:
            m = cycle_momentum(step, total, cfg.pct_start, anneal=cfg.anneal)
            if "betas" in g:
                g["betas"] = (m, g["betas"][1])
            else:
                g["momentum"] = m
    return lr


# ----------------------------------------------------------------------------- signals

@contextmanager
def stop_on_signals() -> Iterator[dict]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (a second one kills at once)."""
    flag = {"stop": None}
    old = {}

    def handler(signum, frame):
        if flag["stop"] is not None:
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


# ----------------------------------------------------------------------------- checkpoints

def fingerprint(obj: dict) -> str:
    """A stable hash of the params (and data facts) a run depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """torch.load with a clear error for a missing, truncated or foreign file."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; run the train stage (dvc repro train)") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"delete it and train again") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_VERSION or "model" not in ck:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format {CHECKPOINT_VERSION})")
    return ck


def load_weights(model: nn.Module, ck: dict, path: Path, classes: Optional[list[str]] = None) -> None:
    """Load weights, naming what does not match (model name, class count, layer shapes)."""
    if classes is not None and ck.get("classes") != classes:
        raise CheckpointError(f"{path}: trained on classes {ck.get('classes')}, but the data has {classes}; "
                              f"retrain (dvc repro train)")
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path}: weights of model {ck.get('model_name')!r} do not fit this model "
                              f"({first}); retrain (dvc repro train)") from None


def load_trained(path: Path, classes: list[str]) -> tuple[nn.Module, dict]:
    """The model saved in checkpoint `path`, rebuilt from the params it was trained with."""
    from src.models import build_model
    from src.params import parse_params

    ck = load_checkpoint(path)
    trained = parse_params({k: ck["params"][k] for k in ("data", "augment", "model", "train")})
    model = build_model(trained.model, len(ck["classes"]))
    load_weights(model, ck, path, classes)
    return model, {**ck, "trained_params": trained}


# ----------------------------------------------------------------------------- the loop

@dataclass
class FitConfig:
    """Everything `fit` needs besides the model and data."""
    train: object            # TrainParams
    augment: object          # AugmentParams
    run_dir: Path            # where resume.pt / best.pt live during the run
    fingerprint: str
    meta: dict               # stored in every checkpoint (model name, classes, mean/std, params)
    eval_batch_size: int = 1000
    progress: bool = True
    on_epoch: Optional[Callable[[dict], None]] = None
    log: Callable[[str], None] = print


@dataclass
class RunState:
    step: int = 0
    total_steps: Optional[int] = None
    elapsed: float = 0.0
    train_time: float = 0.0
    images: int = 0
    history: list = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    partial_epoch: tuple = (0.0, 0, 0)  # loss sum, correct, seen of an epoch interrupted mid-way


def _step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    g = torch.Generator(device=device if device.type == "cuda" else "cpu")
    g.manual_seed((seed * 1_000_003 + step) % (2**63))
    return g


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch + 1))


def fit(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
        val_y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
        cfg: FitConfig, stop_flag: Optional[dict] = None) -> dict:
    """Train `model`; returns a summary dict. Writes run_dir/{resume,best}.pt as it goes.

    Data tensors are uint8 and are moved to `device` once. Resumes from run_dir/resume.pt when
    its fingerprint matches `cfg.fingerprint`.
    """
    from tqdm import tqdm

    tc, ac = cfg.train, cfg.augment
    rt = setup_runtime(tc, device)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_path, best_path = run_dir / "resume.pt", run_dir / "best.pt"

    model.to(device)
    if rt["channels_last"]:
        model.to(memory_format=torch.channels_last)
    ema = None
    if tc.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)
    opt = make_optimizer(model, tc)
    step_fn = model
    if tc.compile:
        step_fn = torch.compile(model)

    train_x, train_y = train_x.to(device), train_y.to(device)
    mean, std = mean.to(device), std.to(device)
    n = train_x.shape[0]
    bs = tc.batch_size
    spe = max(1, n // bs)  # steps per epoch; the last partial batch is dropped
    st = RunState()
    if tc.time_budget_s is None:
        st.total_steps = tc.epochs * spe

    if resume_path.exists():
        ck = load_checkpoint(resume_path)
        if ck.get("fingerprint") == cfg.fingerprint:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if ema is not None and ck.get("ema") is not None:
                ema.load_state_dict(ck["ema"])
            st = RunState(**ck["state"])
            cfg.log(f"train: resuming from {resume_path} at step {st.step}/{st.total_steps} "
                    f"(epoch {st.step // spe + 1})")
            for row in st.history:  # replay the log of the epochs already done
                if cfg.on_epoch:
                    cfg.on_epoch(row)
        else:
            cfg.log(f"train: {resume_path} is from other params; starting fresh")
            resume_path.unlink()
            best_path.unlink(missing_ok=True)

    def save_resume() -> None:
        atomic_torch_save({"format": CHECKPOINT_VERSION, "fingerprint": cfg.fingerprint, **cfg.meta,
                           "model": model.state_dict(), "optimizer": opt.state_dict(),
                           "ema": ema.state_dict() if ema is not None else None,
                           "state": st.__dict__}, resume_path)

    eval_model = ema.module if ema is not None else model
    budget = tc.time_budget_s
    check_every = 1 if device.type == "cpu" else 25
    amp = rt["amp"]
    t_start = time.perf_counter() - st.elapsed
    calib_from = None  # (time, step) after warm-up, for measuring throughput under a budget

    def elapsed() -> float:
        return time.perf_counter() - t_start

    def size_budget(sec_per_step: float, eval_cost: float) -> None:
        """Steps that fit in what is left of the budget, keeping time for the remaining evaluations."""
        left = budget - elapsed()
        steps_left = max(0, int(left / sec_per_step))
        evals_left = max(1, math.ceil(steps_left / spe))
        steps_left = max(0, int((left - evals_left * eval_cost) / sec_per_step))
        st.total_steps = max(st.step + 1, st.step + steps_left)

    bar = tqdm(total=st.total_steps or 0, initial=st.step, unit="step", desc="train",
               disable=not cfg.progress, dynamic_ncols=True)
    last_eval_cost = 0.0
    while st.total_steps is None or st.step < st.total_steps:
        epoch = st.step // spe
        order = _epoch_order(n, tc.seed, epoch).to(device)
        model.train()
        loss_sum = torch.tensor(float(st.partial_epoch[0]), device=device)
        correct = torch.tensor(int(st.partial_epoch[1]), device=device)
        seen = int(st.partial_epoch[2])
        st.partial_epoch = (0.0, 0, 0)
        t_epoch = time.perf_counter()
        for i in range(st.step % spe, spe):
            # checked before a step, so an epoch's end-of-epoch work is never cut off
            if stop_flag is not None and stop_flag.get("stop"):
                st.elapsed = elapsed()
                st.partial_epoch = (loss_sum.item(), int(correct.item()), seen)
                save_resume()
                bar.close()
                raise TrainingInterrupted(f"{stop_flag['stop']} at step {st.step}: saved {resume_path}; "
                                          f"run the same command again (dvc repro) to resume")
            s = st.step
            if st.total_steps is not None:
                lr = set_hparams(opt, tc, s, st.total_steps)
            else:  # calibrating under a budget: the schedule's first steps, sized provisionally
                lr = set_hparams(opt, tc, s, max(10 * spe, 1000))
            gen = _step_generator(device, tc.seed, s)
            torch.manual_seed((tc.seed * 1_000_003 + s) % (2**63))  # dropout and friends
            idx = order[i * bs:(i + 1) * bs]
            xb = augment_batch(train_x[idx], ac, gen)
            xb = normalize(xb, mean, std)
            yb = train_y[idx]
            if rt["channels_last"]:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, amp):
                if ac.mixup_alpha > 0:
                    xb, ya, yb2, lam = mixup(xb, yb, ac.mixup_alpha, gen)
                    out = step_fn(xb)
                    loss = lam * F.cross_entropy(out.float(), ya, label_smoothing=tc.label_smoothing) + \
                        (1 - lam) * F.cross_entropy(out.float(), yb2, label_smoothing=tc.label_smoothing)
                else:
                    out = step_fn(xb)
                    loss = F.cross_entropy(out.float(), yb, label_smoothing=tc.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * yb.shape[0]
            correct += (out.detach().argmax(1) == yb).sum()
            seen += yb.shape[0]
            st.step += 1
            st.images += yb.shape[0]
            if st.step % check_every == 0 and not math.isfinite(loss.item()):
                raise NonFiniteLoss(f"the training loss became {loss.item()} at step {st.step} (epoch {epoch + 1}); "
                                    f"the last good checkpoint is {resume_path}. Lower train.lr or set "
                                    f"train.grad_clip, then run again")
            bar.update(1)
            if cfg.progress and st.step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if budget is not None:
                if calib_from is None and st.step >= 2:
                    calib_from = (time.perf_counter(), st.step)
                elif st.total_steps is None and calib_from is not None and \
                        (st.step - calib_from[1] >= 8 or elapsed() > 0.05 * budget):
                    sps = (time.perf_counter() - calib_from[0]) / (st.step - calib_from[1])
                    # a forward pass over the val split costs about a third of a training step per image
                    size_budget(sps, sps * val_x.shape[0] / bs / 3)
                    bar.total = st.total_steps
                    bar.refresh()
                if elapsed() > budget:
                    st.total_steps = st.step  # out of time: this is the last step
            if st.total_steps is not None and st.step >= st.total_steps:
                break
        train_time = time.perf_counter() - t_epoch
        st.train_time += train_time
        if not math.isfinite(loss_sum.item()):
            raise NonFiniteLoss(f"the training loss became non-finite in epoch {epoch + 1}; the last good "
                                f"checkpoint is {resume_path}. Lower train.lr or set train.grad_clip")
        t_eval = time.perf_counter()
        val = evaluate(eval_model, val_x, val_y, mean, std, batch_size=cfg.eval_batch_size,
                       amp=amp, channels_last=rt["channels_last"])
        last_eval_cost = time.perf_counter() - t_eval
        row = {"epoch": epoch + 1, "step": st.step, "train_loss": loss_sum.item() / max(seen, 1),
               "train_acc": correct.item() / max(seen, 1), "val_loss": val["loss"], "val_acc": val["acc"],
               "lr": lr, "partial": st.step % spe != 0}
        st.history.append(row)
        if val["acc"] >= st.best_val_acc:  # on a tie, the later (further annealed) epoch
            st.best_val_acc, st.best_epoch = val["acc"], epoch + 1
            atomic_torch_save({"format": CHECKPOINT_VERSION, **cfg.meta, "epoch": epoch + 1,
                               "val_acc": val["acc"], "model": eval_model.state_dict()}, best_path)
        if budget is not None and st.total_steps is not None and st.step < st.total_steps:
            size_budget(st.train_time / max(st.step, 1), last_eval_cost)  # re-measure with real numbers
            bar.total = st.total_steps
        st.elapsed = elapsed()
        save_resume()
        if cfg.on_epoch:
            cfg.on_epoch(row)
        if cfg.progress:
            bar.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
                      f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}")
    bar.close()
    return {
        "steps": st.step, "steps_per_epoch": spe, "epochs_run": len(st.history),
        "epochs_equivalent": st.step / spe, "history": st.history, "best_val_acc": st.best_val_acc,
        "best_epoch": st.best_epoch, "seconds": st.elapsed, "train_seconds": st.train_time,
        "images_seen": st.images, "images_per_s": st.images / max(st.train_time, 1e-9),
        "threads": rt["threads"], "amp": rt["amp"], "channels_last": rt["channels_last"],
        "final_state": model.state_dict(), "optimizer_state": opt.state_dict(),
        "eval_model": eval_model,
    }
