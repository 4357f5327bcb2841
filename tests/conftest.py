"""Synthetic CIFAR-10 in the official python layout, made by the tests (no real data needed)."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from src.params import CIFAR10_CLASSES

REPO = Path(__file__).resolve().parents[1]


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Learnable images: each class has its own colour and stripe direction, plus noise. (N, 3072) uint8."""
    rng = np.random.default_rng(seed)
    n = labels.size
    yy, xx = np.mgrid[0:32, 0:32]
    out = np.empty((n, 3, 32, 32), dtype=np.float32)
    for c in range(10):
        m = labels == c
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], dtype=np.float32)
        stripes = 40 * np.sin((xx * np.cos(c) + yy * np.sin(c)) * 0.8)
        out[m] = colour[:, None, None] * 0.6 + stripes[None] + 60
    out += rng.normal(0, 25, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_batches(folder: Path, rows: int = 10000, seed: int = 0) -> Path:
    """Write data_batch_1..5, test_batch, batches.meta with `rows` images each, balanced labels."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = np.arange(rows) % 10
        np.random.default_rng([seed, i]).shuffle(labels)
        d = {"batch_label": name, "labels": labels.tolist(), "data": synthetic_images(labels, seed + i),
             "filenames": [f"img_{i}_{j}.png" for j in range(rows)]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": rows, "num_vis": 3072}, f)
    return folder


def make_archive(batches: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return dest


@pytest.fixture(scope="session")
def small_batches(tmp_path_factory) -> Path:
    """A mirror folder holding cifar-10-batches-py/ with 200 images per batch file."""
    root = tmp_path_factory.mktemp("mirror_small")
    write_batches(root / "cifar-10-batches-py", rows=200)
    return root


@pytest.fixture(scope="session")
def full_mirror(tmp_path_factory) -> Path:
    """A mirror with the real sizes (10000 rows per file), for end-to-end pipeline runs."""
    root = tmp_path_factory.mktemp("mirror_full")
    write_batches(root / "cifar-10-batches-py", rows=10000)
    return root
