"""Stage `visualize`: look inside the trained CNN → plots/visualize/*.png and plots/visualize.json
(filters, feature maps, Grad-CAM, curves, predictions, per-class accuracy, confusion, mistakes,
augmentation). Predictions come from the evaluate stage's plots/eval/predictions.csv, not a second
pass over the test set. Runs on the CPU; every choice is under `visualize:` in params.yaml."""
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.augment import augment_batch
from src.checkpoints import load_trained
from src.data import Subset, normalize
from src.errors import DataError
from src.evaluation import confusion_matrix, per_class_accuracy, read_predictions
from src.figures import inside, results
from src.io import read_json, save_figure, write_json
from src.params import Params, VisualizeParams
from stages._common import cpu_threads, run_stage

OUT = Path("plots/visualize")


@dataclass
class Inputs:
    """What the steps below share: the trained model, the test split and the evaluate stage's predictions."""
    v: VisualizeParams
    model: torch.nn.Module
    ck: dict
    sub: Subset
    mean: torch.Tensor
    std: torch.Tensor
    pred: np.ndarray   # (N,) predicted class of each test image
    conf: np.ndarray   # (N,) its probability
    rng: np.random.Generator

    @property
    def classes(self) -> list[str]:
        return self.sub.classes


def load_inputs(p: Params) -> Inputs:
    sub = Subset.load(Path("data/subset.pt"))
    model, ck = load_trained(Path("models/best.pt"), sub.classes)
    true, pred, conf = read_predictions("plots/eval/predictions.csv", sub.classes)
    if not np.array_equal(true, sub.test_y.numpy()):
        raise DataError("plots/eval/predictions.csv: not this test split's predictions; run dvc repro evaluate")
    return Inputs(p.visualize, model.eval(), ck, sub, torch.tensor(ck["mean"]), torch.tensor(ck["std"]),
                  pred, conf, np.random.default_rng(p.visualize.seed))


def filters(a: Inputs) -> dict:
    fig, d = inside.first_layer_filters(a.model)
    save_figure(fig, OUT / "filters_first_layer.png", a.v.dpi)
    first = {"layer": d["layer"], "tiles": len(d["tiles"]), "out_channels": d["out_channels"], "learned": d["learned"]}
    fig, d = inside.deep_layer_filters(a.model, a.v.deep_filter_layer, a.v.deep_filter_count, a.v.deep_filter_inputs)
    save_figure(fig, OUT / "filters_deep_layer.png", a.v.dpi)
    deep = {"layer": d["layer"], "weight_shape": list(d["shape"]), "shown": list(d["weights"].shape)}
    return {"first_layer": first, "deep_layer": deep}


def feature_maps(a: Inputs) -> dict:
    """`images_per_class` test images of each class through every feature layer."""
    layers, shown = a.model.feature_layers(), {}
    x, y = a.sub.split("test")
    for c, name in enumerate(a.classes):
        picks = np.flatnonzero(y.numpy() == c)
        for k, idx in enumerate(a.rng.choice(picks, size=min(a.v.images_per_class, picks.size), replace=False)):
            img = x[int(idx)]
            acts = inside.activations(a.model, normalize(img[None], a.mean, a.std), layers)
            fig, maps = inside.feature_maps_figure(img, acts, a.v.feature_channels,
                                                   f"Feature maps of a test '{name}' image (test #{idx})")
            save_figure(fig, OUT / f"feature_maps_{name}_{k + 1}.png", a.v.dpi)
            shown[f"{name}_{k + 1}"] = {n: {"shape": list(s["shape"]), "panel_shape": list(s["panel_shape"])}
                                        for n, s in maps.items()}
    return {"feature_maps": shown}


def gradcam(a: Inputs) -> dict:
    """Grad-CAM of the predicted class on right and wrong test images."""
    x, y = a.sub.split("test")
    yt = y.numpy()
    right, wrong = np.flatnonzero(a.pred == yt), np.flatnonzero(a.pred != yt)
    n_right, n_wrong = min(a.v.gradcam_images, right.size), min(a.v.gradcam_images, wrong.size)
    picks = np.concatenate([a.rng.choice(right, n_right, replace=False),
                            a.rng.choice(wrong, n_wrong, replace=False)]).astype(int)
    xn = normalize(x[picks], a.mean, a.std)
    cams = inside.gradcam_maps(a.model, xn, a.pred[picks].tolist())
    layer, conv = inside.conv_layers(a.model)[-1]
    size = inside.map_size(a.model, conv, xn)  # the map's own size, before the upsampling to the input's
    save_figure(inside.gradcam_figure(x[picks], cams, [a.classes[i] for i in yt[picks]],
                                      [a.classes[i] for i in a.pred[picks]], a.conf[picks].tolist(), layer, size),
                OUT / "gradcam.png", a.v.dpi)
    return {"gradcam": {"layer": layer, "right": int(n_right), "wrong": int(n_wrong),
                        "map_shape": list(cams.shape[1:]), "layer_map_shape": list(size)}}


def read_history(root: Path = Path("dvclive/train/plots/metrics")) -> dict[str, list[float]]:
    """The per-epoch logs DVCLive wrote: {train,val}_{acc,loss} → values by epoch."""
    hist = {}
    for split in ("train", "val"):
        for key in ("acc", "loss"):
            with open(root / split / f"{key}.tsv") as f:
                hist[f"{split}_{key}"] = [float(r[key]) for r in csv.DictReader(f, delimiter="\t")]
    return hist


def training_curves(a: Inputs) -> dict:
    best = read_json("metrics/train.json")["best_epoch"]
    smoothing = a.ck["params"]["train"]["label_smoothing"]
    save_figure(results.training_curves(read_history(), best, smoothing), OUT / "training_curves.png", a.v.dpi)
    return {}


def class_results(a: Inputs) -> dict:
    """Sample predictions, per-class accuracy, the confusion matrix and the most confident mistakes."""
    x, y = a.sub.split("test")
    yt = y.numpy()
    sample = a.rng.choice(len(yt), size=min(a.v.prediction_grid, len(yt)), replace=False)
    save_figure(results.prediction_grid(x[sample], yt[sample], a.pred[sample], a.conf[sample], a.classes),
                OUT / "sample_predictions.png", a.v.dpi)
    cm = confusion_matrix(yt, a.pred, len(a.classes))
    acc = float(np.trace(cm) / cm.sum())
    save_figure(results.per_class_bars(dict(zip(a.classes, per_class_accuracy(cm).tolist())), acc),
                OUT / "per_class_accuracy.png", a.v.dpi)
    save_figure(results.confusion_figure(cm, a.classes), OUT / "confusion_matrix.png", a.v.dpi)
    wrong = np.flatnonzero(a.pred != yt)
    worst = wrong[np.argsort(-a.conf[wrong], kind="stable")][: a.v.mistakes]
    if worst.size:
        save_figure(results.prediction_grid(x[worst], yt[worst], a.pred[worst], a.conf[worst], a.classes,
                                            title="The most confident mistakes"),
                    OUT / "confident_mistakes.png", a.v.dpi)
    return {"confusion": {"matrix": cm.tolist(), "total": int(cm.sum()), "accuracy": acc},
            "mistakes": {"shown": int(worst.size), "confidences": a.conf[worst].round(4).tolist()}}


def augmentation(a: Inputs) -> dict:
    """One training image through the training transform the model was trained with."""
    aug_p = a.ck["augment_params"]
    img = a.sub.train_x[int(a.rng.integers(a.sub.train_x.shape[0]))]
    aug = augment_batch(img[None].repeat(a.v.augment_examples, 1, 1, 1), aug_p,
                        torch.Generator().manual_seed(a.v.seed))
    desc = ", ".join(s for s in (
        "random flip" if aug_p.hflip else "",
        f"random crop (pad {aug_p.crop_padding}, {aug_p.crop_pad_mode})" if aug_p.crop_padding else "",
        "AutoAugment (CIFAR10)" if aug_p.autoaugment else "", f"cutout {aug_p.cutout}" if aug_p.cutout else "",
        f"+ MixUp α={aug_p.mixup_alpha} on batches" if aug_p.mixup_alpha else "") if s) or "none"
    save_figure(results.augmentation_figure(img, aug, desc), OUT / "augmentation.png", a.v.dpi)
    return {"augmentation": {"examples": int(aug.shape[0]), "description": desc}}


def what_excites(a: Inputs) -> dict:
    """Per conv layer, the test patches that excite its most responsive channels most (Zeiler & Fergus)."""
    from src.probe import crop, top_patches

    x, _ = a.sub.split("test")
    found = {}
    for t in top_patches(a.model, normalize(x, a.mean, a.std), a.v.patch_top, a.v.patch_channels):
        crops = [[crop(x[int(t.images[r, q])], t.field.box(*map(int, t.positions[r, q])))
                  for q in range(t.images.shape[1])] for r in range(len(t.channels))]
        save_figure(inside.top_patches_figure(t, crops), OUT / f"top_patches_{t.layer.replace('.', '_')}.png", a.v.dpi)
        found[t.layer] = {"learned": t.learned, "receptive_field": t.field.size, "channels": t.channels,
                          "images": t.images.tolist(), "positions": t.positions.tolist(),
                          "values": t.values.round(4).tolist()}
    return {"top_patches": found}


STEPS = (filters, feature_maps, gradcam, training_curves, class_results, augmentation, what_excites)  # the order draws the random picks


def main(p: Params) -> None:
    torch.set_num_threads(cpu_threads(p)[0])
    a = load_inputs(p)
    for old in OUT.glob("*.png"):
        old.unlink()  # feature-map files depend on the classes: drop the last run's
    summary: dict = {"model": a.ck["model_name"], "classes": a.classes}
    for step in STEPS:
        summary.update(step(a))
    write_json("plots/visualize.json", summary)
    print(f"visualize: {len(list(OUT.glob('*.png')))} figures in {OUT}; test acc {summary['confusion']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage("visualize", main)
