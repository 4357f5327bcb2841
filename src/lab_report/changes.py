"""Section "What changed": under an experiment (`dvc exp run -S …`), the params that differ from
the commit the run started from (git HEAD, the baseline `dvc exp show` and `dvc params diff` use)
and the metrics of both. DVC only reruns the report when its own deps change, so the section
describes the run as it was made: commit the run and the next report has no such section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from src import paths
from src.lab_report.gather import git_short, git_show, lookup, read_json_or_none
from src.params import CIFAR10_CLASSES, changed_params

EVAL, TRAIN, TIMING = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING))
# the metrics a reader compares, in the order the report lists them: (file, key, format, which way
# is better: +1 higher, -1 lower, 0 neither)
COMPARED = [
    (EVAL, "test_acc", "%", 1),
    (EVAL, "macro_f1", ".4f", 1),
    (EVAL, "test_loss", ".4f", -1),
    (TRAIN, "best_val_acc", "%", 1),
    (TRAIN, "best_epoch", "int", 0),
    (TRAIN, "epochs", "int", 0),
    (TRAIN, "params", "int", 0),
    (TIMING, "train_seconds", ".1f", -1),
    (TIMING, "images_per_s", ".0f", 1),
]


def signed(delta: float, fmt: str) -> str:
    """A change in the digits its values are printed with: +0.42 points, −107.2, +1,024."""
    if fmt == "%":
        return f"{100 * delta:+.2f} points"
    if fmt == "int":
        return f"{int(delta):+,}"
    return format(delta, "+" + fmt)


def metric_rows(root: Path, base: str) -> list[dict]:
    """The COMPARED metrics (and each class's test accuracy) at `base` and in the workspace."""
    rows = []
    cache: dict[str, tuple[Any, Any]] = {}
    for rel in dict.fromkeys(f for f, *_ in COMPARED):
        old = git_show(root, base, rel)
        cache[rel] = (_loads(old), read_json_or_none(root / rel))
    keys = list(COMPARED)
    classes = list((cache[EVAL][1] or {}).get("per_class_acc") or {})
    keys[2:2] = [(EVAL, f"per_class_acc.{c}", "%", 1) for c in classes]
    for rel, key, fmt, better in keys:
        old, new = (lookup(d, key) for d in cache[rel])
        if old is None and new is None:
            continue
        delta = new - old if isinstance(old, (int, float)) and isinstance(new, (int, float)) else None
        good = None if not delta or not better else (delta * better > 0)
        row = {"file": rel, "key": key, "fmt": fmt, "before": old, "after": new, "delta": delta, "good": good}
        rows.append({**row, "delta_text": None if delta is None else signed(delta, fmt)})
    return rows


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def what_changed(root: Path, params_now: dict, base: str = "HEAD") -> dict | None:
    """None when the run has the committed params (or there is no commit to compare with);
    otherwise the baseline's short hash, the changed params, the metric rows and `task` (the two
    class lists when the run told other classes apart, else None)."""
    text = git_show(root, base, "params.yaml")
    if text is None:
        return None
    params = changed_params(yaml.safe_load(text) or {}, params_now)
    if not params:
        return None
    metrics, task = metric_rows(root, base), other_task(params)
    if task:  # two tasks, not a before and after: no change is better or worse
        for row in metrics:
            row["good"] = None
    return {"base": git_short(root, base) or base, "params": params, "metrics": metrics, "task": task}


def other_task(params: list[dict]) -> dict | None:
    """When `data.classes` changed, the committed run and this one told different classes apart:
    {"before": [names], "after": [names]} (`all` spelt out), else None."""
    row = next((c for c in params if c["key"] == "data.classes"), None)
    if row is None:
        return None
    names = {k: list(CIFAR10_CLASSES) if row[k] == "all" else list(row[k] or []) for k in ("before", "after")}
    return names if set(names["before"]) != set(names["after"]) else None  # the same classes reordered: one task
