"""Stage `theory`: the operations of a CNN computed with src.teach.ops on small numbers and drawn,
plus the networks' shapes and parameter counts (the steps are in src/figures/lesson_steps.py)
→ plots/theory/*.png, metrics/theory.json."""

import numpy as np

from src import paths
from src.data.cifar import Subset
from src.figures import lesson_steps as steps
from src.figures import run_steps
from src.figures.background import figures_saved
from src.io import write_json
from src.params import Params, check_index
from stages._common import run_stage
from stages._parallel import cpu_threads

OUT = paths.PLOTS_THEORY


def main(p: Params) -> None:
    t = p.theory
    sub = Subset.load(paths.SUBSET)
    drawn = [
        steps.operations(np.random.default_rng(t.seed)),
        steps.networks(p.model, len(sub.classes)),
        steps.real_filters(sub, check_index("theory.image_index", t.image_index, len(sub.test_x), "test images")),
    ]
    with figures_saved(OUT, t.dpi, cpu_threads(p)[0]) as save:
        out = run_steps(drawn, save)
    write_json(paths.THEORY_METRICS, out)
    counts = ", ".join(f"{n} {d['total_params']:,}" for n, d in out["networks"].items())
    print(f"theory: {len(list(OUT.glob('*.png')))} figures in {OUT}; parameters: {counts}")


if __name__ == "__main__":
    run_stage("theory", main)
