"""Results figures: training curves, predictions, per-class accuracy, confusion, mistakes, augmentation."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from src.figures import GREEN, RED, grid, to_hwc


def training_curves(history: dict[str, list[float]], best_epoch: int):
    """Accuracy and loss per epoch, train vs validation, the best epoch marked."""
    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history["val_acc"]) + 1)
    for ax, key, label in ((ax_a, "acc", "accuracy"), (ax_l, "loss", "cross-entropy loss")):
        ax.plot(epochs, history[f"train_{key}"], "o-", ms=3, label="train (augmented)")
        ax.plot(epochs, history[f"val_{key}"], "o-", ms=3, label="validation")
        ax.axvline(best_epoch, color="grey", ls="--", lw=1)
        ax.annotate(f"best epoch {best_epoch}", (best_epoch, ax.get_ylim()[1]), fontsize=8, ha="right",
                    va="top", rotation=90, color="grey")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    ax_a.legend(frameon=False)
    ax_a.set_title("Accuracy")
    ax_l.set_title("Loss")
    fig.suptitle("Training curves (the best epoch is chosen on validation, never on test)", fontsize=11)
    return fig


def prediction_grid(images, true: np.ndarray, pred: np.ndarray, conf: np.ndarray, classes: list[str],
                    title: str = "Sample test predictions"):
    """Images titled 'true / predicted (confidence)', green when right, red when wrong."""
    n = len(images)
    fig, axes = grid(n, cols=min(8, n), cell=1.55, title_space=0.7)
    for k, ax in enumerate(axes):
        ok = true[k] == pred[k]
        ax.imshow(to_hwc(images[k]), interpolation="nearest")
        ax.set_title(f"{classes[true[k]]} / {classes[pred[k]]}\n({conf[k]:.0%})", fontsize=7.5,
                     color=GREEN if ok else RED)
        for s in ax.spines.values():
            s.set_edgecolor(GREEN if ok else RED)
            s.set_linewidth(2)
    fig.suptitle(f"{title}: true / predicted (confidence); green right, red wrong", fontsize=10)
    fig.tight_layout()
    return fig


def per_class_bars(per_class: dict[str, float], overall: float):
    """Sorted horizontal bars of per-class accuracy, with the overall accuracy as a line."""
    items = sorted(per_class.items(), key=lambda kv: kv[1])
    names, vals = zip(*items)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(names) + 1.3))
    colours = plt.cm.RdYlGn(np.interp(vals, [min(vals) - 0.05, 1.0], [0.15, 0.85]))
    bars = ax.barh(names, vals, color=colours)
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in vals], padding=3, fontsize=8)
    ax.axvline(overall, color="black", ls="--", lw=1)
    ax.text(overall, len(names) - 0.4, f" overall {overall:.1%}", fontsize=8, va="bottom")
    ax.set_xlim(max(0.0, min(vals) - 0.1), 1.06)
    ax.set_xlabel("test accuracy")
    ax.set_title("Per-class test accuracy")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def confusion_figure(cm: np.ndarray, classes: list[str]):
    """Counts and row-normalised confusion matrices side by side, class names on both axes."""
    k = len(classes)
    size = max(4.2, 0.55 * k + 1.8)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for ax, m, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(m, cmap="Blues")
        hi = m.max() or 1
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7 if k > 6 else 9,
                    color="white" if v > 0.55 * hi else "black")
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, {title}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    return fig


def augmentation_figure(original, augmented, description: str):
    """One training image and augmented versions of it from the configured transform."""
    n = len(augmented) + 1
    fig, axes = grid(n, cols=n, cell=1.5, title_space=0.8)
    axes[0].imshow(to_hwc(original), interpolation="nearest")
    axes[0].set_title("original", fontsize=8)
    for k, img in enumerate(augmented):
        axes[k + 1].imshow(to_hwc(img), interpolation="nearest")
        axes[k + 1].set_title(f"augmented {k + 1}", fontsize=8)
    fig.suptitle(f"Training augmentation: {description}", fontsize=10)
    return fig
