"""CIFAR-10: fetch (official URL or a local mirror), verify, load into uint8 tensors, select a subset.

The whole subset is a handful of uint8 tensors (N, 3, 32, 32): the training loop indexes and
augments them in batches on the training device, with no per-image Python work.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.errors import DataError
from src.io import atomic_torch_save
from src.params import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, DataParams

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
# md5 of the files inside the official archive: used to tell the official release from a copy.
OFFICIAL_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f"}


# ----------------------------------------------------------------------------- download


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    """Stream `url` to `dest` with a progress bar; raises URLError/OSError on failure."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with (
            open(dest, "wb") as f,
            tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress) as bar,
        ):
            while block := resp.read(1 << 16):
                f.write(block)
                bar.update(len(block))
        if total is not None and dest.stat().st_size != total:
            raise OSError(f"connection closed after {dest.stat().st_size} of {total} bytes")


def download_archive(
    url: str,
    md5: str,
    dest: Path,
    retries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Download the archive to `dest` with retries and exponential backoff; check its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(retries + 1):
        part = dest.with_suffix(dest.suffix + ".part")
        try:
            _fetch(url, part, timeout_s, progress)
            got = md5sum(part)
            if got != md5:
                raise OSError(f"md5 mismatch: got {got}, expected {md5}")
            part.replace(dest)
            return dest
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
            last = str(getattr(exc, "reason", exc))
            part.unlink(missing_ok=True)
            if attempt < retries:
                wait = backoff_s * 2**attempt
                log(f"download: attempt {attempt + 1}/{retries + 1} failed ({last}); retrying in {wait:.0f} s")
                time.sleep(wait)
    check = (
        "The file arrived whole each time: check download.url and download.md5"
        if last.startswith("md5 mismatch")
        else "Check the network"
    )
    raise DataError(
        f"could not download {url} after {retries + 1} attempts ({last}). {check}, "
        f"or set CIFAR10_MIRROR to a folder holding {BATCHES_DIR}/ or {ARCHIVE_NAME}"
    )


def _safe_extract(archive: Path, into: Path, fix: str = "delete it and download again") -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError, Exception) as exc:  # zlib.error is not an OSError
        raise DataError(f"{archive}: truncated or corrupted archive ({exc}); {fix}") from None


def _from_mirror(mirror: str, tmp: Path) -> None:
    """`cifar-10-batches-py/` into `tmp` from a local mirror: a folder holding it or the archive,
    the folder itself, or the archive itself."""
    src = Path(mirror).expanduser()
    if not src.exists():
        where = "" if src.is_absolute() else f" (relative to {Path.cwd()}: give an absolute path for `dvc queue`)"
        raise DataError(
            f"CIFAR10_MIRROR={mirror}: no such folder{where}; point it at a folder holding "
            f"{BATCHES_DIR}/ or {ARCHIVE_NAME}, or unset it to download"
        )
    damaged = "replace the mirror's copy, or unset CIFAR10_MIRROR to download"
    if (src / BATCHES_DIR).is_dir():
        _copy_files(src / BATCHES_DIR, tmp / BATCHES_DIR)
    elif (src / ARCHIVE_NAME).is_file():
        _safe_extract(src / ARCHIVE_NAME, tmp, damaged)
    elif src.is_file() and src.name.endswith(".tar.gz"):  # the archive itself
        _safe_extract(src, tmp, damaged)
    elif src.name == BATCHES_DIR and src.is_dir():
        _copy_files(src, tmp / BATCHES_DIR)
    else:
        raise DataError(
            f"CIFAR10_MIRROR={mirror}: holds neither {BATCHES_DIR}/ nor {ARCHIVE_NAME}; allowed: a folder "
            f"holding either, {BATCHES_DIR}/ itself, or the archive"
        )


def install_raw(
    out_dir: Path,
    url: str,
    md5: str,
    mirror: str | None = None,
    *,
    retries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    expect_rows: int | None = 10000,
) -> Path:
    """Put a verified `cifar-10-batches-py/` under `out_dir` from a mirror or the official URL.

    Everything is assembled in a temporary folder beside `out_dir` and moved into place only once
    complete and verified, so an interrupted or failed run never leaves data a later run takes as good.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as tmp_s:
        tmp = Path(tmp_s)
        if mirror:
            _from_mirror(mirror, tmp)
            log(f"download: using the local mirror {Path(mirror).expanduser()}")
            origin = f"CIFAR10_MIRROR={mirror}"
        else:
            archive = download_archive(url, md5, tmp / ARCHIVE_NAME, retries, backoff_s, timeout_s, progress, log)
            _safe_extract(archive, tmp)
            archive.unlink()
            origin = url
        _verify_fetched(tmp / BATCHES_DIR, origin, expect_rows)
        if md5sum(tmp / BATCHES_DIR / "data_batch_1") != OFFICIAL_MD5["data_batch_1"]:
            log(
                "download: note: these files are NOT the official CIFAR-10 release (md5 differs); "
                "their structure checks out, so they are used as they are"
            )
        final = tmp / "final"
        final.mkdir()
        (tmp / BATCHES_DIR).rename(final / BATCHES_DIR)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        final.rename(out_dir)
    return out_dir / BATCHES_DIR


def _copy_files(src: Path, dst: Path) -> None:
    """The files of `src` into a new folder `dst`, without their modes: a read-only mirror (a shared
    class folder) must not make the copy read-only, which could then not be moved into place."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copyfile(f, dst / f.name)


def _verify_fetched(batches: Path, origin: str, expect_rows: int | None) -> None:
    """`verify_batches` on what a mirror or a download gave, its errors naming `origin` instead of
    the temporary folder; the class names must be CIFAR-10's, in order (the subset picks by name)."""
    missing = [n for n in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (batches / n).is_file()]
    if missing:
        raise DataError(
            f"{origin}: {BATCHES_DIR}/ lacks {', '.join(missing)}; CIFAR-10's python layout has all of them"
        )
    try:
        verify_batches(batches, expect_rows)
    except DataError as exc:
        raise DataError(f"{origin}: {str(exc).replace(str(batches), BATCHES_DIR)}") from None


# ----------------------------------------------------------------------------- load and verify


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run the download stage (dvc repro download)") from None
    except Exception as exc:  # unpickling garbage raises many types
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (data (N, 3, 32, 32) uint8, labels (N,) int64), with its structure checked."""
    d = _unpickle(path)
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataError(f"{path}: expected a dict with 'data' and 'labels'")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.size and (labels.dtype.kind not in "iu" or labels.ndim != 1):
        # hand-made files can hold strings, floats or a column of labels; say what the rows must be
        raise DataError(f"{path}: labels are {labels.dtype} {labels.shape}, expected a list of integers 0-9")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels out of range 0-9 (min {labels.min()}, max {labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def verify_batches(batches: Path, expect_rows: int | None = 10000) -> list[str]:
    """Check the 6 batch files and the meta file; returns the class names."""
    for name in (*TRAIN_FILES, TEST_FILE):
        data, _ = read_batch(batches / name)
        if expect_rows is not None and data.shape[0] != expect_rows:
            raise DataError(f"{batches / name}: {data.shape[0]} images, expected {expect_rows}")
    return read_class_names(batches)


def read_class_names(batches: Path) -> list[str]:
    meta = _unpickle(batches / META_FILE)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{batches / META_FILE}: expected 10 'label_names'")
    if names != list(CIFAR10_CLASSES):  # another data set in CIFAR-10's layout: the classes asked are not there
        raise DataError(f"{batches / META_FILE} names the classes {names}; expected CIFAR-10's {list(CIFAR10_CLASSES)}")
    return names


def load_cifar10(batches: Path) -> dict[str, np.ndarray]:
    """All of CIFAR-10 as uint8 arrays: train_x (50000,3,32,32), train_y, test_x, test_y."""
    xs, ys = zip(*(read_batch(Path(batches) / f) for f in TRAIN_FILES))
    tx, ty = read_batch(Path(batches) / TEST_FILE)
    return {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys), "test_x": tx, "test_y": ty}


# ----------------------------------------------------------------------------- subset


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


def mirror_from_env() -> str | None:
    return os.environ.get("CIFAR10_MIRROR") or None
