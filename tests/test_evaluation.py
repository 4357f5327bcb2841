"""Metrics against a confusion matrix computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.training.evaluation import confusion_matrix, macro_f1, most_confused, per_class_accuracy, summarize

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
