"""The CIFAR-10 subset of the lab: the chosen classes as uint8 tensors, their statistics and
normalisation (fetching and reading the published batches: `src.data.raw`).

The whole subset is a handful of uint8 tensors (N, 3, 32, 32): the training loop indexes and
augments them in batches on the training device, with no per-image Python work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.errors import DataError
from src.io import atomic_torch_save
from src.params import CIFAR10_MEAN, CIFAR10_STD, DataParams


@dataclass
class Subset:
    """The selected classes, relabelled 0..K-1 in the order of `classes`."""

    classes: list[str]
    train_x: torch.Tensor  # (N, 3, 32, 32) uint8
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def save(self, path: Path) -> None:
        atomic_torch_save(self.__dict__, path)

    @classmethod
    def load(cls, path: Path, classes: list[str] | None = None) -> Subset:
        """The subset the stats stage saved; with `classes` (params.yaml's), a DataError unless it
        holds those, in that order (a stage run by hand after data.classes changed, stats not rerun)."""
        sub = cls._read(path)
        if classes is not None and sub.classes != list(classes):
            raise DataError(
                f"{path}: holds {', '.join(sub.classes)}, where params.yaml's data.classes asks for "
                f"{', '.join(classes)}; make it again for these: dvc repro (or python -m stages.stats first)"
            )
        return sub

    @classmethod
    def _read(cls, path: Path) -> Subset:
        try:
            d = torch.load(path, weights_only=True)
        except FileNotFoundError:
            raise DataError(f"{path}: missing; run the stats stage (dvc repro stats)") from None
        except Exception as exc:  # a truncated or foreign file raises many types
            raise DataError(
                f"{path}: not a readable subset ({type(exc).__name__}); run the stats stage again (dvc repro -f stats)"
            ) from None
        try:
            return cls(**d)
        except TypeError:
            raise DataError(f"{path}: not a subset the stats stage wrote; run it again (dvc repro -f stats)") from None


def select_subset(
    raw: dict[str, np.ndarray],
    all_names: list[str],
    classes: list[str],
    train_per_class: int | None,
    val_per_class: int,
    test_per_class: int | None,
    seed: int,
) -> Subset:
    """Pick classes; hold out `val_per_class` training images per class for validation.

    The split is a seeded shuffle per class, so it does not depend on the other classes chosen.
    """
    parts: dict[str, list] = {k: [] for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    for new, name in enumerate(classes):
        old = all_names.index(name)
        rng = np.random.default_rng([seed, old])
        idx = np.flatnonzero(raw["train_y"] == old)
        idx = idx[rng.permutation(idx.size)]
        val, rest = idx[:val_per_class], idx[val_per_class:]
        train = np.sort(rest if train_per_class is None else rest[:train_per_class])
        test = np.flatnonzero(raw["test_y"] == old)
        test = test if test_per_class is None else test[:test_per_class]
        for split, ix, src in (("train", train, "train"), ("val", np.sort(val), "train"), ("test", test, "test")):
            parts[f"{split}_x"].append(raw[f"{src}_x"][ix])
            parts[f"{split}_y"].append(np.full(ix.size, new, dtype=np.int64))
    out = {}
    for split in ("train", "val", "test"):
        x = np.concatenate(parts[f"{split}_x"])
        y = np.concatenate(parts[f"{split}_y"])
        # interleave the classes in a fixed order (a stable, seeded shuffle)
        perm = np.random.default_rng([seed, 1000 + len(split)]).permutation(y.size)
        out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x[perm]))
        out[f"{split}_y"] = torch.from_numpy(y[perm])
    return Subset(classes=list(classes), **out)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, H, W), (x/255 - mean) / std."""
    return (x.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def normalization(d: DataParams, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """The mean/std the model's input is normalised with, as `data.normalize` says, given the
    subset's own `mean`/`std` (channel_stats of its training images)."""
    if d.normalize == "computed":
        return mean, std
    if d.normalize == "cifar10":
        return list(CIFAR10_MEAN), list(CIFAR10_STD)
    return d.normalize[0], d.normalize[1]


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of uint8 images (N, 3, H, W), on the [0, 1] scale."""
    s1 = torch.zeros(x.shape[1], dtype=torch.float64)
    s2 = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in x.split(4096):  # exact integer sums per chunk, without a float copy of everything
        c = chunk.to(torch.int64)
        s1 += c.sum(dim=(0, 2, 3)).double()
        s2 += (c * c).sum(dim=(0, 2, 3)).double()
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return (mean / 255).tolist(), (std / 255).tolist()


def class_counts(sub: Subset) -> dict[str, dict[str, int]]:
    """Images of each class in each split: {split: {class: count}}."""
    return {
        s: {c: int((sub.split(s)[1] == i).sum()) for i, c in enumerate(sub.classes)} for s in ("train", "val", "test")
    }


def subset_stats(sub: Subset, d: DataParams) -> dict:
    """The stats stage's record (metrics/stats.json): sizes, the training images' per-channel
    mean/std, the mean/std the input is normalised with (`data.normalize`), counts per class."""
    mean, std = channel_stats(sub.train_x)
    use_mean, use_std = normalization(d, mean, std)
    return {
        "classes": sub.classes,
        "num_classes": len(sub.classes),
        "train_images": int(sub.train_y.numel()),
        "val_images": int(sub.val_y.numel()),
        "test_images": int(sub.test_y.numel()),
        "mean": mean,
        "std": std,
        "normalize": d.normalize if isinstance(d.normalize, str) else "custom",
        "normalize_mean": use_mean,
        "normalize_std": use_std,
        "per_class": class_counts(sub),
    }


def class_counts_csv(counts: dict[str, dict[str, int]]) -> str:
    """`class_counts` as CSV rows class,split,images (plots/data/class_counts.csv)."""
    rows = ["class,split,images"] + [f"{c},{s},{n}" for s, cs in counts.items() for c, n in cs.items()]
    return "\n".join(rows) + "\n"
