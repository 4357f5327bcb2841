"""Evaluation: batched prediction (flip/shift TTA on the least confident images, or all) and the
metrics built on a confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.data.cifar import normalize
from src.errors import DataError
from src.training.runtime import autocast_for


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x translated by (dy, dx) pixels, the uncovered border filled by reflection."""
    s = max(abs(dy), abs(dx))
    xp = F.pad(x, (s, s, s, s), mode="reflect")
    h, w = x.shape[-2:]
    return xp[..., s - dy : s - dy + h, s - dx : s - dx + w]


def _tta(model: nn.Module, xb: torch.Tensor, plain: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """The test-time augmented logits of a batch whose plain logits are known: the mirror averaged
    in (`flip`), then copies moved by `shift` pixels up-left and down-right (weights 1/2, 1/4, 1/4)."""

    def views(v: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        logits = model(v).float() if known is None else known
        return 0.5 * (logits + model(v.flip(3)).float()) if flip else logits

    logits = views(xb, plain)
    if shift:
        logits = 0.5 * logits + 0.25 * (views(_shifted(xb, -shift, -shift)) + views(_shifted(xb, shift, shift)))
    return logits


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 1000,
    tta_flip: bool = False,
    tta_shift: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    tta_fraction: float = 1.0,
    plain_pass: Callable[[], AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU for uint8 images x (N, 3, H, W), in large batches.

    Test-time augmentation: `tta_flip` averages each image with its mirror; `tta_shift` > 0 also
    averages copies moved by that many pixels up-left and down-right (weights 1/2, 1/4, 1/4).
    `tta_fraction` < 1 augments only that fraction of the images, those the plain view is least
    sure of (lowest top probability): the confident ones rarely change their answer, and TTA costs
    five more forward passes an image. `channels_last` lays out the model's weights (in place, a
    no-op when they already are) and every batch channels-last. `plain_pass`, where given, is entered
    around each plain forward pass, never TTA's other views (the evaluate stage records the strongest
    conv responses there for the visualize stage's top patches)."""
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    device = mean.device
    dtype = next((t.dtype for t in model.parameters() if t.dtype in (torch.bfloat16, torch.float16)), None)
    tta = tta_flip or tta_shift > 0

    def prepared(xb: torch.Tensor) -> torch.Tensor:
        xb = normalize(xb.to(device, non_blocking=True), mean, std)
        if dtype is not None:  # a model kept in half precision (train.half)
            xb = xb.to(dtype)
        return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb

    def run(xs: torch.Tensor, augmented: bool, known: torch.Tensor | None = None) -> torch.Tensor:
        out = []
        for i, xb in enumerate(xs.split(batch_size)):
            xb = prepared(xb)
            with autocast_for(device, amp):
                if known is None:
                    with plain_pass() if plain_pass else nullcontext():
                        plain = model(xb).float()
                else:
                    plain = known[i * batch_size :][:batch_size].to(device)
                out.append((_tta(model, xb, plain, tta_flip, tta_shift) if augmented else plain).cpu())
        return torch.cat(out)

    if not tta or tta_fraction >= 1:
        return run(x, tta)
    logits = run(x, False)
    # at least one image: a fraction under 0.5 / N rounded to none while the metrics said TTA was on
    unsure = logits.softmax(1).max(1).values.argsort(stable=True)[: max(1, round(tta_fraction * len(x)))]
    if len(unsure):
        logits[unsure] = run(x[unsure], True, logits[unsure])  # their plain views, not recomputed
    return logits


def tta_options(e) -> dict:
    """predict_logits' keywords from params.yaml's evaluate section (the stage and `src.verify` alike)."""
    keys = ("batch_size", "tta_flip", "tta_shift", "tta_fraction")
    return {k: getattr(e, k) for k in keys}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, **kw) -> dict:
    """{'loss', 'acc', 'logits'} of `model` on (x, y)."""
    logits = predict_logits(model, x, mean, std, **kw)
    loss = F.cross_entropy(logits, y.cpu()).item()
    acc = (logits.argmax(1) == y.cpu()).float().mean().item()
    return {"loss": loss, "acc": acc, "logits": logits}


def score_test(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    e,
    classes: list[str],
    channels_last: bool = False,
    plain_pass: Callable[[], AbstractContextManager] | None = None,
) -> tuple[dict, torch.Tensor]:
    """(metrics, logits) of `model` on the test images (x, y) scored as params.yaml's evaluate
    section `e` says: the evaluate stage and `src.verify` both call this, so they agree to the digit.
    `plain_pass`: as predict_logits takes it."""
    options = tta_options(e)
    res = evaluate(model, x, y, mean, std, channels_last=channels_last, plain_pass=plain_pass, **options)
    metrics = summarize(y.numpy(), res["logits"], classes, e.top_confused, res["loss"])
    metrics.update({k: v for k, v in options.items() if k != "batch_size"})  # how it was scored
    return metrics, res["logits"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of images of class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class: diagonal over row sums (NaN for a class with no images)."""
    rows = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean over classes of F1 = 2·TP / (2·TP + FP + FN)."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1.mean())


def most_confused(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict]:
    """The `n` unordered class pairs with the most mistakes in either direction (a↔b)."""
    k = len(classes)
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            a_as_b, b_as_a = int(cm[i, j]), int(cm[j, i])
            if a_as_b + b_as_a:
                pairs.append(
                    {
                        "pair": f"{classes[i]}<->{classes[j]}",
                        "total": a_as_b + b_as_a,
                        f"{classes[i]}_as_{classes[j]}": a_as_b,
                        f"{classes[j]}_as_{classes[i]}": b_as_a,
                    }
                )
    pairs.sort(key=lambda d: (-d["total"], d["pair"]))
    return pairs[:n]


def summarize(
    y_true: np.ndarray, logits: torch.Tensor, classes: list[str], top_confused: int = 5, loss: float | None = None
) -> dict:
    """The evaluate stage's metrics from true labels and logits."""
    y_pred = logits.argmax(1).numpy()
    cm = confusion_matrix(y_true, y_pred, len(classes))
    pca = per_class_accuracy(cm)
    out = {"test_acc": float(np.trace(cm) / cm.sum()), "macro_f1": macro_f1(cm)}  # what a reviewer reads first
    if loss is not None:
        out["test_loss"] = float(loss)
    out.update(
        {
            "per_class_acc": {c: float(a) for c, a in zip(classes, pca)},
            "test_images": int(cm.sum()),
            "most_confused": most_confused(cm, classes, top_confused),
        }
    )
    return out


def predictions_csv(y_true: np.ndarray, logits: torch.Tensor, classes: list[str]) -> str:
    """One row per image, in order: actual,predicted,confidence (DVC's confusion plots read it)."""
    pred = logits.argmax(1).numpy()
    conf = logits.softmax(1).max(1).values.numpy()
    return "actual,predicted,confidence\n" + "".join(
        f"{classes[a]},{classes[b]},{c:.4f}\n" for a, b, c in zip(y_true, pred, conf)
    )


def per_class_csv(per_class_acc: dict[str, float]) -> str:
    """class,accuracy rows, one per class (the bars of `dvc plots`)."""
    return "class,accuracy\n" + "".join(f"{c},{a:.4f}\n" for c, a in per_class_acc.items())


def read_predictions(path, classes: list[str], test_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true, predicted, confidence) arrays back from a `predictions_csv` file, one row per test
    image of the split whose labels are `test_y`; a DataError when the file is not that split's."""
    import csv

    index = {c: i for i, c in enumerate(classes)}
    stale = f"{path}: not this test split's predictions; run `dvc repro evaluate`"
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        true = np.array([index[r["actual"]] for r in rows], dtype=np.int64)
        pred = np.array([index[r["predicted"]] for r in rows], dtype=np.int64)
        conf = np.array([float(r["confidence"]) for r in rows])
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `dvc repro evaluate`") from None
    except (KeyError, ValueError, TypeError, csv.Error) as exc:  # another file, or one cut short
        raise DataError(f"{stale} ({type(exc).__name__}: {exc})") from None
    if not np.array_equal(true, np.asarray(test_y)):
        raise DataError(stale)
    return true, pred, conf
