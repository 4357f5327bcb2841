"""What AutoAugment costs: the batched version (src/data/autoaugment.py) against torchvision's per-image
loop, and the notebook recipe's training step with and without it, side by side in one run.

    python -m benchmarks.autoaugment_speed                    # CPU, batches 128 and 512, 3 rounds
    python -m benchmarks.autoaugment_speed --device cuda      # on a GPU (CUDA-event timing)

Prints a table (medians over rounds) and writes benchmarks/results/autoaugment_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from benchmarks.record import RESULTS, write_results
from src.data.augment import augment_batch, mixup
from src.data.autoaugment import AutoAugmentCIFAR10
from src.data.cifar import normalize
from src.models import build_model
from src.params import deep_merge, load_params, parse_params
from src.training.loop import Batch, mixup_weight, train_step
from src.training.optim import make_optimizer
from src.training.runtime import resolve_device, setup_runtime

NOTEBOOK = {  # the seed recipe's augmentation and optimisation (README: the notebook's recipe)
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
        "label_smoothing": 0.04,
        "grad_clip": 1.0,
        "batch_size": 128,
    },
}


def per_image_torchvision(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The reference: torchvision's AutoAugment image by image on the CPU, as the lab notebook runs it."""
    from torchvision.transforms import v2

    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))  # a CUDA generator draws on CUDA
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([aa(img) for img in x.cpu()]).to(x.device)


class Timer:
    """Wall seconds of a block; on CUDA measured with events after a synchronisation."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def augmentation_rate(batch: int, rounds: int, device: torch.device, timer: Timer) -> dict:
    """Images/s of the batched AutoAugment and of the per-image loop on one uint8 batch."""
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    aa = AutoAugmentCIFAR10()
    gen = torch.Generator(device=device).manual_seed(0)
    aa(x, gen)  # build the tables, warm up
    batched, loop = [], []
    for _ in range(rounds):
        batched.append(batch / timer(lambda: aa(x, gen)))
        loop.append(batch / timer(lambda: per_image_torchvision(x, torch.Generator().manual_seed(1))))
    return {"batched_images_per_s": statistics.median(batched), "per_image_images_per_s": statistics.median(loop)}


def step_rates(steps: int, rounds: int, device: torch.device, timer: Timer) -> dict:
    """Training images/s of the notebook recipe: AutoAugment batched, per image, and none."""
    p = parse_params(deep_merge(load_params("params.yaml").model_dump(), NOTEBOOK))
    rt = setup_runtime(p.train, device)
    model = build_model(p.model, 10).to(device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, p.train)
    bs = p.train.batch_size
    data = torch.randint(0, 256, (bs * steps, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (bs * steps,), device=device)
    mean, std = (
        torch.tensor([0.4914, 0.4822, 0.4465], device=device),
        torch.tensor([0.2023, 0.1994, 0.2010], device=device),
    )
    aa = AutoAugmentCIFAR10()
    no_aa = p.augment.model_copy(update={"autoaugment": False})

    def run(kind: str, n: int) -> None:
        for s in range(n):
            gen = torch.Generator(device=device).manual_seed(s)
            i = s % steps
            xb = data[i * bs : (i + 1) * bs]
            if kind == "per-image":
                xb = per_image_torchvision(augment_batch(xb, no_aa, gen), gen)
            else:
                xb = augment_batch(xb, p.augment if kind == "batched" else no_aa, gen, aa)
            xb = normalize(xb, mean, std)
            lam = mixup_weight(0.4, s)
            xb, yb, y_mix = mixup(xb, labels[i * bs : (i + 1) * bs], lam, gen)
            if rt.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            train_step(model, model, opt, None, Batch(xb, yb, y_mix, lam), p.train, rt)

    kinds = ("none", "batched", "per-image")
    for k in kinds:
        run(k, 2)  # warm-up, excluded
    rates = {k: [] for k in kinds}
    for _ in range(rounds):  # interleaved, so drifts in machine load hit all three alike
        for k in kinds:
            rates[k].append(bs * steps / timer(lambda k=k: run(k, steps)))
    return {
        "precision": rt.precision,
        "threads": rt.threads,
        **{f"{k}_images_per_s": statistics.median(v) for k, v in rates.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--rounds", type=int, default=3, help="repeats; medians reported")
    ap.add_argument("--steps", type=int, default=4, help="training steps per round and kind")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    timer = Timer(device)
    result = {
        "augmentation": {},
        "training": {},
    }
    print(f"AutoAugment (CIFAR10 policy) on {device}, {torch.get_num_threads()} threads; medians of {args.rounds}")
    for b in args.batches:
        r = augmentation_rate(b, args.rounds, device, timer)
        result["augmentation"][b] = r
        print(
            f"  batch {b:4d}: batched {r['batched_images_per_s']:10.0f} images/s   per-image loop "
            f"{r['per_image_images_per_s']:8.0f} images/s   "
            f"ratio {r['batched_images_per_s'] / r['per_image_images_per_s']:.1f}x"
        )
    t = step_rates(args.steps, args.rounds, device, timer)
    result["training"] = t
    cost = 1 - t["batched_images_per_s"] / t["none_images_per_s"]
    old = 1 - t["per-image_images_per_s"] / t["none_images_per_s"]
    print(
        f"notebook recipe (seed_cnn, batch 128, MixUp, AdamW, {t['precision']}), training images/s:\n"
        f"  no AutoAugment {t['none_images_per_s']:.1f}   batched {t['batched_images_per_s']:.1f} "
        f"(AutoAugment costs {cost:.1%} of the step)   per-image {t['per-image_images_per_s']:.1f} (costs {old:.1%})"
    )
    result["training"]["batched_cost"], result["training"]["per_image_cost"] = cost, old
    write_results(RESULTS / f"autoaugment_{device.type}.json", "autoaugment_speed", argv, result, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
