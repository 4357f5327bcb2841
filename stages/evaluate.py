"""Stage `evaluate`: models/best.pt on the subset's test split → metrics/eval.json,
plots/eval/predictions.csv (one row per test image, in test order: the confusion plots, and the
visualize stage's predictions), plots/eval/per_class.csv (bars) and models/test_responses.pt (each
conv channel's most exciting test images, noted during the plain pass: the visualize stage's top
patches without a second pass over the test set)."""

import torch

from src import paths
from src.data.cifar import Subset
from src.io import atomic_torch_save, write_json, write_text
from src.params import Params
from src.teach.probe import StrongestResponses, fingerprint
from src.training.checkpoints import load_trained
from src.training.evaluation import per_class_csv, predictions_csv, score_test
from src.training.runtime import resolve_device, uses_channels_last
from stages._common import run_stage
from stages._parallel import use_cpu


def main(p: Params) -> None:
    use_cpu(p)
    sub = Subset.load(paths.SUBSET)
    model, ck = load_trained(paths.BEST, sub.classes)
    device = resolve_device(p.train.device)
    model.to(device)
    mean, std = torch.tensor(ck["mean"], device=device), torch.tensor(ck["std"], device=device)
    x, y = sub.split("test")
    channels_last = uses_channels_last(p.train.channels_last, device)
    responses = StrongestResponses(model)
    try:
        metrics, logits = score_test(model, x, y, mean, std, p.evaluate, sub.classes, channels_last, responses.armed)
    finally:
        responses.close()
    metrics["best_epoch"] = ck["epoch"]
    write_text(paths.PREDICTIONS, predictions_csv(y.numpy(), logits, sub.classes))
    write_text(paths.PER_CLASS, per_class_csv(metrics["per_class_acc"]))
    atomic_torch_save({**responses.top(), "fingerprint": fingerprint(model, x)}, paths.TEST_RESPONSES)
    write_json(paths.EVAL_METRICS, metrics)
    pairs = ", ".join(f"{d['pair']} ({d['total']})" for d in metrics["most_confused"][:3])
    print(
        f"evaluate: test acc {metrics['test_acc']:.4f} on {metrics['test_images']} images, "
        f"macro F1 {metrics['macro_f1']:.4f}; most confused: {pairs}"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
