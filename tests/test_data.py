"""Subset selection and the statistics the stats stage reports, against NumPy."""

from __future__ import annotations

import numpy as np
import torch

from src.data.cifar import channel_stats, load_cifar10, read_class_names, select_subset


def test_channel_stats_match_numpy():
    x = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    mean, std = channel_stats(x)
    a = x.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, a.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, a.std(axis=(0, 2, 3)), rtol=1e-10)


def test_subset_counts_relabelling_and_disjoint_splits(small_batches):
    raw = load_cifar10(small_batches / "cifar-10-batches-py")
    names = read_class_names(small_batches / "cifar-10-batches-py")
    sub = select_subset(
        raw, names, ["dog", "cat", "ship"], train_per_class=50, val_per_class=20, test_per_class=10, seed=3
    )
    assert sub.classes == ["dog", "cat", "ship"]
    for split, n in (("train", 50), ("val", 20), ("test", 10)):
        x, y = sub.split(split)
        assert x.dtype == torch.uint8 and x.shape == (3 * n, 3, 32, 32)
        assert torch.bincount(y, minlength=3).tolist() == [n, n, n]
    # relabelled images really are the original class's images
    dog = names.index("dog")
    dogs = {bytes(r) for r in raw["train_x"][raw["train_y"] == dog]}
    assert all(bytes(img.numpy()) in dogs for img in sub.train_x[sub.train_y == 0])
    # train and val never share an image
    tr = {bytes(i.numpy()) for i in sub.train_x}
    assert not tr & {bytes(i.numpy()) for i in sub.val_x}
    # the split is a function of the seed
    again = select_subset(raw, names, ["dog", "cat", "ship"], 50, 20, 10, seed=3)
    assert torch.equal(again.train_x, sub.train_x)
    other = select_subset(raw, names, ["dog", "cat", "ship"], 50, 20, 10, seed=4)
    assert not torch.equal(other.train_x, sub.train_x)


def test_color_jitter_shifts_and_scales_each_image_within_its_ranges():
    from src.data.augment import color_jitter

    x = torch.randn(512, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    y = color_jitter(x, 0.2, 0.1, gen)
    # y = (x + shift) * scale per image: recover both from two pixels of each image
    a, b = x[:, 0, 0, 0], x[:, 1, 2, 3]
    ya, yb = y[:, 0, 0, 0], y[:, 1, 2, 3]
    scale = (ya - yb) / (a - b)
    shift = ya / scale - a
    assert torch.allclose(y, (x + shift.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1), atol=1e-4)
    assert scale.min() >= 0.9 - 1e-4 and scale.max() <= 1.1 + 1e-4
    assert shift.abs().max() <= 0.2 + 1e-3
    # the draws fill the ranges, and differ from image to image
    assert scale.max() - scale.min() > 0.15 and shift.max() - shift.min() > 0.3
    again = color_jitter(x, 0.2, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)


def test_color_jitter_off_returns_the_batch_and_draws_nothing():
    from src.data.augment import color_jitter

    x = torch.randn(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert color_jitter(x, 0.0, 0.0, gen) is x
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=torch.Generator().manual_seed(0)))
