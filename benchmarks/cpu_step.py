"""Where a CPU training step spends its time: images/s of the default recipe's step (forward,
backward, optimizer; synthetic batch, no data loading) for variants side by side in one process,
then PyTorch's profiler table for the first variant and oneDNN's kernels for it: which kernel
each convolution pass runs, per shape, and at how many GFLOP/s (`benchmarks/kernels.py`).

    python -m benchmarks.cpu_step                                   # this CPU as PyTorch sees it
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.cpu_step   # as an AVX2 laptop
    python -m benchmarks.cpu_step --variant w64='model.fast_cnn.widths=[64,128,256]' \
        --variant nchw=train.channels_last=off

Each variant is a name and KEY=VALUE overrides (space-separated) of params.yaml; the default list
compares the committed net with the wider 64/128/256, NCHW layout, and batches of 128 and 512.
Medians of --repeats timings of --steps steps after warm-up, the variants in turn within each
repeat. Writes benchmarks/results/<name>.json.
A variant with `train.freeze_at` times the last phase of such a run, every stage it lists frozen
(`train.freeze_at=[0.5]`: conv group 1 and the whitening layer); `gflop_s` still counts the full
step's FLOPs.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from benchmarks.kernels import format_table, kernel_table, logged_kernels
from benchmarks.record import results_path, run_cli, write_results
from benchmarks.time_to_accuracy import apply_sets, train_flops_per_image
from src.cli import whole_number
from src.errors import ParamsError
from src.models import build_model
from src.params import Params, load_params
from src.training.loop import Batch, train_step
from src.training.optim import make_optimizer
from src.training.runtime import Runtime, setup_runtime

DEFAULT_VARIANTS = [
    "committed=",
    "w64=model.fast_cnn.widths=[64,128,256]",
    "nchw=train.channels_last=off",
    "b128=train.batch_size=128",
    "b512=train.batch_size=512",
]


@dataclass
class _Prepared:
    """One variant, ready to step: its params, model (and compiled forward), optimizer, batch and runtime."""

    p: Params
    model: torch.nn.Module
    fwd: torch.nn.Module
    opt: torch.optim.Optimizer
    batch: Batch
    flops: float
    rt: Runtime
    rates: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)  # minor page faults per step

    def use(self) -> Runtime:
        """Apply this variant's runtime settings (threads, determinism, allocator): the variants
        share one process, and each may set them differently."""
        self.rt = setup_runtime(self.p.train, torch.device("cpu"))
        return self.rt

    def steps(self, n: int) -> float:
        """Run `n` training steps under this variant's runtime settings; images/s."""
        rt = self.use()
        f0 = _minor_faults()
        t = time.perf_counter()
        for _ in range(n):
            train_step(self.model, self.fwd, self.opt, None, self.batch, self.p.train, rt)
        rate = self.p.train.batch_size * n / (time.perf_counter() - t)
        self.faults.append((_minor_faults() - f0) / n)
        return rate


def _minor_faults() -> int:
    """Minor page faults of this process so far (pages the kernel mapped and zeroed on first touch)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def not_timed(p: Params) -> list[str]:
    """Settings of `p` this step does not apply (it times a plain fp32-weights step on a synthetic
    batch), which a variant's label would then claim."""
    t, a = p.train, p.augment
    return [
        key
        for key, on in (
            (f"train.half={t.half}", t.half != "off"),
            (f"train.ema_decay={t.ema_decay}", t.ema_decay is not None),
            (f"train.lookahead_steps={t.lookahead_steps}", t.lookahead_steps > 0),
            (f"augment.mixup_alpha={a.mixup_alpha}", a.mixup_alpha > 0),
            (f"gpu.use={p.gpu.use}", p.gpu.use == "always"),  # the step runs the params as given
        )
        if on
    ]


def _prepare(p: Params, classes: int) -> _Prepared:
    rt = setup_runtime(p.train, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(p.model, classes)
    flops = train_flops_per_image(build_model(p.model, classes))
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, p.train)
    # a freeze variant times the run's last phase: all its stages frozen, after the optimizer is made (as in a run)
    for stage in model.freeze_stages()[: len(p.train.freeze_at)]:
        stage.requires_grad_(False)
    bs = p.train.batch_size
    x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, classes, (bs,))
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fwd = torch.compile(model) if p.train.compile else model
    v = _Prepared(p, model, fwd, opt, Batch(x, y), flops, rt)
    v.steps(3)  # warm-up: allocations, oneDNN primitive caches, compilation
    v.faults.clear()  # its first touches are not a step's
    return v


def step_speeds(
    ps: list[Params], steps: int, repeats: int, classes: int = 3, profile_rows: int = 0, kernels: bool = False
) -> list[dict]:
    """Training images/s of each of `ps`' steps on a synthetic batch (median of `repeats`), the
    variants timed in turn within each repeat (A B A B: a VM's speed drifts over a minute), and
    optionally the profiler's table of the busiest operators of the first and oneDNN's kernels
    for it (`kernels`: one row per implementation, pass and shape)."""
    for skipped in map(not_timed, ps):
        if skipped:
            raise ParamsError(f"{', '.join(skipped)}: the step benchmark does not apply it; time it in a real run")
    if len({p.train.reuse_memory for p in ps}) > 1:
        raise ParamsError(
            "train.reuse_memory differs between the variants: time them in processes of their own "
            "(once a process keeps freed memory, the others would reuse it too)"
        )
    prepared = [_prepare(p, classes) for p in ps]
    for _ in range(repeats):
        for v in prepared:
            v.rates.append(v.steps(steps))
    out = []
    for v in prepared:
        rt = v.rt
        med = statistics.median(v.rates)
        out.append(
            {
                "images_per_s": med,
                "all": v.rates,
                "page_faults_per_step": statistics.median(v.faults),
                "precision": rt.precision,
                "cpu_capability": rt.cpu_capability,
                "threads": rt.threads,
                "gflop_per_image": v.flops / 1e9,
                "gflop_s": v.flops * med / 1e9,
            }
        )
    if profile_rows:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            prepared[0].steps(steps)
        out[0]["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile_rows)
    if kernels:
        t = time.perf_counter()
        isa, calls = logged_kernels(lambda: prepared[0].steps(steps))
        out[0]["kernels_step_ms"] = (time.perf_counter() - t) * 1e3 / steps  # the log's own cost included
        out[0]["onednn_isa"] = isa
        out[0]["kernels"] = kernel_table(calls, steps)
    return out


def step_speed(
    p: Params, steps: int, repeats: int, classes: int = 3, profile_rows: int = 0, kernels: bool = False
) -> dict:
    """`step_speeds` of one variant."""
    return step_speeds([p], steps, repeats, classes, profile_rows, kernels)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="'NAME=KEY=VALUE ...'",
        help="a variant: name, then overrides (repeat the option for several)",
    )
    ap.add_argument("--steps", type=whole_number(1), default=8)
    ap.add_argument("--repeats", type=whole_number(1), default=3)
    ap.add_argument("--profile-rows", type=whole_number(0), default=15, help="the profiler table's rows (0: none)")
    ap.add_argument(
        "--kernel-rows",
        type=whole_number(0),
        default=20,
        help="rows of oneDNN's kernels for the first variant: implementation, pass, shape, GFLOP/s (0: none)",
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    base = load_params("params.yaml")
    specs = [spec.partition("=")[::2] for spec in args.variant or DEFAULT_VARIANTS]
    names = [name for name, _ in specs]
    if len(set(names)) < len(names) or not all(names):
        raise ParamsError(f"--variant names {names}: each variant needs a name of its own (NAME=KEY=VALUE ...)")
    if args.name is not None:
        results_path(args.name)  # before the steps are timed
    speeds = step_speeds(
        [apply_sets(base, shlex.split(sets), flag=f"--variant {name}") for name, sets in specs],
        args.steps,
        args.repeats,
        profile_rows=args.profile_rows,
        kernels=args.kernel_rows > 0,
    )
    results = {}
    for (name, sets), r in zip(specs, speeds, strict=True):
        results[name] = {"overrides": sets, **r}
        print(
            f"{name:10s} {r['images_per_s']:7.1f} images/s  {r['gflop_per_image']:.3f} GFLOP/image  "
            f"{r['gflop_s']:6.1f} GFLOP/s  {r['page_faults_per_step']:8.0f} page faults/step  "
            f"({r['precision']}, {r['cpu_capability']}, {r['threads']} threads)",
            flush=True,
        )
    first = next(iter(results.values()))
    if "profile" in first:
        print(f"\nwhere the time goes ({next(iter(results))}):\n{first['profile']}")
    if "kernels" in first:
        isa = f", ISA {first['onednn_isa']}" if first["onednn_isa"] else ""
        print(f"\noneDNN's kernels ({next(iter(results))}{isa}):")
        print(format_table(first["kernels"], args.kernel_rows, first["kernels_step_ms"]))
    cap = first["cpu_capability"].lower()
    name = args.name or re.sub(r"[^A-Za-z0-9._-]", "_", f"cpu_step_{cap}_{first['precision']}")  # "NO AVX"
    write_results(results_path(name), "cpu_step", argv, {"variants": results}, torch.device("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("cpu_step", main))
