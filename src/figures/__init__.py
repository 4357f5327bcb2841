"""Matplotlib figures, one module per family. Functions take arrays and return a Figure; the
stages save them (src.io.save_figure). The Agg backend: no display needed."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GREEN, RED = "#1a9850", "#d73027"


def to_hwc(img) -> np.ndarray:
    """uint8 (3, H, W) tensor/array → (H, W, 3) for imshow."""
    a = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    return np.transpose(a, (1, 2, 0))


def grid(n: int, cols: int, cell: float = 1.6, title_space: float = 0.5):
    """A figure with n axes in rows of `cols`, ticks off; unused axes hidden."""
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + title_space), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]
