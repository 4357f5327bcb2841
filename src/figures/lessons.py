"""Figures that teach the operations of src.teach.ops, with the numbers printed in the cells.

Every number drawn comes from the src.teach.ops function named in the panel's title; the tests read
the numbers back from the figures' text and compare them with those functions.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from src.figures import text_colour_on
from src.teach import ops

CMAP = "RdBu_r"
COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3"]
GREY_CELL = "#dddddd"  # padding
PENDING_CELL = "#f2f2f2"  # an output not computed yet (hatched, unlike a computed 0, which is white)


def fmt(v: float) -> str:
    """Integers without a decimal point, others with two digits."""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


def draw_matrix(
    ax,
    m: np.ndarray,
    title: str = "",
    cmap: str = CMAP,
    numbers: bool = True,
    grey: np.ndarray | None = None,
    vmax: float | None = None,
    fontsize: int = 10,
    span: tuple[float, float] | None = None,
) -> None:
    """A matrix as coloured cells with its values printed; `grey` masks cells drawn as padding.

    CMAP (diverging) is centred on 0; other colour maps span the matrix's own range."""
    import matplotlib as mpl

    m = np.asarray(m, dtype=float)
    if cmap == CMAP:
        v = vmax if vmax is not None else (np.nanmax(np.abs(m)) if m.size else 1.0) or 1.0
        lo, hi = -v, v
    else:
        lo, hi = span if span is not None else ((np.nanmin(m), np.nanmax(m)) if m.size else (0.0, 1.0))
        hi = hi if hi > lo else lo + 1
    ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
    if grey is not None:  # padding cells: an opaque light grey over the colour map
        ax.imshow(np.where(grey, 1.0, np.nan), cmap=ListedColormap([GREY_CELL]), vmin=0, vmax=1)
    if numbers:
        cm = mpl.colormaps[cmap]
        for (i, j), val in np.ndenumerate(m):
            under = GREY_CELL if grey is not None and grey[i, j] else cm((val - lo) / (hi - lo))
            ax.text(
                j, i, fmt(val), ha="center", va="center", fontsize=fontsize, color=text_colour_on(under), gid="cell"
            )
    ax.set_xticks(np.arange(m.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(m.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=10)


def outline(ax, i: int, j: int, h: int, w: int, colour: str = COLOURS[0], lw: float = 3, inset: float = 0.04) -> None:
    """Outline cells [i, i+h) x [j, j+w); `inset` shrinks the box so overlapping boxes stay visible."""
    ax.add_patch(
        Rectangle(
            (j - 0.5 + inset, i - 0.5 + inset),
            w - 2 * inset,
            h - 2 * inset,
            fill=False,
            edgecolor=colour,
            linewidth=lw,
            zorder=10,
            clip_on=False,
        )
    )


def cell_values(ax) -> np.ndarray:
    """The numbers printed in a panel's cells, row by row (for tests)."""
    return np.array([float(t.get_text()) for t in ax.texts if t.get_gid() == "cell"])


# ----------------------------------------------------------------------------- 1. ReLU


def relu_figure(x: np.ndarray):
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
    y = ops.relu(x)
    v = np.abs(x).max()
    draw_matrix(axes[0], x, "input x", vmax=v)
    draw_matrix(axes[1], y, "relu(x) = max(0, x)", vmax=v)
    fig.suptitle("ReLU keeps positive values and sets negative ones to 0", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- 2. sliding kernel


def draw_partial_map(ax, y: np.ndarray, done: int) -> None:
    """The feature map y with only its first `done` cells (row by row) computed: those coloured and
    numbered, the rest hatched and explained under the panel, so a blank cell never reads as a 0."""
    span = np.abs(y).max() or 1.0
    filled = np.full(y.shape, np.nan)
    filled.flat[:done] = y.flat[:done]
    im = ax.imshow(np.ma.masked_invalid(filled), cmap=CMAP, vmin=-span, vmax=span)
    for (a, c), val in np.ndenumerate(filled):
        if np.isnan(val):
            ax.add_patch(
                Rectangle(
                    (c - 0.5, a - 0.5), 1, 1, facecolor=PENDING_CELL, edgecolor="#aaaaaa", hatch="//", linewidth=0
                )
            )
        else:
            ax.text(
                c,
                a,
                fmt(val),
                ha="center",
                va="center",
                fontsize=10,
                gid="cell",
                color=text_colour_on(im.cmap(im.norm(val))),
            )
    ax.set_xticks(np.arange(y.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(y.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(f"feature map Y = relu(W * X + b), {y.shape[0]}×{y.shape[1]}", fontsize=10)
    if done < y.size:
        ax.set_xlabel(
            f"hatched: not computed yet — the kernel has visited\n{done} of {y.size} positions so far (row by row)",
            fontsize=9.5,
            gid="pending",
        )


def conv_step_figure(x: np.ndarray, w: np.ndarray, b: float, pos: tuple[int, int]):
    """Input with the receptive field of output `pos` outlined, the kernel, the feature map filled
    up to `pos` (the cells after it hatched: not computed yet), and the weighted sum of that
    position written out."""
    y = ops.relu(ops.conv2d(x, w, b))
    i, j = pos
    kh, kw = w.shape
    fig = plt.figure(figsize=(11, 4.9))
    gs = fig.add_gridspec(2, 3, height_ratios=[4, 1.3])
    ax_x, ax_w, ax_y = (fig.add_subplot(gs[0, k]) for k in range(3))
    draw_matrix(ax_x, x, f"input X {x.shape[0]}×{x.shape[1]}")
    outline(ax_x, i, j, kh, kw)
    draw_matrix(ax_w, w, f"kernel W {kh}×{kw}, bias b = {fmt(b)}")
    draw_partial_map(ax_y, y, i * y.shape[1] + j + 1)
    outline(ax_y, i, j, 1, 1)
    patch = x[i : i + kh, j : j + kw]
    terms = " + ".join(f"({fmt(a)})·({fmt(c)})" for a, c in zip(w.ravel(), patch.ravel()))
    z = float((w * patch).sum() + b)
    ax_t = fig.add_subplot(gs[1, :])
    ax_t.axis("off")
    ax_t.text(  # from the figure's left edge (x), not the axes', so a 3×3 sum fits the canvas
        0.02,
        0.5,
        f"Y[{i},{j}] = f(Σ w·x + b) = f({terms} + {fmt(b)})\n"
        f"        = f({fmt(z)}) = {fmt(max(z, 0.0))}     with f = ReLU",
        fontsize=9.5,
        family="monospace",
        va="center",
        gid="sum",
        transform=blended_transform_factory(fig.transFigure, ax_t.transAxes),
    )
    fig.suptitle("A kernel slides over the input: each output is a weighted sum of one receptive field", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- 3, 4. stride, padding


def stride_figure(x: np.ndarray, w: np.ndarray, stride: int = 2, caption_n: int = 4):
    y = ops.conv2d(x, w, stride=stride)
    n, f = x.shape[0], w.shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(11, 5.1), gridspec_kw={"width_ratios": [5, 3, 2.4]})
    fig.subplots_adjust(bottom=0.27, top=0.896)  # room on the canvas for the three-line caption below
    draw_matrix(axes[0], x, f"input {n}×{n}, receptive fields of each output")
    for k, (a, c) in enumerate(np.ndindex(*y.shape)):
        outline(axes[0], a * stride, c * stride, f, f, COLOURS[k % 4], lw=2.5, inset=0.06 + 0.09 * k)
    draw_matrix(axes[1], w, f"kernel {f}×{f}")
    draw_matrix(axes[2], y, f"output {y.shape[0]}×{y.shape[1]}")
    for k, (a, c) in enumerate(np.ndindex(*y.shape)):
        outline(axes[2], a, c, 1, 1, COLOURS[k % 4])
    small = ops.output_size(caption_n, f, 0, stride)
    sizes = [m for m in range(f, f + 2 * stride) if ops.output_size(m, f, 0, stride) == 2]  # N giving 2×2
    two_by_two = " or ".join(map(str, sizes)) if len(sizes) <= 2 else f"{sizes[0]}–{sizes[-1]}"
    fig.text(
        0.02,
        0.125,
        f"stride S = {stride}:  N' = ⌊(N − F + 2P)/S⌋ + 1 = ⌊({n} − {f} + 0)/{stride}⌋ + 1 = "
        f"{ops.output_size(n, f, 0, stride)}.\n"
        f"The lab's caption says a {caption_n}×{caption_n} input: ({caption_n} − {f} + 0)/{stride} + 1 = "
        f"{(caption_n - f) / stride + 1:g}, floored to {small} — PyTorch gives {small}×{small}, not 2×2;\n"
        f"a 2×2 output needs N = {two_by_two} with P = 0, or P = 1 on the {caption_n}×{caption_n} "
        f"(⌊({caption_n} − {f} + 2)/{stride}⌋ + 1 = {ops.output_size(caption_n, f, 1, stride)}).",
        fontsize=9.5,
        va="top",
    )
    fig.suptitle(f"Stride {stride}: the kernel jumps {stride} pixels, so the output shrinks", fontsize=11)
    return fig


def padding_figure(x: np.ndarray, w: np.ndarray, padding: int = 1):
    xp = ops.pad2d(x, padding)
    y = ops.conv2d(x, w, padding=padding)
    n, f = x.shape[0], w.shape[0]
    uses = ops.uses_per_pixel(n, f, padding, 1)
    # two rows of two: in one row (14 in) the report's A4 page printed the cell numbers at 5 pt
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 8.4), gridspec_kw={"width_ratios": [5, 3]}, layout="constrained")
    axes = axes.ravel()  # input, kernel / output, outputs fed
    mask = np.ones_like(xp, dtype=bool)
    mask[padding:-padding, padding:-padding] = False
    draw_matrix(axes[0], xp, f"input {n}×{n} padded with zeros (grey)\nto {xp.shape[0]}×{xp.shape[1]}", grey=mask)
    outline(axes[0], 0, 0, f, f)
    draw_matrix(axes[1], w, f"kernel {f}×{f}")
    draw_matrix(axes[2], y, f"output {y.shape[0]}×{y.shape[1]}:\nsame size as the input")
    outline(axes[2], 0, 0, 1, 1)
    draw_matrix(axes[3], uses, f"outputs each input pixel\nfeeds (of {y.size})", cmap="Greens", span=(0, y.size))
    fig.supxlabel(
        f"padding P = {padding}:  N' = (N − F + 2P)/S + 1 = ({n} − {f} + {2 * padding})/1 + 1 = "
        f"{ops.output_size(n, f, padding, 1)}.\nThe outlined receptive field of output [0, 0] covers "
        f"{int(mask[:f, :f].sum())} zeros:\n"
        f"a corner pixel feeds {uses[0, 0]:.0f} outputs, the centre {uses[n // 2, n // 2]:.0f}.",
        x=0.02,
        ha="left",
        fontsize=9.5,
    )
    fig.suptitle(
        f"Padding keeps the size, but border pixels still feed fewer outputs\n"
        f"(corner {uses[0, 0]:.0f}, centre {uses[n // 2, n // 2]:.0f} of {y.size})",
        fontsize=11,
    )
    return fig


# ----------------------------------------------------------------------------- 5. pooling


def pooling_figure(fmap: np.ndarray, stack: np.ndarray, small_stack: np.ndarray):
    # three rows on a page-wide canvas: in two rows 12 in wide the report's A4 page printed the
    # cell numbers at 5 pt
    fig = plt.figure(figsize=(7.6, 7.4))
    gs = fig.add_gridspec(3, 3, height_ratios=[1, 0.3, 1.1])
    ax = [fig.add_subplot(gs[0, k]) for k in range(3)]
    span = (fmap.min(), fmap.max())
    draw_matrix(ax[0], fmap, "feature map 4×4", cmap="viridis", span=span)
    for k, (a, c) in enumerate(np.ndindex(2, 2)):
        outline(ax[0], 2 * a, 2 * c, 2, 2, COLOURS[k])
    draw_matrix(
        ax[1], ops.max_pool2d(fmap, 2), "max_pool2d(k=2)\nthe largest of each window", cmap="viridis", span=span
    )
    draw_matrix(ax[2], ops.avg_pool2d(fmap, 2), "avg_pool2d(k=2)\nthe mean of each window", cmap="viridis", span=span)
    note = fig.add_subplot(gs[1, :])
    note.axis("off")
    note.text(
        0,
        0.5,
        "2×2 windows, stride 2: each colour is one window. Output: (4 − 2)/2 + 1 = 2 per side.\n"
        "Max pooling keeps the strongest response (is the feature there?);\n"
        "average pooling keeps the mean (how much of it?).",
        fontsize=9.5,
        va="center",
    )
    for a_ in ax[1:3]:
        for k, (a, c) in enumerate(np.ndindex(2, 2)):
            outline(a_, a, c, 1, 1, COLOURS[k])
    # global average pooling: C maps → C numbers; then flattening, on the same row after a gap
    n_big, n_small = stack.shape[0], small_stack.shape[0]
    row = gs[2, :].subgridspec(
        1, n_big + n_small + 3, wspace=0.35, width_ratios=[1] * n_big + [0.6, 0.3] + [1] * n_small + [0.6]
    )
    for c in range(n_big):
        a_ = fig.add_subplot(row[0, c])
        draw_matrix(a_, stack[c], f"map {c}", cmap="viridis", fontsize=8, span=(stack.min(), stack.max()))
    gap = ops.global_avg_pool(stack)
    a_ = fig.add_subplot(row[0, n_big])
    draw_matrix(
        a_, gap[:, None], "global avg pool\n(one mean per map)", cmap="viridis", span=(stack.min(), stack.max())
    )
    for c in range(n_small):
        a_ = fig.add_subplot(row[0, n_big + 2 + c])
        draw_matrix(
            a_, small_stack[c], f"map {'ABCDEFGH'[c]}", cmap="viridis", span=(small_stack.min(), small_stack.max())
        )
    a_ = fig.add_subplot(row[0, -1])
    draw_matrix(
        a_,
        ops.flatten(small_stack)[:, None],
        "flatten\n(A, then B)",
        cmap="viridis",
        span=(small_stack.min(), small_stack.max()),
    )
    fig.suptitle("Pooling shrinks maps;\nglobal average pooling and flattening turn maps into a vector", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- 6. network table


NET_COLUMNS = ("layer", "type", "by formula", "PyTorch", "params")
NET_WIDTHS = (0.21, 0.24, 0.18, 0.18, 0.19)  # of the table's width


def network_figure(tables: dict[str, list[dict]]):
    """Each network's layers as a table: output shape by the formula next to PyTorch's (a pair
    that differs on a red cell), parameters, the total in bold. One above the other, each as tall
    as its rows: side by side (14.4 in) the report's A4 page printed them at 4 pt.

    Drawn as lines and texts placed in inches on one axes rather than with matplotlib's `table`,
    which measures every cell again at each draw: this figure's save took 1.7 s of the theory
    stage's 5.5 s on a 2-core CPU."""
    row, title_h, gap, margin, pad = 0.2, 0.3, 0.15, 0.1, 0.1  # inches
    width, top = 7.2, 0.55  # the suptitle's two lines above the first table
    height = top + sum(title_h + (len(rows) + 2) * row + gap for rows in tables.values())
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y down, in inches
    ax.axis("off")
    edges = margin + np.concatenate([[0], np.cumsum(NET_WIDTHS)]) * (width - 2 * margin)
    y = top
    for name, rows in tables.items():
        ax.text(width / 2, y + title_h / 2, name, ha="center", va="center", fontsize=10)
        y += title_h
        cells = (
            [NET_COLUMNS]
            + [_layer_cells(r) for r in rows]
            + [("total", "", "", "", f"{sum(r['params'] for r in rows):,}")]
        )
        for r, texts in enumerate(cells):
            differs = 0 < r <= len(rows) and rows[r - 1]["formula_shape"] != rows[r - 1]["torch_shape"]
            for c, text in enumerate(texts):
                if differs and c in (2, 3):
                    ax.add_patch(Rectangle((edges[c], y + r * row), edges[c + 1] - edges[c], row, fc="#fdd", lw=0))
                if text:
                    bold = r in (0, len(cells) - 1)
                    ax.text(
                        edges[c] + pad,
                        y + (r + 0.5) * row,
                        text,
                        va="center",
                        fontsize=8,
                        weight="bold" if bold else None,
                    )
        ax.hlines(y + row * np.arange(len(cells) + 1), edges[0], edges[-1], color="black", lw=1)
        ax.vlines(edges, y, y + row * len(cells), color="black", lw=1)
        y += row * len(cells) + gap
    fig.suptitle(
        "Each layer's output shape: the formula next to PyTorch, and its parameters\n"
        "(the head's size depends on the number of classes)",
        fontsize=11,
        y=1 - 0.08 / height,
        va="top",
    )
    return fig


def _layer_cells(r: dict) -> tuple[str, ...]:
    """One layer's row of the network table."""
    shape = lambda s: "×".join(map(str, s))  # noqa: E731
    params = f"{r['params']:,}" if r["params"] else ""
    return (r["layer"].removeprefix("features."), r["type"], shape(r["formula_shape"]), shape(r["torch_shape"]), params)


# ----------------------------------------------------------------------------- 7. real image


def real_filters_figure(image_hwc: np.ndarray, gray: np.ndarray, kernels: dict[str, np.ndarray]):
    """Hand-made kernels on a real image: convolution, ReLU, max pooling, step by step."""
    # the colour original gets its own panel: an inset would hide a corner of the grey input, and
    # with it whatever edge the kernels find there
    # each kernel on two rows of three: in one row of six (14.5 in) the report's A4 page printed
    # the titles at 4.5 pt
    fig, grid_axes = plt.subplots(2 * len(kernels), 3, figsize=(7.6, 2 * 2.55 * len(kernels)), squeeze=False)
    axes = grid_axes.reshape(len(kernels), 6)  # per kernel: original, grey, kernel / conv, ReLU, pool
    for r, (name, k) in enumerate(kernels.items()):
        conv = ops.conv2d(gray, k)  # no padding: zero borders would look like edges
        act = ops.relu(conv)
        pooled = ops.max_pool2d(act, 2)
        axes[r, 0].imshow(image_hwc, interpolation="nearest")
        axes[r, 0].set_title("the colour\noriginal", fontsize=9)
        axes[r, 1].imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 1].set_title(f"input {gray.shape[0]}×{gray.shape[1]}, grey\n(mean of R, G, B)", fontsize=9)
        draw_matrix(axes[r, 2], k, f"{name} kernel", numbers=True)
        v = np.abs(conv).max() or 1
        for ax, img, title, cmap, lo in (
            (axes[r, 3], conv, f"conv2d → {conv.shape[0]}×{conv.shape[1]}", CMAP, -v),
            (axes[r, 4], act, "ReLU", "magma", 0),
            (axes[r, 5], pooled, f"max_pool2d(2) → {pooled.shape[0]}×{pooled.shape[1]}", "magma", 0),
        ):
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=v, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(
        "Edge detectors on a CIFAR-10 image:\nconvolution finds edges, ReLU keeps one sign, pooling halves the size",
        fontsize=11,
    )
    fig.tight_layout()
    return fig
