"""Stage `stats`: select the subset (classes, per-class counts, validation hold-out) into
data/subset.pt; its per-channel mean/std and counts into metrics/stats.json; data figures."""

import numpy as np

from src import paths
from src.data.cifar import class_counts_csv, select_subset, subset_stats
from src.data.raw import BATCHES_DIR, load_cifar10, read_class_names
from src.figures.dataset import class_distribution, samples_per_class
from src.io import save_figure, write_json, write_text
from src.params import Params
from stages._common import run_stage

RAW = paths.RAW / BATCHES_DIR


def main(p: Params) -> None:
    d = p.data
    sub = select_subset(
        load_cifar10(RAW),
        read_class_names(RAW),
        d.class_names,
        d.train_per_class,
        d.val_per_class,
        d.test_per_class,
        d.seed,
    )
    stats = subset_stats(sub, d)
    sub.save(paths.SUBSET)
    write_json(paths.STATS, stats)
    write_text(paths.CLASS_COUNTS, class_counts_csv(stats["per_class"]))
    save_figure(samples_per_class(sub.train_x, sub.train_y, sub.classes), paths.SAMPLES_PER_CLASS)
    save_figure(class_distribution(stats["per_class"], sub.classes), paths.CLASS_DISTRIBUTION)
    print(
        f"stats: {len(sub.classes)} classes, train/val/test = {sub.train_y.numel()}/"
        f"{sub.val_y.numel()}/{sub.test_y.numel()}; mean {np.round(stats['mean'], 4).tolist()} "
        f"std {np.round(stats['std'], 4).tolist()}"
    )


if __name__ == "__main__":
    run_stage("stats", main)
