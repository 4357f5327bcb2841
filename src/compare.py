"""Compare a class's experiments: `dvc exp show --json` → a table (Markdown and CSV) and two figures.

    python -m src.compare                  # this repo's experiments (on HEAD) → compare/
    python -m src.compare --all-commits    # experiments on every commit (pulled from several clones)
    python -m src.compare --json show.json --out somewhere/

One row per commit and per experiment: its name, the params that differ between the rows, test
accuracy, per-class accuracy, training seconds, images/s, device and precision. A failed experiment
keeps its row, marked failed, with no metrics. Figures: test accuracy against training seconds (a
labelled point per experiment) and per-class accuracy as a heatmap (experiments × classes).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

EVAL, TRAIN = "metrics/eval.json", "metrics/train.json"
FORMATS = {"test_acc": "{:.4f}", "seconds": "{:.1f}", "images_per_s": "{:.0f}", "device": "{}", "precision": "{}",
           "threads": "{}"}  # the metric columns and how they print
COLUMNS = tuple(FORMATS)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = f"[{', '.join(map(str, v))}]" if isinstance(v, list) else v
    return out


def _row(name: str, rev: str, data: Optional[dict], failed: bool) -> dict:
    data = data or {}
    params = _flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
    ev, tr = ({} if failed else metrics.get(path, {}) for path in (EVAL, TRAIN))
    return {"name": name, "rev": rev[:7], "status": "failed" if failed else "ok", "params": params,
            "test_acc": ev.get("test_acc"), "per_class": ev.get("per_class_acc") or {},
            **{k: tr.get(k) for k in COLUMNS if k != "test_acc"}}


def experiments(exp_show: list[dict], include_workspace: bool = False) -> list[dict]:
    """Rows from `dvc exp show --json`: each commit, then its experiments."""
    rows = []
    for commit in exp_show:
        if commit.get("rev") == "workspace" and not include_workspace:
            continue
        rows.append(_row(commit.get("name") or commit["rev"], commit["rev"], commit.get("data"), bool(commit.get("error"))))
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                failed = state == "failed" or bool(rev.get("error"))
                rows.append(_row(rev.get("name") or rev["rev"][:7], rev["rev"], rev.get("data"), failed))
    return rows


def differing(rows: list[dict]) -> list[str]:
    """The params whose values are not the same in every row, in params.yaml's order."""
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    return [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True, default=str) for r in rows}) > 1]


def classes(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c for r in rows for c in r["per_class"]))


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells): name, status, differing params, metrics, per-class accuracy."""
    keys, cls = differing(rows), classes(rows)
    header = ["name", "status", *keys, *COLUMNS, *(f"acc.{c}" for c in cls)]

    def fmt(v: Any, how: str = "{}") -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else how.format(v)

    cells = [[r["name"], r["status"], *(fmt(r["params"].get(k)) for k in keys),
              *(fmt(r[c], FORMATS[c]) for c in COLUMNS), *(fmt(r["per_class"].get(c), "{:.4f}") for c in cls)]
             for r in rows]
    return header, cells


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


def write_report(rows: list[dict], out: Path, dpi: int = 110) -> list[Path]:
    """compare.md, compare.csv and the two figures into `out`; returns the paths written."""
    from src.figures.compare import accuracy_vs_seconds, per_class_heatmap
    from src.io import save_figure, write_text

    header, cells = table(rows)
    paths = [out / "compare.md", out / "compare.csv", out / "accuracy_vs_seconds.png", out / "per_class.png"]
    write_text(paths[0], to_markdown(header, cells))
    write_text(paths[1], to_csv(header, cells))
    save_figure(accuracy_vs_seconds(rows), paths[2], dpi)
    save_figure(per_class_heatmap(rows, classes(rows)), paths[3], dpi)
    return paths


def exp_show(all_commits: bool = False) -> list[dict]:
    """`dvc exp show --json` of this repo (every commit with --all-commits)."""
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"compare: `{' '.join(cmd)}` failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="read this `dvc exp show --json` output instead of running it")
    ap.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    ap.add_argument("--workspace", action="store_true", help="include the workspace as a row")
    ap.add_argument("--out", type=Path, default=Path("compare"))
    args = ap.parse_args(argv)
    data = json.loads(args.json.read_text()) if args.json else exp_show(args.all_commits)
    rows = experiments(data, include_workspace=args.workspace)
    if not rows:
        print("compare: no experiments to compare (run some with `dvc exp run`)", file=sys.stderr)
        return 1
    paths = write_report(rows, args.out)
    print(to_markdown(*table(rows)), end="")
    print(f"compare: {len(rows)} rows ({sum(r['status'] == 'failed' for r in rows)} failed) → "
          f"{', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
