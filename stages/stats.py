"""Stage `stats`: select the subset (classes, per-class counts, validation hold-out) into
data/subset.pt; its per-channel mean/std and counts into metrics/stats.json; data figures."""
from pathlib import Path

import numpy as np

from src.data import BATCHES_DIR, channel_stats, load_cifar10, normalization, read_class_names, select_subset
from src.figures.data import class_distribution, samples_per_class
from src.io import save_figure, write_json, write_text
from src.params import Params
from stages._common import run_stage

RAW = Path("data/raw") / BATCHES_DIR


def main(p: Params) -> None:
    d = p.data
    sub = select_subset(load_cifar10(RAW), read_class_names(RAW), d.class_names, d.train_per_class,
                        d.val_per_class, d.test_per_class, d.seed)
    mean, std = channel_stats(sub.train_x)
    use_mean, use_std = normalization(d, mean, std)
    counts = {s: {c: int((sub.split(s)[1] == i).sum()) for i, c in enumerate(sub.classes)}
              for s in ("train", "val", "test")}
    sub.save(Path("data/subset.pt"))
    write_json("metrics/stats.json", {
        "classes": sub.classes, "num_classes": len(sub.classes),
        "train_images": int(sub.train_y.numel()), "val_images": int(sub.val_y.numel()),
        "test_images": int(sub.test_y.numel()),
        "mean": mean, "std": std, "normalize": d.normalize if isinstance(d.normalize, str) else "custom",
        "normalize_mean": use_mean, "normalize_std": use_std, "per_class": counts,
    })
    rows = ["class,split,images"] + [f"{c},{s},{n}" for s, cs in counts.items() for c, n in cs.items()]
    write_text("plots/data/class_counts.csv", "\n".join(rows) + "\n")
    save_figure(samples_per_class(sub.train_x, sub.train_y, sub.classes), "plots/data/samples_per_class.png")
    save_figure(class_distribution(counts, sub.classes), "plots/data/class_distribution.png")
    print(f"stats: {len(sub.classes)} classes, train/val/test = {sub.train_y.numel()}/"
          f"{sub.val_y.numel()}/{sub.test_y.numel()}; mean {np.round(mean, 4).tolist()} "
          f"std {np.round(std, 4).tolist()}")


if __name__ == "__main__":
    run_stage("stats", main)
