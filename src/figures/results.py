"""Results figures: training curves, predictions, per-class accuracy, confusion, mistakes, augmentation."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from src.figures import GREEN, GREEN_TEXT, RED, panel_grid, picture_rows, text_colour_on, to_hwc


def training_curves(history: dict[str, list[float]], best_epoch: int, label_smoothing: float = 0.0):
    """Accuracy and loss per epoch, train vs validation, the best epoch marked.

    The training numbers are measured on augmented batches with label smoothing while the weights
    change; validation is plain cross-entropy on clean images after the epoch, so training loss
    sits above validation loss without any overfitting: the loss panel's title says so. The legend
    stands under the panels, where no curve can run under it (a one-epoch run puts its points at
    the panels' edges)."""
    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    epochs = np.arange(1, len(history["val_acc"]) + 1)
    smooth = f", label smoothing {label_smoothing:g}" if label_smoothing else ""
    for ax, key, label in ((ax_a, "acc", "accuracy"), (ax_l, "loss", "cross-entropy loss")):
        ax.plot(epochs, history[f"train_{key}"], "o-", ms=3, label=f"train (augmented{smooth})")
        ax.plot(epochs, history[f"val_{key}"], "o-", ms=3, label="validation")
        ax.axvline(best_epoch, color="#555555", ls="--", lw=1, label=f"best epoch ({best_epoch}, by val. accuracy)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xlim(0.5, len(epochs) + 0.5)  # whole epochs on the axis, a one-epoch run too
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.legend(*ax_a.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    ax_a.set_title("Accuracy", fontsize=10)
    why = "\nand label smoothing, so it sits above" if smooth else ",\nso it sits above"
    ax_l.set_title(f"Loss (training loss includes augmentation{why}\nthe plain validation loss)", fontsize=10)
    fig.suptitle("Training curves (the best epoch is chosen on validation, never on test)", fontsize=11)
    return fig


def prediction_grid(
    images,
    true: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    classes: list[str],
    title: str = "Sample test predictions",
):
    """Images titled 'true → predicted (confidence)', title and frame green when right, red when
    wrong (the title's green a shade darker, to read on white). One axes (`panel_grid`): an axes
    each took 0.26 s of the 24 pictures' build (now 0.04 s)."""
    n = len(images)
    cols = max(1, min(6, n))  # six a row: at eight the figure was so wide that A4 printed its titles at 4 pt
    cells = [list(range(r, min(r + cols, n))) for r in range(0, n, cols)]
    right = (true[:n] == pred[:n]).sum()
    key = "green right, red wrong" if 0 < right < n else "all right (green)" if right else "all wrong (red)"
    fig, _ = panel_grid(
        [[to_hwc(images[k]) for k in row] for row in cells],
        [[f"{classes[true[k]]} → {classes[pred[k]]}\n({conf[k]:.0%})" for k in row] for row in cells],
        [""] * len(cells),
        f"{title}: true → predicted (confidence); {key}",
        cell=1.4,
        gap=0.15,
        title_size=8,
        label_width=0.15,
        suptitle_size=10,
        colours=[[GREEN if true[k] == pred[k] else RED for k in row] for row in cells],
        title_colours=[[GREEN_TEXT if true[k] == pred[k] else RED for k in row] for row in cells],
        frame_width=2,
    )
    return fig


def per_class_bars(per_class: dict[str, float], overall: float):
    """Sorted horizontal bars of per-class accuracy (labels inside the bars), the overall accuracy
    as a dashed line named in the legend."""
    items = sorted(per_class.items(), key=lambda kv: kv[1])
    names, vals = zip(*items)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(names) + 1.5), layout="constrained")
    colours = plt.cm.RdYlGn(np.interp(vals, [min(vals) - 0.05, 1.0], [0.15, 0.85]))
    lo = max(0.0, min(vals) - 0.1)
    bars = ax.barh(names, vals, color=colours, left=0)
    for bar, v, c in zip(bars, vals, colours):
        inside = v - lo >= 0.12 * (1.0 - lo)  # room for "100.0%" in the bar; else (a collapsed class) beside it
        ax.text(
            v - 0.005 if inside else max(v, lo) + 0.005,
            bar.get_y() + bar.get_height() / 2,
            f"{v:.1%}",
            ha="right" if inside else "left",
            va="center",
            fontsize=8,
            color=text_colour_on(c) if inside else "black",
            # on its own background, so the overall line does not strike through the number
            bbox={"boxstyle": "square,pad=0.15", "fc": c if inside else "white", "ec": "none"},
            zorder=3,
        )
    ax.axvline(overall, color="black", ls="--", lw=1, label=f"overall {overall:.1%}", zorder=2)
    ax.set_xlim(lo, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(  # the bars start at 0; the axis may not, which lengthens their differences
        "test accuracy (recall of each class)" + (f"; the axis starts at {lo:.0%}, not 0" if lo >= 0.005 else "")
    )
    ax.set_title("Per-class test accuracy")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.06), frameon=False, fontsize=8, borderaxespad=0)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def confusion_figure(cm: np.ndarray, classes: list[str]):
    """Counts and row-normalised confusion matrices, class names on both axes: side by side for a
    few classes, one above the other with smaller cells for five or more (side by side, ten classes'
    cell numbers printed at about 3 pt on the report's A4 page; stacked, above 6)."""
    k = len(classes)
    many = k > 4
    size = max(4.2, (0.45 if many else 0.55) * k + 1.8)
    shape, figsize = ((2, 1), (size + 1, 2 * size)) if many else ((1, 2), (2 * size + 1, size))
    fig, axes = plt.subplots(*shape, figsize=figsize, layout="constrained")
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for ax, m, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=8 if many else 9,
                color=text_colour_on(im.cmap(im.norm(v))),
            )
        # steeper for many classes: at 45° neighbouring names overlap over the narrower cells
        tilt = {"rotation": 60, "rotation_mode": "anchor"} if many else {"rotation": 45}
        ax.set_xticks(range(k), classes, ha="right", fontsize=8, **tilt)
        ax.set_yticks(range(k), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix, {title}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return fig


def augmentation_figure(original, augmented, description: str):
    """One training image and augmented versions of it from the configured transform."""
    pictures = [to_hwc(original)] + [to_hwc(img) for img in augmented]
    names = ["original"] + [f"augmented {k + 1}" for k in range(len(augmented))]
    # one axes for all the pictures (panel_grid), five a row: one row of nine printed its titles at 4 pt
    fig, _ = picture_rows(
        pictures, names, 5, f"Training augmentation: {description}", cell=1.5, title_size=8, suptitle_size=10
    )
    return fig
