"""Looking inside a trained CNN: filters, feature maps and Grad-CAM.

Activations are taken with forward hooks (the model is not edited), so the same code serves every
model of the registry: the layers shown are the model's own `feature_layers()` (src/models/base.py).
Each function returns (figure, data): `data` holds the arrays drawn, for tests and metrics.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.figures import GREEN_TEXT, RED, panel_grid, picture_rows, to_hwc
from src.models import conv_layers

# ----------------------------------------------------------------------------- filters

# layer name → how to learn it, and where the default run shows learned filters at work in RGB
FROZEN_HINTS = {
    "whiten": "set model.fast_cnn.whiten_trainable=true to learn it, whiten_kernel=3 for 3×3 filters;\n"
    "what the first learned layer responds to in RGB: top_patches_features_group1_conv1.png"
}


def signed_tile(kernel: np.ndarray) -> np.ndarray:
    """One (3, kh, kw) kernel as an (kh, kw, 3) RGB tile: grey is 0, each kernel scaled by its own
    largest |weight|, so both its colour and its sign show (a min-max scale would hide the sign)."""
    m = np.abs(kernel).max()
    return 0.5 + 0.5 * (kernel / m if m > 0 else kernel).transpose(1, 2, 0)


def _first_layer_title(name: str, w: np.ndarray, learned: bool) -> str:
    """Whether the layer learned, its kernels' size, and how to read a tile's colour."""
    kh, kw = w.shape[2:]
    if learned:
        head = f"First conv layer '{name}': learned first-layer filters ({kh}×{kw}×3)"
    else:
        hint = FROZEN_HINTS.get(name, "")
        head = f"First conv layer '{name}' ({kh}×{kw}×3): not learned, set from the data's patch statistics" + (
            f"\n(frozen: {hint})" if hint else ""
        )
    return (
        f"{head}\n{len(w)} filters, weight {tuple(w.shape)}; grey = 0, each scaled to ±its own largest |weight|:\n"
        f"red means a positive weight on R, cyan a negative one (likewise green/magenta, blue/yellow)"
    )


def first_layer_filters(model: nn.Module, cols: int = 12):
    """Every filter of the first conv layer as a signed RGB tile (grey = 0), titled with its channel."""
    name, conv = conv_layers(model)[0]
    w = conv.weight.detach().cpu().float().numpy()  # (O, 3, kh, kw)
    tiles_ = np.stack([signed_tile(f) for f in w])  # (O, kh, kw, 3)
    learned = conv.weight.requires_grad
    zoom = max(1, 24 // max(w.shape[2:]))  # whole pixels per weight: a crisp enlargement
    big = [t.repeat(zoom, 0).repeat(zoom, 1) for t in tiles_]
    # one axes for all the tiles (panel_grid): an axes each (24 by default) took 0.19 s to build
    fig, _ = picture_rows(
        big,
        [f"ch {k}" for k in range(len(big))],
        cols,
        _first_layer_title(name, w, learned),
        cell=0.72,
        gap=0.06,
        title_size=8,  # 6.2 pt once the 9.4-inch-wide figure is shrunk to the printed page
    )
    return fig, {"layer": name, "tiles": tiles_, "out_channels": conv.out_channels, "learned": learned}


def deep_layer_filters(model: nn.Module, layer_index: int, n_filters: int, n_inputs: int):
    """A few filters of the conv layer `layer_index` (0 = the first), one small heatmap per (filter,
    input channel), on one colour scale. One axes holds them all, a mosaic with framed cells: an
    axes each (36 by default) took 0.63 s to build (now 0.07 s)."""
    name, conv = conv_layers(model)[layer_index]
    w = conv.weight.detach().cpu().float().numpy()  # (O, C, kh, kw)
    shown = w[:n_filters, :n_inputs]
    o, c, kh, kw = shown.shape
    zoom = max(1, 12 // max(kh, kw))  # whole pixels per weight, so every cell is about 12 pixels
    gap = max(2, zoom // 2)
    ch, cw = kh * zoom, kw * zoom
    mosaic = np.full((o * (ch + gap) - gap, c * (cw + gap) - gap), np.nan)  # NaN: the white gaps
    fig, ax = plt.subplots(figsize=(c * 1.0 + 0.8, o * 1.0 + 0.9), layout="constrained")
    for i in range(o):
        for j in range(c):  # each kernel enlarged into its cell and framed, as its own axes was
            y, x = i * (ch + gap), j * (cw + gap)
            mosaic[y : y + ch, x : x + cw] = shown[i, j].repeat(zoom, 0).repeat(zoom, 1)
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), cw, ch, fill=False, lw=0.8, ec="black", clip_on=False))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    v = np.abs(shown).max() or 1.0
    im = ax.imshow(mosaic, cmap=cmap, vmin=-v, vmax=v, interpolation="nearest")
    ax.set_xticks([j * (cw + gap) + (cw - 1) / 2 for j in range(c)], [f"in {j}" for j in range(c)], fontsize=8)
    ax.set_yticks([i * (ch + gap) + (ch - 1) / 2 for i in range(o)], [f"filter {i}" for i in range(o)], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.suptitle(
        f"Conv layer '{name}', weight {tuple(w.shape)}:\n{o} filters × {c} input channels "
        f"({conv.kernel_size[0]}×{conv.kernel_size[1]} kernels)",
        fontsize=10,
    )
    return fig, {"layer": name, "weights": shown, "shape": tuple(w.shape), "cells": (ch, cw, gap)}


# ----------------------------------------------------------------------------- feature maps


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named modules for input x (B, 3, H, W), captured with forward hooks."""
    mods = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    hooks = [
        mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().float().cpu())) for n in layers
    ]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def feature_maps_figure(image_u8: torch.Tensor, acts: dict[str, torch.Tensor], n_channels: int, title: str):
    """One row per layer: the input, then the `n_channels` strongest maps (by mean activation), each
    on its own colour scale (the figure says so: dark is a map's lowest value, not zero)."""
    panels, titles, labels = [], [], []
    shown: dict[str, dict] = {}
    for name, a in acts.items():
        a = a[0]  # (C, H, W)
        strongest = torch.argsort(a.mean(dim=(1, 2)), descending=True)[:n_channels]
        panels.append([to_hwc(image_u8)] + [a[c].numpy() for c in strongest])
        titles.append([""] + [f"ch {int(c)}" for c in strongest])
        labels.append(f"{name.removeprefix('features.')}\n{a.shape[0]}×{a.shape[1]}×{a.shape[2]}")
        shown[name] = {
            "shape": tuple(a.shape),
            "channels": strongest.tolist(),
            "panel_shape": tuple(a[strongest[0]].shape),
        }
    fig, _ = panel_grid(
        panels,
        titles,
        labels,
        title + "\nrows: deeper layers; columns: the channels with the largest mean activation"
        "\neach map coloured from its own lowest value (dark) to its highest (yellow): compare shapes, not colours",
        cell=0.7,  # the maps show as large on screen (the page caps the width) and print at 6 pt, not 4.6
        gap=0.12,
        title_size=7.5,
        label_width=1.0,
        label_rotation=0,
        suptitle_size=10,
    )
    return fig, shown


# ----------------------------------------------------------------------------- Grad-CAM


def _scaled(cam: torch.Tensor) -> torch.Tensor:
    """Each map (B, H, W) moved to start at 0 and divided by its maximum (+1e-7): 0–1 on its own."""
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    return cam / (1e-7 + cam.amax(dim=(1, 2), keepdim=True))


def gradcam_maps(model: nn.Module, x: torch.Tensor, targets: list[int], layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (B, H, W) in [0, 1] for the given target classes, from `layer` (default:
    the last conv layer). Grad-CAM (Selvaraju et al. 2017): each channel of the layer's output A is
    weighted by the mean over positions of d(score of the target class)/dA, the weighted channels
    summed and passed through ReLU; each map is scaled to 0–1 and upsampled bilinearly to the
    input's size. The same maps as pytorch-grad-cam's `GradCAM` (the tests hold it to that), without
    the 4 s its import costs (it loads scikit-learn, SciPy and OpenCV)."""
    layer = layer if layer is not None else conv_layers(model)[-1][1]
    model.eval()
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda mod, i, o: seen.append(o))
    try:
        with torch.enable_grad():
            logits = model(x.detach())
            score = logits.gather(1, torch.as_tensor(targets, device=logits.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, seen[0])
    finally:
        hook.remove()
    acts = seen[0].detach().float()  # (B, C, h, w)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = _scaled((weights * acts).sum(1).clamp(min=0))  # (B, h, w)
    cam = F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return _scaled(cam.clamp(min=0)).cpu().numpy()


@torch.no_grad()
def map_size(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of layer `layer`'s output for input x: the size of its Grad-CAM map before
    pytorch-grad-cam upsamples it to the input's size."""
    return tuple(activations(model, x[:1], [layer])[layer].shape[-2:])


def gradcam_figure(
    images_u8: torch.Tensor,
    cams: np.ndarray,
    true: list[str],
    pred: list[str],
    conf: list[float],
    layer_name: str,
    layer_size: tuple[int, int],
):
    """Pairs of (image, image + heatmap), titled true → predicted (confidence), green or red; the
    subtitle says how small the layer's map really is, the colour bar what the colours mean."""
    n = len(images_u8)
    cols = min(4, n)  # at six a row the report's A4 page printed the titles at 5 pt
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(cols * 1.8 + 1.0, rows * 3.7 + 0.9), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        r, c = 2 * (k // cols), k % cols
        img = to_hwc(images_u8[k])
        ok = true[k] == pred[k]
        axes[r, c].imshow(img, interpolation="nearest")
        axes[r, c].set_title(f"{true[k]} → {pred[k]}\n({conf[k]:.0%})", fontsize=8, color=GREEN_TEXT if ok else RED)
        axes[r + 1, c].imshow(img, interpolation="nearest")
        axes[r + 1, c].imshow(cams[k], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        if cams[k].max() <= 0:  # ReLU left nothing: no part raised the class's score (not "looked nowhere")
            axes[r + 1, c].set_title("all 0: no part raised\nthis class's score", fontsize=8)
    bar = fig.colorbar(
        plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)), ax=axes, shrink=0.6, fraction=0.03, pad=0.02
    )
    bar.set_label("relevance to the predicted class, 0–1", fontsize=8)
    (h, w), (H, W) = layer_size, cams.shape[1:]
    fig.suptitle(
        f"Grad-CAM for the predicted class: where the network looked (green: right, red: wrong; "
        f"true → predicted)\nGrad-CAM of '{layer_name}' ({h}×{w}), upsampled (bilinear) to {H}×{W}\n"
        f"(the heatmap holds only {h * w} numbers, smoothed between them; each map is scaled to 0–1 on its own;\n"
        f"all 0 where no part of the image raised the class's score: Grad-CAM keeps only the parts that do)",
        fontsize=10,
    )
    return fig


# ----------------------------------------------------------------------------- what excites a channel


def top_patches_figure(tp, patches: list[list[np.ndarray]]):
    """Rows: the channels; columns: the test patches (receptive fields) that excite each most,
    strongest first, titled with the response (the caption says what that number is).
    `patches[r][q]` is an (h, w, 3) uint8 crop."""
    rows = len(patches)
    how = "learned" if tp.learned else "not learned: frozen, set from the data"
    fig, _ = panel_grid(
        patches,
        [[f"response {tp.values[r, q]:.2f}" for q in range(len(row))] for r, row in enumerate(patches)],
        [f"ch {c}" for c in tp.channels[:rows]],
        f"What excites layer '{tp.layer}' ({how}): for {rows} channels, the test patches\n"
        f"({tp.field.size}×{tp.field.size} receptive fields; black = padding) with the strongest response\n"
        f"response = the channel's raw conv output (before any BatchNorm or activation) at the\n"
        f"position whose receptive field is that patch: its highest anywhere in that test image",
        cell=0.9,
        gap=0.14,
    )
    return fig
