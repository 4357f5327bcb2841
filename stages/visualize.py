"""Stage `visualize`: look inside the trained CNN → plots/visualize/*.png and plots/visualize.json
(filters, feature maps, Grad-CAM, curves, predictions, per-class accuracy, confusion, mistakes,
augmentation; the steps are in src/figures/visualize_steps.py). Predictions come from the evaluate
stage's plots/eval/predictions.csv and the top patches from its models/test_responses.pt (found on
the device and in the layout evaluate ran), not a second pass over the test set. Runs on the CPU;
every choice is under `visualize:` in params.yaml."""

import numpy as np
import torch

from src import paths
from src.data.cifar import Subset
from src.figures import run_steps
from src.figures import visualize_steps as steps
from src.figures.background import figures_saved
from src.io import atomic_dir, read_dvclive_history, read_json, write_json
from src.models import check_filter_layer
from src.params import Params
from src.teach.probe import read_responses
from src.training.checkpoints import load_trained
from src.training.evaluation import read_predictions
from stages._common import run_stage
from stages._parallel import cpu_threads, use_cpu

OUT = paths.PLOTS_VISUALIZE


def load_inputs(p: Params) -> steps.Inputs:
    sub = Subset.load(paths.SUBSET)
    model, ck = load_trained(paths.BEST, sub.classes)
    # the checkpoint's model name: the GPU recipe's where it trained
    check_filter_layer(model, p.visualize.deep_filter_layer, ck["model_params"].name)
    _, pred, conf = read_predictions(paths.PREDICTIONS, sub.classes, sub.test_y.numpy())
    responses = read_responses(paths.TEST_RESPONSES, model, sub.test_x)
    return steps.Inputs(
        p.visualize,
        model.eval(),
        ck,
        sub,
        torch.tensor(ck["mean"]),
        torch.tensor(ck["std"]),
        pred,
        conf,
        np.random.default_rng(p.visualize.seed),
        history=read_dvclive_history(paths.DVCLIVE_METRICS),
        best_epoch=read_json(paths.TRAIN_METRICS, keys=("best_epoch",))["best_epoch"],
        responses=responses,
    )


def main(p: Params) -> None:
    use_cpu(p)
    a = load_inputs(p)
    summary: dict = {"model": a.ck["model_name"], "classes": a.classes}
    with atomic_dir(OUT) as out:  # the last run's files go (feature maps are named by class) only on success
        with figures_saved(out, a.v.dpi, cpu_threads(p)[0]) as save:
            summary.update(run_steps(steps.drawn(a), save))
        write_json(paths.VISUALIZE_SUMMARY, summary)
    print(
        f"visualize: {len(list(OUT.glob('*.png')))} figures in {OUT}; test acc {summary['confusion']['accuracy']:.4f}"
    )


if __name__ == "__main__":
    run_stage("visualize", main)
