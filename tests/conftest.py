"""Synthetic CIFAR-10 in the official python layout, made by the tests (no real data needed)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from src.params import CIFAR10_CLASSES, Params, deep_merge, parse_params

REPO = Path(__file__).resolve().parents[1]
COMMITTED = yaml.safe_load((REPO / "params.yaml").read_text())


def params_with(over: dict | None = None) -> Params:
    """The committed params.yaml with `over` merged in, validated (params.yaml is the one source
    of values, so tests start from it)."""
    return parse_params(deep_merge(COMMITTED, over or {}))


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
        d = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": synthetic_images(labels, seed + i),
            "filenames": [f"img_{i}_{j}.png" for j in range(rows)],
        }
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


# ----------------------------------------------------------------------------- end-to-end repo

TINY = {
    "data": {"classes": ["cat", "dog", "ship"], "train_per_class": 60, "val_per_class": 20, "test_per_class": 20},
    "model": {"fast_cnn": {"widths": [8, 16, 16]}},
    "train": {"epochs": 2, "batch_size": 32, "threads": 1},
    "evaluate": {"batch_size": 64},
}


merge = deep_merge


def sh(
    repo: Path,
    *cmd: str,
    check: bool = True,
    env_extra: dict | None = None,
    timeout: float = 600,
    log: Path | None = None,
):
    """Run `cmd` in `repo` with this venv first on PATH; fail with its output unless `check=False`.
    With `log`, stdout and stderr go to that file (read back as `.stdout`) instead of pipes: a command
    that leaves daemons behind holding its stdout (`dvc queue start`) would keep a pipe open."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
        **(env_extra or {}),
    }
    if log is None:
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    else:
        with open(log, "w") as f:
            r = subprocess.run(cmd, cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        r.stdout, r.stderr = Path(log).read_text(), ""
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def make_repo(dest: Path, mirror: Path, over: dict | None = None, files: dict[str, str] | None = None) -> Path:
    """A git + DVC repo at `dest` with this project's code, dvc.yaml and params (TINY, then `over`
    merged in), plus any extra `files` (path → text); committed."""
    dest.mkdir(parents=True)
    for name in ("src", "stages"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in (files or {}).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dest / name)
    for extra in ("dvc_plots_template.html", "templates"):
        if (REPO / extra).exists():
            (shutil.copytree if (REPO / extra).is_dir() else shutil.copy)(REPO / extra, dest / extra)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(TINY, over or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(dest, "git", "init", "-q", "-b", "main")
    sh(dest, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots")  # custom plot templates
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return dest


@pytest.fixture(scope="session")
def repo(tmp_path_factory, full_mirror) -> Path:
    r = make_repo(tmp_path_factory.mktemp("e2e") / "lab", full_mirror)
    out = sh(r, "dvc", "repro", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    assert "NOT the official" in out.stdout + out.stderr
    sh(r, "git", "add", "-A")
    sh(r, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro")
    return r
