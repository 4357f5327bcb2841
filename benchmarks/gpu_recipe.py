"""The GPU recipe's benchmark: N timed runs after an untimed warm-up (so `torch.compile` and cuDNN's
autotuning are paid once, as every speed run reports them), training timed with CUDA events
(perf_counter on a CPU), test accuracy after every epoch, and the median and spread of seconds,
accuracy, images/s and time to a target accuracy.

    python unpack.py /tmp/c10 && export CIFAR10_MIRROR=/tmp/c10     # ../shared/cifar10-gpu/README.md
    python -m benchmarks.gpu_recipe --runs 5 --target 0.906          # 10 classes, params.yaml's `gpu` recipe
    python -m benchmarks.gpu_recipe --runs 5 --budget 10             # the accuracy reached in 10 s

Trains on the whole training set but `--val-per-class` images per class (1 by default: the public
speed runs train on all 50,000), tests on the 10,000 test images with evaluate's TTA. The time of an
epoch excludes the test pass; the patch-whitening init (host work) is included.
Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.record import results_path, run_cli, write_results
from benchmarks.time_to_accuracy import apply_sets, load_raw, subset_and_normalization
from src.cli import whole_number
from src.errors import ParamsError
from src.models import build_model
from src.params import (
    Params,
    check_runtime,
    deep_merge,
    load_params,
    not_from_params_yaml,
    parse_params,
    planned_train_images,
)
from src.training.evaluation import evaluate, tta_options
from src.training.loop import FitConfig, build_trainer, init_from_data
from src.training.runtime import processor_name, resolve_device


class Clock:
    """Seconds of device work between start() and stop(): CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total = 0.0

    def start(self) -> None:
        if self.cuda:
            self._a, self._b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._a.record()
        else:
            self._t = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self._b.record()
            self._b.synchronize()
            self.total += self._a.elapsed_time(self._b) / 1000
        else:
            self.total += time.perf_counter() - self._t
        return self.total


def one_run(p: Params, raw: dict, names: list[str], device: torch.device, seed: int, work: Path, target: float) -> dict:
    """Train once; test accuracy after every epoch; seconds of training (CUDA events)."""
    p = parse_params(deep_merge(p.model_dump(), {"train": {"seed": seed}}))
    sub, mean, std = subset_and_normalization(p, raw, names)
    clock = Clock(device)
    torch.manual_seed(seed)
    model = build_model(p.model, len(sub.classes))
    t0 = time.perf_counter()
    init_from_data(model, sub.train_x, mean, std)
    init_seconds = time.perf_counter() - t0
    clock.total += init_seconds
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=work,
        fingerprint=f"gpu-bench-{time.time()}",
        meta={},
        progress=False,
        log=lambda s: None,
    )
    trainer = build_trainer(model, sub.split("train"), sub.split("val"), mean, std, device, cfg)
    test_x, test_y = sub.test_x.to(device), sub.test_y.to(device)
    curve = []
    state, runtime = trainer.state, trainer.runtime
    while not state.finished:
        clock.start()
        trainer.train_epoch(None)
        seconds = clock.stop()
        scoring = time.perf_counter()
        acc = evaluate(
            trainer.learner.eval_model,
            test_x,
            test_y,
            trainer.batches.mean,
            trainer.batches.std,
            amp=runtime.amp,
            channels_last=runtime.channels_last,
            **tta_options(p.evaluate),
        )["acc"]
        # the test pass is outside the timing, the time budget's clock too: `--budget 10` trains 10 s
        trainer.started += time.perf_counter() - scoring
        if trainer.budget is not None:
            trainer.budget.after_epoch(state, trainer.elapsed(), eval_seconds=0.0)
        curve.append({"epoch": len(curve) + 1, "seconds": seconds, "test_acc": acc})
    hit = next((c["seconds"] for c in curve if c["test_acc"] >= target), None)
    return {
        "test_acc": curve[-1]["test_acc"],
        "seconds": clock.total,
        "images_per_s": state.images / max(clock.total - init_seconds, 1e-9),
        "epochs": state.step / trainer.steps_per_epoch,
        "time_to_target": hit,
        "curve": curve,
        "precision": runtime.precision,
    }


def spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a value no run could use is one line (a ParamsError) before any data is read."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=whole_number(1), default=5, help="timed runs (seeds 1..N) after the warm-up")
    ap.add_argument(
        "--warmup", type=whole_number(0), default=1, help="untimed warm-up runs first (seed 0): compile, autotune"
    )
    ap.add_argument("--target", type=float, default=0.906, help="test accuracy for the time-to-target column")
    ap.add_argument("--budget", type=float, default=None, help="train.time_budget_s instead of the recipe's epochs")
    ap.add_argument("--classes", nargs="+", default=["all"])
    ap.add_argument("--val-per-class", type=int, default=1, help="validation images held out per class")
    ap.add_argument("--train-per-class", type=int, default=None, help="fewer training images (quick checks)")
    ap.add_argument(
        "--recipe",
        choices=["gpu", "default"],
        default="gpu",
        help="gpu: params.yaml with its `gpu` section in place (on any device); default: params as written",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="params overrides (YAML values), after the recipe"
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    if not 0 < args.target <= 1:
        raise ParamsError(f"--target {args.target:g}: a test accuracy in (0, 1]")
    if args.budget is not None and not 0 < args.budget < math.inf:
        raise ParamsError(f"--budget {args.budget:g}: seconds above 0, finite")
    if args.name is not None:
        results_path(args.name)
    return args


def recipe_params(args: argparse.Namespace) -> tuple[Params, str]:
    """params.yaml with the options' data and device, the recipe, then --set; checked against the
    machine (CUDA asked where there is none) and the split (a batch larger than it)."""
    over = {
        "data": {
            "classes": "all" if args.classes == ["all"] else args.classes,
            "val_per_class": args.val_per_class,
            "train_per_class": args.train_per_class,
            "test_per_class": None,
        },
        "train": {"device": args.device, "time_budget_s": args.budget},
        "gpu": {"use": "always" if args.recipe == "gpu" else "never"},
    }
    try:
        p = parse_params(deep_merge(load_params("params.yaml").model_dump(), over))
    except ParamsError as e:  # the value came from an option (--classes, --device, …), not params.yaml
        raise ParamsError(not_from_params_yaml(str(e))) from None
    p, recipe = p.recipe_for(resolve_device(args.device).type)
    p = apply_sets(p, args.set)
    try:
        check_runtime(p, planned_train_images(p))
    except ParamsError as e:  # the value may come from the gpu section, --device or --set: say which options
        raise ParamsError(
            f"{not_from_params_yaml(str(e))} (the {recipe} recipe's value after --device and --set; "
            "--set changes it, --train-per-class and --classes the split)"
        ) from None
    return p, recipe


def summarise(rows: list[dict], target: float) -> dict:
    """Median and spread of each number over the timed runs, and how many reached `target`; printed."""
    hits = [r["time_to_target"] for r in rows if r["time_to_target"] is not None]
    s = {k: spread([r[k] for r in rows]) for k in ("test_acc", "seconds", "images_per_s", "epochs")}
    s["time_to_target"] = (
        {**spread(hits), "reached": f"{len(hits)}/{len(rows)}"} if hits else {"reached": f"0/{len(rows)}"}
    )
    print(
        f"\nmedian of {len(rows)} (min-max): test acc {s['test_acc']['median']:.4f} ({s['test_acc']['min']:.4f}-"
        f"{s['test_acc']['max']:.4f}), {s['seconds']['median']:.2f} s "
        f"({s['seconds']['min']:.2f}-{s['seconds']['max']:.2f}), "
        f"{s['images_per_s']['median']:,.0f} img/s, time to {target}: "
        + (f"{s['time_to_target']['median']:.2f} s ({s['time_to_target']['reached']} runs)" if hits else "not reached")
    )
    return s


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p, recipe = recipe_params(args)
    device = resolve_device(p.train.device)
    raw, names = load_raw()
    work = Path(".cache/gpu_bench")
    where = processor_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"{recipe} recipe on {where}: batch {p.train.batch_size}, {p.train.optimizer}, "
        f"{f'{args.budget:g} s budget' if args.budget else f'{p.train.epochs} epochs'}; "
        f"{args.warmup} warm-up run(s), not timed...",
        flush=True,
    )
    for _ in range(args.warmup):
        one_run(p, raw, names, device, 0, work, args.target)
    rows = []
    for run in range(1, args.runs + 1):
        r = one_run(p, raw, names, device, run, work, args.target)
        rows.append(r)
        hit = f"{r['time_to_target']:.2f} s" if r["time_to_target"] is not None else "not reached"
        print(
            f"run {run}/{args.runs}: test acc {r['test_acc']:.4f}  {r['seconds']:.2f} s  "
            f"{r['images_per_s']:,.0f} img/s  to {args.target}: {hit}",
            flush=True,
        )
    summary = summarise(rows, args.target)
    out = results_path(
        args.name or f"gpu_recipe_{device.type}_{f'budget{args.budget:g}s' if args.budget else 'epochs'}"
    )
    record = {
        "recipe": recipe,
        "target": args.target,
        "summary": summary,
        "runs": rows,
        "train": p.train.model_dump(),
        "augment": p.augment.model_dump(),
        "model": p.model.model_dump(),
    }
    write_results(out, "gpu_recipe", argv, record, device)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("gpu_recipe", main))
