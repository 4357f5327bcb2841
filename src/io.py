"""Atomic file writes: write to a temporary file (or folder) beside the target, then rename over it;
and the readers of JSON and of DVCLive's per-epoch logs."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.errors import DataError, OutputError

if TYPE_CHECKING:
    import numpy as np


def output_problem(path: str | Path, folder: bool | None = None) -> str | None:
    """Why `path` cannot be written, where that shows before writing: a file standing where one of
    its folders should be; and, where `folder` says what `path` itself is (True a folder, False a
    file), a file where the folder goes or a folder where the file goes. None when nothing is in the way."""
    path = Path(path)
    for parent in reversed(path.parents):  # from the top: the first file in the way
        if parent.exists() and not parent.is_dir():
            return f"cannot write {path}: {parent} is a file, not a folder; move or delete it"
    if folder is True and path.exists() and not path.is_dir():
        return f"cannot write the folder {path}: a file of that name is in the way; move or delete it"
    if folder is False and path.is_dir():
        return f"cannot write {path}: a folder of that name is in the way; move or delete it"
    return None


def make_parent(path: Path) -> None:
    """Create the folder `path` goes in; an OutputError (one line) where it can't be made."""
    problem = output_problem(path)
    if problem:
        raise OutputError(problem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # no permission, a read-only file system
        raise OutputError(f"cannot write {path}: {exc.strerror or exc} ({exc.filename or path.parent})") from None


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` if the block succeeds
    (an OutputError, one line, where a folder of that name is in the way)."""
    path = Path(path)
    make_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual permissions
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            raise OutputError(f"cannot write {path}: a folder of that name is in the way; move or delete it") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; if the block succeeds it replaces `path` and
    everything in it (a stage run by hand that fails halfway leaves the last run's files whole;
    `dvc repro` has removed them before the stage starts). A folder that cannot be renamed (a mount
    point) has its contents swapped instead (`_refill`). What a killed run left beside `path` is
    cleared first (`_clear_killed_run`)."""
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)  # a linked folder: replace its target
    make_parent(path)
    _clear_killed_run(path)
    tmp = _hidden_dir(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        try:
            if path.exists():
                os.replace(path, old)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            _refill(path, tmp)  # a mount point (a container's volume) cannot be moved: fill it in place
        else:
            try:
                os.replace(tmp, path)
            except OSError:
                if old.exists():
                    os.replace(old, path)  # the last run's files back where they were
                raise
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def kept_if_failed(path: str | Path) -> Iterator[Path]:
    """Let the block write the folder `path` in place, so what watches it sees it grow (DVCLive's
    live plots), and put the last run's folder back if the block fails (a run by hand; `dvc repro`
    has removed it before the stage starts)."""
    path = Path(path)
    make_parent(path)
    _clear_killed_run(path)
    backup = _hidden_dir(path) / path.name if path.is_dir() else None
    try:
        if backup is not None:
            os.replace(path, backup)
    except OSError:  # a mount point: no way back, as before
        shutil.rmtree(backup.parent, ignore_errors=True)
        backup = None
    try:
        yield path
    except BaseException:
        if backup is not None:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(backup, path)
        raise
    finally:
        if backup is not None:
            shutil.rmtree(backup.parent, ignore_errors=True)


def _hidden_dir(path: Path) -> Path:
    """A new hidden folder beside `path`, named as `_clear_killed_run` finds it."""
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))


def _clear_killed_run(path: Path) -> None:
    """What a process killed inside `atomic_dir` or `kept_if_failed` (SIGKILL skips their cleanup)
    left beside `path`: its hidden folders go, except the last run's folder when `path` itself is
    missing (killed between the two renames of a swap, or with its backup taken), which goes back."""
    mine = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp(\.old)?")  # _hidden_dir's names only
    for stale in sorted(p for p in path.parent.iterdir() if mine.fullmatch(p.name)):
        last_run = stale if stale.name.endswith(".old") else stale / path.name
        if not path.exists() and last_run.is_dir():
            os.replace(last_run, path)
        shutil.rmtree(stale, ignore_errors=True)


def _refill(path: Path, new: Path) -> None:
    """Replace what is in the folder `path` with what is in `new`, keeping `path` itself (a mount
    point cannot be renamed). `new` is first moved into a hidden folder inside `path`: across file
    systems that is a copy, and a copy that fails (a full volume) leaves the last run's entries as
    they were. Then the old entries move aside and the new ones in, renames inside `path` that need
    no space; if one fails, the old entries move back (any that cannot stay in the hidden folder,
    which the error names). Not one atomic step: a process killed during those renames can leave a
    mix, never a half-copied file."""
    made: list[Path] = []  # the hidden folders, removed at the end unless they hold old entries
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        staged = Path(tempfile.mkdtemp(dir=path, prefix=".new.", suffix=".tmp"))
        made.append(staged)
        aside = Path(tempfile.mkdtemp(dir=path, prefix=".old.", suffix=".tmp"))
        made.append(aside)
        for entry in list(new.iterdir()):
            shutil.move(str(entry), staged / entry.name)
        for entry in [e for e in path.iterdir() if e not in made]:
            os.replace(entry, aside / entry.name)
            moved_out.append(entry.name)
        for entry in sorted(staged.iterdir()):  # in name order: a failure leaves a known set to undo
            os.replace(entry, path / entry.name)
            moved_in.append(entry.name)
    except BaseException as exc:
        if (moved_out or moved_in) and _undo(path, aside, moved_in, moved_out):  # old entries still aside: keep them
            made.remove(aside)
            exc.add_note(f"the last run's files that could not be put back are in {aside}")
        raise
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


def _undo(path: Path, aside: Path, moved_in: list[str], moved_out: list[str]) -> list[str]:
    """Take the new entries out of `path` and put the old ones back, each on its own (one that
    fails does not stop the rest); the names of the old entries left in `aside`."""
    for name in moved_in:
        with suppress(OSError):
            _remove(path / name)
    stuck = []
    for name in moved_out:
        try:
            os.replace(aside / name, path / name)
        except OSError:
            stuck.append(name)
    return stuck


def _remove(entry: Path) -> None:
    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON in the order the code built it (the most important keys first: `dvc exp show`
    and `dvc metrics show` list them in file order); identical runs give identical bytes."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path, keys: tuple[str, ...] = ()) -> Any:
    """A JSON file a stage wrote; missing, damaged or without one of `keys`, a DataError naming it."""
    path, again = Path(path), "run `dvc repro` to make it again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro` to make it") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise DataError(f"{path}: not valid JSON ({exc}); {again}") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} in it; {again}")
    return data


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
    """Save a matplotlib figure as a PNG atomically and close it (deterministic: no metadata).

    Cropped like `bbox_inches="tight"` (the ink plus matplotlib's `savefig.pad_inches`) but drawn
    once: matplotlib's tight box lays the figure out and draws it a second time (theory's seven
    figures: 2.3 → 1.7 s on a 2-core CPU). Where something drawn reaches past the canvas (a caption
    placed below the axes, ink touching an edge), matplotlib's own tight box, which grows the canvas
    to hold it, is used; the tick labels of an axes turned off are not drawn, so they don't count."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig.set_dpi(dpi)
    renderer = fig.canvas.get_renderer()
    renderer.clear()
    texts = drawn_texts(fig, renderer)  # the one draw, noting the texts it puts on the canvas
    pad = round(plt.rcParams["savefig.pad_inches"] * dpi)
    pixels = _cropped(np.asarray(renderer.buffer_rgba()), fig, texts, renderer, pad)
    with atomic_path(path) as tmp:
        if pixels is None:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata={"Software": None}, format="png")
        else:
            plt.imsave(tmp, pixels, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)


def drawn_texts(fig: Any, renderer: Any) -> list:
    """Draw `fig` with `renderer` and return the Text artists the draw really put on the canvas
    (hidden ticks, axes turned off and labels outside the view limits are not drawn, so they don't count)."""
    from matplotlib.text import Text

    seen: dict[int, Text] = {}
    draw = Text.draw

    def record(self, rend):
        before = rend.draw_text
        hits = []
        rend.draw_text = lambda *a, **k: (hits.append(1), before(*a, **k))[1]
        try:
            draw(self, rend)
        finally:
            del rend.draw_text
        if hits and self.get_figure() is fig:
            seen.setdefault(id(self), self)

    Text.draw = record
    try:
        fig.draw(renderer)
    finally:
        Text.draw = draw
    return list(seen.values())


def _cropped(rgba: np.ndarray, fig: Any, texts: list, renderer: Any, pad: int) -> np.ndarray | None:
    """The drawn canvas (H, W, 4) cut to its ink (pixels unlike the figure's background) plus `pad`
    pixels of background; None where there is no ink, ink touches an edge of the canvas, or one of
    the drawn `texts` lies (partly) outside it."""
    import numpy as np
    from matplotlib.colors import to_rgba

    background = np.array([round(255 * c) for c in to_rgba(fig.get_facecolor())], dtype=np.uint8)
    ink = (rgba != background).any(axis=2)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    h, w = ink.shape
    if rows.size == 0 or rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
        return None
    for t in texts:
        box = t.get_window_extent(renderer)
        if box.x0 < 0 or box.y0 < 0 or box.x1 > w or box.y1 > h:
            return None
    top, left = rows[0] - pad, cols[0] - pad
    out = np.empty((rows[-1] + 1 + pad - top, cols[-1] + 1 + pad - left, 4), dtype=np.uint8)
    out[:] = background
    t, l_ = max(top, 0), max(left, 0)
    b, r = min(rows[-1] + 1 + pad, h), min(cols[-1] + 1 + pad, w)
    out[t - top : b - top, l_ - left : r - left] = rgba[t:b, l_:r]
    return out
