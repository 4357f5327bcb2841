"""Compare a class's experiments: `dvc exp show --json` → a table (Markdown and CSV) and two figures.

    python -m src.compare                  # this repo's experiments (on HEAD) → compare/
    python -m src.compare --all-commits    # experiments on every commit (pulled from several clones)
    python -m src.compare --json show.json --out somewhere/
    python -m src.compare --terminal       # only the table that fits the terminal; writes nothing

One row per commit and per experiment: its name, the params that differ between the rows, test
accuracy, per-class accuracy, training seconds, images/s, device and precision. A failed experiment
keeps its row, marked failed, with no metrics; so do queued and running ones, marked so, and with
--workspace a workspace whose params.yaml is not what dvc.lock ran (stale). Under the table, what
is not like for like: other class sets (other tasks) or test sets, runs of a few steps, devices,
processors, precisions, CPU kernels, thread or process counts. Figures:
test accuracy against training seconds (each point labelled with what differs, e.g. "lr=0.02,
classes=cat,dog", and its name; a colour per class set) and per-class
accuracy as a heatmap (experiments × classes). Printed: the same rows cut to the terminal's width
(`dvc exp show` at 120 columns shows "…" in every cell).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from src import paths
from src.cli import whole_number
from src.params import FEW_STEPS, flatten, not_as_run
from src.verify import experiment_refs, head_commit

# the keys `dvc exp show --json` files the metrics under: their paths, always with "/"
EVAL, TRAIN, TIMING = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING))
FORMATS = {
    "test_acc": "{:.4f}",
    "seconds": "{:.1f}",
    "images_per_s": "{:.0f}",
    "device": "{}",
    "precision": "{}",
    "threads": "{}",
}  # the metric columns and how they print
COLUMNS = tuple(FORMATS)
NUMBERS = tuple(k for k, f in FORMATS.items() if f != "{}")  # the metric columns that must be numbers


class NotANumber(TypeError):
    """A metric in a saved `dvc exp show --json` that is not a number."""


# The terminal view's metrics after test_acc, most wanted first: (row key, header, format); each
# is shown only if it still fits the width.
KEY_METRICS = (
    ("best_val_acc", "val_acc", "{:.4f}"),
    ("seconds", "seconds", "{:.1f}"),
    ("images_per_s", "img/s", "{:.0f}"),
    ("macro_f1", "macro_f1", "{:.4f}"),
    ("device", "device", "{}"),
    ("precision", "precision", "{}"),
)
SEP = "  "  # between the terminal view's columns
UNFINISHED = ("queued", "running")  # `dvc exp show`'s executor states of an experiment without results yet
STALE = "stale"  # the workspace, its params.yaml not what dvc.lock ran: its results are another run's
RESULT_STAGES = ("check", "download", "stats", "train", "evaluate")  # what the table's numbers come from


def _row(name: str, rev: str, data: dict | None, status: str = "ok") -> dict:
    """One row; `status` ok, failed, queued or running: only an ok row shows metrics (a queued or
    running experiment's files are still its baseline's)."""
    data = data or {}
    params = {
        k: f"[{', '.join(map(str, v))}]" if isinstance(v, list) else v  # a list as one cell
        for k, v in flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}).items()
    }
    metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
    ev, tr, tm = ({} if status != "ok" else metrics.get(path, {}) for path in (EVAL, TRAIN, TIMING))
    tr = {**tr, **tm}  # seconds and images/s moved to timing.json; older commits have them in train.json
    return {
        "name": name,
        "rev": rev[:7],
        "status": status,
        "params": params,
        "test_acc": _number(ev, "test_acc"),
        "per_class": {c: _number(ev["per_class_acc"], c) for c in ev.get("per_class_acc") or {}},
        "class_set": tuple(sorted(ev.get("per_class_acc") or {})),  # the same classes reordered: one task
        "macro_f1": _number(ev, "macro_f1"),
        "best_val_acc": _number(tr, "best_val_acc"),
        # not columns: the like-for-like notes name them
        **{k: tr.get(k) for k in ("processor", "cpu_capability", "processes", "steps")},
        "test_images": ev.get("test_images"),
        **{k: _number(tr, k) if k in NUMBERS else tr.get(k) for k in COLUMNS if k != "test_acc"},
    }


def not_ok(rows: list[dict]) -> str:
    """How many rows failed, and how many are still queued or running: "1 failed, 2 queued"."""
    counts = Counter(r["status"] for r in rows)
    return ", ".join(f"{counts[s]} {s}" for s in ("failed", STALE, *UNFINISHED) if counts[s] or s == "failed")


def not_like_for_like(rows: list[dict]) -> list[str]:
    """What the rows with results differ in beside their params, as sentences: other class sets
    (two tasks: guessing alone scores 1/classes) or test sets, runs too short to say much, and
    devices, processors, precisions, kernels, thread or process counts (the seconds and images/s
    of such runs do not compare)."""
    done = [r for r in rows if r["status"] == "ok"]
    notes = []
    sets = list(dict.fromkeys(r["class_set"] for r in done if r["class_set"]))
    images = sorted({r["test_images"] for r in done if r.get("test_images") is not None})
    if len(sets) > 1:
        sizes = sorted({len(c) for c in sets})
        notes.append(
            f"{len(sets)} class sets ({', '.join(map(str, sizes))} classes): test accuracy compares only "
            "between runs on the same classes (guessing alone scores 1/classes)"
        )
    elif len(images) > 1:
        notes.append(
            f"other test sets ({', '.join(f'{n:,}' for n in images)} test images): test accuracy compares "
            "only between runs on the same test images"
        )
    short = [r["name"] for r in done if isinstance(r.get("steps"), int) and r["steps"] < FEW_STEPS]
    if short:
        notes.append(f"under {FEW_STEPS} training steps, so their scores say little: {', '.join(short)}")
    machine = [
        f"{what} ({', '.join(sorted(map(str, vals)))})"
        for key, what in (
            ("device", "devices"),
            ("processor", "processors"),
            ("precision", "precisions"),
            ("cpu_capability", "CPU kernels"),
            ("threads", "thread counts"),
            ("processes", "process counts"),
        )
        if len(vals := {r[key] for r in done if r.get(key) is not None}) > 1
    ]
    if machine:
        notes.append(f"other {' and '.join(machine)}: seconds and images/s compare only between runs alike in these")
    return notes


def workspace_stale(root: Path = Path(".")) -> list[str]:
    """The keys of the workspace's params.yaml that dvc.lock's stages up to evaluate (whose results
    the table shows) did not run with: those results are another run's (after `dvc exp apply` of a
    failed run, or an edit without `dvc repro`); the figures' and the report's params don't count."""
    try:
        params, lock = (yaml.safe_load((root / name).read_text()) for name in ("params.yaml", "dvc.lock"))
    except (OSError, yaml.YAMLError):
        return []
    return not_as_run(params, lock, RESULT_STAGES)


def _number(metrics: dict, key: str) -> float | None:
    """A metric that must be a number (or missing); NotANumber naming it otherwise."""
    v = metrics.get(key)
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return v
    raise NotANumber(f"{key}={v!r} is not a number")


def experiments(exp_show: list[dict], include_workspace: bool = False, stale_workspace: bool = False) -> list[dict]:
    """Rows from `dvc exp show --json`: each commit, then its experiments. Of the commits after the
    first (HEAD), only those with experiments: with --all-commits (or `-n N`, `--rev` in a saved
    file) DVC lists commits that have none, the whole history with --all-commits. `stale_workspace`:
    the workspace's row is marked stale, with no results (`workspace_stale`)."""
    rows = []
    head = next((c for c in exp_show if c.get("rev") != "workspace"), None)
    # a branch made from an experiment (`dvc exp branch`) is listed as a commit too: one run, one row
    experiment_revs = {r.get("rev") for c in exp_show for e in c.get("experiments") or [] for r in e.get("revs") or []}
    for commit in exp_show:
        workspace = commit.get("rev") == "workspace"
        if (workspace and not include_workspace) or (
            not workspace
            and (commit.get("rev") in experiment_revs or (commit is not head and not commit.get("experiments")))
        ):
            continue
        status = "failed" if commit.get("error") else STALE if workspace and stale_workspace else "ok"
        rows.append(
            _row(
                commit.get("name") or (commit["rev"] if workspace else commit["rev"][:7]),
                commit["rev"],
                commit.get("data"),
                status,
            )
        )
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                status = "failed" if state == "failed" or rev.get("error") else state if state in UNFINISHED else "ok"
                rows.append(_row(rev.get("name") or rev["rev"][:7], rev["rev"], rev.get("data"), status))
    return rows


def differing(rows: list[dict]) -> list[str]:
    """The params whose values are not the same in every row, in params.yaml's order."""
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    return [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True, default=str) for r in rows}) > 1]


def classes(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c for r in rows for c in r["per_class"]))


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each param key's shortest tail that no other key ends with: train.lr → lr, but
    model.fast_cnn.widths and model.seed_cnn.widths keep fast_cnn.widths and seed_cnn.widths; a key
    that is the tail of another (train.epochs of gpu.train.epochs) stays whole."""
    out = {}
    for k in keys:
        parts = k.split(".")
        tails = [".".join(parts[-n:]) for n in range(1, len(parts) + 1)]
        out[k] = next((t for t in tails if sum(o == t or o.endswith("." + t) for o in keys) == 1), k)
    return out


def show_value(v: Any) -> str:
    """A param value as a person would type it: [cat, dog] → cat,dog; 0.0200 → 0.02; None → null."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):  # as review reads params.yaml: [] stays visible, a nested list keeps its brackets
        flat = v and not any(isinstance(x, (list, dict)) for x in v)
        return ",".join(map(show_value, v)) if flat else json.dumps(v)
    s = str(v)
    if s.startswith("[") and s.endswith("]") and "[" not in s[1:-1] and s != "[]":  # a flat list (_row wrote it)
        return ",".join(item.strip() for item in s[1:-1].split(","))
    return s


def shorten(s: str, width: int) -> str:
    """`s` in at most `width` characters: a comma list keeps whole leading items and counts the rest
    (airplane,automobile,…+8), anything else is cut with "…"."""
    if len(s) <= width:
        return s
    items = s.split(",")
    for k in range(len(items) - 1, 0, -1):
        kept = f"{','.join(items[:k])},…+{len(items) - k}"
        if len(kept) <= width:
            return kept
    return s[: max(0, width - 1)] + "…"[:width]


def describe(rows: list[dict], width: int = 28) -> list[str]:
    """Per row, what differs between `rows` as "lr=0.02, classes=cat,dog" (each value at most
    `width` characters); a row's name where nothing differs."""
    keys = differing(rows)
    names = short_keys(keys)
    return [
        ", ".join(f"{names[k]}={shorten(show_value(r['params'].get(k)), width)}" for k in keys) or r["name"]
        for r in rows
    ]


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells): name, status, differing params, metrics, per-class accuracy."""
    keys, cls = differing(rows), classes(rows)
    header = ["name", "status", *keys, *COLUMNS, *(f"acc.{c}" for c in cls)]
    cells = [
        [
            r["name"],
            r["status"],
            # as the printed table shows them: true, null, cat,dog (a key the row lacks: empty)
            *(show_value(r["params"][k]) if k in r["params"] else "" for k in keys),
            *(_fmt(r[c], FORMATS[c]) for c in COLUMNS),
            *(_fmt(r["per_class"].get(c), "{:.4f}") for c in cls),
        ]
        for r in rows
    ]
    return header, cells


def _fmt(v: Any, how: str = "{}") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else how.format(v)


def to_markdown(header: list[str], cells: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, row)) + " |" for row in cells]) + "\n"


def to_csv(header: list[str], cells: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(cells)
    return buf.getvalue()


def _terminal_columns(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(needed, optional) columns of the terminal view. Each: header, cells, the widest it may be
    (cap), the narrowest it may be squeezed to (least), right-aligned or not."""
    keys = differing(rows)
    names = short_keys(keys)
    col = lambda head, cells, cap, least, right=False: {  # noqa: E731
        "head": head,
        "cells": cells,
        "cap": cap,
        "least": min(least, cap),
        "right": right,
    }
    needed = [col("experiment", [r["name"] for r in rows], 20, 10)]
    needed += [
        col(names[k], [show_value(r["params"].get(k)) for r in rows], 24, max(6, min(len(names[k]), 10))) for k in keys
    ]
    needed.append(
        col(
            "test_acc",
            [r["status"] if r["status"] != "ok" else _fmt(r["test_acc"], "{:.4f}") for r in rows],
            8,
            8,
            right=True,
        )
    )
    optional = [
        col(head, [_fmt(r.get(key), how) for r in rows], 12, len(head), right=how != "{}")
        for key, head, how in KEY_METRICS
        if any(r.get(key) is not None for r in rows)
    ]
    for c in needed + optional:
        c["width"] = min(c["cap"], max([len(c["head"]), *map(len, c["cells"])]))
    return needed, optional


def _fit(needed: list[dict], optional: list[dict], width: int) -> tuple[list[dict], list[dict]]:
    """The columns that fit in `width`: the needed ones squeezed (widest first) down to their least
    widths, then changed params dropped from the last while still too wide; then the optional
    metrics in order while they fit. Returns (shown, dropped params)."""
    total = lambda cols: sum(c["width"] for c in cols) + len(SEP) * (len(cols) - 1)  # noqa: E731
    while total(needed) > width:
        squeezable = [c for c in needed if c["width"] > c["least"]]
        if not squeezable:
            break
        max(squeezable, key=lambda c: c["width"])["width"] -= 1
    dropped = []
    while total(needed) > width and len(needed) > 2:
        dropped.insert(0, needed.pop(-2))  # the last param (test_acc stays last)
    shown = list(needed)
    for c in optional:
        if total(shown + [c]) <= width:
            shown.append(c)
    return shown, dropped


def terminal_view(rows: list[dict], width: int = 120) -> str:
    """The rows as a plain-text table of at most `width` columns: experiment name, the params that
    differ (values shortened, e.g. airplane,automobile,…+8), test accuracy, then as many key
    metrics as fit. A line under the table names the changed params that did not fit."""
    shown, dropped = _fit(*_terminal_columns(rows), width)

    def line(cells: list[str]) -> str:
        return SEP.join(
            shorten(v, c["width"]).rjust(c["width"]) if c["right"] else shorten(v, c["width"]).ljust(c["width"])
            for c, v in zip(shown, cells)
        ).rstrip()[:width]

    out = [line([c["head"] for c in shown]), line(["-" * c["width"] for c in shown])]
    out += [line([c["cells"][i] for c in shown]) for i in range(len(rows))]
    if dropped:
        note = f"(also changed, not shown: {', '.join(c['head'] for c in dropped)}; all columns in compare.md)"
        out += textwrap.wrap(note, width)  # a sentence, not a list: wrapped, not cut
    for note in not_like_for_like(rows):
        out += textwrap.wrap(f"Not like for like: {note}.", width)
    return "\n".join(out) + "\n"


def write_report(rows: list[dict], out: Path, dpi: int = 110) -> list[Path]:
    """compare.md, compare.csv and the two figures into `out`; returns the paths written."""
    from src.figures.experiments import accuracy_vs_seconds, per_class_heatmap
    from src.io import save_figure, write_text

    header, cells = table(rows)
    files = [out / "compare.md", out / "compare.csv", out / "accuracy_vs_seconds.png", out / "per_class.png"]
    notes = "".join(f"\n**Not like for like:** {n}.\n" for n in not_like_for_like(rows))
    write_text(files[0], to_markdown(header, cells) + notes)
    write_text(files[1], to_csv(header, cells))
    # each figure labels the runs it draws with what differs among those runs
    save_figure(accuracy_vs_seconds(rows, describe), files[2], dpi)
    save_figure(per_class_heatmap(rows, classes(rows), describe), files[3], dpi)
    return files


def experiment_baselines(root: Path = Path(".")) -> Counter[str]:
    """{commit: how many `dvc exp` experiments start from it}: those run here and those pulled."""
    return Counter(baseline for baseline, _, _ in experiment_refs(root))


def exp_show(all_commits: bool = False, root: Path = Path(".")) -> list[dict]:
    """`dvc exp show --json` of the repo at `root` (every commit with experiments, with --all-commits)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]  # the DVC of this Python, as review and verify run it
    if all_commits:
        # --all-commits walks the branches' history only: a student's experiment pulled without
        # the commit it started from on a branch here (a commit of theirs) needs its baseline named
        cmd += ["--all-commits", *(f"--rev={sha}" for sha in experiment_baselines(root))]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(
            f"compare: `dvc {' '.join(cmd[3:7])}` failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    head = head_commit(root)  # DVC lists named revs before HEAD; `experiments` takes the first commit for HEAD
    return sorted(json.loads(res.stdout), key=lambda c: c.get("rev") not in ("workspace", head))


def elsewhere(root: Path = Path(".")) -> str | None:
    """Without --all-commits: a line saying how many experiments start from commits other than HEAD
    (after `dvc exp pull`, or a commit since), which the table leaves out; None when there are none."""
    head = head_commit(root)
    others = {sha: n for sha, n in experiment_baselines(root).items() if sha != head}
    if not others:
        return None
    n, commits = sum(others.values()), len(others)
    where = "a commit" if commits == 1 else f"{commits} commits"
    return (
        f"{n} experiment{'s' * (n != 1)} from {where} other than HEAD left out: "
        "`python -m src.compare --all-commits` shows every commit's"
    )


def _read_exp_show(path: Path) -> list[dict]:
    """A saved `dvc exp show --json`; SystemExit with one line when unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise SystemExit(f"compare: error: --json {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"compare: error: --json {path}: not the JSON of `dvc exp show --json` ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="read this `dvc exp show --json` output instead of running it")
    ap.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    ap.add_argument("--workspace", action="store_true", help="include the workspace as a row")
    ap.add_argument("--out", type=Path, default=Path("compare"))
    ap.add_argument("--terminal", action="store_true", help="only print the table; write no files")
    ap.add_argument(
        "--width",
        type=whole_number(20, what=" columns (the narrowest table that still shows a row)"),
        default=max(20, shutil.get_terminal_size((120, 24)).columns),
        help="columns of the printed table (default: the terminal's, else 120)",
    )
    args = ap.parse_args(argv)
    data = _read_exp_show(args.json) if args.json else exp_show(args.all_commits)
    stale = workspace_stale() if args.workspace and not args.json else []
    if stale:
        print(
            f"compare: the workspace's params.yaml is not what dvc.lock ran ({', '.join(stale[:3])}"
            f"{' …' if len(stale) > 3 else ''}): its row shows no results; `dvc repro` makes them",
            file=sys.stderr,
        )
    try:
        rows = experiments(data, include_workspace=args.workspace, stale_workspace=bool(stale))
    except (KeyError, TypeError, AttributeError) as exc:
        if not args.json:
            raise  # DVC's own output: a bug here, not the user's file
        why = f" ({exc})" if isinstance(exc, NotANumber) else ""
        raise SystemExit(f"compare: error: --json {args.json}: not the output of `dvc exp show --json`{why}") from None
    others = None if args.json or args.all_commits else elsewhere()
    if len(rows) < 2:  # HEAD alone: a table of one row compares nothing
        none = "compare: no experiments on HEAD to compare" if others else "compare: no experiments to compare"
        print(f"{none} ({others or 'run some with `dvc exp run`'})", file=sys.stderr)
        return 1
    if others:
        print(f"compare: {others}", file=sys.stderr)
    if args.terminal:
        print(terminal_view(rows, args.width), end="")
        return 0
    try:  # before the table is printed: an --out that can't be written is the one line shown
        files = write_report(rows, args.out)
    except OSError as exc:
        raise SystemExit(f"compare: error: --out {args.out}: cannot write there ({exc.strerror or exc})") from None
    print(terminal_view(rows, args.width), end="")
    print(f"compare: {len(rows)} rows ({not_ok(rows)}) → {args.out}/ ({', '.join(p.name for p in files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
