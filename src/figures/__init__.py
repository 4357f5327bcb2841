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
GREEN_TEXT = "#157f3b"  # GREEN darkened for text on white: 5.1 against WCAG AA's 4.5 (GREEN's own is 3.7)

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


def panel_grid(
    panels: list[list[np.ndarray]],
    titles: list[list[str]],
    row_labels: list[str],
    suptitle: str,
    *,
    cell: float = 0.95,
    gap: float = 0.12,
    title_size: float = 7,
    label_size: float = 8,
    label_width: float = 0.35,
    label_rotation: float = 90,
    suptitle_size: float = 9,
    cmap: str = "viridis",
    colours: list[list[str]] | None = None,
    title_colours: list[list[str]] | None = None,
    frame_width: float = 0.8,
):
    """Rows of small framed pictures, each titled, a label left of each row (may be ""): every
    picture grid the stages draw (feature maps, top patches, predictions, first-layer filters,
    augmentations, samples). One axes for the whole grid (in inches, y down), each picture an image
    placed at its cell: a figure of 60 pictures draws in a tenth of the time 60 axes take. A 2-D
    panel is drawn with `cmap`, scaled to its own range (as imshow does); (h, w, 3) as RGB.
    `colours`, `title_colours`: each panel's frame and title colour (default black)."""
    rows, cols = len(panels), max(len(r) for r in panels)
    lines = max(t.count("\n") for row in titles for t in row) + 1
    title_h = title_size * (1.25 * lines + 0.35) / 72  # the title's lines and its pad above the picture
    top = (suptitle.count("\n") + 1) * suptitle_size * 1.35 / 72 + 0.15  # the suptitle's lines, in inches
    pitch_x, pitch_y = cell + gap, title_h + cell + gap
    width, height = label_width + cols * pitch_x, top + rows * pitch_y
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for r, row in enumerate(panels):
        y = top + r * pitch_y + title_h
        for q, img in enumerate(row):
            x = label_width + q * pitch_x
            frame, colour = (c[r][q] if c else "black" for c in (colours, title_colours))
            ax.imshow(img, cmap=cmap, interpolation="nearest", extent=(x, x + cell, y + cell, y), aspect="auto")
            ax.add_patch(plt.Rectangle((x, y), cell, cell, fill=False, lw=frame_width, ec=frame))
            ax.text(x + cell / 2, y - 0.03, titles[r][q], ha="center", va="bottom", fontsize=title_size, color=colour)
        ax.text(
            label_width - 0.08 if label_rotation == 0 else label_width / 2,
            y + cell / 2,
            row_labels[r],
            ha="right" if label_rotation == 0 else "center",
            va="center",
            rotation=label_rotation,
            fontsize=label_size,
        )
    fig.suptitle(suptitle, y=1 - 0.08 / height, va="top", fontsize=suptitle_size)
    return fig, ax


def picture_rows(pictures: list[np.ndarray], titles: list[str], cols: int, suptitle: str, **kw):
    """`pictures`, each over its title, in rows of `cols` without row labels: `panel_grid` for a
    flat list (the first layer's filters, augmentations, samples). `kw` goes to panel_grid."""
    starts = range(0, len(pictures), cols)
    return panel_grid(
        [pictures[i : i + cols] for i in starts],
        [titles[i : i + cols] for i in starts],
        [""] * len(starts),
        suptitle,
        label_width=0.06,
        **kw,
    )
