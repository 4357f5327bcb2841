"""Stage `train`: the model named in params on data/subset.pt; best epoch chosen on the validation
split. Writes models/best.pt, models/last.pt, metrics/train.json, metrics/timing.json and DVCLive logs
(dvclive/train)."""

import os
import shutil

import torch

from src import paths
from src.data.cifar import Subset
from src.io import atomic_path, kept_if_failed, read_json, write_json, write_text
from src.models import build_model, count_params
from src.params import Params, checked_recipe
from src.training.checkpoints import fingerprint, save_checkpoint
from src.training.distributed import Dist, check_world_size, init_from_env, under_torchrun
from src.training.loop import EpochRow, FitConfig, FitResult, fit, init_from_data, stop_on_signals
from src.training.runtime import processor_name, resolve_device
from src.training.startup import Laps, process_seconds
from stages._common import run_stage
from stages._parallel import cpu_threads, run_under_torchrun


def log_epoch(live, row: EpochRow) -> None:
    """One epoch into DVCLive (train/loss, train/acc, train/lr, val/loss, val/acc), its step the
    epoch number, so `dvc plots` draws epochs 1..N."""
    live.step = row["epoch"]
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        split, name = k.split("_", 1) if k != "lr" else ("train", "lr")
        live.log_metric(f"{split}/{name}", row[k])
    live.next_step()


def lr_csv(lrs: list[float], steps_per_epoch: int, max_rows: int = 2000) -> str:
    """The learning rate of each step (every k-th on long runs), with the step as a fraction of
    epochs: plots/train/lr.csv, where the one-cycle shape shows."""
    every = max(1, -(-len(lrs) // max_rows))
    picks = sorted(set(range(0, len(lrs), every)) | {len(lrs) - 1})
    return "step,epoch,lr\n" + "".join(f"{s + 1},{(s + 1) / steps_per_epoch:.4f},{lrs[s]:.6g}\n" for s in picks)


def timing(res: FitResult, startup: dict[str, float]) -> dict:
    """metrics/timing.json: how long this machine took. The one output that differs run to run, so
    it is a file of its own that only the report reads: everything else is the same bytes for the
    same inputs, and a rerun invalidates nothing downstream but the report. `startup`: the seconds
    of each phase up to the first step's end (the log has them one by one: `startup_line`)."""
    return {
        "seconds": round(res.seconds, 2),
        "train_seconds": round(res.train_seconds, 2),
        "images_per_s": round(res.images_per_s, 1),
        "startup_seconds": round(sum(startup.values()), 2),
    }


STARTUP_PHASES = {
    "imports": "imports",
    "data": "data",
    "model": "model and whitening init",
    "runtime": "runtime",
    "optimizer": "model to device and optimizer",
    "batches": "batches",
    "files": "run files",
    "first_step": "first step",
}


def startup_line(startup: dict[str, float]) -> str:
    """The log's line: the seconds from the process's start to the end of its first step, phase by phase."""
    parts = ", ".join(f"{STARTUP_PHASES.get(k, k)} {v:.1f}" for k, v in startup.items())
    return f"train: {sum(startup.values()):.1f} s from the start to the first step's end: {parts}"


def summary(res: FitResult, model: torch.nn.Module, p: Params, recipe: str, trainable: int) -> dict:
    """metrics/train.json, the keys a reviewer compares first (the timings are in metrics/timing.json).
    `trainable`: the parameters training starts with (after it, `train.freeze_at` has frozen some)."""
    rt = res.runtime
    return {
        "best_val_acc": res.best_val_acc,
        "best_epoch": res.best_epoch,
        "epochs": res.epochs_run,
        "recipe": recipe,
        "batch_size": p.train.batch_size,
        "optimizer": p.train.optimizer,
        "precision": rt.precision,
        "device": str(rt.device),
        "cpu_capability": rt.cpu_capability,
        "processor": processor_name(rt.device),  # two runs' seconds compare only on one machine
        "threads": rt.threads,
        "processes": p.train.nproc,
        "model": p.model.name,
        "params": count_params(model),
        "trainable_params": trainable,
        "steps": res.steps,
        "epochs_equivalent": round(res.epochs_equivalent, 4),
        "time_budget_s": p.train.time_budget_s,
        "final_val_acc": res.history[-1]["val_acc"],
        "final_train_loss": res.history[-1]["train_loss"],
    }


def _recipe(p: Params, device: torch.device, n_train: int, say: bool) -> tuple[Params, str]:
    """The params of the recipe for this device, checked against the runtime and the data."""
    p, recipe = checked_recipe(p, device.type, n_train)
    if say:
        print(
            f"train: recipe {recipe} (gpu.use={p.gpu.use}, training on {device.type}"
            f"{': the values of params.yaml `gpu` in place' if recipe == 'gpu' else ''})"
        )
    return p, recipe


def _threads(p: Params, dist: Dist) -> int:
    """CPU threads per process: train.threads, or the machine's cores shared among the processes."""
    threads, why = cpu_threads(p)
    here = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))  # this machine's processes share its cores
    threads = max(1, threads // here) if not p.train.threads else threads
    if dist.is_main:
        print(
            f"train: {threads} thread{'s' if threads > 1 else ''} per process ({why}"
            f"{f', {here} processes on this machine' if dist.active else ''})"
        )
    return threads


def main(p: Params) -> None:
    from contextlib import ExitStack, nullcontext

    from dvclive import Live

    if p.train.nproc > 1 and not under_torchrun():
        run_under_torchrun("train", p.train.nproc)  # the processes write everything; this one waits
        return
    check_world_size(p.train.nproc)
    imported, laps = process_seconds(), Laps()
    sub = Subset.load(paths.SUBSET, p.data.class_names)  # by hand after data.classes changed: the old classes
    stats = read_json(paths.STATS, keys=("normalize_mean", "normalize_std"))
    mean, std = torch.tensor(stats["normalize_mean"]), torch.tensor(stats["normalize_std"])
    laps.lap("data")
    dist, device = init_from_env(resolve_device(p.train.device))
    p, recipe = _recipe(p, device, sub.train_y.numel(), dist.is_main)
    torch.manual_seed(p.train.seed)
    model = build_model(p.model, len(sub.classes))
    init_from_data(model, sub.train_x, mean, std)
    laps.lap("model")
    trainable = count_params(model, trainable_only=True)  # before FreezeOut stops any of them
    used = {
        "data": p.data.model_dump(),
        "augment": p.augment.model_dump(),
        "model": p.model.model_dump(),
        "train": p.train.model_dump(),
    }
    meta = {
        "model_name": p.model.name,
        "classes": sub.classes,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "params": used,
    }
    threads = _threads(p, dist)
    with ExitStack() as logs:
        live = nullcontext()
        if dist.is_main:  # logged as the epochs end (live plots watch the folder); the last run's back on a failure
            logs.enter_context(kept_if_failed(paths.DVCLIVE_TRAIN))
            live = Live(dir=str(paths.DVCLIVE_TRAIN), dvcyaml=None, save_dvc_exp=False, report=None)
        with dist.closing(), live, stop_on_signals(escalate=not dist.active) as flag:
            cfg = FitConfig(
                train=p.train.model_copy(update={"threads": threads}),
                augment=p.augment,
                run_dir=paths.RUN_CACHE,
                meta=meta,
                fingerprint=fingerprint({**used, "data_stats": stats, "device": str(device)}),
                eval_batch_size=p.evaluate.batch_size,
                on_epoch=lambda row: log_epoch(live, row),
            )
            res = fit(model, sub.split("train"), sub.split("val"), mean, std, device, cfg, flag, dist)
        if dist.is_main:
            startup = ({"imports": imported} if imported is not None else {}) | laps.seconds | res.startup
            write_outputs(res, model, p, meta, recipe, trainable, startup)


def write_outputs(
    res: FitResult, model: torch.nn.Module, p: Params, meta: dict, recipe: str, trainable: int, startup: dict
) -> None:
    """models/best.pt and last.pt, the learning-rate plot, metrics/train.json and timing.json (with
    `startup`, the seconds before the first step's end); the run's cache goes."""
    with atomic_path(paths.BEST) as tmp:
        shutil.copyfile(paths.RUN_CACHE / "best.pt", tmp)
    save_checkpoint(
        paths.LAST, res.model_state, meta, epoch=res.epochs_run, step=res.steps, optimizer=res.optimizer_state
    )
    write_text(paths.LR, lr_csv(res.lrs, res.steps_per_epoch))
    write_json(paths.TRAIN_METRICS, summary(res, model, p, recipe, trainable))
    write_json(paths.TIMING, timing(res, startup))
    shutil.rmtree(paths.RUN_CACHE, ignore_errors=True)
    print(
        f"train: best val acc {res.best_val_acc:.4f} at epoch {res.best_epoch}; "
        f"{res.steps} steps in {res.seconds:.1f} s ({res.images_per_s:.0f} images/s, {res.runtime.describe()})"
    )
    print(startup_line(startup))


if __name__ == "__main__":
    run_stage("train", main)
