"""Figures across experiments: test accuracy against training time, per-class accuracy as a heatmap.

Each run is labelled with what differs ("lr=0.02, classes=cat,dog"), its name below in grey: random
experiment names say nothing about a run. A label breaks between params into a few short lines and
counts the params it leaves out; it is placed where it covers no other label and no point, so two
runs at one point get one label each, stacked with leader lines, and where no such place is left it
shows the run's name alone.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.offsetbox import AnnotationBbox, TextArea, VPacker
from matplotlib.transforms import Bbox

from src.figures import text_colour_on

Labeller = Callable[[list[dict]], list[str]]  # rows → one label per row (src.compare.describe)
GAP = 6.0  # points between a point and its label
MARK_PX = 5.0  # half the size of a point's marker, in pixels, kept clear of labels
WRAP = 34  # characters a label's line holds: a class's grid of eight changed params stays readable
MAX_LINES = 3  # lines of params a label shows; the rest are counted (compare.md has them all)
ROW_WRAP = 48  # characters a heatmap row label's line holds: beside the cells there is more room than on the plot


def wrapped(text: str, width: int = WRAP, max_lines: int = MAX_LINES) -> str:
    """A label's "k=v, k=v, …" in lines of about `width` characters, broken only between params,
    at most `max_lines` of them: the params left out are counted on the last line."""
    lines: list[str] = []
    items = text.split(", ")
    for i, item in enumerate(items):
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
            continue
        if len(lines) == max_lines:
            rest = len(items) - i + lines[-1].count(", ") + 1
            lines[-1] = f"+{rest} more (compare.md)"
            if len(lines) > 1 and len(lines[-2]) + len(lines[-1]) + 2 <= width:  # room beside the line above
                lines[-2:] = [f"{lines[-2]}, {lines[-1]}"]
            break
        lines.append(item)
    return "\n".join(lines)


def point_labels(texts: list[str], width: int = WRAP) -> list[str]:
    """`wrapped` labels for the points; one too long to show whole puts first the params it shares
    with the fewest other runs, so the lines it keeps tell it from its neighbours (a class's grid
    on one subset: the seed or lr, not the classes all of them share)."""
    shared = Counter(item for t in texts for item in set(t.split(", ")))
    out = []
    for t in texts:
        label = wrapped(t, width)
        if label.endswith("(compare.md)"):
            label = wrapped(", ".join(sorted(t.split(", "), key=lambda item: shared[item])), width)
        out.append(label)
    return out


def _with_name(label: str, name: str) -> str:
    """A row's wrapped params with its experiment's name after them, on the last line where it fits."""
    room = len(label.splitlines()[-1]) + len(name) + 3 <= ROW_WRAP
    return f"{label} ({name})" if room else f"{label}\n({name})"


def _names(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows]


def _label_box(
    ax, xy: tuple[float, float], text: str, name: str, offset: tuple[float, float], align: tuple[float, float]
) -> AnnotationBbox:
    """The label: what differs, then the run's name smaller and grey (left out when the same);
    a leader line when it sits away from its point."""
    side = "left" if align[0] == 0 else "right"  # a label's lines line up on the side of its point
    lines = [TextArea(text, textprops={"fontsize": 8, "multialignment": side})]
    if name != text:
        lines.append(TextArea(name, textprops={"fontsize": 7, "color": "#555555"}))
    box = VPacker(children=lines, align=side, pad=0, sep=1)
    far = abs(offset[1]) > 2 * GAP
    ab = AnnotationBbox(
        box,
        xy,
        xybox=offset,
        xycoords="data",
        boxcoords="offset points",
        box_alignment=align,
        frameon=False,
        pad=0.1,
        arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6, "shrinkA": 0, "shrinkB": 3, "relpos": align}
        if far
        else None,
    )  # to the near corner
    ab.set_in_layout(False)  # inside the axes by construction: the layout need not make room
    return ab


def _spots(step: float) -> Iterator[tuple[tuple[float, float], tuple[float, float]]]:
    """(offset in points, box alignment) to try, nearest first: the four corners beside the point,
    then further up and down on either side, one label height at a time."""
    yield from (((GAP, GAP), (0, 0)), ((GAP, -GAP), (0, 1)), ((-GAP, GAP), (1, 0)), ((-GAP, -GAP), (1, 1)))
    for k in range(1, 16):
        for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            yield (sx * 3 * GAP, sy * (GAP + k * step)), (0 if sx > 0 else 1, 0 if sy > 0 else 1)


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], names: list[str]) -> list[AnnotationBbox]:
    """One label per point, each at the first spot (see _spots) inside the axes that overlaps no
    label placed before it and no point's marker; where none is free, the same with the run's name
    alone, and failing that the nearest spot."""
    fig = ax.figure
    fig.canvas.draw()  # settle the layout first: spots are measured in pixels
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer).padded(-2)
    marks = [
        Bbox.from_extents(px - MARK_PX, py - MARK_PX, px + MARK_PX, py + MARK_PX)
        for px, py in ax.transData.transform(np.asarray(points, dtype=float).reshape(-1, 2))
    ]
    taken: list[Bbox] = []

    def free(box: Bbox) -> bool:
        return (
            _inside(box, area)
            and not any(box.padded(2).overlaps(t) for t in taken)
            and not any(box.overlaps(m) for m in marks)
        )

    for xy, text, name in zip(points, labels, names):
        # where no spot is free for what differs, the run's name alone (compare.md has the rest)
        chosen = _free_spot(ax, renderer, xy, text, name, free) or _free_spot(ax, renderer, xy, name, name, free)
        if chosen is None:  # nowhere free (very crowded): the nearest spot, and the figure check says so
            chosen = ax.add_artist(_label_box(ax, xy, name, name, *next(_spots(_height(name, name)))))
        taken.append(_extent(chosen, renderer))
    return [a for a in ax.artists if isinstance(a, AnnotationBbox)]


def _height(text: str, name: str) -> float:
    """A label's height in points, with a little air: its lines of 8 pt, its name's line of 7 pt."""
    return 10 * (text.count("\n") + 1) + (9 if name != text else 0) + 2


def _free_spot(ax, renderer, xy, text: str, name: str, free: Callable[[Bbox], bool]) -> AnnotationBbox | None:
    """The label at the first of `_spots` where `free` accepts its box, added to `ax`; None if none."""
    for offset, align in _spots(_height(text, name)):
        ab = ax.add_artist(_label_box(ax, xy, text, name, offset, align))
        if free(_extent(ab, renderer)):
            return ab
        ab.remove()
    return None


def _extent(ab: AnnotationBbox, renderer) -> Bbox:
    """The label's text box in pixels (its leader line left out: that starts at the point)."""
    ab.update_positions(renderer)
    return ab.offsetbox.get_window_extent(renderer)


def _inside(box: Bbox, area: Bbox) -> bool:
    return area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1


def accuracy_vs_seconds(rows: list[dict], label: Labeller | None = None):
    """One labelled point per experiment that has metrics: training seconds → test accuracy.
    `label` says what differs among the drawn runs (src.compare.describe); else their names."""
    done = [r for r in rows if r["test_acc"] is not None and r["seconds"] is not None]
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    # runs on other classes are other tasks: one colour (and a legend entry) per class set
    sets = list(dict.fromkeys(r["class_set"] for r in done))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    colours = {c: palette[i % len(palette)] for i, c in enumerate(sets)}
    for r in done:
        ax.scatter(r["seconds"], r["test_acc"], s=36, color=colours[r["class_set"]], zorder=3)
    if len(sets) > 1:
        for c in sets:
            name = ", ".join(c) if len(c) <= 4 else f"{', '.join(c[:3])} +{len(c) - 3}"
            ax.scatter([], [], s=36, color=colours[c], label=f"{len(c)} classes: {name}")
        fig.legend(  # outside the axes, where the runs' labels can't be
            loc="outside lower center", ncols=min(3, len(sets)), fontsize=8, title="other classes, other tasks"
        )
    left = Counter(r["status"] for r in rows if r["status"] != "ok")  # failed, queued, running
    left_out = ", ".join(f"{n} {s}" for s, n in left.items()) + f" run{'s' if left.total() > 1 else ''} left out"
    ax.set_xlabel("training seconds (the whole loop, validation included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"Test accuracy against training time, {len(done)} run{'s' if len(done) != 1 else ''}"
        + (f"; {left_out}" if left else "")
    )
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if done:
        xs, ys = [r["seconds"] for r in done], [r["test_acc"] for r in done]
        ax.set_xlim(0, max(xs) * 1.25 + 1)
        pad = max(0.02, (max(ys) - min(ys)) * 0.35)  # room above and below for stacked labels
        ax.set_ylim(max(0.0, min(ys) - pad), min(1.0, max(ys) + pad) + 0.005)
        place_labels(ax, list(zip(xs, ys)), point_labels((label or _names)(done)), _names(done))
    return fig


def per_class_heatmap(rows: list[dict], classes: list[str], label: Labeller | None = None):
    """Experiments (rows) × classes (columns), the test accuracy of each class; blank where an
    experiment did not train on that class or failed. Rows are labelled like the points above."""
    done = [r for r in rows if r["per_class"]]
    m = np.array([[r["per_class"].get(c, np.nan) for c in classes] for r in done], dtype=float).reshape(
        len(done), len(classes)
    )
    said = (label or _names)(done)
    ticks = [s if s == r["name"] else _with_name(s, r["name"]) for s, r in zip(point_labels(said, ROW_WRAP), done)]
    row = max(0.42, 0.14 * max((t.count("\n") + 1 for t in ticks), default=1) + 0.14)  # inches: a label's lines fit
    fig, ax = plt.subplots(figsize=(5.0, max(2.5, row * len(done) + 1.6)), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(m):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=text_colour_on(im.cmap(im.norm(v))))
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(done)), ticks, fontsize=8)
    ax.set_title("Per-class test accuracy across experiments (blank: class not in that run)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    # long row labels would squeeze the cells until their numbers touch: widen by the labels' width
    with warnings.catch_warnings():  # this draw only measures the labels; too wide, the layout gives up and says so
        warnings.filterwarnings("ignore", "constrained_layout not applied", UserWarning)
        fig.canvas.draw()
    labels_in = max((t.get_window_extent().width for t in ax.get_yticklabels()), default=0) / fig.dpi
    fig.set_size_inches(max(5.0, 0.9 * len(classes) + 2.2 + labels_in), fig.get_size_inches()[1])
    return fig
