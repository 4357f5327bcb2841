"""What a reader sees, checked: text that overlaps other text or an image it does not belong to,
text that spills out of its table cell, text too faint against what is drawn under it, an image
that covers part of another axes' image (an inset over a picture hides what is under it), and text
too small once the figure is shrunk to the printed report's page.

    problems(fig) → ["'ch 3' overlaps the image of axes 'features.group1'", ...]   (empty: fine)
    too_small_in_print(fig) → ["'0.05' is 3.3 pt on the printed page, below 6 pt", ...]

Text written in an axes' data coordinates over that axes' own image (the numbers in a matrix's
cells) belongs there; only its contrast is checked. Contrast is WCAG's ratio between the text
colour and the colour under the text: under a cell's value, the images at its anchor (composited
in z-order, alpha included); under any other text (titles, labels, notes, legends), the figure's
face and whatever filled patch is drawn before it at its middle (the axes' face, a bar, a legend's
frame, its own box)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.patches import Patch
from matplotlib.table import Table
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from src.figures import MIN_CONTRAST, contrast
from src.io import drawn_texts


def _label(t: Text) -> str:
    s = " ".join(t.get_text().split())
    return repr(s if len(s) <= 40 else s[:37] + "...")


def _shrunk(b: Bbox, px: float = 1.0) -> Bbox:
    return Bbox.from_extents(b.x0 + px, b.y0 + px, b.x1 - px, b.y1 - px)


def _in_own_image(t: Text) -> bool:
    """A text drawn in data coordinates on an axes that shows an image: a cell's value."""
    return t.axes is not None and t.axes.images and t.get_transform() == t.axes.transData


def _colour_at(ax, x: float, y: float):
    """The RGB of ax's images at data point (x, y), composited over the axes background."""
    out = np.asarray(to_rgba(ax.get_facecolor()))[:3]
    for im in sorted((i for i in ax.images if isinstance(i, AxesImage) and i.get_visible()), key=lambda i: i.zorder):
        arr = im.get_array()
        left, right, bottom, top = im.get_extent()
        rows, cols = arr.shape[:2]
        c = int(np.floor((x - left) / (right - left) * cols))
        r = (
            int(np.floor((y - top) / (bottom - top) * rows))
            if im.origin == "upper"
            else int(np.floor((y - bottom) / (top - bottom) * rows))
        )
        if not (0 <= r < rows and 0 <= c < cols):
            continue
        if arr.ndim == 2:  # values through the colour map (a masked value is transparent)
            rgba = np.asarray(im.to_rgba(arr[r : r + 1, c : c + 1]), dtype=float).reshape(4)
        else:  # an RGB(A) picture
            px = np.asarray(arr[r, c], dtype=float) / (255.0 if arr.dtype == np.uint8 else 1.0)
            rgba = np.append(px[:3], px[3] if px.size == 4 else 1.0)
        alpha = rgba[3] * (im.get_alpha() if im.get_alpha() is not None else 1.0)
        out = alpha * rgba[:3] + (1 - alpha) * out
    return out


def _table_problems(fig: Figure, renderer) -> tuple[list[str], set[int]]:
    """Text spilling out of its table cell; returns the problems and the ids of the cells' texts."""
    out, ids = [], set()
    for table in fig.findobj(Table):
        for cell in table.get_celld().values():
            t = cell.get_text()
            ids.add(id(t))
            if not t.get_text().strip():
                continue
            tb, cb = t.get_window_extent(renderer), cell.get_window_extent(renderer)
            if tb.x0 < cb.x0 - 0.5 or tb.x1 > cb.x1 + 0.5:
                out.append(f"{_label(t)} spills out of its table cell")
            if contrast(t.get_color(), cell.get_facecolor()) < MIN_CONTRAST:
                out.append(
                    f"{_label(t)}: contrast {contrast(t.get_color(), cell.get_facecolor()):.1f} "
                    f"against its cell, below {MIN_CONTRAST}"
                )
    return out, ids


def _all_axes(fig: Figure) -> list:
    """The figure's axes and their inset axes (insets are children of an axes, not in fig.axes)."""
    out, todo = [], list(fig.axes)
    while todo:
        ax = todo.pop(0)
        out.append(ax)
        todo += [c for c in ax.child_axes if c not in out]
    return out


def _axes_name(ax) -> str:
    return _label(Text(text=ax.get_title() or ax.get_ylabel() or "untitled"))


def _over(colour, under: np.ndarray) -> np.ndarray:
    """`colour` (alpha included) composited over the RGB `under`."""
    rgba = np.asarray(to_rgba(colour), dtype=float)
    return rgba[3] * rgba[:3] + (1 - rgba[3]) * under


def _legends(fig: Figure, axes: list) -> list[tuple[tuple, Legend]]:
    """The visible legends, each with its place in the drawing order (over the axes it belongs to)."""
    out = []
    for order, ax in enumerate(axes):
        legend = ax.get_legend()
        if ax.get_visible() and legend is not None and legend.get_visible():
            out.append(((ax.get_zorder(), order, legend.get_zorder()), legend))
    return out + [((np.inf, 0, lg.get_zorder()), lg) for lg in fig.legends if lg.get_visible()]


def _backdrops(fig: Figure, axes: list) -> tuple[list[tuple[tuple, Patch]], dict[int, tuple], dict[int, int]]:
    """Every filled patch a text can sit on, with its place in the drawing order (the axes' faces,
    their bars and boxes, legends' frames), the place of each legend's texts (over its frame) and
    each axes' place in the order the figure draws them."""
    patches, texts = [], {}
    for order, ax in enumerate(axes):
        if not ax.get_visible():
            continue
        if ax.patch.get_visible():
            patches.append(((ax.get_zorder(), order, -np.inf), ax.patch))
        filled = [p for p in ax.patches if p.get_visible() and p.get_fill()]
        patches += [((ax.get_zorder(), order, p.get_zorder()), p) for p in filled]
    for key, legend in _legends(fig, axes):
        if legend.get_frame_on():
            patches.append((key, legend.legendPatch))
        for t in [*legend.texts, legend.get_title()]:
            texts[id(t)] = (*key[:2], key[2] + 0.5)
    return sorted(patches, key=lambda kp: kp[0]), texts, {id(ax): order for order, ax in enumerate(axes)}


def _covers(patch: Patch, point: tuple[float, float]) -> bool:
    """Whether `patch` is drawn at display `point`: inside its outline and inside its clip box (a bar
    from 0 on a log axis runs off to the left, but is drawn only within its axes)."""
    clip = patch.get_clip_box() if patch.get_clip_on() else None
    return patch.contains_point(point) and (clip is None or clip.contains(*point))


def _along(box: Bbox) -> list[tuple[float, float]]:
    """Three points along the middle line of a text's box, lengthwise (a rotated label runs upwards):
    near each end and in the middle, so a text half on a bar is judged by both halves."""
    (x0, y0), (x1, y1) = box.get_points()
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    if box.width >= box.height:
        return [(x0 + f * (x1 - x0), ym) for f in (0.1, 0.5, 0.9)]
    return [(xm, y0 + f * (y1 - y0)) for f in (0.1, 0.5, 0.9)]


def _colours_behind(t: Text, renderer, fig: Figure, backdrops: tuple) -> list[np.ndarray]:
    """The RGB under text `t` at each of `_along`'s points: the figure's face, then each patch drawn
    before `t` that covers that point, then the text's own box."""
    patches, legend_texts, axes_order = backdrops
    if id(t) in legend_texts:
        own = legend_texts[id(t)]
    elif t.axes is not None and id(t.axes) in axes_order:
        own = (t.axes.get_zorder(), axes_order[id(t.axes)], t.get_zorder())
    else:  # a figure's own text (a suptitle, fig.text): drawn with the axes by zorder, after them here
        own = (np.inf, 0, t.get_zorder())
    below = [patch for key, patch in patches if key < own]
    bbox = t.get_bbox_patch()
    boxed = bbox is not None and bbox.get_visible() and bbox.get_fill()
    face, out = np.asarray(to_rgba(fig.get_facecolor()))[:3], []
    for point in _along(t.get_window_extent(renderer)):
        colour = face
        for patch in below:
            if _covers(patch, point):
                colour = _over(patch.get_facecolor(), colour)
        out.append(_over(bbox.get_facecolor(), colour) if boxed else colour)
    return out


def _visible_area(ax, im, renderer) -> Bbox | None:
    """The part of image `im` its axes `ax` shows (None where none)."""
    return Bbox.intersection(im.get_window_extent(renderer), ax.get_window_extent(renderer))


def _hidden_images(images: list, renderer) -> list[str]:
    """Images of different axes that overlap on the canvas: the one on top hides part of the other.
    (Several images in one axes, like a heatmap over its photo, are meant to be seen together.)"""
    areas = [(ax, _visible_area(ax, im, renderer)) for ax, im in images]
    out, seen = [], set()
    for i, (ax_a, a) in enumerate(areas):
        for ax_b, b in areas[i + 1 :]:
            if ax_a is ax_b or a is None or b is None or (id(ax_a), id(ax_b)) in seen:
                continue
            if _shrunk(a).overlaps(_shrunk(b)):
                seen.add((id(ax_a), id(ax_b)))
                top, under = (ax_a, ax_b) if ax_a.get_zorder() > ax_b.get_zorder() else (ax_b, ax_a)
                out.append(f"the image of axes {_axes_name(top)} hides part of the image of axes {_axes_name(under)}")
    return out


def problems(fig: Figure) -> list[str]:
    """Every overlap, hidden image and low-contrast text a reader would see in `fig` (drawn at its own dpi)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out, table_texts = _table_problems(fig, renderer)
    texts = [t for t in drawn_texts(fig, renderer) if id(t) not in table_texts]
    boxes = [_shrunk(t.get_window_extent(renderer)) for t in texts]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if boxes[i].overlaps(boxes[j]):
                out.append(f"{_label(texts[i])} overlaps {_label(texts[j])}")
    axes = _all_axes(fig)
    images = [(ax, im) for ax in axes if ax.get_visible() for im in ax.images if im.get_visible()]
    out += _hidden_images(images, renderer)
    backdrops = _backdrops(fig, axes)
    areas = [(ax, _visible_area(ax, im, renderer)) for ax, im in images]
    for t, box in zip(texts, boxes):
        if _in_own_image(t):
            x, y = t.get_position()
            ratio = contrast(t.get_color(), _colour_at(t.axes, x, y))
            if ratio < MIN_CONTRAST:
                out.append(f"{_label(t)}: contrast {ratio:.1f} against its cell, below {MIN_CONTRAST}")
            continue
        over = [ax for ax, area in areas if area is not None and box.overlaps(area)]
        out += [f"{_label(t)} overlaps the image of axes {_axes_name(ax)}" for ax in over]
        if not over:  # text on an image it doesn't belong to is a problem already, whatever its colour
            ink = to_rgba(t.get_color(), t.get_alpha())
            ratio = min(contrast(_over(ink, under), under) for under in _colours_behind(t, renderer, fig, backdrops))
            if ratio < MIN_CONTRAST:
                out.append(f"{_label(t)}: contrast {ratio:.1f} against what it is drawn on, below {MIN_CONTRAST}")
    return out


MIN_PRINT_PT = 6.0  # smaller than this, a printed figure's labels and cell numbers are hard to read


def too_small_in_print(fig: Figure, dpi: float = 110, min_pt: float = MIN_PRINT_PT) -> list[str]:
    """Texts of `fig`, saved at `dpi`, smaller than `min_pt` on the printed report (its page
    geometry: src/lab_report/gather.py's `printed_scale`)."""
    from src.lab_report.gather import printed_scale

    fig.canvas.draw()
    scale = printed_scale(fig.get_figwidth(), fig.get_figheight(), dpi)
    out = []
    for t in drawn_texts(fig, fig.canvas.get_renderer()):
        printed = t.get_fontsize() * scale
        if printed < min_pt:
            out.append(f"{_label(t)} is {printed:.1f} pt on the printed page, below {min_pt:g} pt")
    return out
