"""The visualize stage's steps: look inside a trained CNN and draw what it does.

Each step takes the loaded `Inputs`, yields `(file name, figure)` as it draws each figure (the
stage saves it and closes it before the next is drawn: dozens of feature-map figures never stay
open together) and returns the numbers it drew, for plots/visualize.json (`src.figures.run_steps`
does both). No step reads or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from src.data.augment import augment_batch, color_jitter
from src.data.cifar import Subset, normalize
from src.figures import Drawn, inside, results
from src.params import VisualizeParams
from src.teach.probe import crop, select_patches
from src.training.evaluation import confusion_matrix, per_class_accuracy


@dataclass
class Inputs:
    """What the steps share: the trained model, the test split, the evaluate stage's predictions, the training log."""

    v: VisualizeParams
    model: torch.nn.Module
    ck: dict
    sub: Subset
    mean: torch.Tensor
    std: torch.Tensor
    pred: np.ndarray  # (N,) predicted class of each test image
    conf: np.ndarray  # (N,) its probability
    rng: np.random.Generator
    history: dict[str, list[float]]  # DVCLive's per-epoch {train,val}_{acc,loss}
    best_epoch: int
    responses: dict  # the evaluate stage's StrongestResponses.top(): each conv channel's strongest test images

    @property
    def classes(self) -> list[str]:
        return self.sub.classes


def filters(a: Inputs) -> Drawn:
    fig, d = inside.first_layer_filters(a.model)
    yield "filters_first_layer.png", fig
    first = {"layer": d["layer"], "tiles": len(d["tiles"]), "out_channels": d["out_channels"], "learned": d["learned"]}
    fig, d = inside.deep_layer_filters(a.model, a.v.deep_filter_layer, a.v.deep_filter_count, a.v.deep_filter_inputs)
    yield "filters_deep_layer.png", fig
    deep = {"layer": d["layer"], "weight_shape": list(d["shape"]), "shown": list(d["weights"].shape)}
    return {"first_layer": first, "deep_layer": deep}


def feature_maps(a: Inputs) -> Drawn:
    """`images_per_class` test images of each class through every feature layer."""
    layers, shown = a.model.feature_layers(), {}
    x, y = a.sub.split("test")
    for c, name in enumerate(a.classes):
        picks = np.flatnonzero(y.numpy() == c)
        for k, idx in enumerate(a.rng.choice(picks, size=min(a.v.images_per_class, picks.size), replace=False)):
            img = x[int(idx)]
            acts = inside.activations(a.model, normalize(img[None], a.mean, a.std), layers)
            fig, maps = inside.feature_maps_figure(
                img, acts, a.v.feature_channels, f"Feature maps of a test '{name}' image (test #{idx})"
            )
            yield f"feature_maps_{name}_{k + 1}.png", fig
            shown[f"{name}_{k + 1}"] = {
                n: {"shape": list(s["shape"]), "panel_shape": list(s["panel_shape"])} for n, s in maps.items()
            }
    return {"feature_maps": shown}


def gradcam(a: Inputs) -> Drawn:
    """Grad-CAM of the predicted class on right and wrong test images."""
    x, y = a.sub.split("test")
    yt = y.numpy()
    right, wrong = np.flatnonzero(a.pred == yt), np.flatnonzero(a.pred != yt)
    n_right, n_wrong = min(a.v.gradcam_images, right.size), min(a.v.gradcam_images, wrong.size)
    picks = np.concatenate(
        [a.rng.choice(right, n_right, replace=False), a.rng.choice(wrong, n_wrong, replace=False)]
    ).astype(int)
    xn = normalize(x[picks], a.mean, a.std)
    cams = inside.gradcam_maps(a.model, xn, a.pred[picks].tolist())
    layer = inside.conv_layers(a.model)[-1][0]
    size = inside.map_size(a.model, layer, xn)  # the map's own size, before the upsampling to the input's
    yield (
        "gradcam.png",
        inside.gradcam_figure(
            x[picks],
            cams,
            [a.classes[i] for i in yt[picks]],
            [a.classes[i] for i in a.pred[picks]],
            a.conf[picks].tolist(),
            layer,
            size,
        ),
    )
    return {
        "gradcam": {
            "layer": layer,
            "right": int(n_right),
            "wrong": int(n_wrong),
            "map_shape": list(cams.shape[1:]),
            "layer_map_shape": list(size),
        }
    }


def training_curves(a: Inputs) -> Drawn:
    smoothing = a.ck["params"]["train"]["label_smoothing"]
    yield "training_curves.png", results.training_curves(a.history, a.best_epoch, smoothing)
    return {}


def class_results(a: Inputs) -> Drawn:
    """Sample predictions, per-class accuracy, the confusion matrix and the most confident mistakes."""
    x, y = a.sub.split("test")
    yt = y.numpy()
    sample = a.rng.choice(len(yt), size=min(a.v.prediction_grid, len(yt)), replace=False)
    yield (
        "sample_predictions.png",
        results.prediction_grid(x[sample], yt[sample], a.pred[sample], a.conf[sample], a.classes),
    )
    cm = confusion_matrix(yt, a.pred, len(a.classes))
    acc = float(np.trace(cm) / cm.sum())
    yield "per_class_accuracy.png", results.per_class_bars(dict(zip(a.classes, per_class_accuracy(cm).tolist())), acc)
    yield "confusion_matrix.png", results.confusion_figure(cm, a.classes)
    wrong = np.flatnonzero(a.pred != yt)
    worst = wrong[np.argsort(-a.conf[wrong], kind="stable")][: a.v.mistakes]
    if worst.size:
        yield (
            "confident_mistakes.png",
            results.prediction_grid(
                x[worst], yt[worst], a.pred[worst], a.conf[worst], a.classes, title="The most confident mistakes"
            ),
        )
    return {
        "confusion": {"matrix": cm.tolist(), "total": int(cm.sum()), "accuracy": acc},
        "mistakes": {"shown": int(worst.size), "confidences": a.conf[worst].round(4).tolist()},
    }


def describe_augmentation(aug_p) -> str:
    """The training transform in words, for the figure's title."""
    return (
        ", ".join(
            s
            for s in (
                {"alternate": "each image mirrored every other epoch", True: "random flip"}.get(aug_p.hflip, ""),
                f"random crop (pad {aug_p.crop_padding}, {aug_p.crop_pad_mode})" if aug_p.crop_padding else "",
                "AutoAugment (CIFAR10)" if aug_p.autoaugment else "",
                f"cutout {aug_p.cutout}" if aug_p.cutout else "",
                f"brightness ±{aug_p.brightness:g} sd" if aug_p.brightness else "",
                f"contrast ×(1 ± {aug_p.contrast:g})" if aug_p.contrast else "",
                f"+ MixUp α={aug_p.mixup_alpha} on batches" if aug_p.mixup_alpha else "",
            )
            if s
        )
        or "none"
    )


def color_jitter_pixels(
    x: torch.Tensor, brightness: float, contrast: float, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """`color_jitter` on a uint8 batch as training applies it (after normalising with `mean`/`std`),
    back in uint8 pixels, clipped: the picture of what the model was shown."""
    if brightness == 0 and contrast == 0:
        return x
    m, s = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    jittered = color_jitter(normalize(x, mean, std), brightness, contrast, gen)
    return ((jittered * s + m) * 255).round().clamp(0, 255).to(torch.uint8)


def augmentation(a: Inputs) -> Drawn:
    """One training image through the training transform the model was trained with."""
    aug_p = a.ck["augment_params"]
    img = a.sub.train_x[int(a.rng.integers(a.sub.train_x.shape[0]))]
    gen = torch.Generator().manual_seed(a.v.seed)
    aug = augment_batch(img[None].repeat(a.v.augment_examples, 1, 1, 1), aug_p, gen)
    aug = color_jitter_pixels(aug, aug_p.brightness, aug_p.contrast, a.mean, a.std, gen)
    desc = describe_augmentation(aug_p)
    yield "augmentation.png", results.augmentation_figure(img, aug, desc)
    return {"augmentation": {"examples": int(aug.shape[0]), "description": desc}}


def what_excites(a: Inputs) -> Drawn:
    """Per conv layer, the test patches that excite its most responsive channels most (Zeiler & Fergus)."""
    x, _ = a.sub.split("test")
    found = {}
    for t in select_patches(a.model, a.responses, a.v.patch_top, a.v.patch_channels, x.shape[-1]):
        crops = [
            [crop(x[int(t.images[r, q])], t.field.box(*map(int, t.positions[r, q]))) for q in range(t.images.shape[1])]
            for r in range(len(t.channels))
        ]
        yield f"top_patches_{t.layer.replace('.', '_')}.png", inside.top_patches_figure(t, crops)
        found[t.layer] = {
            "learned": t.learned,
            "receptive_field": t.field.size,
            "channels": t.channels,
            "images": t.images.tolist(),
            "positions": t.positions.tolist(),
            "values": t.values.round(4).tolist(),
        }
    return {"top_patches": found}


# in this order: the steps draw their random picks from one generator, one after another
STEPS = (filters, feature_maps, gradcam, training_curves, class_results, augmentation, what_excites)


def drawn(a: Inputs) -> list[Drawn]:
    """Every step on `a`, in STEPS order (a generator does nothing until it is run, so the random
    picks still come in this order)."""
    return [step(a) for step in STEPS]
