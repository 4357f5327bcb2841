"""A review of two revisions where reviewers read: a Markdown report and the charts it links.

    python -m src.review                      # the workspace against main
    python -m src.review main my-exp          # any commit, branch, tag or `dvc exp` name
    python -m src.review HEAD~1 HEAD --out docs/review

Written to --out (default review/): review.md, one PNG per chart and, beside each, the Vega-Lite
spec it was drawn from (NAME.vl.json). The report holds the params that differ; the metrics before
and after with their deltas (test accuracy, macro-F1, per-class accuracy, seconds, images/s,
precision, device); the classes that got better or worse; the training curves of both revisions in
one chart, both confusion matrices side by side and the per-class bars. The charts are DVC's own:
`dvc plots diff --json` fills this repo's templates (.dvc/plots) with both revisions' data, and
vl-convert renders the Vega-Lite to PNG without a browser or the network (the same specs `dvc plots
show` and DVC's editor tools draw; a headless Chromium would need a page, a script and a second
process for the same picture).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src import paths
from src.compare import show_value
from src.io import atomic_path
from src.lab_report.gather import git_show
from src.params import changed_params, not_as_run, yaml_error
from src.run_diff import (
    difference,
    loss_follows_accuracy,
    noise_note,
    raw_data,
    sampling_noise,
    score_counts,
    score_noise,
    unlike,
    verdict,
    why_unused,
)
from src.verify import failed_run_error, resolve, unresolved

WORKSPACE = "workspace"
PARAMS = Path("params.yaml")
LOCK = Path("dvc.lock")
# the charts of a review: the dvc.yaml plots drawn with these templates, in this order
CHART_TEMPLATES = ("epochs", "confusion_counts", "bar_horizontal_values")
# (label, metrics file, key, format, which way is better: +1 higher, -1 lower, 0 neither)
METRICS = (
    ("test accuracy", paths.EVAL_METRICS, "test_acc", "{:.4f}", 1),
    ("macro-F1", paths.EVAL_METRICS, "macro_f1", "{:.4f}", 1),
    ("test loss", paths.EVAL_METRICS, "test_loss", "{:.4f}", -1),
    ("test images", paths.EVAL_METRICS, "test_images", "{:,}", 0),
    ("best validation accuracy", paths.TRAIN_METRICS, "best_val_acc", "{:.4f}", 1),
    ("epochs", paths.TRAIN_METRICS, "epochs", "{}", 0),
    ("steps", paths.TRAIN_METRICS, "steps", "{}", 0),  # a time-budgeted run's epochs can hold any number
    ("time budget, s", paths.TRAIN_METRICS, "time_budget_s", "{:g}", 0),
    ("training seconds (validation included)", paths.TIMING, "seconds", "{:.1f}", -1),
    ("images/s", paths.TIMING, "images_per_s", "{:.0f}", 1),
    ("precision", paths.TRAIN_METRICS, "precision", "{}", 0),
    ("device", paths.TRAIN_METRICS, "device", "{}", 0),
    ("CPU kernels", paths.TRAIN_METRICS, "cpu_capability", "{}", 0),
    ("parameters", paths.TRAIN_METRICS, "params", "{:,}", 0),
    ("recipe", paths.TRAIN_METRICS, "recipe", "{}", 0),  # gpu: params.yaml's gpu section replaced some values
)


# the rows whose ✅/🔻 assume the same test set, and the same machine and precision
SCORED_ROWS = ("test accuracy", "macro-F1", "test loss", "best validation accuracy")
TIMED_ROWS = ("training seconds (validation included)", "images/s")


class ReviewError(Exception):
    """A revision that cannot be reviewed: one line for the user."""


@dataclass
class Side:
    """One revision under review: its label, commit (None: the workspace) and files."""

    label: str
    commit: str | None
    files: dict[str, Any] = field(default_factory=dict)  # path → parsed JSON/YAML, or None if absent

    def metric(self, path: Path, key: str) -> Any:
        value = (self.files.get(path.as_posix()) or {}).get(key)
        if value is None and path == paths.TIMING:  # older commits kept seconds and images/s in train.json
            value = (self.files.get(paths.TRAIN_METRICS.as_posix()) or {}).get(key)
        return value


def read_at(root: Path, commit: str | None, path: Path) -> Any:
    """A JSON or YAML file as it is at `commit` (None: in the workspace); None where it is absent."""
    if commit is None:
        text = (root / path).read_text() if (root / path).exists() else None
    else:
        text = git_show(root, commit, path.as_posix())
    if text is None:
        return None
    try:
        return yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ReviewError(f"{path} at {commit or WORKSPACE}: not valid YAML: {yaml_error(exc)}") from None


def load_side(root: Path, rev: str) -> Side:
    """The revision `rev` (a git revision, a `dvc exp` name or "workspace") with its params and
    metrics; a ReviewError where it has none, or its metrics are not of its params."""
    commit = None
    if rev != WORKSPACE:
        commit = resolve(root, rev)
        failed = failed_run_error(root, rev, commit)
        if failed:
            raise ReviewError(failed)
        if commit is None:
            raise ReviewError(
                unresolved(
                    root,
                    rev,
                    f"{rev!r} is neither a git revision, a `dvc exp` name nor 'workspace' here "
                    "(`dvc exp pull <remote> <name>` fetches an experiment)",
                )
            )
    side = Side(rev[:12] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev, commit)  # a full hash: 40 digits a header
    for path in (PARAMS, paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING, paths.STATS):
        side.files[path.as_posix()] = read_at(root, commit, path)
    side.files[LOCK.as_posix()] = read_at(root, commit, LOCK)
    stale = not_as_run(side.files[PARAMS.as_posix()], side.files[LOCK.as_posix()])
    if stale:
        fix = "run `dvc repro` first" if commit is None else "an unfinished run, or params committed without one"
        raise ReviewError(
            f"{rev}: its results are not of its params.yaml: {', '.join(stale[:3])}{' …' if len(stale) > 3 else ''} "
            f"differ from what dvc.lock ran ({fix})"
        )
    code = stale_code(root, commit, side.files[LOCK.as_posix()])
    if code:
        fix = "run `dvc repro` first" if commit is None else "code committed without a rerun: `dvc repro`, then commit"
        raise ReviewError(
            f"{rev}: its results are not of its code: {', '.join(code[:3])}{' …' if len(code) > 3 else ''} "
            f"differ from what dvc.lock ran ({fix})"
        )
    return side


def stale_code(root: Path, commit: str | None, lock: Any) -> list[str]:
    """The code dvc.lock's stages read (`_code_deps`) that is not, at `commit` (None: on disk), what
    the run read: edited or committed without a rerun. A path git does not hold there is left out."""
    deps = _code_deps(lock)
    md5s = _file_md5s(root, commit, list(deps))
    return [path for path, (md5, _) in deps.items() if dvc_md5(path, md5s) not in (None, md5)]


def dvc_md5(path: str, md5s: dict[str, str]) -> str | None:
    """DVC's md5 of `path` from its files' md5s (`_file_md5s`): a file's own; a folder's, the md5 of
    the JSON list of its files' md5 and relpath, sorted by path, with ".dir" after it; None if absent."""
    if path in md5s:
        return md5s[path]
    inside = sorted((p[len(path) + 1 :].split("/"), m) for p, m in md5s.items() if p.startswith(path + "/"))
    listing = [{"md5": m, "relpath": "/".join(parts)} for parts, m in inside]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir" if listing else None


def _file_md5s(root: Path, commit: str | None, paths_: list[str]) -> dict[str, str]:
    """{file: md5} of the files at or under `paths_`, as git holds them at `commit` (None: on disk)."""
    if commit is None:
        found = [root / p for p in paths_ if (root / p).is_file()]
        found += [f for p in paths_ if (root / p).is_dir() for f in (root / p).rglob("*") if f.is_file()]
        found = [f for f in found if "__pycache__" not in f.parts and f.suffix != ".pyc"]  # as .dvcignore says
        return {f.relative_to(root).as_posix(): hashlib.md5(f.read_bytes()).hexdigest() for f in found}
    if not paths_:
        return {}
    ls = subprocess.run(["git", "ls-tree", "-r", "-z", commit, "--", *paths_], cwd=root, capture_output=True)
    entries = [e.split(b"\t", 1) for e in ls.stdout.split(b"\0") if b"\t" in e]
    blobs = [(meta.split()[2], path.decode()) for meta, path in entries if meta.split()[1] == b"blob"]
    cat = subprocess.run(
        ["git", "cat-file", "--batch"], input=b"".join(oid + b"\n" for oid, _ in blobs), cwd=root, capture_output=True
    )
    md5s, at = {}, 0
    for _, path in blobs:  # each: "<oid> blob <size>\n<content>\n", in the order asked
        head_end = cat.stdout.index(b"\n", at)
        size = int(cat.stdout[at:head_end].split()[2])
        md5s[path] = hashlib.md5(cat.stdout[head_end + 1 : head_end + 1 + size]).hexdigest()
        at = head_end + size + 2
    return md5s


def param_rows(base: Side, head: Side) -> list[tuple[str, str, str]]:
    """(key, before, after) for every param that differs."""
    before, after = (s.files.get(PARAMS.as_posix()) or {} for s in (base, head))
    return [
        (c["key"], _value(c["before"], c["before_set"]), _value(c["after"], c["after_set"]))
        for c in changed_params(before, after)
    ]


def unused_params(base: Side, head: Side) -> list[str]:
    """The params that differ but had no effect on the head's run, a line each with why (`why_unused`)."""
    before, after = (s.files.get(PARAMS.as_posix()) or {} for s in (base, head))
    run = head.files.get(paths.TRAIN_METRICS.as_posix())
    lines = []
    for c in changed_params(before, after):
        why = why_unused(after, c["key"], run) if c["after_set"] else None  # a key the head dropped: nothing to use
        lines += [f"`{c['key']}`: {why}"] if why else []
    return lines


def _code_deps(lock: Any) -> dict[str, tuple[str, list[str]]]:
    """{path: (md5, stages)} for what dvc.lock's stages read that no stage makes: the code (and any
    file a user adds as a dep), not the data and results passed between stages, nor params.yaml."""
    stages = (lock or {}).get("stages") or {} if isinstance(lock, dict) else {}
    made = {o.get("path") for st in stages.values() for o in st.get("outs") or [] if isinstance(o, dict)}
    deps: dict[str, tuple[str, list[str]]] = {}
    for name, st in stages.items():
        for d in st.get("deps") or []:
            path = d.get("path") if isinstance(d, dict) else None
            if path and path not in made and path != PARAMS.as_posix():
                deps.setdefault(path, (str(d.get("md5") or d.get("hash")), []))[1].append(name)
    return deps


def code_changes(base: Side, head: Side) -> list[str]:
    """The code the stages read that differs between the two runs, a line a path with its stages
    (from each side's dvc.lock): what a PR that changes no param changed."""
    b, h = (_code_deps(s.files.get(LOCK.as_posix())) for s in (base, head))
    if not b or not h:  # a side without dvc.lock: nothing to compare
        return []
    lines = []
    for path in sorted(b.keys() | h.keys()):
        stages = h.get(path, b.get(path))[1]
        how = "added" if path not in b else "removed" if path not in h else "changed"
        if how != "changed" or b[path][0] != h[path][0]:
            lines.append(f"`{path}` {how} (read by {', '.join(stages)})")
    return lines


def _value(v: Any, present: bool) -> str:
    return show_value(v) if present else "(absent)"


def _delta(before: Any, after: Any, fmt: str, mark: str | None, labels: tuple[str, str] = ("", "")) -> str:
    """The change as text with its mark (`verdict`): ✅ better, 🔻 worse, ≈ inside the noise; a value
    only one side has (`labels`: the sides' names) says which side."""
    d = difference(before, after)
    if d is None:
        if (before is None) != (after is None) and all(labels):
            return f"only in `{labels[before is None]}`"
        return "" if before == after else "changed"
    if d == 0:
        return "="
    return ("+" if d > 0 else "−") + fmt.format(abs(d)) + {"up": " ✅", "down": " 🔻", "level": " ≈"}.get(mark, "")


def _counts(side: Side) -> dict[str, Any]:
    """The images each of the side's scores is a share of (`score_counts`)."""
    return score_counts(side.files.get(paths.EVAL_METRICS.as_posix()), side.files.get(paths.STATS.as_posix()))


def metric_rows(base: Side, head: Side) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, delta) for the review's metrics, then one row per class; no ✅/🔻
    where the two runs are not like for like (`caveats`), ≈ for a change inside its noise
    (`score_noise`; the test loss follows the test accuracy)."""
    _, unmarked = caveats(base, head)
    counts = [_counts(base), _counts(head)]
    values, marks = [], {}
    for label, path, key, fmt, better in METRICS:
        b, h = base.metric(path, key), head.metric(path, key)
        marks[key] = verdict(difference(b, h), 0 if label in unmarked else better, score_noise(key, b, h, counts))
        values.append((label, key, b, h, fmt))
    marks = loss_follows_accuracy(marks)
    sides = (base.label, head.label)
    rows = [
        (label, _shown(b, fmt), _shown(h, fmt), _delta(b, h, fmt, marks[key], sides))
        for label, key, b, h, fmt in values
    ]
    per_class = 0 if "accuracy: " in unmarked else 1
    for cls, b, h in class_pairs(base, head):
        mark = verdict(difference(b, h), per_class, sampling_noise(b, h, counts[0]["class"], counts[1]["class"]))
        rows.append((f"accuracy: {cls}", _shown(b, "{:.4f}"), _shown(h, "{:.4f}"), _delta(b, h, "{:.4f}", mark, sides)))
    return rows


def caveats(base: Side, head: Side) -> tuple[list[str], set[str]]:
    """Where the two runs are not like for like, one line each (`unlike`), and the metric rows that
    then get no ✅/🔻: the scores' (with each class's), the times', or the training seconds alone
    (other step counts)."""
    ev, tr = (
        tuple(s.files.get(path.as_posix()) for s in (base, head)) for path in (paths.EVAL_METRICS, paths.TRAIN_METRICS)
    )
    speeds = tuple(s.metric(paths.TIMING, "images_per_s") for s in (base, head))
    data = tuple(raw_data(s.files.get(LOCK.as_posix())) for s in (base, head))
    lines, which = unlike(ev, tr, (f"`{base.label}`", f"`{head.label}`"), speeds, data)
    unmarked = {*SCORED_ROWS, "accuracy: "} if "scores" in which else set()
    times = set(TIMED_ROWS) if "times" in which else {TIMED_ROWS[0]} if "seconds" in which else set()
    return lines, unmarked | times


def table_noise_note(base: Side, head: Side, rows: list[tuple[str, str, str, str]]) -> str:
    """The line under the metrics table that says what its ≈ marks mean (scores, times or both)."""
    level = {r[0] for r in rows if r[3].endswith(" ≈")}
    b, h = (s.metric(paths.EVAL_METRICS, "test_acc") for s in (base, head))
    band = sampling_noise(b, h, _counts(base)["test"], _counts(head)["test"])
    return noise_note(bool(level - set(TIMED_ROWS)), bool(level & set(TIMED_ROWS)), "a ✅ or 🔻", band)


def _shown(v: Any, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def class_pairs(base: Side, head: Side) -> list[tuple[str, float | None, float | None]]:
    """(class, accuracy before, after) in the order the classes first appear."""
    b, h = ((s.metric(paths.EVAL_METRICS, "per_class_acc") or {}) for s in (base, head))
    return [(c, b.get(c), h.get(c)) for c in dict.fromkeys([*b, *h])]


def better_worse(base: Side, head: Side) -> tuple[list[str], list[str], list[str]]:
    """The classes whose test accuracy rose and fell by more than its sampling noise, largest change
    first, as 'cat +0.020 (0.850 → 0.870)', and the classes that moved less (by name)."""
    nb, nh = _counts(base)["class"], _counts(head)["class"]
    moved = [(c, h - b, b, h) for c, b, h in class_pairs(base, head) if b is not None and h is not None and h != b]
    moved.sort(key=lambda m: -abs(m[1]))
    noisy = {m[0] for m in moved if verdict(m[1], 1, sampling_noise(m[2], m[3], nb, nh)) == "level"}
    line = lambda m: f"{m[0]} {'+' if m[1] > 0 else '−'}{abs(m[1]):.3f} ({m[2]:.3f} → {m[3]:.3f})"
    clear = [m for m in moved if m[0] not in noisy]
    level = [c for c, *_ in moved if c in noisy]
    return [line(m) for m in clear if m[1] > 0], [line(m) for m in clear if m[1] < 0], level


def chart_titles(root: Path) -> list[str]:
    """The dvc.yaml plots a review draws (by template), in CHART_TEMPLATES order."""
    plots = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("plots") or []
    found = [(next(iter(p)), (next(iter(p.values())) or {}).get("template")) for p in plots if isinstance(p, dict)]
    return [t for tmpl in CHART_TEMPLATES for t, used in found if used == tmpl]


def plot_specs(root: Path, base: Side, head: Side) -> dict[str, dict]:
    """{title: Vega-Lite spec} from `dvc plots diff --json`, both revisions' data in each, the rev
    field holding the labels the user gave (DVC writes what it was passed: commits, 'workspace')."""
    revs = [s.commit for s in (base, head) if s.commit]  # DVC adds the workspace when one side is it
    if not revs:
        revs = ["HEAD"]  # workspace against workspace: draw it once, against HEAD's files
    cmd = [sys.executable, "-m", "dvc", "plots", "diff", "--json", *revs]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise ReviewError(f"`dvc plots diff` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    data = (json.loads(r.stdout or "{}") or {}).get("data") or {}
    names = {s.commit: s.label for s in (base, head) if s.commit}
    specs = {}
    for title in chart_titles(root):
        for entry in data.get(title) or []:
            if entry.get("type") == "vega" and entry.get("content"):
                specs[title] = _relabel(entry["content"], names)
    return specs


def _relabel(obj: Any, names: dict[str, str]) -> Any:
    """`obj` with every string equal to a commit replaced by that revision's label."""
    if isinstance(obj, dict):
        return {k: _relabel(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relabel(v, names) for v in obj]
    return names.get(obj, obj) if isinstance(obj, str) else obj


def slug(title: str) -> str:
    """A file name for a chart title: 'Confusion matrix (test; …)' → 'confusion_matrix'."""
    words = re.findall(r"[a-z0-9]+", title.split("(")[0].lower())
    return "_".join(words)[:60] or "chart"


def render_charts(specs: dict[str, dict], out: Path) -> list[tuple[str, str]]:
    """Each spec as out/SLUG.png (and SLUG.vl.json): [(title, file name)]."""
    import vl_convert as vlc

    drawn = []
    for title, spec in specs.items():
        name = slug(title)
        png = vlc.vegalite_to_png(spec, scale=2)
        with atomic_path(out / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        with atomic_path(out / f"{name}.vl.json") as tmp:  # compact: a confusion spec holds every prediction
            tmp.write_text(json.dumps(spec, separators=(",", ":")) + "\n")
        drawn.append((title, f"{name}.png"))
    return drawn


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|")
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell(v) for v in r) + " |" for r in rows),
    ]


def _rev_line(s: Side) -> str:
    return f"`{s.label}`" + (f" ({s.commit[:7]})" if s.commit and not s.commit.startswith(s.label) else "")


def _no_metrics(s: Side) -> str:
    """A line for a revision that holds no metrics at all (its column is dashes), else ''."""
    if any(s.files.get(p.as_posix()) for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING)):
        return ""
    return (
        f"{_rev_line(s)} has no metrics ({paths.EVAL_METRICS}, {paths.TRAIN_METRICS}): its column is empty (—); "
        "a commit from before any run, or one without its results (`dvc repro`, then commit dvc.lock and metrics/)"
    )


def markdown(base: Side, head: Side, charts: list[tuple[str, str]], about: str | None = None) -> str:
    """The review as Markdown, the charts linked by file name (they sit beside it); `about`, a line
    under the title saying what the head is (on a pull request: its commit and the CI run)."""
    lines = [f"## Review: {_rev_line(head)} against {_rev_line(base)}", ""]
    lines += [about, ""] if about else []
    changed = param_rows(base, head)
    lines += ["### Params that differ", ""]
    lines += _table(("param", base.label, head.label), changed) if changed else ["None: the same params.yaml."]
    inert = unused_params(base, head)
    if inert:  # a student's -S train.muon_lr=… under optimizer sgd: a change that changed nothing
        lines += ["", f"**Not used by the run of `{head.label}`** (changing them changed nothing):", ""]
        lines += [f"- {line}" for line in inert]
    code = code_changes(base, head)
    if code:  # a PR that changes a model file, not a param, said only "None" above
        lines += ["", "### Code the stages read that differs", ""] + [f"- {c}" for c in code]
    lines += ["", "### Metrics", ""]
    rows = metric_rows(base, head)
    lines += _table(("metric", base.label, head.label, "change"), rows)
    lines += ["", table_noise_note(base, head, rows)] if any(r[3].endswith(" ≈") for r in rows) else []
    lines += [line for why in map(_no_metrics, (base, head)) if why for line in ("", why)]
    notes, unmarked = caveats(base, head)
    if notes:
        lines += ["", "**Not like for like** (no ✅/🔻 where it matters):", ""] + [f"- {n}" for n in notes]
    up, down, level = better_worse(base, head)
    lines += ["", "### Classes", ""]
    if "accuracy: " in unmarked:  # the scores are not like for like: no better or worse
        lines.append("- not compared: the runs are not like for like (above)")
    else:
        lines.append("- better: " + ("; ".join(up) if up else "none"))
        lines.append("- worse: " + ("; ".join(down) if down else "none"))
        lines += ["- moved within the noise (≈): " + ", ".join(level)] if level else []
    lines += ["", "### Charts", ""]
    for title, name in charts:
        lines += [f"**{title}**", "", f"![{title}]({name})", ""]
    if not charts:
        lines += ["No chart: `dvc plots diff` found none of this repo's per-epoch, confusion or per-class plots.", ""]
    lines.append(f"<sub>`python -m src.review {base.label} {head.label}` · charts from `dvc plots diff --json`</sub>")
    return "\n".join(lines) + "\n"


def review(root: Path, base_rev: str, head_rev: str, out: Path, about: str | None = None) -> tuple[Path, int]:
    """Write the review of `head_rev` against `base_rev` to out/review.md and its charts beside it:
    (the Markdown's path, how many charts it links); `about` as in `markdown`."""
    base, head = load_side(root, base_rev), load_side(root, head_rev)
    if base.commit == head.commit and (base.commit is not None or base_rev == head_rev):
        same = "the workspace" if base.commit is None else f"commit {base.commit[:7]}"
        raise ReviewError(f"{base_rev!r} and {head_rev!r} are both {same}: nothing to review; name two revisions")
    specs = plot_specs(root, base, head)
    try:  # --out a file, a path under one, or a place such as /proc that takes no new files
        out.mkdir(parents=True, exist_ok=True)
        charts = render_charts(specs, out)
        with atomic_path(out / "review.md") as tmp:
            tmp.write_text(markdown(base, head, charts, about))
    except OSError as exc:
        raise ReviewError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out / "review.md", len(charts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.review", description=__doc__.split("\n\n")[0])
    ap.add_argument("base", nargs="?", default="main", help="the revision reviewed against (default: main)")
    ap.add_argument("head", nargs="?", default=WORKSPACE, help="the revision under review (default: workspace)")
    ap.add_argument("--out", type=Path, default=Path("review"), help="the folder for review.md and its charts")
    ap.add_argument("--about", help="a line under the title: what the head is (a PR's commit, the CI run's address)")
    args = ap.parse_args(argv)
    try:
        path, n_charts = review(Path.cwd(), args.base, args.head, args.out, args.about)
    except ReviewError as exc:
        print(f"review: error: {exc}", file=sys.stderr)
        return 2
    print(f"review: wrote {path} ({n_charts} charts)")  # not a glob: --out may hold an earlier review's PNGs
    return 0


if __name__ == "__main__":
    sys.exit(main())
