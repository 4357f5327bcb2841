"""Matplotlib figures, one module per family. Functions take arrays and return a Figure; the
stages save them (src.io.save_figure). A stage's steps (visualize_steps.py, lesson_steps.py) draw
several figures each: they yield them one at a time and return their numbers (`Drawn`, consumed by
`run_steps`). The Agg backend: no display needed."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

GREEN, RED = "#1a9850", "#d73027"

# A step of a figure stage: yields (file name, Figure) as it draws each one, then returns what it
# drew as a JSON-ready dict (the stage's summary).
Drawn = Generator[tuple[str, Any], None, dict]


def run_steps(steps: Iterable[Drawn], save: Callable[[Any, str], None]) -> dict:
    """Run each step in order, handing every figure to `save(fig, name)` as soon as it is drawn (so
    one is open at a time), and merge the steps' records in the same order."""
    out: dict = {}
    for step in steps:
        while True:
            try:
                name, fig = next(step)
            except StopIteration as done:
                out.update(done.value or {})
                break
            save(fig, name)
    return out


def to_hwc(img) -> np.ndarray:
    """uint8 (3, H, W) tensor/array → (H, W, 3) for imshow."""
    a = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    return np.transpose(a, (1, 2, 0))


def grid(n: int, cols: int, cell: float = 1.6, title_space: float = 0.5):
    """A figure with n axes in rows of `cols`, ticks off; unused axes hidden. Constrained layout
    leaves room for each axes' title, so titles never run into the row above."""
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * cell, rows * cell + title_space), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


MIN_CONTRAST = 4.5  # WCAG AA for normal text; src/figures/readability.py holds every figure to it


def luminance(colour) -> float:
    """WCAG relative luminance of a colour (a name, hex or RGB(A) in [0, 1])."""
    c = np.asarray(to_rgba(colour), dtype=float)[:3]
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def contrast(a, b) -> float:
    """WCAG contrast ratio of two colours, 1 (same) to 21 (black on white)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour_on(background) -> str:
    """Black or white, whichever reads better on `background` (the higher contrast, always >= 4.58)."""
    return "black" if contrast("black", background) >= contrast("white", background) else "white"
