"""Metrics against a confusion matrix computed by hand; test-time augmentation against its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from src.training.evaluation import (
    confusion_matrix,
    macro_f1,
    most_confused,
    per_class_accuracy,
    predict_logits,
    summarize,
)

# 3 classes; true labels and predictions chosen so every number below is easy to check by hand
Y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
P = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
CM = np.array([[2, 1, 1], [1, 2, 0], [0, 1, 2]])


def test_confusion_matrix():
    assert np.array_equal(confusion_matrix(Y, P, 3), CM)


def test_per_class_and_f1():
    np.testing.assert_allclose(per_class_accuracy(CM), [2 / 4, 2 / 3, 2 / 3])
    # F1 per class: 2TP/(2TP+FP+FN): c0 4/(4+1+2), c1 4/(4+2+1), c2 4/(4+1+1)
    assert macro_f1(CM) == pytest.approx(np.mean([4 / 7, 4 / 7, 4 / 6]))


def test_most_confused_pairs():
    pairs = most_confused(CM, ["cat", "dog", "frog"], n=2)
    assert pairs[0]["pair"] == "cat<->dog" and pairs[0]["total"] == 2
    assert pairs[0]["cat_as_dog"] == 1 and pairs[0]["dog_as_cat"] == 1
    assert pairs[1]["total"] == 1  # cat<->frog 1 + 0 and dog<->frog 0 + 1 tie: broken by name
    assert [p["pair"] for p in pairs] == ["cat<->dog", "cat<->frog"]


def test_summarize_from_logits():
    logits = torch.nn.functional.one_hot(torch.from_numpy(P), 3).float()
    m = summarize(Y, logits, ["a", "b", "c"], top_confused=3)
    assert m["test_acc"] == pytest.approx(0.6) and m["test_images"] == 10
    assert m["per_class_acc"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 2 / 3})


class _Counting(nn.Module):
    """A tiny fixed CNN that counts the images it sees (each forward pass of each view)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return self.fc(self.conv(x).amax(dim=(2, 3)))


def _images(n=40):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


MEAN, STD = torch.full((3,), 0.5), torch.full((3,), 0.25)


def test_tta_on_all_images_averages_the_mirror_and_the_shifted_copies():
    m, x = _Counting().eval(), _images()
    got = predict_logits(m, x, MEAN, STD, batch_size=16, tta_flip=True, tta_shift=1)
    xn = (x.float() / 255 - MEAN[:, None, None]) / STD[:, None, None]

    def views(v):
        return 0.5 * (m(v) + m(v.flip(3)))

    def moved(d):  # reflect-padded by 1, moved d pixels
        return torch.nn.functional.pad(xn, (1, 1, 1, 1), mode="reflect")[..., 1 - d : 33 - d, 1 - d : 33 - d]

    want = 0.5 * views(xn) + 0.25 * (views(moved(-1)) + views(moved(1)))
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_tta_on_the_least_confident_fraction_only():
    m, x = _Counting().eval(), _images()
    plain = predict_logits(m, x, MEAN, STD, batch_size=16)
    full = predict_logits(m, x, MEAN, STD, batch_size=16, tta_flip=True, tta_shift=1)
    m.seen = 0
    part = predict_logits(m, x, MEAN, STD, batch_size=16, tta_flip=True, tta_shift=1, tta_fraction=0.25)
    unsure = plain.softmax(1).max(1).values.argsort()[:10]  # the 10 of 40 the plain view is least sure of
    rest = torch.ones(len(x), dtype=torch.bool)
    rest[unsure] = False
    torch.testing.assert_close(part[unsure], full[unsure], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part[rest], plain[rest], rtol=0, atol=0)
    assert m.seen == 40 + 10 * 5  # one plain pass each, five more views for the ten: their plain view is reused
    flip_only = predict_logits(m, x, MEAN, STD, batch_size=16, tta_flip=True, tta_fraction=0.5)
    assert (flip_only != plain).any(dim=1).sum() == 20
    tiny = predict_logits(m, x, MEAN, STD, batch_size=16, tta_flip=True, tta_fraction=0.01)  # 0.4 of an image
    assert (tiny != plain).any(dim=1).sum() == 1  # rounded to none, TTA was off while eval.json said it was on


def test_channels_last_lays_out_the_model_too_and_scores_as_the_plain_layout():
    from src.models import build_model
    from tests.conftest import params_with

    torch.manual_seed(0)
    p = params_with({"model": {"name": "fast_cnn"}})
    model = build_model(p.model, 3).eval()
    x = _images()
    plain = predict_logits(model, x, MEAN, STD, batch_size=16)
    conv = model.features.group1.conv1.weight
    assert not conv.is_contiguous(memory_format=torch.channels_last)
    cl = predict_logits(model, x, MEAN, STD, batch_size=16, channels_last=True)
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the caller need not convert it
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-5)
