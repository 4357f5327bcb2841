"""The visualize stage's figures: the arrays behind them, for both networks and any class count."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from src.augment import augment_batch
from src.figures import inside, results
from src.models import build_model, conv_layers
from tests.conftest import params_with


@pytest.fixture(params=["fast_cnn", "seed_cnn"])
def model(request):
    torch.manual_seed(0)
    return build_model(params_with({"model": {"name": request.param}}).model, 4).eval()


def test_first_layer_tiles_are_rgb_and_one_per_filter(model):
    fig, d = inside.first_layer_filters(model)
    conv = conv_layers(model)[0][1]
    assert len(d["tiles"]) == conv.out_channels == d["out_channels"]
    assert d["tiles"].shape[1:] == (conv.kernel_size[0], conv.kernel_size[1], 3)
    # each filter is scaled to [0, 1] on its own
    assert np.allclose(d["tiles"].reshape(len(d["tiles"]), -1).min(1), 0)
    assert np.allclose(d["tiles"].reshape(len(d["tiles"]), -1).max(1), 1)
    assert sum(1 for ax in fig.axes if ax.images) == conv.out_channels


def test_deep_layer_grid(model):
    fig, d = inside.deep_layer_filters(model, 1, 5, 4)
    w = conv_layers(model)[1][1].weight.detach().numpy()
    np.testing.assert_array_equal(d["weights"], w[:5, :4])
    assert sum(1 for ax in fig.axes if ax.images) == 20


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
    assert len(fig.axes) == len(layers) * 6


def test_gradcam_maps(model):
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    cams = inside.gradcam_maps(model, x, pred)
    assert cams.shape == (6, 32, 32) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert any(not np.allclose(c, c.mean()) for c in cams)  # real heatmaps, not constants


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
    fig = results.prediction_grid(imgs, np.array([0, 1, 2, 0]), np.array([0, 2, 2, 1]),
                                  np.array([0.9, 0.8, 0.7, 0.6]), ["a", "b", "c"])
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes]
    assert titles[0] == ("a / a\n(90%)", "#1a9850") and titles[1] == ("b / c\n(80%)", "#d73027")

    hist = {"train_acc": [0.5, 0.7], "val_acc": [0.6, 0.65], "train_loss": [1.0, 0.6], "val_loss": [0.9, 0.8]}
    fig = results.training_curves(hist, best_epoch=2)
    ys = [list(line.get_ydata()) for line in fig.axes[0].lines[:2]]
    assert ys == [hist["train_acc"], hist["val_acc"]]


def test_augmentation_examples_differ_and_keep_shape():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    aug = augment_batch(img[None].repeat(6, 1, 1, 1), params_with({"augment": {"cutout": 8}}).augment, torch.Generator().manual_seed(0))
    assert aug.shape == (6, 3, 32, 32) and aug.dtype == torch.uint8
    assert len({bytes(a.numpy()) for a in aug}) > 1
    fig = results.augmentation_figure(img, aug, "test")
    assert sum(1 for ax in fig.axes if ax.images) == 7
