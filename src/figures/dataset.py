"""Figures of the data: one sample per class, the class distribution per split."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from src.figures import picture_rows, to_hwc


def samples_per_class(x, y, classes: list[str], per_class: int = 1):
    """A grid: `per_class` training images of each class, titled with the class name (five a row
    when one each: ten in one row printed their names at 4 pt on the report's A4 page; else a row
    a class). One axes holds them all (panel_grid), as in the other picture grids."""
    y = np.asarray(y)
    shown = [(name, idx) for c, name in enumerate(classes) for idx in np.flatnonzero(y == c)[:per_class]]
    cols = min(5, len(classes)) if per_class == 1 else per_class
    fig, _ = picture_rows(
        [to_hwc(x[idx]) for _, idx in shown],
        [name for name, _ in shown],
        cols,
        "One training image per class",
        cell=1.5,
        title_size=9,
        suptitle_size=11,
    )
    return fig


def class_distribution(counts: dict[str, dict[str, int]], classes: list[str]):
    """Grouped bars: images per class in the train, val and test splits."""
    many = len(classes) > 4  # then the counts stand upright above narrow bars
    # 0.7 in a class (1.0 printed ten classes' counts at 4 pt on the report's A4 page)
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(classes) + 2), 4.0 if many else 3.6), layout="constrained")
    splits = list(counts)
    width = 0.8 / len(splits)
    pos = np.arange(len(classes))
    for i, split in enumerate(splits):
        vals = [counts[split][c] for c in classes]
        bars = ax.bar(pos + (i - (len(splits) - 1) / 2) * width, vals, width, label=split)
        ax.bar_label(bars, fontsize=8, padding=2, rotation=90 if many else 0)
    ax.set_xticks(pos, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    ax.set_ylim(0, (1.45 if many else 1.22) * max(max(counts[s].values()) for s in splits))
    ax.legend(frameon=False, ncols=len(splits), loc="upper center")
    ax.spines[["top", "right"]].set_visible(False)
    return fig
