"""Stage `theory`: the operations of a CNN computed with src.teach.ops on small numbers and drawn,
plus the networks' shapes and parameter counts (the steps are in src/figures/lesson_steps.py)
→ plots/theory/*.png, metrics/theory.json."""

import gc

import numpy as np

from src import paths
from src.figures import lesson_steps as steps
from src.figures import run_steps
from src.figures.background import figures_saved, forked
from src.io import write_json
from src.params import Params, TheoryParams, check_index
from stages._common import run_stage
from stages._launcher import share_of_cores

OUT = paths.PLOTS_THEORY


def main(p: Params) -> None:
    t = p.theory
    # The worked examples (figures 1-5) need NumPy and matplotlib only: a forked copy of this
    # process draws and saves them while this one imports torch (2-3 s of one core) for the rest,
    # where the stage may use a second core (`train.threads`, DVC's queue workers: asked before torch)
    threads = share_of_cores(p.train.threads)[0]
    with forked(lambda: worked_examples(t), "the worked examples (figures 1-5)", threads) as examples:
        from src.data.cifar import Subset
        from stages._parallel import cpu_threads

        gc.freeze()  # as run_stage does before `main`: what was just imported lives until exit
        sub = Subset.load(paths.SUBSET)
        index = check_index("theory.image_index", t.image_index, len(sub.test_x), "test images")
        with figures_saved(OUT, t.dpi, cpu_threads(p)[0]) as save:
            rest = run_steps([steps.networks(p.model, len(sub.classes)), steps.real_filters(sub, index)], save)
        out = {**examples(), **rest}  # the figures' order, as one process drawing them all would
    write_json(paths.THEORY_METRICS, out)
    counts = ", ".join(f"{n} {d['total_params']:,}" for n, d in out["networks"].items())
    print(f"theory: {len(list(OUT.glob('*.png')))} figures in {OUT}; parameters: {counts}")


def worked_examples(t: TheoryParams) -> dict:
    """Figures 1-5 saved in plots/theory, one after the other (in this process); their numbers."""
    with figures_saved(OUT, t.dpi, threads=1) as save:
        return run_steps([steps.operations(np.random.default_rng(t.seed))], save)


if __name__ == "__main__":
    run_stage("theory", main)
