"""Which oneDNN kernel runs each convolution of a step, and how close to the CPU's peak it gets.

PyTorch's profiler names `aten::convolution_backward` as one row; oneDNN's own log names the
implementation (`brg_conv_fwd:avx2`, `jit:avx2`, ...), the pass (forward, backward data, backward
weights) and the shape of every call, with its time. On a real 2-core AVX2 EPYC the forward and
backward-data passes ran through brgemm kernels near the cores' fp32 peak while backward weights
took an older direct kernel at about two thirds of it: a table of this module's rows shows that
in one look, on whatever CPU runs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# the passes as oneDNN's log spells them, and as the table prints them
PASSES = {
    "forward_training": "forward",
    "forward_inference": "forward",
    "backward_data": "backward data",
    "backward_weights": "backward weights",
    "backward": "backward",
}


@dataclass(frozen=True)
class KernelCall:
    """One primitive execution from oneDNN's log."""

    primitive: str  # convolution, reorder, matmul, ...
    impl: str  # the implementation oneDNN chose, e.g. brg_conv_fwd:avx2
    pass_: str  # forward, backward data, backward weights, or oneDNN's own word
    shape: str  # oneDNN's problem descriptor, e.g. mb256_ic24oc48_ih31oh31kh3sh1dh0ph1_iw31ow31kw3sw1dw0pw1
    ms: float


def parse_log(text: str) -> tuple[str, list[KernelCall]]:
    """The ISA line and every primitive execution in oneDNN's verbose log."""
    isa, calls = "", []
    for line in text.splitlines():
        f = line.strip().split(",")
        if len(f) >= 5 and f[0] == "onednn_verbose" and f[2] == "info" and f[4].startswith("isa:"):
            isa = f[4][4:]
        elif len(f) >= 10 and f[0] == "onednn_verbose" and f[2] == "primitive" and f[3] == "exec":
            try:
                ms = float(f[-1])
            except ValueError:
                continue
            calls.append(KernelCall(f[5], f[6], PASSES.get(f[7], f[7]), f[-2], ms))
    return isa, calls


def flops(mb: int, ic: int, oc: int, oh: int, ow: int, kh: int, kw: int, groups: int = 1) -> float:
    """A convolution's multiply-adds × 2, the same count for its forward, backward-data and
    backward-weights passes."""
    return 2.0 * mb * oc * oh * ow * ic * kh * kw / groups


def conv_flops(shape: str) -> float | None:
    """`flops` of the convolution oneDNN's problem descriptor names; None if it is not one."""
    d = {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", shape)}
    if not {"mb", "ic", "oc", "oh", "kh"} <= d.keys():
        return None
    # a square problem may leave out its w-part: then it equals the h-part
    ow, kw = d.get("ow", d["oh"]), d.get("kw", d["kh"])
    return flops(d["mb"], d["ic"], d["oc"], d["oh"], ow, d["kh"], kw, d.get("g", 1))


def kernel_table(calls: list[KernelCall], steps: int) -> list[dict]:
    """oneDNN's time per step, one row per (primitive, implementation, pass, shape), busiest first,
    with GFLOP/s for convolutions and each row's share of oneDNN's time."""
    rows: dict[tuple[str, str, str, str], list[float]] = {}
    for c in calls:
        rows.setdefault((c.primitive, c.impl, c.pass_, c.shape), []).append(c.ms)
    total = sum(c.ms for c in calls) or 1.0
    out = []
    for (primitive, impl, pass_, shape), ms in rows.items():
        flops = conv_flops(shape) if primitive == "convolution" else None
        per_call = sum(ms) / len(ms)
        out.append(
            {
                "primitive": primitive,
                "impl": impl,
                "pass": pass_,
                "shape": shape,
                "calls_per_step": len(ms) / steps,
                "ms_per_step": sum(ms) / steps,
                "gflop_s": flops / per_call / 1e6 if flops and per_call > 0 else None,
                "share": sum(ms) / total,
            }
        )
    return sorted(out, key=lambda r: -r["ms_per_step"])


@contextlib.contextmanager
def _stdout_to(file) -> Iterator[None]:
    """Send file descriptor 1 (where oneDNN's C code prints) to `file` for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(file.fileno(), 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            ctypes.CDLL(None).fflush(None)  # C's stdout buffers what oneDNN printed; not on Windows
        os.dup2(saved, 1)
        os.close(saved)


def logged_kernels(run: Callable[[], None]) -> tuple[str, list[KernelCall]]:
    """Run `run` with oneDNN's verbose log on; the ISA oneDNN dispatches to and every primitive it
    executed. oneDNN prints its ISA the first time a process logs, so a later call gets "". The
    log's timing syncs each call, so time the step itself without it."""
    import torch

    with tempfile.TemporaryFile() as log:
        with _stdout_to(log), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            run()
        log.seek(0)
        return parse_log(log.read().decode(errors="replace"))


def pass_totals(rows: list[dict]) -> dict[str, dict]:
    """The convolutions' ms per step and GFLOP/s for each pass, all shapes together."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["primitive"] == "convolution" and r["gflop_s"]:
            t = out.setdefault(r["pass"], {"ms_per_step": 0.0, "gflop_per_step": 0.0})
            t["ms_per_step"] += r["ms_per_step"]
            t["gflop_per_step"] += r["gflop_s"] * r["ms_per_step"] / 1e3
    for t in out.values():
        t["gflop_s"] = t["gflop_per_step"] / t["ms_per_step"] * 1e3 if t["ms_per_step"] else 0.0
    return out


def format_table(rows: list[dict], limit: int, step_ms: float) -> str:
    """The convolutions' passes, then the busiest `limit` rows as text, with oneDNN's share of the
    step (`step_ms`: the same steps, timed with the log on)."""
    if not rows:
        return "oneDNN logged no kernels: this PyTorch runs its convolutions elsewhere"
    dnn = sum(r["ms_per_step"] for r in rows)
    by_pass = "; ".join(
        f"{p} {t['ms_per_step']:.1f} ms at {t['gflop_s']:.0f} GFLOP/s" for p, t in pass_totals(rows).items()
    )
    lines = [
        f"oneDNN kernels: {dnn:.1f} ms of a {step_ms:.1f} ms step ({dnn / step_ms:.0%}; "
        "the step timed with the log on)",
        f"convolutions by pass: {by_pass}",
        f"{'ms/step':>8} {'share':>6} {'GFLOP/s':>8}  {'pass':17s} {'implementation':34s} shape",
    ]
    for r in rows[:limit]:
        gf = f"{r['gflop_s']:8.0f}" if r["gflop_s"] is not None else f"{'':8s}"
        pass_ = r["pass"] if r["primitive"] == "convolution" else r["primitive"]
        lines.append(f"{r['ms_per_step']:8.2f} {r['share']:6.1%} {gf}  {pass_:17s} {r['impl']:34s} {r['shape']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ConvShape:
    """A trainable convolution of the step: its input's and weight's shapes and its padding."""

    x: tuple[int, ...]  # N, C_in, H, W
    w: tuple[int, ...]  # C_out, C_in, kH, kW
    padding: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        """The output map's height and width (stride 1)."""
        return (
            self.x[2] + 2 * self.padding[0] - self.w[2] + 1,
            self.x[3] + 2 * self.padding[1] - self.w[3] + 1,
        )

    @property
    def flops(self) -> float:
        """`flops` of this convolution."""
        (n, c), (oc, _, kh, kw) = self.x[:2], self.w
        return flops(n, c, oc, *self.out_hw, kh, kw)


def trainable_convs(model, x) -> list[ConvShape]:
    """Every stride-1, ungrouped Conv2d of `model` whose weight trains, as one forward of `x` meets it."""
    import torch

    shapes: list[ConvShape] = []

    def hook(m, args, _out) -> None:
        shapes.append(ConvShape(tuple(args[0].shape), tuple(m.weight.shape), tuple(m.padding)))

    convs = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
        and m.weight.requires_grad
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.groups == 1
        and isinstance(m.padding, tuple)
    ]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def weight_grad_ways(s: ConvShape) -> dict:
    """The weight gradient of `s` three ways on channels-last tensors, each a function: oneDNN's
    backward-weights pass (what autograd runs); the same sum as a forward convolution over the
    batch — the batch as input channels, the output gradient as the kernel — which oneDNN runs
    with its forward kernels; and im2col with a matrix product (the classic GEMM way)."""
    import torch

    cl = torch.channels_last
    x = torch.randn(s.x).contiguous(memory_format=cl)
    oc, _, kh, kw = s.w
    oh, ow = s.out_hw
    g = torch.randn(s.x[0], oc, oh, ow).contiguous(memory_format=cl)
    w = torch.randn(s.w).contiguous(memory_format=cl)

    def backward_weights() -> torch.Tensor:
        pad = list(s.padding)
        return torch.ops.aten.convolution_backward(
            g, x, w, None, [1, 1], pad, [1, 1], False, [0, 0], 1, [False, True, False]
        )[1]

    def as_forward() -> torch.Tensor:
        xt = x.transpose(0, 1).contiguous(memory_format=cl)  # C_in, N, H, W: the batch as channels
        gt = g.transpose(0, 1).contiguous(memory_format=cl)  # C_out, N, oH, oW: a kernel of the map's size
        return torch.nn.functional.conv2d(xt, gt, padding=s.padding).transpose(0, 1)

    def im2col(chunk: int = 2) -> torch.Tensor:
        # a few images' patches at a time, so they stay in cache for the matrix product
        n, c, h, w_ = s.x
        xp = torch.nn.functional.pad(
            x.permute(0, 2, 3, 1), (0, 0, s.padding[1], s.padding[1], s.padding[0], s.padding[0])
        )
        gf = g.permute(0, 2, 3, 1)  # N, oH, oW, C_out: contiguous in channels-last memory
        out = torch.zeros(oc, kh * kw * c)
        sn, sh, sw, sc = xp.stride()
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            cols = xp[i : i + m].as_strided((m, oh, ow, kh, kw, c), (sn, sh, sw, sh, sw, sc))
            out.addmm_(gf[i : i + m].reshape(m * oh * ow, oc).t(), cols.reshape(m * oh * ow, kh * kw * c))
        return out.view(oc, kh, kw, c).permute(0, 3, 1, 2)

    return {"onednn backward weights": backward_weights, "as a forward convolution": as_forward, "im2col": im2col}


def time_ways(shapes: list[ConvShape], rounds: int) -> list[dict]:
    """Median ms of each way for each shape, the ways in turn within each round, and the largest
    relative difference between their results."""
    import statistics
    import time

    out = []
    for s in shapes:
        ways = weight_grad_ways(s)
        results = [f() for f in ways.values()]  # also the warm-up
        ref = results[0]
        err = max(float((r - ref).abs().max() / ref.abs().max()) for r in results[1:])
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(rounds):
            for k, f in ways.items():
                t = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t) * 1e3)
        ms = {k: statistics.median(v) for k, v in times.items()}
        out.append({"x": list(s.x), "w": list(s.w), "gflop": s.flops / 1e9, "ms": ms, "all_ms": times, "rel_err": err})
    return out


def main(argv: list[str] | None = None) -> int:
    """Time the weight gradient of each trainable convolution of the committed net (or the net its
    --set overrides make) three ways, on a batch of train.batch_size."""
    import argparse

    import torch

    from benchmarks.record import results_path, write_results
    from benchmarks.time_to_accuracy import apply_sets
    from src.cli import whole_number
    from src.models import build_model
    from src.params import load_params
    from src.training.runtime import setup_runtime

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--rounds", type=whole_number(1), default=7)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="params overrides, as -S takes them")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    p = apply_sets(load_params("params.yaml"), args.set)
    rt = setup_runtime(p.train, torch.device("cpu"))
    out_path = results_path(args.name or f"weight_grad_{rt.cpu_capability.lower()}")
    torch.manual_seed(0)
    model = build_model(p.model, 3).train()
    shapes = trainable_convs(model, torch.randn(p.train.batch_size, 3, 32, 32))
    rows = time_ways(shapes, args.rounds)
    print(f"weight gradients, median of {args.rounds} ({rt.precision}, {rt.cpu_capability}, {rt.threads} threads):")
    for r in rows:
        ways = ", ".join(f"{k} {ms:.1f} ms ({r['gflop'] / ms * 1e3:.0f} GFLOP/s)" for k, ms in r["ms"].items())
        print(f"  x {r['x']} w {r['w']}: {ways}; results differ by {r['rel_err']:.0e} at most")
    for k in rows[0]["ms"] if rows else ():
        print(f"  all convolutions, {k}: {sum(r['ms'][k] for r in rows):.1f} ms")
    write_results(out_path, "kernels", argv, {"convs": rows}, torch.device("cpu"))
    return 0


if __name__ == "__main__":
    from benchmarks.record import run_cli

    sys.exit(run_cli("kernels", main))
