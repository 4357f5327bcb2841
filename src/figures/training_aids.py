"""Figures the lab report adds to the theory sections: parameters of a dense layer against a conv
layer (I), a pixel before and after normalisation (III), a BatchNorm channel before and after (XI)
and a MixUp pair with its blended label (XI). Each takes the numbers of src.lab_report.additions."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from src.figures import to_hwc

BLUE, ORANGE = "#2166ac", "#b35806"


def dense_vs_conv_figure(d: dict):
    """Horizontal bars on a log axis: the parameters of each layer, the count printed at its bar."""
    rows = [
        (f"dense, {d['conv_outputs']:,} outputs\n(as many as the conv layer)", d["dense_same_outputs_params"]),
        (f"dense, {d['hidden']} outputs", d["dense_hidden_params"]),
        (
            f"conv '{d['conv_layer']}', {d['conv_kernel'][0]} filters\n"
            f"{d['conv_kernel'][2]}×{d['conv_kernel'][3]}×{d['conv_kernel'][1]}",
            d["conv_params"],
        ),
    ]
    fig, ax = plt.subplots(figsize=(7.2, 2.8), layout="constrained")
    pos = np.arange(len(rows))[::-1]
    bars = ax.barh(pos, [v for _, v in rows], color=[ORANGE, ORANGE, BLUE], height=0.6)
    ax.bar_label(bars, [f"{v:,}" for _, v in rows], padding=4, fontsize=9)
    ax.set_yticks(pos, [n for n, _ in rows], fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(1, max(v for _, v in rows) * 60)
    ax.set_xlabel("parameters (log scale)")
    c, h, w = d["input_shape"]
    ax.set_title(f"One layer on a {h}×{w}×{c} image ({d['inputs']:,} inputs)", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def normalisation_figure(image_u8, pixel: dict, sample_u8):
    """The image with the pixel marked; each channel's values of a sample before (0–1) and after
    normalisation, with the chosen pixel's value on both."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0), layout="constrained", width_ratios=[0.8, 1, 1])
    axes[0].imshow(to_hwc(image_u8), interpolation="nearest")
    axes[0].add_patch(plt.Rectangle((pixel["j"] - 0.5, pixel["i"] - 0.5), 1, 1, fill=False, ec="red", lw=2))
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title(f"pixel ({pixel['i']}, {pixel['j']}) in red", fontsize=9)
    x = sample_u8.float().numpy() / 255  # (N, 3, H, W)
    # float32 like x: float64 statistics made NumPy widen 6 million values (0.8 s of the report stage)
    mean, std = np.asarray(pixel["mean"], dtype=np.float32), np.asarray(pixel["std"], dtype=np.float32)
    colours = ["#d73027", "#1a9850", "#4575b4"]
    for ax, values, title, key in (
        (axes[1], x, "before: v / 255", "scaled"),
        (
            axes[2],
            (x - mean[None, :, None, None]) / std[None, :, None, None],
            "after: (v / 255 − mean) / std",
            "normalised",
        ),
    ):
        for c, name in enumerate("RGB"):
            ax.hist(values[:, c].ravel(), bins=32, histtype="step", color=colours[c], label=name, density=True)
            ax.axvline(pixel[key][c], color=colours[c], ls="--", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
        ax.set_ylabel("share of values", fontsize=8.5)
        ax.spines[["top", "right", "left"]].set_visible(False)
    axes[1].legend(frameon=False, fontsize=8.5, loc="upper left")  # 8 printed at 5.8 pt on A4
    axes[2].set_xlabel("dashed: the red pixel's R, G, B", fontsize=8.5)
    fig.suptitle("Normalisation: every channel centred on 0 with spread 1", fontsize=11)
    return fig


def batchnorm_figure(bn: dict):
    """Histograms of one channel's activations before and after the trained BatchNorm layer."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), layout="constrained")
    for ax, key, colour, what in (
        (axes[0], "before", ORANGE, "input of BatchNorm"),
        (axes[1], "after", BLUE, "output of BatchNorm"),
    ):
        v = bn[key]
        ax.hist(v, bins=50, color=colour, alpha=0.85)
        ax.axvline(bn[f"{key}_mean"], color="black", lw=1, ls="--")
        ax.set_title(f"{what}\nmean {bn[f'{key}_mean']:.3f}, std {bn[f'{key}_std']:.3f}", fontsize=9)
        ax.set_yticks([])
        ax.set_ylabel("activations", fontsize=8.5)
        ax.set_xlabel("value (dashed: the mean)", fontsize=8.5)
        ax.spines[["top", "right", "left"]].set_visible(False)
    fig.suptitle(
        f"'{bn['layer']}', channel {bn['channel']}: {bn['values']:,} activations of {bn['images']} test images",
        fontsize=11,
    )
    return fig


def mixup_figure(m: dict, classes: list[str]):
    """Image a, image b, their blend, and the blended label as bars."""
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), layout="constrained", width_ratios=[1, 1, 1, 1.4])
    lam = m["lam"]
    titles = [f"a: {m['classes'][0]}", f"b: {m['classes'][1]}", f"{lam:.2f}·a + {1 - lam:.2f}·b"]
    for ax, img, title in zip(axes[:3], [m["images"][0], m["images"][1], m["mixed"]], titles):
        ax.imshow(np.clip(img.permute(1, 2, 0).numpy(), 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[3]
    pos = np.arange(len(classes))[::-1]
    bars = ax.barh(pos, m["label"], color=BLUE, height=0.6)
    ax.bar_label(bars, [f"{v:.2f}" if v else "" for v in m["label"]], padding=3, fontsize=8.5)
    ax.set_yticks(pos, classes, fontsize=8.5)  # 8 printed at 5.8 pt on A4
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.5, 1])
    ax.set_title("the blended label", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    which = "the first between 0.25 and 0.75" if 0.25 <= lam <= 0.75 else "none fell between 0.25 and 0.75"
    fig.suptitle(
        f"MixUp: λ = {lam:.2f} drawn from Beta({m['alpha']:g}, {m['alpha']:g}) (draw {m['draws']}, {which})",
        fontsize=11,
    )
    return fig
