"""Time to accuracy: the project's default recipe against the lab notebook's, same classes, same
time budget, side by side in one run on this machine; test accuracy and training images/s.

    python -m benchmarks.time_to_accuracy --classes airplane automobile bird --budget 120 --runs 3

With --epochs N a run trains N epochs instead of a budget, as the pipeline's train stage does (its
test accuracy is the evaluate stage's for the same params and seed). With --tta-fractions 0 1 each
run's model is also scored with no test-time augmentation and with it on every test image. With
--seeds 1 2 the runs use those seeds (to add seeds to an earlier --runs 1; each run records its seed).

Reads CIFAR-10 from data/raw (run `dvc repro download` first) or from $CIFAR10_MIRROR.
Prints a table (median over runs) and writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.record import results_path, run_cli, write_results
from src.data.cifar import (
    Subset,
    channel_stats,
    normalization,
    select_subset,
)
from src.data.raw import BATCHES_DIR, load_cifar10, mirror_from_env, read_class_names
from src.models import build_model, count_params
from src.params import (
    SEED_MAX,
    Params,
    ParamsError,
    checked_recipe,
    load_params,
    not_from_params_yaml,
    parse_params,
    planned_train_images,
)
from src.params import deep_merge as merge
from src.training.evaluation import evaluate, tta_options
from src.training.loop import FitConfig, fit, init_from_data
from src.training.runtime import resolve_device

# The notebook's recipe, as -S overrides of params.yaml would set it (see README).
SEED_RECIPE = {
    "data": {"normalize": "cifar10"},
    "augment": {
        "hflip": True,
        "crop_padding": 4,
        "crop_pad_mode": "zeros",
        "autoaugment": True,
        "mixup_alpha": 0.4,
        "cutout": 0,
    },
    "model": {"name": "seed_cnn"},
    "train": {
        "optimizer": "adamw",
        "lr": 0.00182,
        "weight_decay": 3.5e-5,
        "max_lr_factor": 6.74,
        "pct_start": 0.30,
        "anneal": "cos",
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "cycle_momentum": True,
        "label_smoothing": 0.04,
        "grad_clip": 1.0,
        "batch_size": 128,
        "ema_decay": None,
    },
}


def train_flops_per_image(model: torch.nn.Module) -> float:
    """FLOPs of one training step per image (forward + backward), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    x = torch.randn(8, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 8


def subset_and_normalization(p: Params, raw: dict, names: list[str]) -> tuple[Subset, torch.Tensor, torch.Tensor]:
    """The subset `p.data` selects and the mean/std its inputs are normalised with (as the stats stage)."""
    d = p.data
    sub = select_subset(raw, names, d.class_names, d.train_per_class, d.val_per_class, d.test_per_class, d.seed)
    mean, std = normalization(d, *channel_stats(sub.train_x))
    return sub, torch.tensor(mean).float(), torch.tensor(std).float()


def run_recipe(
    p: Params,
    raw: dict,
    names: list[str],
    budget: float | None,
    seed: int,
    work: Path,
    tta_fractions: tuple[float, ...] = (),
) -> dict:
    """Train `p` for `budget` seconds (None: its `train.epochs`) with `seed`; test accuracy and speed.
    Each of `tta_fractions` adds the same model's test accuracy with TTA on that fraction of the
    test images (`test_acc_tta_<fraction>`), so TTA's share of a gain needs no second training."""
    own = {"train": {"time_budget_s": budget, "seed": seed, "epochs": p.train.epochs}}  # the harness's options
    sub, mean, std = subset_and_normalization(p, raw, names)
    device = resolve_device(p.train.device)
    p, recipe = checked_recipe(p, device.type, sub.train_y.numel())  # as the train stage: the GPU recipe on CUDA
    p = parse_params(merge(p.model_dump(), own))  # --epochs, the budget and the seed stay the run's
    torch.manual_seed(seed)
    model = build_model(p.model, len(sub.classes))
    flops = train_flops_per_image(build_model(p.model, len(sub.classes)))
    init_from_data(model, sub.train_x, mean, std)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=work,
        fingerprint=f"bench-{time.time()}",
        meta={},
        eval_batch_size=p.evaluate.batch_size,
        progress=False,
        log=lambda s: None,
    )
    res = fit(model, sub.split("train"), sub.split("val"), mean, std, device, cfg)
    # scored as the evaluate stage scores: a fresh fp32 model with best.pt's weights (not the trained
    # one, whose weights may be bf16 under train.half)
    model = build_model(p.model, len(sub.classes)).to(device)
    model.load_state_dict(torch.load(work / "best.pt", weights_only=False)["model"])
    mean, std = mean.to(device), std.to(device)

    def test_acc(**over) -> float:  # scored as the evaluate stage scores, but for `over`
        kw = {**tta_options(p.evaluate), "channels_last": res.runtime.channels_last, **over}
        return evaluate(model, sub.test_x, sub.test_y, mean, std, **kw)["acc"]

    return {
        "recipe": recipe,
        "device": str(device),  # the run's own: the results file's machine record is the first recipe's
        "test_acc": test_acc(),
        **{f"test_acc_tta_{f:g}": test_acc(tta_fraction=f) for f in tta_fractions},
        "images_per_s": res.images_per_s,
        "seconds": res.seconds,
        "epochs": res.epochs_equivalent,
        "steps": res.steps,
        "params": count_params(model),
        "train_gflop_per_image": flops / 1e9,
        "achieved_gflop_s": flops * res.images_per_s / 1e9,
    }


# a run's words, the same in each of a recipe's runs: kept as they are in the medians
LABELS = ("recipe", "device")

# set by the harness's own options (--budget, --epochs, --seeds), never by --set
OWNED = {"train.time_budget_s": "--budget", "train.epochs": "--epochs", "train.seed": "--seeds"}


def apply_sets(p: Params, sets: list[str], owned: dict[str, str] | None = None, flag: str = "--set") -> Params:
    """`p` with KEY=VALUE overrides (YAML values, dotted keys), as `dvc exp run -S` takes them;
    `owned` keys (→ the option that sets them) are refused; errors name the option, `flag`."""
    for item in sets:  # e.g. model.fast_cnn.widths=[48,96,192]
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ParamsError(f"{flag} {item!r}: expected KEY=VALUE, e.g. train.lr=0.02")
        if key in (owned or {}):
            raise ParamsError(f"{flag} {key}: set by the benchmark itself; use {owned[key]}")
        over: dict = {}
        node = over
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
        try:
            p = parse_params(merge(p.model_dump(), over))
        except ParamsError as e:  # the value came from the option, not from params.yaml
            raise ParamsError(f"{flag} {not_from_params_yaml(str(e))}") from None
    return p


def load_raw() -> tuple[dict, list[str]]:
    """CIFAR-10 from $CIFAR10_MIRROR, else data/raw (after `dvc repro download`)."""
    mirror = mirror_from_env()
    batches = Path(mirror) / BATCHES_DIR if mirror else Path("data/raw") / BATCHES_DIR
    return load_cifar10(batches), read_class_names(batches)


def check_args(args: argparse.Namespace, seeds: list[int]) -> None:
    """One line for a value the run could not use (before the data is loaded)."""
    problems = [
        (args.runs < 1, f"--runs {args.runs}: at least 1"),
        (not 0 < args.budget < math.inf, f"--budget {args.budget:g}: seconds above 0, finite"),
        (args.peak_gflops is not None and not args.peak_gflops > 0, f"--peak-gflops {args.peak_gflops}: above 0"),
        (args.epochs is not None and args.epochs < 1, f"--epochs {args.epochs}: at least 1"),
        (len(set(seeds)) < len(seeds), f"--seeds {' '.join(map(str, seeds))}: each seed once (the median counts runs)"),
        (any(not 0 <= s <= SEED_MAX for s in seeds), f"--seeds: each in 0..{SEED_MAX}"),
        (any(not 0 <= f <= 1 for f in args.tta_fractions), "--tta-fractions: each in [0, 1] (0 = no TTA, 1 = all)"),
    ]
    for bad, message in problems:
        if bad:
            raise ParamsError(message)
    if args.name is not None:
        results_path(args.name)


def build_recipes(args: argparse.Namespace) -> dict[str, Params]:
    """The default and the notebook recipe for these classes and epochs; --set changes the default
    one, and data.* keys both (they then train and test on the same images)."""
    classes = args.classes if args.classes != ["all"] else "all"
    base = load_params("params.yaml")
    over = {"data": {"classes": classes}, "train": {"device": "auto"}}
    if args.epochs:
        over["train"]["epochs"] = args.epochs
    base = parse_params(merge(base.model_dump(), over))
    default = apply_sets(base, args.set, OWNED)
    seed = apply_sets(base, [s for s in args.set if s.startswith("data.")])
    notebook = merge(seed.model_dump(), {**SEED_RECIPE, "gpu": {"use": "never"}})  # never the GPU speed recipe
    return {"default": default, "seed": parse_params(notebook)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", nargs="+", default=["airplane", "automobile", "bird"])
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    ap.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of --budget")
    ap.add_argument("--runs", type=int, default=1, help="runs per recipe (seeds 0..runs-1); medians reported")
    ap.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="run these seeds instead (e.g. 1 2 to add two seeds to an earlier --runs 1); overrides --runs",
    )
    ap.add_argument("--recipes", nargs="+", default=["default", "seed"], choices=["default", "seed"])
    ap.add_argument(
        "--peak-gflops",
        type=float,
        default=None,
        help="this CPU's peak GFLOP/s in the run's precision, for an 'of peak' column (2 AVX2 cores, fp32: about 157)",
    )
    ap.add_argument(
        "--tta-fractions",
        nargs="*",
        type=float,
        default=[],
        metavar="F",
        help="also score each run's model with TTA on these fractions of the test images (0 = none, 1 = all)",
    )
    ap.add_argument("--name", default=None, help="results file name (default from classes and budget)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="params overrides for the default recipe (data.* keys for both, so they compare on the same "
        "images), as `dvc exp run -S` takes them (YAML values)",
    )
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else list(range(args.runs))
    check_args(args, seeds)
    recipes = build_recipes(args)
    for r in args.recipes:  # each recipe's batch against the split, before any of them trains
        try:
            checked_recipe(recipes[r], resolve_device(recipes[r].train.device).type, planned_train_images(recipes[r]))
        except ParamsError as e:
            if r == "default":
                raise
            # the notebook recipe's own value, not params.yaml's
            raise ParamsError(f"--recipes seed (the notebook's recipe): {not_from_params_yaml(str(e))}") from None
    budget = None if args.epochs else args.budget
    length = f"{args.epochs} epochs" if args.epochs else f"budget {args.budget:.0f} s"
    classes = recipes["default"].data.classes
    raw, names = load_raw()
    # a folder of this process's own: two benchmarks in one checkout must not share best.pt
    Path(".cache").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=".cache"))
    table: dict[str, list[dict]] = {r: [] for r in args.recipes}
    try:
        for run, seed in enumerate(seeds):
            for r in args.recipes:  # interleaved, so drifts in machine load hit both recipes alike
                out = run_recipe(recipes[r], raw, names, budget, seed, work / r, tuple(args.tta_fractions))
                table[r].append({"seed": seed, **out})
                tta = "".join(f"  {k.removeprefix('test_acc_')} {v:.4f}" for k, v in out.items() if "_tta_" in k)
                print(
                    f"run {run + 1}/{len(seeds)} (seed {seed}) {r:8s} test acc {out['test_acc']:.4f}  "
                    f"{out['images_per_s']:7.1f} img/s  "
                    f"{out['seconds']:6.1f} s  {out['epochs']:.2f} epochs{tta}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {  # the recipe and device as they are (LABELS), every number its median
        r: {k: rows[0][k] if k in LABELS else statistics.median(o[k] for o in rows) for k in rows[0] if k != "seed"}
        for r, rows in table.items()
    }
    print(
        f"\n{'recipe':10s} {'test acc':>9s} {'img/s':>8s} {'epochs':>7s} {'GFLOP/img':>10s} {'GFLOP/s':>8s} "
        f"{'of peak' if args.peak_gflops else ''}  (median of {len(seeds)}, {length}, "
        f"{len(names if classes == 'all' else classes)} classes)"
    )
    for r, m in med.items():
        print(
            f"{r:10s} {m['test_acc']:9.4f} {m['images_per_s']:8.1f} {m['epochs']:7.2f} "
            f"{m['train_gflop_per_image']:10.3f} "
            f"{m['achieved_gflop_s']:8.1f} "
            + (f"{m['achieved_gflop_s'] / args.peak_gflops:7.1%}" if args.peak_gflops else "")
        )
    if "default" in med and "seed" in med:
        print(
            f"default / seed: accuracy {med['default']['test_acc'] / med['seed']['test_acc']:.2f}x, "
            f"images/s {med['default']['images_per_s'] / med['seed']['images_per_s']:.1f}x"
        )
    suffix = f"{args.epochs}ep" if args.epochs else f"{args.budget:.0f}s"
    name = args.name or f"{'-'.join(args.classes) if len(args.classes) < 4 else 'n' + str(len(args.classes))}_{suffix}"
    device = resolve_device(recipes[args.recipes[0]].train.device)  # the recipes' own, not always "auto"'s
    write_results(results_path(name), "time_to_accuracy", argv, {"runs": table, "median": med}, device)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("time_to_accuracy", main))
