"""Atomic file writes: write to a temporary file beside the target, then rename over it; and the
readers of JSON and of DVCLive's per-epoch logs."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON in the order the code built it (the most important keys first: `dvc exp show`
    and `dvc metrics show` list them in file order); identical runs give identical bytes."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_dvclive_history(
    root: str | Path, splits: tuple[str, ...] = ("train", "val"), keys: tuple[str, ...] = ("acc", "loss")
) -> dict[str, list[float]]:
    """The per-epoch values DVCLive logged under `root` (its plots/metrics folder, one
    `<split>/<key>.tsv` per metric, a `step` and a `<key>` column): {"<split>_<key>": [value by epoch]}."""
    hist = {}
    for split in splits:
        for key in keys:
            with open(Path(root) / split / f"{key}.tsv") as f:
                hist[f"{split}_{key}"] = [float(r[key]) for r in csv.DictReader(f, delimiter="\t")]
    return hist


def canonical(obj: Any) -> Any:
    """`obj` with every dict, list and tuple rebuilt and every string interned, tensors as they are.
    Pickle writes an object seen twice as a back-reference, so two equal values differ in bytes when
    one run shares a string or a list where another holds two copies (as an optimizer state loaded
    from a resume point does); rebuilt, equal values always pickle alike."""
    import sys

    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((canonical(k), canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state dict's module versions, which load_state_dict reads
            out._metadata = canonical(obj._metadata)
        return out
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(canonical(v) for v in obj)
    return obj


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save atomically, equal objects giving the same bytes: saved to a path, torch names the
    zip archive's root folder after the file (here the random temp name), so it gets an open file,
    whose archive root is always "archive"; and the object goes through `canonical` first."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(canonical(obj), f)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically and close it (deterministic PNG metadata)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata={"Software": None}, format="png")
    plt.close(fig)
