"""The batched AutoAugment equals torchvision's per-image one: every operation and magnitude bin
pixel for pixel, whole sub-policies in order, and the draws follow the policy's frequencies."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torchvision.transforms import v2

from src.data.autoaugment import (
    CIFAR10_POLICY,
    NUM_BINS,
    OPS,
    SIGNED,
    AutoAugmentCIFAR10,
    magnitudes,
    signed_magnitude,
    torchvision_reference,
)

TV = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)


def images(n: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[:6] = x[:6] // 4 + 60  # low contrast: autocontrast and equalize have work to do
    x[6, 0] = 7  # a flat channel (autocontrast leaves it)
    x[7] = torch.arange(32, dtype=torch.uint8).view(1, 1, 32) * 8  # a ramp: edges for sharpness
    return x


def test_the_policy_is_torchvisions():
    assert list(CIFAR10_POLICY) == TV._policies


@pytest.mark.parametrize("sync_free", [True, False], ids=["sync-free", "gathered"])
@pytest.mark.parametrize("op", OPS)
def test_every_operation_and_bin_equals_torchvision_pixel_for_pixel(op, sync_free):
    x = images()
    aa = AutoAugmentCIFAR10(sync_free=sync_free)
    t = aa.tables(32, 32, torch.device("cpu"))
    on = torch.rand(len(x), generator=torch.Generator().manual_seed(1)) < 0.7  # some images skip the op
    for b in range(NUM_BINS) if magnitudes(op) is not None else [0]:
        for neg in (0, 1) if op in SIGNED else (0,):
            m = signed_magnitude(op, b, bool(neg))
            ref = torch.stack(
                [TV._apply_image_or_video_transform(img, op, m, v2.InterpolationMode.NEAREST, TV._fill) for img in x]
            )
            ref = torch.where(on[:, None, None, None], ref, x)
            full = lambda v: torch.full((len(x),), v)  # noqa: E731
            out = aa._colour(
                aa._geometric(x, t, full(OPS.index(op)), full(b), full(neg), on),
                t,
                full(OPS.index(op)),
                full(b),
                full(neg),
                on,
            )
            assert torch.equal(out, ref), f"{op} bin {b} {'negative' if neg else ''}"


@pytest.mark.parametrize("sync_free", [True, False], ids=["sync-free", "gathered"])
def test_whole_sub_policies_in_order_equal_torchvision(sync_free):
    x = images(256, seed=3)
    aa = AutoAugmentCIFAR10(sync_free=sync_free)
    draws = aa.draw(len(x), torch.Generator().manual_seed(5), x.device)
    assert torch.equal(aa(x, None, draws), torchvision_reference(x, draws))


def test_a_batch_mixes_sub_policies_and_is_reproducible():
    aa = AutoAugmentCIFAR10()
    d = aa.draw(128, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(set(d["sub"].tolist())) >= 20  # not one sub-policy for the whole batch
    x = images(128)
    a = aa(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, aa(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, aa(x, torch.Generator().manual_seed(8)))
    assert a.dtype == torch.uint8 and a.shape == x.shape


def test_draws_follow_the_policy_frequencies():
    n = 200_000
    d = AutoAugmentCIFAR10().draw(n, torch.Generator().manual_seed(2024), torch.device("cpu"))
    sub = d["sub"].numpy()
    # every sub-policy equally likely
    assert chisquare(np.bincount(sub, minlength=25)).pvalue > 0.001
    # each operation applied as often as the policy says: sum over (sub-policy, slot) of p / 25
    prob = np.array([[p for _, p, _ in s] for s in CIFAR10_POLICY])
    applied = d["coin"].numpy() <= prob[sub]
    ops = np.array([[OPS.index(o) for o, _, _ in s] for s in CIFAR10_POLICY])[sub]
    observed = np.bincount(ops[applied], minlength=len(OPS))
    expected = np.zeros(len(OPS))
    for s in CIFAR10_POLICY:
        for o, p, _ in s:
            expected[OPS.index(o)] += n * p / 25
    used = expected > 0
    observed = np.append(observed[used], n * 2 - applied.sum())
    expected = np.append(expected[used], n * 2 - expected.sum())
    assert chisquare(observed, expected).pvalue > 0.001
    # signs: half negative
    assert chisquare(np.bincount((d["sign"].numpy() <= 0.5).ravel().astype(int), minlength=2)).pvalue > 0.001


@contextmanager
def no_host_reads():
    """Fail on any Python-side read of a tensor's value (what waits for a GPU)."""
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "numpy")
    saved = {k: getattr(torch.Tensor, k) for k in names}

    def refuse(self, *a, **k):
        raise AssertionError("a host read of a device tensor inside the step")

    try:
        for k in names:
            setattr(torch.Tensor, k, refuse)
        yield
    finally:
        for k, v in saved.items():
            setattr(torch.Tensor, k, v)


def test_the_sync_free_path_never_reads_a_tensor_on_the_host():
    from src.data.augment import augment_batch, mixup
    from tests.conftest import params_with

    p = params_with({"augment": {"autoaugment": True, "mixup_alpha": 0.4, "crop_pad_mode": "zeros", "cutout": 8}})
    x, y = images(64), torch.arange(64) % 10
    aa = AutoAugmentCIFAR10(sync_free=True)
    aa.tables(32, 32, torch.device("cpu"))  # built once per run, before the loop
    gen = torch.Generator().manual_seed(0)
    with no_host_reads():
        out = augment_batch(x, p.augment, gen, aa)
        mixed, ya, yb = mixup(out.float(), y, 0.3, gen)
    assert out.shape == x.shape and mixed.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_on_a_gpu_the_step_never_waits_for_the_device():
    from src.data.augment import augment_batch
    from tests.conftest import params_with

    p = params_with({"augment": {"autoaugment": True, "crop_pad_mode": "zeros"}})
    x = images(256).cuda()
    aa = AutoAugmentCIFAR10()
    aa.tables(32, 32, x.device)
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment_batch(x, p.augment, gen, aa)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    draws = aa.draw(len(x), torch.Generator(device="cuda").manual_seed(1), x.device)
    got = aa(x, None, draws).cpu().int()
    ref = torchvision_reference(x.cpu(), {k: v.cpu() for k, v in draws.items()}).int()
    assert (got - ref).abs().float().mean() < 0.05  # GPU float rounding may move a few pixels by a level
    assert out.device.type == "cuda"
