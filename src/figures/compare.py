"""Figures across experiments: test accuracy against training time, per-class accuracy as a heatmap."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from src.figures import text_colour_on


def accuracy_vs_seconds(rows: list[dict]):
    """One labelled point per experiment that has metrics: training seconds → test accuracy."""
    done = [r for r in rows if r["test_acc"] is not None and r["seconds"] is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for r in done:
        ax.scatter(r["seconds"], r["test_acc"], s=36, color="#1f77b4" if r["status"] == "ok" else "#999999")
        ax.annotate(r["name"], (r["seconds"], r["test_acc"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    ax.set_xlabel("training seconds (the whole loop, validation included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy against training time, {len(done)} runs"
                 + (f" ({len(failed)} failed, not shown)" if failed else ""))
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if done:
        xs = [r["seconds"] for r in done]
        ax.set_xlim(0, max(xs) * 1.25 + 1)
    return fig


def per_class_heatmap(rows: list[dict], classes: list[str]):
    """Experiments (rows) × classes (columns), the test accuracy of each class; blank where an
    experiment did not train on that class or failed."""
    done = [r for r in rows if r["per_class"]]
    m = np.array([[r["per_class"].get(c, np.nan) for c in classes] for r in done], dtype=float).reshape(len(done), len(classes))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(classes) + 3), max(2.5, 0.42 * len(done) + 1.6)),
                           layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(m):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=text_colour_on(im.cmap(im.norm(v))))
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(done)), [r["name"] for r in done], fontsize=8)
    ax.set_title("Per-class test accuracy across experiments (blank: class not in that run)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    return fig
