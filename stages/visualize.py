"""Stage `visualize`: look inside the trained CNN → plots/visualize/*.png and plots/visualize.json
(filters, feature maps, Grad-CAM, curves, predictions, per-class accuracy, confusion, mistakes,
augmentation). Runs on the CPU; every choice is under `visualize:` in params.yaml."""
import csv
from pathlib import Path

import numpy as np
import torch

from src.augment import augment_batch, normalize
from src.data import Subset
from src.evaluation import confusion_matrix, evaluate, per_class_accuracy
from src.figures import inside, results
from src.io import read_json, save_figure, write_json
from src.training import load_trained
from stages._common import stage

OUT = Path("plots/visualize")


def read_history(root: Path = Path("dvclive/train/plots/metrics")) -> dict[str, list[float]]:
    hist = {}
    for split in ("train", "val"):
        for key in ("acc", "loss"):
            with open(root / split / f"{key}.tsv") as f:
                hist[f"{split}_{key}"] = [float(r[key]) for r in csv.DictReader(f, delimiter="\t")]
    return hist


if __name__ == "__main__":
    with stage("visualize") as p:
        v = p.visualize
        sub = Subset.load(Path("data/subset.pt"))
        model, ck = load_trained(Path("models/best.pt"), sub.classes)
        trained = ck["trained_params"]
        model.eval()
        mean, std = torch.tensor(ck["mean"]), torch.tensor(ck["std"])
        classes = sub.classes
        x, y = sub.test_x, sub.test_y
        rng = np.random.default_rng(v.seed)
        summary: dict = {"model": ck["model_name"], "classes": classes}
        for old in OUT.glob("*.png"):
            old.unlink()  # feature-map files depend on the classes: drop the last run's

        # 1. filters
        fig, d = inside.first_layer_filters(model)
        save_figure(fig, OUT / "filters_first_layer.png", v.dpi)
        summary["first_layer"] = {"layer": d["layer"], "tiles": len(d["tiles"]), "out_channels": d["out_channels"]}
        fig, d = inside.deep_layer_filters(model, v.deep_filter_layer, v.deep_filter_count, v.deep_filter_inputs)
        save_figure(fig, OUT / "filters_deep_layer.png", v.dpi)
        summary["deep_layer"] = {"layer": d["layer"], "weight_shape": list(d["shape"]),
                                 "shown": list(d["weights"].shape)}

        # 2. feature maps, images_per_class test images of each class
        layers = inside.feature_layers(model)
        summary["feature_maps"] = {}
        for c, name in enumerate(classes):
            picks = np.flatnonzero(y.numpy() == c)
            for k, idx in enumerate(rng.choice(picks, size=min(v.images_per_class, picks.size), replace=False)):
                img = x[int(idx)]
                acts = inside.activations(model, normalize(img[None], mean, std), layers)
                fig, shown = inside.feature_maps_figure(img, acts, v.feature_channels,
                                                        f"Feature maps of a test '{name}' image (test #{idx})")
                save_figure(fig, OUT / f"feature_maps_{name}_{k + 1}.png", v.dpi)
                summary["feature_maps"][f"{name}_{k + 1}"] = {
                    n: {"shape": list(s["shape"]), "panel_shape": list(s["panel_shape"])} for n, s in shown.items()}

        # predictions, exactly as the evaluate stage computes them
        res = evaluate(model, x, y, mean, std, batch_size=p.evaluate.batch_size, tta_flip=p.evaluate.tta_flip,
                       tta_shift=p.evaluate.tta_shift)
        probs = res["logits"].softmax(1)
        conf, pred = probs.max(1)
        pred, conf, yt = pred.numpy(), conf.numpy(), y.numpy()
        right, wrong = np.flatnonzero(pred == yt), np.flatnonzero(pred != yt)

        # 3. Grad-CAM on right and wrong test images
        picks = np.concatenate([rng.choice(right, min(v.gradcam_images, right.size), replace=False),
                                rng.choice(wrong, min(v.gradcam_images, wrong.size), replace=False)]).astype(int)
        cams = inside.gradcam_maps(model, normalize(x[picks], mean, std), pred[picks].tolist())
        layer_name = inside.conv_layers(model)[-1][0]
        save_figure(inside.gradcam_figure(x[picks], cams, [classes[i] for i in yt[picks]],
                                          [classes[i] for i in pred[picks]], conf[picks].tolist(), layer_name),
                    OUT / "gradcam.png", v.dpi)
        summary["gradcam"] = {"layer": layer_name, "right": int(min(v.gradcam_images, right.size)),
                              "wrong": int(min(v.gradcam_images, wrong.size)), "map_shape": list(cams.shape[1:])}

        # 4. training curves
        train_m = read_json("metrics/train.json")
        save_figure(results.training_curves(read_history(), train_m["best_epoch"]), OUT / "training_curves.png", v.dpi)

        # 5. sample predictions
        sample = rng.choice(len(yt), size=min(v.prediction_grid, len(yt)), replace=False)
        save_figure(results.prediction_grid(x[sample], yt[sample], pred[sample], conf[sample], classes),
                    OUT / "sample_predictions.png", v.dpi)

        # 6, 7. per-class accuracy and confusion
        cm = confusion_matrix(yt, pred, len(classes))
        acc = float(np.trace(cm) / cm.sum())
        pca = dict(zip(classes, per_class_accuracy(cm).tolist()))
        save_figure(results.per_class_bars(pca, acc), OUT / "per_class_accuracy.png", v.dpi)
        save_figure(results.confusion_figure(cm, classes), OUT / "confusion_matrix.png", v.dpi)
        summary["confusion"] = {"matrix": cm.tolist(), "total": int(cm.sum()), "accuracy": acc}

        # 8. the most confident mistakes
        worst = wrong[np.argsort(-conf[wrong], kind="stable")][: v.mistakes]
        if worst.size:
            save_figure(results.prediction_grid(x[worst], yt[worst], pred[worst], conf[worst], classes,
                                                title="The most confident mistakes"),
                        OUT / "confident_mistakes.png", v.dpi)
        summary["mistakes"] = {"shown": int(worst.size), "confidences": conf[worst].round(4).tolist()}

        # 9. augmentation examples from the configured training transform
        a = trained.augment
        img = sub.train_x[int(rng.integers(sub.train_x.shape[0]))]
        gen = torch.Generator().manual_seed(v.seed)
        aug = augment_batch(img[None].repeat(v.augment_examples, 1, 1, 1), a, gen)
        desc = ", ".join(s for s in (
            "random flip" if a.hflip else "", f"random crop (pad {a.crop_padding}, {a.crop_pad_mode})" if a.crop_padding else "",
            "AutoAugment (CIFAR10)" if a.autoaugment else "", f"cutout {a.cutout}" if a.cutout else "",
            f"+ MixUp α={a.mixup_alpha} on batches" if a.mixup_alpha else "") if s) or "none"
        save_figure(results.augmentation_figure(img, aug, desc), OUT / "augmentation.png", v.dpi)
        summary["augmentation"] = {"examples": int(aug.shape[0]), "description": desc}

        write_json("plots/visualize.json", summary)
        print(f"visualize: {len(list(OUT.glob('*.png')))} figures in {OUT}; test acc {acc:.4f}")
