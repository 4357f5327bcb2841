"""What a reader sees: no text on text, no title over the image above, no spilled table cells, no
faint numbers on dark cells — checked on every figure the stages write, and the checker itself
checked on figures built to fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import yaml

import src.io
from src.figures import results
from src.figures.dataset import class_distribution, samples_per_class
from src.figures.readability import contrast, problems, too_small_in_print
from src.params import CIFAR10_CLASSES, load_params
from tests.conftest import REPO
from tools.dvc_deps import PACKAGES

# ----------------------------------------------------------------------------- the checker fails what it should


def test_overlapping_texts_are_caught():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
    assert any("'first label' overlaps 'second label'" in p for p in problems(fig))


def test_a_title_over_the_image_above_is_caught():
    fig, axes = plt.subplots(2, 1, figsize=(2, 2.2))  # no room for the lower title
    for ax in axes:
        ax.imshow(np.zeros((8, 8)))
        ax.set_title("a long two-line\ntitle here", fontsize=9)
    assert any("overlaps the image of axes" in p for p in problems(fig))


def test_dark_text_on_a_dark_cell_is_caught_and_white_passes():
    fig, ax = plt.subplots()
    ax.imshow([[10.0, -10.0]], cmap="RdBu_r", vmin=-10, vmax=10)
    ax.text(0, 0, "19", color="black", ha="center", va="center")  # black on dark red
    ax.text(1, 0, "-9", color="white", ha="center", va="center")  # white on dark blue: fine
    found = problems(fig)
    assert len(found) == 1 and found[0].startswith("'19': contrast")


def test_faint_text_outside_images_is_caught_against_what_it_sits_on():
    """Titles, labels and notes: measured against the figure, the axes face, a bar, a legend's frame
    or the text's own box, whichever is drawn under it (a green title at 3.7 once went unseen)."""
    fig, ax = plt.subplots()
    ax.set_title("right", color="#2ca02c")  # matplotlib's green on white: 3.4
    ax.set_facecolor("#202020")
    ax.set_xlim(-1, 3), ax.set_ylim(0, 2)
    ax.text(-0.8, 1.8, "on the dark face", color="white")
    ax.text(-0.8, 1.4, "in a white box", color="black", bbox={"facecolor": "white"})
    ax.bar([2], [1], width=0.8, color="#ffd700")  # a yellow bar...
    ax.text(2, 0.5, "bar", color="white", ha="center")  # ...under white text: 1.4
    ax.plot([0, 1], label="line")
    ax.legend(loc="lower left")  # black on the legend's white frame, over the dark face: fine
    found = problems(fig)
    assert len(found) == 2 and found[0].startswith("'bar': contrast 1.4 against what it is drawn on"), found
    assert found[1].startswith("'right': contrast 3.4 against what it is drawn on"), found
    plt.close(fig)


def test_a_bar_clipped_by_its_axes_is_not_under_the_tick_labels():
    """A bar from 0 on a log axis runs to minus infinity, but is drawn only inside its axes."""
    fig, ax = plt.subplots(layout="constrained")
    ax.barh([0, 1], [10, 1000], color="#2166ac")
    ax.set_yticks([0, 1], ["first layer", "second layer"])
    ax.set_xscale("log")
    ax.set_xlim(1, 10_000)
    assert problems(fig) == []
    plt.close(fig)


def test_a_text_half_on_a_dark_bar_is_judged_by_both_halves():
    """Black text whose middle is on the white face and whose end runs onto a dark bar: its middle
    alone reads 21, its end 1.6; a rotated label is sampled upwards along its length."""
    fig, ax = plt.subplots()
    ax.set_xlim(0, 10), ax.set_ylim(0, 10)
    ax.barh([8], [2.8], height=1.5, left=7.2, color="#08306b")  # dark navy from x = 7.2 on (the text ends at 8.4)
    ax.text(4.5, 8, "a note running onto the bar", color="black", va="center")
    ax.bar([1], [10], width=0.8, bottom=4.7, color="#08306b")  # dark navy from y = 4.7 up
    ax.text(1, 4, "rotated label", color="black", rotation=90, ha="center", va="center")
    found = problems(fig)
    assert [p.split(":")[0] for p in found] == ["'a note running onto the bar'", "'rotated label'"], found
    assert all("against what it is drawn on" in p for p in found), found
    plt.close(fig)


def test_a_number_spilling_out_of_its_table_cell_is_caught():
    fig, ax = plt.subplots(figsize=(3, 1))
    ax.axis("off")
    t = ax.table(cellText=[["1,414,400,000"]], colWidths=[0.05], loc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(9)
    assert problems(fig) == ["'1,414,400,000' spills out of its table cell"]


def test_an_inset_over_another_image_is_caught_and_an_overlay_in_its_own_axes_is_not():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((8, 8)), cmap="gray")
    ax.imshow(np.eye(8), cmap="jet", alpha=0.4)  # a heatmap over its photo: meant
    ax.set_title("grey input")
    assert problems(fig) == []
    inset = ax.inset_axes([0.68, 0.68, 0.3, 0.3])
    inset.imshow(np.ones((8, 8, 3)))
    inset.set_xticks([]), inset.set_yticks([])
    assert problems(fig) == ["the image of axes 'untitled' hides part of the image of axes 'grey input'"]


def test_contrast_is_wcag():
    assert contrast("black", "white") == pytest.approx(21.0)
    assert contrast("#777777", "white") == pytest.approx(4.48, abs=0.01)


# ----------------------------------------------------------------------------- the figures, 2 to 10 classes


@pytest.mark.parametrize("k", [2, 3, 4, 5, 10])
def test_results_figures_read_well_for_any_class_count(k):
    rng = np.random.default_rng(k)
    classes = list(CIFAR10_CLASSES[:k])
    cm = rng.integers(0, 200, (k, k)) + np.eye(k, dtype=int) * 800
    imgs = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    true, pred = rng.integers(0, k, 24), rng.integers(0, k, 24)
    figs = {
        "confusion": results.confusion_figure(cm, classes),
        "per_class": results.per_class_bars(dict(zip(classes, rng.uniform(0.5, 1.0, k))), 0.8),
        "grid": results.prediction_grid(imgs, true, pred, rng.uniform(0.3, 1, 24), classes),
        "curves": results.training_curves(
            {f"{s}_{m}": list(rng.uniform(0.2, 1, 12)) for s in ("train", "val") for m in ("acc", "loss")}, 7, 0.2
        ),
        "distribution": class_distribution(
            {split: dict.fromkeys(classes, 4500) for split in ("train", "val", "test")}, classes
        ),
        "samples": samples_per_class(imgs.repeat(k, 1, 1, 1), np.arange(24 * k) % k, classes),
    }
    for name, fig in figs.items():
        assert problems(fig) == [], name
        assert too_small_in_print(fig) == [], name  # the handed-in report is printed on A4
        plt.close(fig)


def test_text_too_small_in_print_is_found():
    fig, ax = plt.subplots(figsize=(15, 5))  # shrunk to the A4 text width (7.24 in): × 0.48
    ax.set_axis_off()
    ax.set_title("wide", fontsize=14)
    ax.text(0.5, 0.5, "0.05", fontsize=7)
    assert too_small_in_print(fig) == ["'0.05' is 3.4 pt on the printed page, below 6 pt"]
    fig.set_figwidth(7)  # as wide as the page's text or narrower: printed at its own size
    assert too_small_in_print(fig) == []
    fig.set_size_inches(5, 15)  # too tall for the page: shrunk to its height, never sliced
    assert too_small_in_print(fig) == ["'0.05' is 4.5 pt on the printed page, below 6 pt"]
    plt.close(fig)


@pytest.mark.parametrize("low", [0.0, 0.02, 0.05, 0.1])
def test_per_class_bars_read_well_when_a_class_collapses(low):
    """A far-too-high lr leaves a class near 0 %: its label must not sit on the class name."""
    fig = results.per_class_bars({"airplane": low, "automobile": 0.9, "bird": low / 2, "cat": 0.6}, 0.5)
    assert problems(fig) == []
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert f"{low:.1%}" in labels and "90.0%" in labels
    assert fig.axes[0].get_xlabel() == "test accuracy (recall of each class)"  # from 0: no note
    plt.close(fig)
    # the overall line at a bar's end passes behind its number, not through it
    fig = results.per_class_bars({"airplane": 0.789, "automobile": 0.912, "bird": 0.671}, 0.7772)
    ax = fig.axes[0]
    line = next(x for x in ax.lines if x.get_label().startswith("overall"))
    for t in ax.texts:
        assert t.get_bbox_patch() is not None and t.get_bbox_patch().get_facecolor()[3] == 1.0
        assert t.get_zorder() > line.get_zorder()
    plt.close(fig)
    fig = results.per_class_bars({"airplane": 0.94, "automobile": 0.981, "bird": 0.96}, 0.96)
    assert fig.axes[0].get_xlabel().endswith("; the axis starts at 84%, not 0") and problems(fig) == []
    plt.close(fig)


# ----------------------------------------------------------------------------- every figure the stages write


@pytest.fixture
def stage_workspace(repo, tmp_path, monkeypatch):
    """The inputs the figure stages read, copied from the end-to-end repo (its outputs stay as DVC made them).
    Which inputs: the figure stages' deps in dvc.yaml other than code, so a stage's new input comes along."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    deps = {d for s in ("stats", "visualize", "theory") for d in stages[s]["deps"]}
    inputs = sorted(d for d in deps if d.split("/")[0] not in PACKAGES)
    assert "models/best.pt" in inputs and "data/raw" in inputs  # the dvc.yaml this reads is the pipeline's
    for rel in ("params.yaml", *inputs):
        src, dst = repo / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel == "data/raw":  # the whole CIFAR-10 archive's batches: read, never written
            dst.symlink_to(src)
        else:
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_figure_the_stages_write_reads_well(stage_workspace, monkeypatch):
    """No overlaps or faint numbers in any figure, and nothing below 6 pt in the ones the report
    shows (by name, from its template) once printed on its A4 page."""
    import fnmatch
    import re

    from stages import _report_page, stats, theory, visualize

    template = (REPO / "templates/lab_report.html.j2").read_text()
    in_report = {Path(p).name for p in re.findall(r'fig\.(?:get|glob)\("([^"]+)"', template)}
    assert {"6_network.png", "gradcam.png", "feature_maps_*.png", "11_mixup.png"} <= in_report
    seen: dict[str, list[str]] = {}

    def check_then_save(fig, path, dpi=110):
        fig.set_dpi(dpi)
        shown = any(fnmatch.fnmatch(Path(path).name, name) for name in in_report)
        seen[str(path)] = problems(fig) + (too_small_in_print(fig, dpi) if shown else [])
        plt.close(fig)

    # stats saves with src.io.save_figure imported by name; visualize, theory and report save through
    # src.figures.background.figures_saved, which looks src.io.save_figure up when it is called
    monkeypatch.setattr(stats, "save_figure", check_then_save)
    monkeypatch.setattr(src.io, "save_figure", check_then_save)
    p = load_params("params.yaml")
    for stage in (stats, visualize, theory):
        stage.main(p)
    _report_page.additions(p)  # the report's own figures (its page and PDF are tested in tests/test_report.py)
    assert len(seen) >= 2 + 11 + 7 + 4  # stats, visualize (no mistakes figure when all are right), theory, report
    assert {path: found for path, found in seen.items() if found} == {}
