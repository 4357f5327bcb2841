"""Stage `train`: the model named in params on data/subset.pt; best epoch chosen on the validation
split. Writes models/best.pt, models/last.pt, metrics/train.json and DVCLive logs (dvclive/train)."""
import shutil
from pathlib import Path

import torch

from src.data import Subset
from src.io import atomic_torch_save, read_json, write_json
from src.models import build_model, count_params, init_from_data
from src.params import check_runtime
from src.training import CHECKPOINT_VERSION, FitConfig, fingerprint, fit, resolve_device, stop_on_signals
from stages._common import stage

RUN_DIR = Path(".cache/train")  # resumable state between an interruption and the next run; not a DVC out

if __name__ == "__main__":
    with stage("train") as p:
        sub = Subset.load(Path("data/subset.pt"))
        check_runtime(p, sub.train_y.numel())
        stats = read_json("metrics/stats.json")
        mean, std = torch.tensor(stats["normalize_mean"]), torch.tensor(stats["normalize_std"])
        device = resolve_device(p.train.device)
        torch.manual_seed(p.train.seed)
        model = build_model(p.model, len(sub.classes))
        init_from_data(model, p.model, sub.train_x, mean, std)
        used = {"data": p.data.model_dump(), "augment": p.augment.model_dump(), "model": p.model.model_dump(),
                "train": p.train.model_dump()}
        meta = {"model_name": p.model.name, "classes": sub.classes, "mean": mean.tolist(), "std": std.tolist(),
                "params": used}
        from dvclive import Live

        with Live(dir="dvclive/train", dvcyaml=None, save_dvc_exp=False, report=None) as live, \
                stop_on_signals() as flag:
            def on_epoch(row: dict) -> None:
                for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                    split, name = k.split("_", 1) if k != "lr" else ("train", "lr")
                    live.log_metric(f"{split}/{name}", row[k])
                live.next_step()

            cfg = FitConfig(train=p.train, augment=p.augment, run_dir=RUN_DIR, meta=meta,
                            fingerprint=fingerprint({**used, "data_stats": stats, "device": str(device)}),
                            eval_batch_size=p.evaluate.batch_size, on_epoch=on_epoch)
            res = fit(model, sub.train_x, sub.train_y, sub.val_x, sub.val_y, mean, std, device, cfg, flag)
        Path("models").mkdir(exist_ok=True)
        shutil.copyfile(RUN_DIR / "best.pt", "models/.best.pt.tmp")
        Path("models/.best.pt.tmp").replace("models/best.pt")
        atomic_torch_save({"format": CHECKPOINT_VERSION, **meta, "epoch": res["epochs_run"], "step": res["steps"],
                           "model": res["final_state"], "optimizer": res["optimizer_state"]}, "models/last.pt")
        write_json("metrics/train.json", {
            "best_val_acc": res["best_val_acc"], "best_epoch": res["best_epoch"], "epochs": res["epochs_run"],
            "epochs_equivalent": round(res["epochs_equivalent"], 4), "steps": res["steps"],
            "params": count_params(model), "trainable_params": count_params(model, trainable_only=True),
            "final_val_acc": res["history"][-1]["val_acc"], "final_train_loss": res["history"][-1]["train_loss"],
            "model": p.model.name, "device": str(device), "threads": res["threads"],
            "time_budget_s": p.train.time_budget_s,
            "seconds": round(res["seconds"], 2), "train_seconds": round(res["train_seconds"], 2),
            "images_per_s": round(res["images_per_s"], 1),
        })
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        print(f"train: best val acc {res['best_val_acc']:.4f} at epoch {res['best_epoch']}; "
              f"{res['steps']} steps in {res['seconds']:.1f} s ({res['images_per_s']:.0f} images/s)")
