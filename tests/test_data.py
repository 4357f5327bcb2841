"""Subset selection and the statistics the stats stage reports, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.data.cifar import channel_stats, select_subset
from src.data.raw import load_cifar10, read_class_names


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

    x = torch.randn(512, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:, 0, 0, 0], x[:, 1, 2, 3] = 0.0, 1.0  # two known pixels per image give its shift and scale
    y = color_jitter(x, 0.2, 0.1, torch.Generator().manual_seed(0))
    scale = y[:, 1, 2, 3] - y[:, 0, 0, 0]  # (1 + shift) * scale - (0 + shift) * scale
    shift = y[:, 0, 0, 0] / scale
    assert torch.allclose(y, (x + shift.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1), atol=1e-5)
    assert scale.min() >= 0.9 - 1e-5 and scale.max() <= 1.1 + 1e-5
    assert shift.abs().max() <= 0.2 + 1e-5
    # the draws fill the ranges, and differ from image to image
    assert scale.max() - scale.min() > 0.15 and shift.max() - shift.min() > 0.3
    again = color_jitter(x, 0.2, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)


def test_training_batches_are_jittered_only_when_asked():
    """Batches.make applies the jitter after the flip and crop and normalising, per image; with it
    off a batch is what the transform without it gives, bit for bit."""
    from src.data.augment import augment_batch
    from src.data.cifar import normalize
    from src.training.distributed import Dist
    from src.training.loop import Batches
    from src.training.runtime import Runtime
    from tests.conftest import params_with

    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(64) % 3
    mean, std = torch.tensor([0.5, 0.45, 0.4]), torch.tensor([0.25, 0.24, 0.26])
    runtime = Runtime(torch.device("cpu"), threads=1, amp=False, channels_last=False, cpu_capability="DEFAULT")
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))

    def batch(**jitter):
        p = params_with({"augment": jitter, "train": {"batch_size": 32}})
        made = Batches((images, labels), mean, std, p.train, p.augment, runtime, Dist())
        return made.make(order, 1, 1, torch.Generator().manual_seed(4)).x, p.augment

    off, aug_p = batch()
    expected = normalize(augment_batch(images[order[32:64]], aug_p, torch.Generator().manual_seed(4)), mean, std)
    assert torch.equal(off, expected)
    on, _ = batch(brightness=0.14, contrast=0.13)
    # each image is an affine map of itself without the jitter: on = (off + shift) * scale
    flat_on, flat_off = on.flatten(1), off.flatten(1)
    scale = flat_on.std(1) / flat_off.std(1)
    offset = flat_on - scale[:, None] * flat_off
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-4)
    assert scale.min() >= 0.87 - 1e-4 and scale.max() <= 1.13 + 1e-4 and scale.max() - scale.min() > 0.05


def test_color_jitter_off_returns_the_batch_and_draws_nothing():
    from src.data.augment import color_jitter

    x = torch.randn(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert color_jitter(x, 0.0, 0.0, gen) is x
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("size", [1, 4, 5, 8])
def test_cutout_zeroes_a_square_of_the_side_asked_even_or_odd(size):
    """`augment.cutout` is the square's side: an even 8 zeroed 9×9 (centre ± 4)."""
    from src.data.augment import cutout

    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, size, torch.Generator().manual_seed(0))
    zeroed = (out[:, 0] == 0).flatten(1)
    rows, cols = (out[:, 0] == 0).any(2), (out[:, 0] == 0).any(1)
    inside = (rows.sum(1) == size) & (cols.sum(1) == size)  # the squares not cut by the border
    assert inside.sum() > 20 and bool((zeroed.sum(1)[inside] == size * size).all())
    assert bool((zeroed.sum(1) <= size * size).all()) and bool((out[:, 1:] == out[:, :1]).all())  # every channel


def test_a_damaged_subset_file_is_one_line(tmp_path):
    """A truncated or foreign data/subset.pt names itself and the stage that writes it."""
    import pytest

    from src.data.cifar import Subset
    from src.errors import DataError

    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    good = tmp_path / "subset.pt"
    Subset(["cat", "dog"], x, y, x, y, x, y).save(good)
    assert Subset.load(good).classes == ["cat", "dog"]
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": x}, foreign)
    for path in (cut, foreign):
        with pytest.raises(DataError) as e:
            Subset.load(path)
        assert str(e.value).startswith(f"{path}: not a ") and str(e.value).endswith("(dvc repro -f stats)")
    # the train stage run by hand after data.classes changed, stats not rerun: it trained on the old classes
    assert Subset.load(good, ["cat", "dog"]).classes == ["cat", "dog"]
    for asked in (["cat", "ship"], ["dog", "cat"]):  # other classes, or the same relabelled
        with pytest.raises(DataError) as e:
            Subset.load(good, asked)
        assert str(e.value) == (
            f"{good}: holds cat, dog, where params.yaml's data.classes asks for {', '.join(asked)}; make it again "
            "for these: dvc repro (or python -m stages.stats first)"
        )


def test_a_missing_or_damaged_json_input_is_one_line(tmp_path):
    """metrics/stats.json (train reads it) or metrics/train.json (visualize) missing, not JSON, or
    without the keys the stage reads: one line naming the file, no traceback."""
    import pytest

    from src.errors import DataError
    from src.io import read_json

    path = tmp_path / "stats.json"
    keys = ("normalize_mean", "normalize_std")
    for text, says in [
        (None, "not found; run `dvc repro` to make it"),
        ("{bad", "not valid JSON (Expecting property name"),
        ("[]", "no normalize_mean, normalize_std in it"),
        ('{"normalize_mean": [0.5]}', "no normalize_std in it"),
    ]:
        if text is not None:
            path.write_text(text)
        with pytest.raises(DataError) as e:
            read_json(path, keys=keys)
        assert str(e.value).startswith(f"{path}: {says}") and "\n" not in str(e.value), str(e.value)
    path.write_bytes(b'{"normalize_mean": "caf\xe9"}')
    with pytest.raises(DataError, match="not valid JSON"):
        read_json(path)
    path.write_text('{"normalize_mean": [0.5], "normalize_std": [0.2], "n": 3}')
    assert read_json(path, keys=keys)["n"] == 3


def test_the_normalisation_statistics_come_from_the_training_images_alone():
    """Validation and test images must not leak into the mean and std the model is normalised with."""
    from src.data.cifar import Subset, subset_stats
    from tests.conftest import params_with

    def images(lo: int, hi: int, n: int) -> torch.Tensor:
        return torch.randint(lo, hi, (n, 3, 32, 32), dtype=torch.uint8)

    y = torch.arange(6) % 2
    sub = Subset(["cat", "dog"], images(0, 100, 6), y, images(150, 256, 6), y, images(200, 256, 6), y)
    stats = subset_stats(sub, params_with({}).data)
    want_mean, want_std = channel_stats(sub.train_x)
    assert (stats["mean"], stats["std"]) == (want_mean, want_std) and max(want_mean) < 100 / 255
    assert (stats["normalize_mean"], stats["normalize_std"]) == (want_mean, want_std)  # data.normalize: computed
    assert (stats["train_images"], stats["val_images"], stats["test_images"]) == (6, 6, 6)


def test_data_raw_of_other_classes_is_one_line(tmp_path):
    """batches.meta with other label names in data/raw (the mirror's are checked when it is copied):
    the stats stage raised ValueError: 'airplane' is not in list."""
    import pickle

    import pytest

    from src.data.raw import META_FILE, read_class_names
    from src.errors import DataError

    names = [f"c{i}" for i in range(10)]
    (tmp_path / META_FILE).write_bytes(pickle.dumps({"label_names": names}))
    with pytest.raises(DataError, match=rf"{META_FILE} names the classes \['c0', 'c1', .*; expected CIFAR-10's \["):
        read_class_names(tmp_path)


def test_the_train_stage_refuses_a_subset_of_other_classes(tmp_path):
    """`python -m stages.train` by hand after data.classes changed (stats not rerun) trained on the old classes."""
    import os
    import subprocess
    import sys

    import yaml

    from src.data.cifar import Subset
    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["classes"] = ["cat", "ship"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    (tmp_path / "data").mkdir()
    Subset(["cat", "dog"], x, y, x, y, x, y).save(tmp_path / "data/subset.pt")
    r = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "data/subset.pt: holds cat, dog, where params.yaml's data.classes asks for cat, ship" in r.stderr, r.stderr
    assert not (tmp_path / "models").exists()
