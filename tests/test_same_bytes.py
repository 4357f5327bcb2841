"""Each writer of the pipeline gives the same bytes for the same object, whatever the file is called
and however often it runs (DVC's hashes then mean "these inputs", not "this run")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import torch

from src.data.cifar import Subset
from src.io import atomic_torch_save, save_figure, write_json
from src.training.checkpoints import save_checkpoint

matplotlib.use("Agg")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def twice(tmp_path: Path, write, suffix: str) -> tuple[Path, Path]:
    """Write with `write(path)` into two differently named files in two folders."""
    a, b = tmp_path / "one" / f"first{suffix}", tmp_path / "two" / f"other{suffix}"
    write(a)
    write(b)
    return a, b


def test_torch_save_does_not_depend_on_the_file_name(tmp_path):
    obj = {"w": torch.arange(12.0).reshape(3, 4), "classes": ["cat", "dog"]}
    a, b = twice(tmp_path, lambda p: atomic_torch_save(obj, p), ".pt")
    assert md5(a) == md5(b)
    assert b"first" not in a.read_bytes() and b"archive/data.pkl" in a.read_bytes()
    assert not list(a.parent.glob(".*"))  # no temp file left behind
    assert torch.equal(torch.load(a, weights_only=True)["w"], obj["w"])


def test_checkpoint_and_subset_are_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    state = torch.nn.Linear(4, 3).state_dict()
    a, b = twice(tmp_path, lambda p: save_checkpoint(p, state, {"classes": ["cat"]}, epoch=2, val_acc=0.5), ".pt")
    assert md5(a) == md5(b)
    x = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    sub = Subset(["cat", "dog"], x, y, x[:2], y[:2], x[:4], y[:4])
    a, b = twice(tmp_path / "subset", sub.save, ".pt")
    assert md5(a) == md5(b)


def test_figures_and_json_are_the_same_bytes(tmp_path):
    import matplotlib.pyplot as plt

    def figure(path: Path) -> None:
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [2, 0, 1], label="loss")
        ax.set_title("same bytes")
        ax.legend()
        save_figure(fig, path, dpi=60)

    a, b = twice(tmp_path, figure, ".png")
    assert md5(a) == md5(b)
    assert b"matplotlib" not in a.read_bytes()  # no version stamp: a matplotlib upgrade alone changes nothing
    a, b = twice(tmp_path / "json", lambda p: write_json(p, {"b": 1, "a": [0.1, 0.2]}), ".json")
    assert md5(a) == md5(b) and a.read_text().index('"b"') < a.read_text().index('"a"')  # order kept


def test_shared_and_copied_values_pickle_alike(tmp_path):
    """An optimizer state loaded from a resume point holds copies where a fresh one shares objects:
    equal values, different pickles, unless the writer rebuilds them."""
    name = "".join(["momentum", "_buffer"])  # a string equal to, but not the same object as, the literal
    groups = ["momentum_buffer"] * 2
    shared = {"groups": [groups, groups], "key": "momentum_buffer"}
    copied = {"groups": [list(groups), [name, name]], "key": name}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    atomic_torch_save(shared, a)
    atomic_torch_save(copied, b)
    assert md5(a) == md5(b)
    model = torch.nn.BatchNorm1d(3)
    atomic_torch_save(model.state_dict(), a)
    assert torch.load(a, weights_only=True)._metadata == model.state_dict()._metadata  # versions kept


def test_a_figure_is_cropped_to_its_ink_and_a_caption_below_it_is_kept(tmp_path):
    """save_figure draws once and crops to the ink plus 0.1 inch; a text placed below the figure
    (outside its canvas) makes it fall back to matplotlib's tight box, which grows the canvas."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    def figure(caption: bool):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.imshow(np.eye(4))
        ax.set_xticks([]), ax.set_yticks([])
        if caption:
            fig.text(0.02, -0.2, "a caption under the figure", va="top")
        return fig

    plain, captioned = tmp_path / "plain.png", tmp_path / "captioned.png"
    save_figure(figure(False), plain, dpi=50)
    save_figure(figure(True), captioned, dpi=50)
    px = np.asarray(Image.open(plain))
    assert (px[:5] == 255).all() and (px[-5:] == 255).all()  # the pad: 5 white rows (0.1 inch at 50 dpi)
    assert (px[5:6] != 255).any() and (px[-6:-5] != 255).any()  # then the image's edge: nothing more
    assert px.shape[0] < 100 and px.shape[1] < 150  # cut from the 100 x 150 canvas
    assert Image.open(captioned).size[1] > px.shape[0] + 10  # the caption's rows are there


def test_axes_turned_off_keep_the_one_draw(tmp_path, monkeypatch):
    """Pictures in axes turned off (the filter, Grad-CAM and prediction grids) have tick labels that
    would sit left of the canvas but are never drawn: they must not send the figure to matplotlib's
    tight box, which lays it out and draws it twice more."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    fig, axes = plt.subplots(
        1, 3, figsize=(3, 1.2), gridspec_kw={"left": 0.04, "right": 0.96, "bottom": 0.05, "top": 0.8}
    )
    for ax in axes:
        ax.imshow(np.eye(4))
        ax.set_title("x", fontsize=6)
        ax.axis("off")
    renderer = fig.canvas.get_renderer()
    assert min(t.get_window_extent(renderer).x0 for t in axes[0].get_yticklabels()) < 0  # laid out off the canvas

    def tight(*a, **k):
        raise AssertionError("fell back to bbox_inches='tight'")

    monkeypatch.setattr(Figure, "savefig", tight)
    save_figure(fig, tmp_path / "grid.png", dpi=50)
    px = np.asarray(Image.open(tmp_path / "grid.png"))
    assert (px[:5] == 255).all() and (px[5:6] != 255).any()  # cropped to the ink plus the pad
