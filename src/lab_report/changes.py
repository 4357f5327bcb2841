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
from src.params import CIFAR10_CLASSES, changed_params, deep_merge, flatten

EVAL, TRAIN, TIMING, STATS = (
    p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING, paths.STATS)
)
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


def sampling_noise(before: Any, after: Any, n_before: Any, n_after: Any) -> float | None:
    """One standard error of the difference of two accuracies, each a share of its n images
    (binomial): sqrt(p1(1-p1)/n1 + p2(1-p2)/n2). None where a value or a count is missing. Two runs
    that differ only in their seed differ by about this much (46 of the 54 seed-for-seed pairs in
    benchmarks/results fall inside it), so a smaller change says nothing about which is better."""
    values = (before, after, n_before, n_after)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or min(n_before, n_after) <= 0:
        return None
    return (before * (1 - before) / n_before + after * (1 - after) / n_after) ** 0.5


def metric_rows(root: Path, base: str) -> list[dict]:
    """The COMPARED metrics (and each class's test accuracy) at `base` and in the workspace; a
    score that moved less than its sampling noise is `level` and neither good nor bad."""
    rows = []
    cache: dict[str, tuple[Any, Any]] = {}
    for rel in dict.fromkeys([*(f for f, *_ in COMPARED), STATS]):
        old = git_show(root, base, rel)
        cache[rel] = (_loads(old), read_json_or_none(root / rel))
    keys = list(COMPARED)
    classes = list((cache[EVAL][1] or {}).get("per_class_acc") or {})
    keys[2:2] = [(EVAL, f"per_class_acc.{c}", "%", 1) for c in classes]
    counts = [score_counts(cache[EVAL][i], cache[STATS][i]) for i in (0, 1)]
    for rel, key, fmt, better in keys:
        old, new = (lookup(d, key) for d in cache[rel])
        if old is None and new is None:
            continue
        delta = new - old if isinstance(old, (int, float)) and isinstance(new, (int, float)) else None
        noise = score_noise(key.split(".")[0], old, new, counts)
        level = bool(delta) and noise is not None and abs(delta) < noise
        good = None if not delta or not better or level else (delta * better > 0)
        row = {"file": rel, "key": key, "fmt": fmt, "before": old, "after": new, "delta": delta, "good": good}
        rows.append({**row, "level": level, "delta_text": None if delta is None else signed(delta, fmt)})
    return rows


# which count each score's noise comes from (`score_counts`); macro-F1 is taken as an accuracy
NOISE_COUNT = {"test_acc": "test", "macro_f1": "test", "per_class_acc": "class", "best_val_acc": "val"}
# a time or speed moves this share between two runs of the same recipe on one machine: twenty `dvc
# repro` runs on one VM over two days took 147.0-179.9 s (README), up to 12 % from their median
TIMING_SPREAD = 0.12
TIMED = ("seconds", "train_seconds", "images_per_s")


def score_noise(key: str, before: Any, after: Any, counts: list[dict[str, Any]]) -> float | None:
    """How far the metric `key` moves between two runs that differ only by chance: the sampling noise
    of an accuracy (`sampling_noise` over `counts`, each run's `score_counts`), TIMING_SPREAD of a
    time or speed; None for anything else (a loss: its noise is not estimated)."""
    which = NOISE_COUNT.get(key)
    if which:
        return sampling_noise(before, after, counts[0].get(which), counts[1].get(which))
    if key in TIMED and isinstance(before, (int, float)) and not isinstance(before, bool):
        return TIMING_SPREAD * abs(before)
    return None


def score_counts(evaluation: Any, stats: Any) -> dict[str, Any]:
    """The images a run's scores are shares of: its test images, its test images a class (CIFAR-10's
    test sets hold as many of each class) and its validation images (metrics/stats.json)."""
    test = (evaluation or {}).get("test_images") if isinstance(evaluation, dict) else None
    classes = len((evaluation or {}).get("per_class_acc") or {}) if isinstance(evaluation, dict) else 0
    val = stats.get("val_images") if isinstance(stats, dict) else None
    return {"test": test, "class": test / classes if isinstance(test, int) and classes else None, "val": val}


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
            row["good"], row["level"] = None, False
    level = {m["key"] in TIMED for m in metrics if m["level"]}  # True: a time, False: a score
    device = (read_json_or_none(root / TRAIN) or {}).get("device")
    for c in params:
        c["unused"] = why_unused(params_now, c["key"], device) if c["after_set"] else None
    return {
        "base": git_short(root, base) or base,
        "params": params,
        "metrics": metrics,
        "task": task,
        "level_scores": False in level,
        "level_times": True in level,
        "timing_spread": TIMING_SPREAD,
    }


def why_unused(raw: Any, key: str, device: str | None) -> str | None:
    """Why the dotted `key` of the params mapping `raw` had no effect on a run that trained on
    `device` ("cpu", "cuda", "mps"; None: not known), or None where it was used or this cannot tell:
    a section the recipe did not apply (`gpu`), a value the GPU recipe replaced, a key of another
    model or optimizer, a setting whose switch is off."""
    if not isinstance(raw, dict):
        return None
    gpu = raw.get("gpu") if isinstance(raw.get("gpu"), dict) else {}
    use = gpu.get("use", "auto")
    on_gpu = use == "always" or (use == "auto" and device == "cuda")
    if key.startswith("gpu.") and key != "gpu.use":
        if use == "never" or (device is not None and not on_gpu):
            return f"the gpu section applies only when training runs on CUDA (gpu.use={use}; this run: {device})"
        return None
    section, _, rest = key.partition(".")
    if on_gpu and section in ("augment", "model", "train"):
        if key in flatten({section: gpu.get(section) or {}}):
            return f"the GPU recipe this run used replaces it with gpu.{key}"
        raw = deep_merge(
            raw, {s: gpu.get(s) or {} for s in ("augment", "model", "train") if isinstance(raw.get(s), dict)}
        )
    return _switched_off(flatten(raw), key, section, rest.split(".")[0])


def _switched_off(flat: dict[str, Any], key: str, section: str, first: str) -> str | None:
    """`why_unused`'s rules for one recipe's params (`flat`: dotted keys)."""
    opt, name = flat.get("train.optimizer"), flat.get("model.name")
    if key in ("train.muon_lr", "train.muon_momentum") and opt != "muon":
        return f"used only with train.optimizer=muon (this run: {opt})"
    if key in ("train.momentum", "train.nesterov", "train.bn_bias_lr_factor") and opt == "adamw":
        return "not used with train.optimizer=adamw"
    if key == "train.lookahead_decay" and not flat.get("train.lookahead_steps"):
        return "used only when train.lookahead_steps is above 0"
    if key == "train.epochs" and flat.get("train.time_budget_s") is not None:
        return (
            f"not used when train.time_budget_s is set ({flat['train.time_budget_s']} s here: the budget sizes the run)"
        )
    if key == "augment.crop_pad_mode" and not flat.get("augment.crop_padding"):
        return "used only when augment.crop_padding is above 0"
    if key == "evaluate.tta_fraction" and not flat.get("evaluate.tta_flip") and not flat.get("evaluate.tta_shift"):
        return "used only with test-time augmentation (evaluate.tta_flip or evaluate.tta_shift)"
    if section == "model" and first != "name" and isinstance(name, str) and first != name:
        return f"used only with model.name={first} (this run: {name})"
    return None


def other_task(params: list[dict]) -> dict | None:
    """When `data.classes` changed, the committed run and this one told different classes apart:
    {"before": [names], "after": [names]} (`all` spelt out), else None."""
    row = next((c for c in params if c["key"] == "data.classes"), None)
    if row is None:
        return None
    names = {k: list(CIFAR10_CLASSES) if row[k] == "all" else list(row[k] or []) for k in ("before", "after")}
    return names if set(names["before"]) != set(names["after"]) else None  # the same classes reordered: one task
