"""The numbers the report adds to the theory sections equal PyTorch's own (nn.Linear/nn.Conv2d
parameter counts, the model's forward through its BatchNorm, a conv output), and their figures
pass the readability check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from src.data.cifar import Subset, normalize
from src.figures import run_steps
from src.figures.readability import problems
from src.lab_report import additions
from src.lab_report.build import theory_additions
from src.models import build_model, conv_layers
from src.params import changed_params
from tests.conftest import params_with


def trained_like(name: str, classes: int = 3) -> nn.Module:
    """A model with non-trivial BatchNorm statistics (as training leaves them)."""
    torch.manual_seed(0)
    m = build_model(params_with({"model": {"name": name}}).model, classes)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(16, 3, 32, 32) * 1.5 + 0.3)
    return m.eval()


def subset(n: int = 60) -> Subset:
    g = torch.Generator().manual_seed(0)
    imgs = lambda k: torch.randint(0, 256, (k, 3, 32, 32), dtype=torch.uint8, generator=g)  # noqa: E731
    labels = lambda k: torch.arange(k) % 3  # noqa: E731
    return Subset(["cat", "dog", "ship"], imgs(n), labels(n), imgs(9), labels(9), imgs(n), labels(n))


@pytest.mark.parametrize("name", ["fast_cnn", "seed_cnn"])
def test_dense_against_conv_counts_are_pytorchs(name):
    m = trained_like(name)
    d = additions.dense_vs_conv(m)
    first = conv_layers(m)[0][1]
    out = first(torch.zeros(1, 3, 32, 32)).shape[1:]
    assert d["conv_params"] == sum(p.numel() for p in first.parameters())
    assert d["conv_output_shape"] == list(out) and d["conv_outputs"] == out.numel()
    assert d["dense_same_outputs_params"] == 3072 * out.numel() + out.numel()
    assert d["dense_hidden_params"] == sum(p.numel() for p in nn.Linear(3072, 512).parameters())
    assert d["dense_same_outputs_params"] > 1000 * d["conv_params"]


def test_batchnorm_before_and_after_come_from_the_models_forward():
    m = trained_like("fast_cnn")
    x = torch.randn(32, 3, 32, 32)
    bn = additions.batchnorm_before_after(m, x)
    g = m.features.group1
    assert bn["layer"] == "features.group1.bn1"
    with torch.no_grad():
        before = g.pool(g.conv1(m.act(m.whiten(x))))[:, bn["channel"]]  # the layers ahead of it, by hand
        layer = g.bn1
        c = bn["channel"]
        after = (before - layer.running_mean[c]) / torch.sqrt(layer.running_var[c] + layer.eps) * layer.weight[
            c
        ] + layer.bias[c]
    np.testing.assert_allclose(bn["before"], before.flatten().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn["after"], after.flatten().numpy(), rtol=1e-4, atol=1e-4)
    assert bn["before_mean"] == pytest.approx(float(before.mean()), abs=1e-5)
    assert bn["after_std"] == pytest.approx(float(after.std()), rel=1e-4)
    assert bn["values"] == before.numel()


def test_batchnorm_after_is_bns_own_output_even_when_an_in_place_relu_follows():
    m = trained_like("seed_cnn")  # conv → BN → ReLU(inplace=True): the BN's output is overwritten in place
    bn = additions.batchnorm_before_after(m, torch.randn(8, 3, 32, 32))
    layer = dict(m.named_modules())[bn["layer"]]
    c = bn["channel"]
    want = (bn["before"] - float(layer.running_mean[c])) / np.sqrt(float(layer.running_var[c]) + layer.eps) * float(
        layer.weight[c].detach()
    ) + float(layer.bias[c].detach())
    np.testing.assert_allclose(bn["after"], want, rtol=1e-4, atol=1e-4)
    assert (bn["after"] < 0).any()  # not the ReLU's output


def test_a_network_without_batchnorm_has_none_to_show():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    assert additions.batchnorm_before_after(m, torch.randn(2, 3, 32, 32)) is None
    assert additions.network_table(m)["has_batchnorm"] is False


@pytest.mark.parametrize("name", ["fast_cnn", "seed_cnn"])
def test_the_network_table_is_the_models_own(name):
    m = trained_like(name)
    t = additions.network_table(m)
    assert t["total_params"] == sum(p.numel() for p in m.parameters())
    assert all(r["formula_shape"] == r["torch_shape"] for r in t["layers"])
    assert t["activations"] == (["GELU"] if name == "fast_cnn" else ["ReLU"])
    first = additions.first_learned_conv(m)
    # what a first learned conv's sum passes through before its activation: the model's own order
    assert additions.until_activation(t["layers"], first) == (
        ["MaxPool2d", "BatchNorm2d"] if name == "fast_cnn" else ["BatchNorm2d"]
    )


@pytest.mark.parametrize("trainable", [False, True])
def test_the_neuron_is_the_first_learned_layers_and_sums_to_pytorchs_value(trainable):
    torch.manual_seed(0)
    m = build_model(params_with({"model": {"fast_cnn": {"whiten_trainable": trainable}}}).model, 3).eval()
    x = torch.randn(3, 32, 32)
    n = additions.strongest_neuron(m, x)
    assert n["layer"] == ("whiten" if trainable else "features.group1.conv1")
    assert n["sum"] == pytest.approx(n["torch"], abs=1e-4)
    assert float(np.sum(n["products"])) + n["bias"] == pytest.approx(n["sum"], abs=1e-9)
    assert sum(n["by_channel"]) + n["bias"] == pytest.approx(n["sum"], abs=1e-9)
    assert n["terms"] == np.prod(dict(conv_layers(m))[n["layer"]].weight.shape[1:])


def test_a_normalised_pixel_is_what_the_network_is_fed():
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    px = additions.normalised_pixel(img[0], mean, std, 5, 7)
    fed = normalize(img, torch.tensor(mean), torch.tensor(std))[0, :, 5, 7]
    np.testing.assert_allclose(px["normalised"], fed.numpy(), rtol=1e-5)
    assert px["raw"] == img[0, :, 5, 7].tolist()
    assert px["black"][0] == pytest.approx(-0.49 / 0.25) and px["white"][2] == pytest.approx(0.55 / 0.26)


def test_the_mixup_example_blends_like_training():
    sub = subset()
    mix = additions.mixup_example(sub.train_x, sub.train_y, sub.classes, 0.4, seed=0)
    a, b = mix["indices"]
    assert sub.train_y[a] != sub.train_y[b] and 0.25 <= mix["lam"] <= 0.75
    pair = sub.train_x[[a, b]].float() / 255
    torch.testing.assert_close(mix["mixed"], mix["lam"] * pair[0] + (1 - mix["lam"]) * pair[1])
    assert sum(mix["label"]) == pytest.approx(1.0)
    assert mix["label"][int(sub.train_y[a])] == pytest.approx(mix["lam"])


def test_the_report_figures_read_well():
    sub, m = subset(), trained_like("fast_cnn")
    seen: list[str] = []

    def check(fig, name):
        assert problems(fig) == [], name
        seen.append(name)

    out = run_steps([theory_additions(m, sub, [0.5] * 3, [0.25] * 3, 0, 16, 0.4, 0)], check)
    assert seen == ["1_dense_vs_conv.png", "3_normalisation.png", "11_batchnorm.png", "11_mixup.png"]
    assert set(out) == {"network", "dense_vs_conv", "pixel", "neuron", "batchnorm", "mixup"}


def test_changed_params_are_exactly_the_differing_keys():
    before = {"train": {"epochs": 8, "lr": 0.03}, "data": {"classes": ["cat", "dog"]}, "gone": 1, "empty": None}
    after = {"train": {"epochs": 12, "lr": 0.03}, "data": {"classes": ["cat", "ship"]}, "new": {"x": 2}}
    both, gone, new = (
        {"before_set": True, "after_set": True},
        {"before_set": True, "after_set": False},
        {
            "before_set": False,
            "after_set": True,
        },
    )
    assert changed_params(before, after) == [
        {"key": "data.classes", "before": ["cat", "dog"], "after": ["cat", "ship"], **both},
        {"key": "empty", "before": None, "after": None, **gone},  # null, then absent: a change
        {"key": "gone", "before": 1, "after": None, **gone},
        {"key": "new.x", "before": None, "after": 2, **new},
        {"key": "train.epochs", "before": 8, "after": 12, **both},
    ]
