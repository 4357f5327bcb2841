"""Stage `evaluate`: models/best.pt on the subset's test split → metrics/eval.json,
plots/eval/predictions.csv (confusion) and plots/eval/per_class.csv (bars)."""
from pathlib import Path

import torch

from src.data import Subset
from src.evaluation import evaluate, summarize
from src.io import write_json, write_text
from src.training import load_trained, resolve_device
from stages._common import stage

if __name__ == "__main__":
    with stage("evaluate") as p:
        sub = Subset.load(Path("data/subset.pt"))
        model, ck = load_trained(Path("models/best.pt"), sub.classes)
        device = resolve_device(p.train.device)
        model.to(device)
        mean, std = torch.tensor(ck["mean"], device=device), torch.tensor(ck["std"], device=device)
        x, y = sub.test_x, sub.test_y
        res = evaluate(model, x, y, mean, std, batch_size=p.evaluate.batch_size, tta_flip=p.evaluate.tta_flip,
                       tta_shift=p.evaluate.tta_shift)
        metrics = summarize(y.numpy(), res["logits"], sub.classes, p.evaluate.top_confused, res["loss"])
        metrics.update({"tta_flip": p.evaluate.tta_flip, "tta_shift": p.evaluate.tta_shift, "best_epoch": ck["epoch"]})
        pred = res["logits"].argmax(1).numpy()
        conf = res["logits"].softmax(1).max(1).values.numpy()
        names = sub.classes
        write_text("plots/eval/predictions.csv", "actual,predicted,confidence\n" + "".join(
            f"{names[a]},{names[b]},{c:.4f}\n" for a, b, c in zip(y.numpy(), pred, conf)))
        write_text("plots/eval/per_class.csv", "class,accuracy\n" + "".join(
            f"{c},{a:.4f}\n" for c, a in metrics["per_class_acc"].items()))
        write_json("metrics/eval.json", metrics)
        pairs = ", ".join(f"{d['pair']} ({d['total']})" for d in metrics["most_confused"][:3])
        print(f"evaluate: test acc {metrics['test_acc']:.4f} on {metrics['test_images']} images, "
              f"macro F1 {metrics['macro_f1']:.4f}; most confused: {pairs}")
