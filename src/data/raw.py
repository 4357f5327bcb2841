"""CIFAR-10 as published: fetch it (the official URL or a local mirror), verify it, read its batches
into uint8 arrays. NumPy only, no torch: the download stage imports nothing more (torch's import
alone is about 1.6 s of a 2-core laptop CPU's 2.4 s for that stage)."""

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
from pathlib import Path

import numpy as np

from src.errors import DataError
from src.params import CIFAR10_CLASSES

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


def mirror_from_env() -> str | None:
    return os.environ.get("CIFAR10_MIRROR") or None
