"""The visualize stage's figures: the arrays behind them, for both networks and any class count."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from torch import nn

from src.data.augment import augment_batch
from src.figures import GREEN_TEXT, RED, contrast, inside, panel_grid, results
from src.figures.readability import problems
from src.models import build_model, conv_layers
from src.teach.probe import crop, top_patches
from tests.conftest import params_with


@pytest.fixture(autouse=True)
def close_figures():
    """Close each test's figures after it: pyplot keeps them all open until told (a warning at 21)."""
    yield
    plt.close("all")


@pytest.fixture(params=["fast_cnn", "seed_cnn"])
def model(request):
    torch.manual_seed(0)
    return build_model(params_with({"model": {"name": request.param}}).model, 4).eval()


def test_first_layer_tiles_are_rgb_and_one_per_filter(model):
    fig, d = inside.first_layer_filters(model)
    conv = conv_layers(model)[0][1]
    assert len(d["tiles"]) == conv.out_channels == d["out_channels"]
    assert d["tiles"].shape[1:] == (conv.kernel_size[0], conv.kernel_size[1], 3)
    _assert_signed_tiles(d["tiles"], conv.weight.detach().numpy())
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == conv.out_channels  # one axes holds every tile
    assert problems(fig) == []


def _assert_signed_tiles(tiles: np.ndarray, w: np.ndarray) -> None:
    """Grey is 0, each kernel reaches ±its own max, and a tile's colour has its weights' signs."""
    off = tiles - 0.5
    np.testing.assert_allclose(np.abs(off).reshape(len(off), -1).max(1), 0.5, rtol=1e-6)
    np.testing.assert_allclose(
        off,
        0.5 * w.transpose(0, 2, 3, 1) / np.abs(w).reshape(len(w), -1).max(1)[:, None, None, None],
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("k", [2, 3])
def test_learned_first_layer_filters_show_their_size_sign_and_channel(k):
    # the lead's `whiten_trainable` flag: a first layer whose weights learn, 2×2 as today or 3×3
    torch.manual_seed(0)
    m = build_model(params_with({"model": {"name": "fast_cnn"}}).model, 3).eval()
    if k == 3:
        m.whiten = nn.Conv2d(3, m.whiten.out_channels, 3, padding=1)
    m.whiten.weight.requires_grad_(True)
    fig, d = inside.first_layer_filters(m)
    assert d["learned"] and d["tiles"].shape == (m.whiten.out_channels, k, k, 3)
    _assert_signed_tiles(d["tiles"], m.whiten.weight.detach().numpy())
    title = fig._suptitle.get_text()
    assert f"learned first-layer filters ({k}×{k}×3)" in title and "not learned" not in title
    (ax,) = fig.axes  # one axes holds every tile, each titled with its channel
    assert [t.get_text() for t in ax.texts if t.get_text()] == [f"ch {c}" for c in range(m.whiten.out_channels)]
    big = ax.images[0].get_array()  # enlarged by whole pixels: nearest neighbour, not blurred
    assert big.shape[0] >= 16 and big.shape[0] % k == 0
    np.testing.assert_array_equal(big[:: big.shape[0] // k, :: big.shape[1] // k], d["tiles"][0])
    assert problems(fig) == []


def test_a_frozen_first_layer_says_how_to_learn_it():
    torch.manual_seed(0)
    m = build_model(params_with({"model": {"name": "fast_cnn"}}).model, 3).eval()
    m.whiten.weight.requires_grad_(False)
    fig, d = inside.first_layer_filters(m)
    title = fig._suptitle.get_text()
    assert not d["learned"] and "not learned" in title and "learned first-layer filters" not in title
    assert "(frozen: set model.fast_cnn.whiten_trainable=true to learn it, whiten_kernel=3 for 3×3" in title
    assert "top_patches_features_group1_conv1.png" in title  # the learned layer's RGB view in the same run


def test_deep_layer_grid(model):
    fig, d = inside.deep_layer_filters(model, 1, 5, 4)
    w = conv_layers(model)[1][1].weight.detach().numpy()
    np.testing.assert_array_equal(d["weights"], w[:5, :4])
    (ax,) = (ax for ax in fig.axes if ax.images)  # one mosaic, a framed cell per (filter, input channel)
    mosaic, (ch, cw, gap) = np.asarray(ax.images[0].get_array()), d["cells"]
    for i in range(5):
        for j in range(4):
            y, x = i * (ch + gap), j * (cw + gap)
            cell = mosaic[y : y + ch, x : x + cw]
            zoom = ch // w.shape[2]  # whole pixels per weight
            np.testing.assert_allclose(cell[::zoom, ::zoom], w[i, j], rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["in 0", "in 1", "in 2", "in 3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"filter {i}" for i in range(5)]
    assert len(ax.patches) == 20 and np.isnan(mosaic[ch, 0])  # the frames, and the white gap under row 0


def test_feature_maps_have_the_layers_real_shapes(model):
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    layers = model.feature_layers()
    assert any("pool" in n for n in layers) and len(layers) >= 4
    acts = inside.activations(model, img[None].float() / 255, layers)
    # the same shapes as hooks on the real forward pass report
    mods = dict(model.named_modules())
    seen = {}
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, tuple(o.shape[1:]))) for n in layers]
    model(img[None].float() / 255)
    for h in hs:
        h.remove()
    fig, shown = inside.feature_maps_figure(img, acts, 5, "t")
    for n in layers:
        assert shown[n]["shape"] == seen[n]
        assert shown[n]["panel_shape"] == seen[n][1:]
        means = acts[n][0].mean(dim=(1, 2))
        assert means[shown[n]["channels"][0]] == means.max()  # strongest first
    # one row a layer: the input image, then the five strongest maps themselves, each titled by its channel
    images = [im.get_array() for im in fig.axes[0].images]
    assert len(images) == len(layers) * 6
    titles = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("ch ")]
    for r, n in enumerate(layers):
        np.testing.assert_array_equal(images[6 * r], img.permute(1, 2, 0).numpy())
        for k, c in enumerate(shown[n]["channels"]):
            np.testing.assert_array_equal(images[6 * r + 1 + k], acts[n][0, c].numpy())
            assert titles[5 * r + k] == f"ch {c}"
    labels = [t.get_text() for t in fig.axes[0].texts if "×" in t.get_text()]
    assert [lab.split("\n")[0] for lab in labels] == [n.removeprefix("features.") for n in layers]
    for r, n in enumerate(layers):  # each map on its own scale, and the figure says so (dark is not 0)
        for k, c in enumerate(shown[n]["channels"]):
            m = acts[n][0, c]
            assert fig.axes[0].images[6 * r + 1 + k].get_clim() == (float(m.min()), float(m.max()))
    assert "each map coloured from its own lowest value" in fig._suptitle.get_text()
    assert problems(fig) == []


def test_gradcam_maps(model):
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    cams = inside.gradcam_maps(model, x, pred)
    assert cams.shape == (6, 32, 32) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert any(not np.allclose(c, c.mean()) for c in cams)  # real heatmaps, not constants


def test_gradcam_maps_are_pytorch_grad_cams(model):
    """The maps equal pytorch-grad-cam's GradCAM (the field's reference implementation) for each
    image's own target, from the default last conv layer and from an early one."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = [0, 1, 1, 0, 1]
    for name, layer in [conv_layers(model)[-1], conv_layers(model)[1]]:
        ours = inside.gradcam_maps(model, x, targets, layer)
        with GradCAM(model=model, target_layers=[layer]) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        assert ours.shape == ref.shape == (5, 32, 32), name
        assert np.abs(ours - ref).max() < 1e-4, name
        assert (ours.reshape(5, -1).max(1) > 0.99).all()  # each scaled to its own maximum


def test_gradcam_figure_says_the_maps_real_size_and_has_a_colour_bar(model):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    name = conv_layers(model)[-1][0]
    cams = inside.gradcam_maps(model, x, [0, 1, 0, 1])
    size = inside.map_size(model, name, x)
    # the last conv's own map: fast_cnn's group3 after three 2x2 pools of 31x31, seed_cnn's after two of 32x32
    assert size == {"FastCNN": (3, 3), "SeedCNN": (8, 8)}[type(model).__name__]
    imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    fig = inside.gradcam_figure(
        imgs, cams, ["a", "b", "a", "a"], ["a", "a", "a", "b"], [0.9, 0.5, 0.7, 0.6], name, size
    )
    title = fig._suptitle.get_text()
    assert f"Grad-CAM of '{name}' ({size[0]}×{size[1]}), upsampled (bilinear) to 32×32" in title
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "relevance to the predicted class, 0–1"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][:2] == ["a → a\n(90%)", "b → a\n(50%)"]
    # green and red read on white (WCAG AA 4.5), as the figure check (problems, below) also measures
    colours = [ax.title.get_color() for ax in fig.axes if "→" in ax.get_title()]
    assert colours == [GREEN_TEXT, RED, GREEN_TEXT, RED] and min(contrast(c, "white") for c in colours) >= 4.5
    assert problems(fig) == []
    cams[1] = 0  # ReLU can leave nothing: that map must not pass for a picture of where it looked
    fig = inside.gradcam_figure(
        imgs, cams, ["a", "b", "a", "a"], ["a", "a", "a", "b"], [0.9, 0.5, 0.7, 0.6], name, size
    )
    said = [ax for ax in fig.axes if ax.get_title() == "all 0: no part raised\nthis class's score"]
    assert len(said) == 1 and said[0].images[-1].get_array().max() == 0
    assert problems(fig) == []


def test_top_patch_numbers_are_labelled(model):
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    imgs = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    for t in top_patches(model, x, k=3, channels=2)[:2]:
        crops = [
            [crop(imgs[int(t.images[r, q])], t.field.box(*map(int, t.positions[r, q]))) for q in range(3)]
            for r in range(2)
        ]
        fig = inside.top_patches_figure(t, crops)
        titles = [x.get_text() for x in fig.axes[0].texts if x.get_text().startswith("response")]
        assert titles == [f"response {v:.2f}" for v in t.values.ravel()]
        shown = [im.get_array() for im in fig.axes[0].images]  # the crops, row by row, strongest first
        assert len(shown) == 6 and all(np.array_equal(a, b) for a, b in zip(shown, sum(crops, [])))
        assert [x.get_text() for x in fig.axes[0].texts if x.get_text().startswith("ch ")] == [
            f"ch {c}" for c in t.channels
        ]
        assert "response = the channel's raw conv output" in fig._suptitle.get_text()
        assert problems(fig) == []


def test_results_figures_draw_their_data():
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 6]])
    fig = results.confusion_figure(cm, ["a", "b", "c"])
    counts = [int(t.get_text()) for t in fig.axes[0].texts]
    assert counts == cm.ravel().tolist()
    norm_ax = next(ax for ax in fig.axes if "row-normalised" in ax.get_title())
    norm = [float(t.get_text()) for t in norm_ax.texts]
    np.testing.assert_allclose(norm, (cm / cm.sum(1, keepdims=True)).round(2).ravel(), atol=0.006)

    fig = results.per_class_bars({"a": 0.9, "b": 0.5, "c": 0.7}, 0.7)
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths == [0.5, 0.7, 0.9]  # sorted

    imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    fig = results.prediction_grid(
        imgs, np.array([0, 1, 2, 0]), np.array([0, 2, 2, 1]), np.array([0.9, 0.8, 0.7, 0.6]), ["a", "b", "c"]
    )
    (ax,) = fig.axes  # one axes: each image titled and framed in its colour
    titles = [(t.get_text(), t.get_color()) for t in ax.texts if "→" in t.get_text()]
    assert titles[0] == ("a → a\n(90%)", "#157f3b") and titles[1] == ("b → c\n(80%)", "#d73027")
    assert len(titles) == len(ax.images) == 4
    frames = [to_hex(r.get_edgecolor()) for r in ax.patches]
    assert frames == ["#1a9850", "#d73027", "#1a9850", "#d73027"]
    assert fig._suptitle.get_text().endswith("true → predicted (confidence); green right, red wrong")
    wrong = results.prediction_grid(imgs[:2], np.array([0, 1]), np.array([1, 0]), np.array([0.9, 0.8]), ["a", "b"])
    assert wrong._suptitle.get_text().endswith("; all wrong (red)")  # the confident mistakes: no green to look for

    hist = {"train_acc": [0.5, 0.7], "val_acc": [0.6, 0.65], "train_loss": [1.0, 0.6], "val_loss": [0.9, 0.8]}
    fig = results.training_curves(hist, best_epoch=2)
    ys = [list(line.get_ydata()) for line in fig.axes[0].lines[:2]]
    assert ys == [hist["train_acc"], hist["val_acc"]]

    one = {k: v[:1] for k, v in hist.items()}  # a one-epoch run: its points sit at the panels' edges
    fig = results.training_curves(one, best_epoch=1, label_smoothing=0.2)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0] and ax.get_legend() is None  # whole epochs; no legend over the points
    assert [t.get_text() for t in fig.legends[0].get_texts()][-1] == "best epoch (1, by val. accuracy)"
    assert problems(fig) == []


def test_augmentation_examples_differ_and_keep_shape():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    aug = augment_batch(
        img[None].repeat(6, 1, 1, 1), params_with({"augment": {"cutout": 8}}).augment, torch.Generator().manual_seed(0)
    )
    assert aug.shape == (6, 3, 32, 32) and aug.dtype == torch.uint8
    assert len({bytes(a.numpy()) for a in aug}) > 1
    fig = results.augmentation_figure(img, aug, "test")
    (ax,) = fig.axes  # one axes: the original, then each augmented version, titled in that order
    assert [t.get_text() for t in ax.texts if t.get_text()] == ["original"] + [f"augmented {k}" for k in range(1, 7)]
    np.testing.assert_array_equal(ax.images[0].get_array(), img.permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(ax.images[6].get_array(), aug[5].permute(1, 2, 0).numpy())
    assert problems(fig) == []


def test_the_augmentation_figure_shows_colour_jitter_as_the_model_sees_it():
    from src.data.augment import color_jitter
    from src.data.cifar import normalize
    from src.figures.visualize_steps import color_jitter_pixels, describe_augmentation

    p = params_with({"augment": {"brightness": 0.14, "contrast": 0.13}}).augment
    assert describe_augmentation(p).endswith("brightness ±0.14 sd, contrast ×(1 ± 0.13)")
    alternate = params_with({"augment": {"hflip": "alternate"}}).augment  # the GPU recipe's flips: not random
    assert describe_augmentation(alternate).startswith("each image mirrored every other epoch, random crop")
    x = torch.randint(40, 216, (8, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    shown = color_jitter_pixels(x, 0.14, 0.13, mean, std, torch.Generator().manual_seed(1))
    seen = color_jitter(normalize(x, mean, std), 0.14, 0.13, torch.Generator().manual_seed(1))
    # the picture, normalised again, is what training feeds the model, to within a pixel level
    assert (normalize(shown, mean, std) - seen).abs().max() <= 0.5 / 255 / std.min() + 1e-5
    assert len({bytes(a.numpy()) for a in (shown.int() - x.int())}) == 8  # each image its own draw
    assert color_jitter_pixels(x, 0.0, 0.0, mean, std, torch.Generator()) is x


def test_the_augmentation_step_draws_the_jitter_it_was_trained_with(monkeypatch):
    from types import SimpleNamespace

    from src.figures import visualize_steps

    drawn = []
    keep = lambda img, aug, desc: drawn.append((aug, desc))  # noqa: E731
    monkeypatch.setattr(visualize_steps.results, "augmentation_figure", keep)
    sub = SimpleNamespace(train_x=torch.randint(40, 216, (5, 3, 32, 32), dtype=torch.uint8))

    def draw(**jitter):
        a = SimpleNamespace(
            ck={"augment_params": params_with({"augment": jitter}).augment},
            sub=sub,
            rng=np.random.default_rng(0),
            v=SimpleNamespace(augment_examples=6, seed=0),
            mean=torch.tensor([0.49, 0.48, 0.45]),
            std=torch.tensor([0.25, 0.24, 0.26]),
        )
        steps = visualize_steps.augmentation(a)
        assert next(steps)[0] == "augmentation.png"
        return drawn[-1]

    plain, plain_desc = draw()
    jittered, desc = draw(brightness=0.14, contrast=0.13)
    assert "brightness" not in plain_desc and desc == plain_desc + ", brightness ±0.14 sd, contrast ×(1 ± 0.13)"
    assert jittered.shape == plain.shape and jittered.dtype == torch.uint8
    # the same flips and crops, then each example's own colour change
    assert all(not torch.equal(j, p) for j, p in zip(jittered, plain))
    assert (jittered.float() - plain.float()).abs().mean() < 40


FIGURE_CODE = ["src/figures/*.py", "stages/visualize.py", "src/teach/probe.py"]


def test_one_wording_for_true_and_predicted():
    """'true → predicted' everywhere: no figure (or its docstring) writes 'true / predicted'."""
    import re

    from tests.conftest import REPO

    files = [f for pattern in FIGURE_CODE for f in sorted(REPO.glob(pattern))]
    assert len(files) > 5
    other = re.compile(r"true\s*/\s*pred|classes\[true\[k\]\]\}\s*/", re.IGNORECASE)
    found = [
        f"{f.relative_to(REPO)}:{n}"
        for f in files
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if other.search(line)
    ]
    assert found == []


def test_panel_grid_puts_each_title_above_its_picture_and_nothing_on_another():
    panels = [[np.zeros((5, 5, 3), dtype=np.uint8)] * 4, [np.eye(3)] * 2]  # a short second row
    titles = [[f"response {k}.00" for k in range(4)], ["ch 10", "ch 11"]]
    fig, ax = panel_grid(panels, titles, ["ch 1", "ch 2"], "line one\nline two")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    pics = [im.get_window_extent(r) for im in ax.images]
    texts = [t for t in ax.texts if t.get_text()]
    assert len(pics) == 6 and len(texts) == 8
    boxes = [t.get_window_extent(r) for t in texts]
    for i, b in enumerate(boxes):
        assert not any(b.overlaps(p) for p in pics), texts[i].get_text()
        assert not any(b.overlaps(o) for j, o in enumerate(boxes) if j != i), texts[i].get_text()
    # a title is centred over its own picture, just above it (display y grows upwards)
    title_of = [t for t in texts if t.get_text() in sum(titles, [])]
    for t, p in zip(title_of, pics):
        b = t.get_window_extent(r)
        assert abs((b.x0 + b.x1) / 2 - (p.x0 + p.x1) / 2) < 1 and 0 <= b.y0 - p.y1 < 10
    assert fig._suptitle.get_window_extent(r).y0 > max(b.y1 for b in boxes)
    assert problems(fig) == []


def test_samples_per_class_shows_each_class_first_image_five_a_row():
    """One axes holds the pictures: each class's first training image, titled with its name, five
    a row (ten in one row printed the names at 4 pt); with several a class, a row a class."""
    from src.figures.dataset import samples_per_class

    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = np.arange(40)[::-1] % 10  # class 9 first: the order shown is the classes', not the data's
    names = [f"class {c}" for c in range(10)]
    fig = samples_per_class(x, y, names)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts if t.get_text()] == names
    for c in range(10):  # the first image of class c, drawn at its place
        np.testing.assert_array_equal(ax.images[c].get_array(), x[np.flatnonzero(y == c)[0]].permute(1, 2, 0).numpy())
    rows = sorted({round(im.get_extent()[3], 3) for im in ax.images})
    assert len(rows) == 2 and problems(fig) == []
    plt.close(fig)
    fig = samples_per_class(x, y, names[:3], per_class=2)
    assert len(fig.axes[0].images) == 6 and len({round(im.get_extent()[3], 3) for im in fig.axes[0].images}) == 3
    plt.close(fig)
