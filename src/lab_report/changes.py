"""Section "What changed": under an experiment (`dvc exp run -S …`), the params that differ from
the commit the run started from (git HEAD, the baseline `dvc exp show` and `dvc params diff` use)
and the metrics of both. DVC only reruns the report when its own deps change, so the section
describes the run as it was made: commit the run and the next report has no such section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from markupsafe import Markup, escape

from src import paths
from src.lab_report.gather import git_short, git_show, lookup, read_json_or_none
from src.params import CIFAR10_CLASSES, changed_params
from src.run_diff import (
    TIMED,
    difference,
    loss_follows_accuracy,
    noise_note,
    raw_data,
    score_counts,
    score_noise,
    unlike,
    verdict,
    why_unused,
)

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


def metric_rows(root: Path, base: str) -> tuple[list[dict], list[str]]:
    """The COMPARED metrics (and each class's test accuracy) at `base` and in the workspace, and the
    lines that say where the two runs are not like for like (`unlike`): a score that moved less than
    its sampling noise is `level`, and neither it nor a score or time that does not compare is good or bad."""
    rows = []
    cache: dict[str, tuple[Any, Any]] = {}
    for rel in dict.fromkeys([*(f for f, *_ in COMPARED), STATS]):
        old = git_show(root, base, rel)
        cache[rel] = (_loads(old), read_json_or_none(root / rel))
    keys = list(COMPARED)
    classes = list((cache[EVAL][1] or {}).get("per_class_acc") or {})
    keys[2:2] = [(EVAL, f"per_class_acc.{c}", "%", 1) for c in classes]
    counts = [score_counts(cache[EVAL][i], cache[STATS][i]) for i in (0, 1)]
    speeds = tuple(lookup(d, "images_per_s") for d in cache[TIMING])
    lock_now = root / "dvc.lock"
    locks = (git_show(root, base, "dvc.lock"), lock_now.read_text() if lock_now.exists() else None)
    data = tuple(raw_data(_yaml(text)) for text in locks)
    notes, unmarked = unlike(cache[EVAL], cache[TRAIN], ("the committed run", "this run"), speeds, data)
    marks = {}
    for rel, key, fmt, better in keys:
        old, new = (lookup(d, key) for d in cache[rel])
        if old is None and new is None:
            continue
        delta = difference(old, new)
        kind = "times" if key in TIMED else "scores" if rel == EVAL or key == "best_val_acc" else None
        better = 0 if kind in unmarked or (key == "train_seconds" and "seconds" in unmarked) else better
        marks[key] = verdict(delta, better, score_noise(key.split(".")[0], old, new, counts))
        row = {"file": rel, "key": key, "fmt": fmt, "before": old, "after": new, "delta": delta}
        rows.append({**row, "delta_text": None if delta is None else signed(delta, fmt)})
    marks = loss_follows_accuracy(marks)
    for row in rows:
        row["good"] = {"up": True, "down": False}.get(marks[row["key"]])
        row["level"] = marks[row["key"]] == "level"
    return rows, notes


def _code_spans(text: str) -> Markup:
    """Markdown's `code` spans of `text` as HTML <code> elements, the rest escaped."""
    parts = text.split("`")
    return Markup("".join(f"<code>{escape(p)}</code>" if i % 2 else str(escape(p)) for i, p in enumerate(parts)))


def _yaml(text: str | None) -> Any:
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def what_changed(root: Path, params_now: dict, base: str = "HEAD") -> dict | None:
    """None when the run has the committed params (or there is no commit to compare with);
    otherwise the baseline's short hash, the changed params, the metric rows, `task` (the two
    class lists when the run told other classes apart, else None) and `unlike` (where else the two
    runs are not like for like: test images, machine, few steps; HTML)."""
    text = git_show(root, base, "params.yaml")
    if text is None:
        return None
    params = changed_params(yaml.safe_load(text) or {}, params_now)
    if not params:
        return None
    (metrics, unlike_notes), task = metric_rows(root, base), other_task(params)
    if task:  # two tasks, not a before and after: no change is better or worse
        for row in metrics:
            row["good"], row["level"] = None, False
        # the section's own note says so at length
        unlike_notes = [n for n in unlike_notes if not n.startswith("other classes:")]
    level = {m["key"] in TIMED for m in metrics if m["level"]}  # True: a time, False: a score
    marked = "a green or red change"  # how this table shows better and worse
    note = noise_note(False in level, True in level, marked, base="the committed run's") if level else None
    run = read_json_or_none(root / TRAIN)
    for c in params:
        c["unused"] = why_unused(params_now, c["key"], run) if c["after_set"] else None
    return {
        "base": git_short(root, base) or base,
        "params": params,
        "metrics": metrics,
        "task": task,
        "noise_note": _code_spans(note) if note else None,
        "unlike": [_code_spans(n) for n in unlike_notes],
    }


def other_task(params: list[dict]) -> dict | None:
    """When `data.classes` changed, the committed run and this one told different classes apart:
    {"before": [names], "after": [names]} (`all` spelt out), else None."""
    row = next((c for c in params if c["key"] == "data.classes"), None)
    if row is None:
        return None
    names = {k: list(CIFAR10_CLASSES) if row[k] == "all" else list(row[k] or []) for k in ("before", "after")}
    return names if set(names["before"]) != set(names["after"]) else None  # the same classes reordered: one task
