"""`python -m src.review` and the chart templates DVC's tools fill: on a copy of the session's tiny
`dvc repro` repo with a second commit (3 epochs instead of 2) and a named experiment.

The review's numbers must be each revision's own (read back with `git show REV:metrics/eval.json`),
its images the named charts with both revisions' data, and `dvc plots diff --json` of two revisions
must tell them apart (a colour per revision, whole epochs on the axis)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, sh


def git_json(repo: Path, rev: str, path: str) -> dict:
    return json.loads(sh(repo, "git", "show", f"{rev}:{path}").stdout)


@pytest.fixture(scope="module")
def lab(repo, tmp_path_factory) -> Path:
    """HEAD~1: the 2-epoch run; HEAD and the experiment `review-three`: the same with train.epochs=3."""
    dest = tmp_path_factory.mktemp("review") / "lab"
    shutil.copytree(repo, dest, symlinks=True)
    sh(dest, "dvc", "exp", "run", "-S", "train.epochs=3", "-n", "review-three")
    # the README's lines, right after `dvc exp run` (the experiment is in the workspace)
    for name, args in (("plain", []), ("named", ["review-three"])):
        out = sh(dest, "dvc", "plots", "diff", "--json", *args).stdout
        (dest.parent / f"plots_diff_{name}.json").write_text(out)
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "three epochs")
    return dest


def run_review(lab: Path, *args: str, check: bool = True):
    return sh(lab, sys.executable, "-m", "src.review", *args, check=check)


def rows(md: str) -> dict[str, list[str]]:
    """The Markdown tables' rows by their first cell."""
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def test_the_review_holds_each_revisions_own_numbers(lab, tmp_path):
    out = tmp_path / "rv"
    r = run_review(lab, "HEAD~1", "HEAD", "--out", str(out))
    assert "review: wrote" in r.stdout
    md = (out / "review.md").read_text()
    table = rows(md)
    assert table["train.epochs"] == ["2", "3"]  # the one param that differs
    assert "model.fast_cnn.widths" not in table
    for col, rev in ((0, "HEAD~1"), (1, "HEAD")):
        ev, tr, tm = (git_json(lab, rev, f"metrics/{n}.json") for n in ("eval", "train", "timing"))
        assert table["test accuracy"][col] == f"{ev['test_acc']:.4f}"
        assert table["macro-F1"][col] == f"{ev['macro_f1']:.4f}"
        assert table["epochs"][col] == str(tr["epochs"]) and table["steps"][col] == str(tr["steps"])
        assert table["time budget, s"][col] == "—"  # epochs, not a budget, in both
        assert table["precision"][col] == tr["precision"] and table["device"][col] == tr["device"]
        assert table["images/s"][col] == f"{tm['images_per_s']:.0f}"
        assert table["training seconds (validation included)"][col] == f"{tm['seconds']:.1f}"
        for cls, acc in ev["per_class_acc"].items():
            assert table[f"accuracy: {cls}"][col] == f"{acc:.4f}"
    before, after = (git_json(lab, rev, "metrics/eval.json")["test_acc"] for rev in ("HEAD~1", "HEAD"))
    d = after - before
    assert table["test accuracy"][2] == ("=" if d == 0 else f"{'+' if d > 0 else '−'}{abs(d):.4f}") + (
        "" if d == 0 else " ✅" if d > 0 else " 🔻"
    )


def test_better_and_worse_classes_are_the_per_class_deltas(lab, tmp_path):
    from src import paths
    from src.params import FEW_STEPS
    from src.review import load_side, markdown

    out = tmp_path / "rv"
    run_review(lab, "HEAD~1", "HEAD", "--out", str(out))
    md = (out / "review.md").read_text()
    # the test repo's runs are tiny: their scores are not compared, and the review says why
    assert git_json(lab, "HEAD", "metrics/train.json")["steps"] < FEW_STEPS
    assert "- not compared: the runs are not like for like (above)" in md and "trained" in md
    sides = [load_side(lab, rev) for rev in ("HEAD~1", "HEAD")]
    for s in sides:  # as if each had trained long enough: the lists come from their per-class files
        s.files[paths.TRAIN_METRICS.as_posix()]["steps"] = FEW_STEPS
    md = markdown(*sides, [])
    b, h = (git_json(lab, rev, "metrics/eval.json")["per_class_acc"] for rev in ("HEAD~1", "HEAD"))
    better = next(line for line in md.splitlines() if line.startswith("- better: "))
    worse = next(line for line in md.splitlines() if line.startswith("- worse: "))
    for cls in b:
        tag = f"{cls} {'+' if h[cls] > b[cls] else '−'}{abs(h[cls] - b[cls]):.3f} ({b[cls]:.3f} → {h[cls]:.3f})"
        if h[cls] > b[cls]:
            assert tag in better and cls not in worse
        elif h[cls] < b[cls]:
            assert tag in worse and cls not in better
        else:
            assert cls not in better and cls not in worse


def test_the_images_are_the_named_charts_with_both_revisions(lab, tmp_path):
    out = tmp_path / "rv"
    run_review(lab, "HEAD~1", "HEAD", "--out", str(out))
    md = (out / "review.md").read_text()
    linked = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", md)
    dvc_yaml = yaml.safe_load((lab / "dvc.yaml").read_text())
    titles = {next(iter(p)): next(iter(p.values())).get("template") for p in dvc_yaml["plots"] if isinstance(p, dict)}
    assert [titles[t] for t, _ in linked] == ["epochs", "epochs", "confusion_counts", "bar_horizontal_values"]
    for title, name in linked:
        png = out / name
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 300
        spec = json.loads(png.with_suffix("").with_suffix(".vl.json").read_text())
        assert (spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]) == title
        assert {v["rev"] for v in spec["data"]["values"]} == {"HEAD~1", "HEAD"}
    # the accuracy chart's points are each revision's DVCLive log
    acc = json.loads((out / "accuracy.vl.json").read_text())["data"]["values"]
    for rev in ("HEAD~1", "HEAD"):
        tsv = sh(lab, "git", "show", f"{rev}:dvclive/train/plots/metrics/val/acc.tsv").stdout.split("\n")[1:]
        want = [round(float(line.split("\t")[-1]), 6) for line in tsv if line]
        got = [round(float(v["acc"]), 6) for v in acc if v["rev"] == rev and "val" in v["filename"]]
        assert got == want


def test_an_experiment_by_name_and_the_default_workspace_against_main(lab, tmp_path):
    run_review(lab, "HEAD~1", "review-three", "--out", str(tmp_path / "exp"))
    table = rows((tmp_path / "exp" / "review.md").read_text())
    refs = sh(lab, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").stdout.splitlines()
    (exp,) = [line.split()[1] for line in refs if line.split()[0].endswith("/review-three")]
    want = git_json(lab, exp, "metrics/eval.json")["test_acc"]
    assert table["test accuracy"][1] == f"{want:.4f}" and table["train.epochs"] == ["2", "3"]
    spec = json.loads((tmp_path / "exp" / "accuracy.vl.json").read_text())
    assert {v["rev"] for v in spec["data"]["values"]} == {"HEAD~1", "review-three"}  # the name, not the commit
    run_review(lab, "--out", str(tmp_path / "ws"))
    md = (tmp_path / "ws" / "review.md").read_text()
    assert "`workspace` against `main`" in md and "None: the same params.yaml." in md


def test_a_revision_that_does_not_exist_is_one_line(lab, tmp_path):
    r = run_review(lab, "no-such-rev", "HEAD", "--out", str(tmp_path / "x"), check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "review: error: 'no-such-rev' is neither a git revision, a `dvc exp` name nor 'workspace' here "
        "(`dvc exp pull <remote> <name>` fetches an experiment)"
    ]
    assert not (tmp_path / "x").exists()


def test_a_full_commit_hash_is_shortened_in_the_review(lab, tmp_path):
    sha = sh(lab, "git", "rev-parse", "HEAD~1").stdout.strip()
    run_review(lab, sha, "HEAD", "--out", str(tmp_path / "x"))
    md = (tmp_path / "x" / "review.md").read_text()
    assert f"`{sha[:12]}`" in md and sha not in md


@pytest.mark.parametrize("revs", [("HEAD", "HEAD"), ("main", "HEAD"), ("workspace", "workspace")])
def test_the_same_revision_twice_is_one_line(lab, tmp_path, revs):
    r = run_review(lab, *revs, "--out", str(tmp_path / "x"), check=False)
    same = "the workspace" if revs[0] == "workspace" else f"commit {sh(lab, 'git', 'rev-parse', 'HEAD').stdout[:7]}"
    assert (r.returncode, r.stderr.strip().splitlines()) == (
        2,
        [f"review: error: {revs[0]!r} and {revs[1]!r} are both {same}: nothing to review; name two revisions"],
    )
    assert not (tmp_path / "x").exists()


def with_params(text: str, **sections: dict) -> str:
    """params.yaml's text with some values of its sections changed."""
    p = yaml.safe_load(text)
    for name, values in sections.items():
        p[name].update(values)
    return yaml.safe_dump(p, sort_keys=False)


@pytest.fixture(params=["", ":main"], ids=["no-branch", "branch"])
def failed_run(lab, request):
    """What a queued `dvc exp run -S train.epochs=5` that failed leaves: a commit of its params.yaml
    beside the baseline's results, in the reflog of refs/exps/celery/failed under its name."""
    params = lab / "params.yaml"
    before = params.read_text()
    params.write_text(with_params(before, train={"epochs": 5}))
    try:
        commit = sh(lab, "git", "-c", "user.name=t", "-c", "user.email=t@t", "stash", "create").stdout.strip()
    finally:
        params.write_text(before)
    head = sh(lab, "git", "rev-parse", "HEAD").stdout.strip()
    sh(
        lab,
        "git",
        "update-ref",
        "--create-reflog",
        "-m",
        f"commit: dvc-exp:{head}:{head}:five{request.param}",
        "refs/exps/celery/failed",
        commit,
    )
    yield commit
    sh(lab, "git", "update-ref", "-d", "refs/exps/celery/failed")


def test_a_failed_experiment_is_refused_by_name_and_by_commit(lab, tmp_path, failed_run):
    """Its commit holds the baseline's metrics: reviewed, it read as a run of its params that
    changed nothing. The name is not an experiment ref, so it was "neither a git revision …"."""
    want = "it has no results of its own (`dvc queue logs five` says why; `dvc exp run -S …` again once fixed)"
    for rev in ("five", failed_run[:7], "refs/exps/celery/failed"):
        r = run_review(lab, "HEAD", rev, "--out", str(tmp_path / "x"), check=False)
        assert (r.returncode, r.stderr.strip()) == (
            2,
            f"review: error: {rev!r} is a queued experiment that failed: {want}",
        )
        v = sh(lab, sys.executable, "-m", "src.verify", rev, check=False)
        assert (v.returncode, v.stderr.strip()) == (
            2,
            f"verify: error: {rev!r} is a queued experiment that failed: {want}",
        )
    sh(lab, "git", "update-ref", "-d", "refs/exps/celery/failed")  # `dvc queue remove --all`: the commit alone
    r = run_review(lab, "HEAD", failed_run, "--out", str(tmp_path / "x"), check=False)
    assert (r.returncode, r.stderr.strip()) == (
        2,
        f"review: error: {failed_run}: its results are not of its params.yaml: train.epochs differ from what "
        "dvc.lock ran (an unfinished run, or params committed without one)",
    )
    assert not (tmp_path / "x").exists()


def test_a_queued_experiment_not_run_yet_is_named_so(lab, tmp_path):
    """`dvc exp run --queue -n q1` before `dvc queue start`: the review and verify said "neither a git
    revision …" and suggested `dvc exp pull`. DVC keeps it in the reflog of refs/exps/celery/stash."""
    head = sh(lab, "git", "rev-parse", "HEAD").stdout.strip()
    msg = f"commit: dvc-exp:{head}:{head}:q1"
    sh(lab, "git", "update-ref", "--create-reflog", "-m", msg, "refs/exps/celery/stash", head)
    try:
        want = "'q1' is a queued experiment that has not run yet: no results (`dvc queue status` lists it)"
        r = run_review(lab, "HEAD", "q1", "--out", str(tmp_path / "x"), check=False)
        assert (r.returncode, r.stderr.strip()) == (2, f"review: error: {want}")
        v = sh(lab, sys.executable, "-m", "src.verify", "q1", check=False)
        assert (v.returncode, v.stderr.strip()) == (2, f"verify: error: {want}")
    finally:
        sh(lab, "git", "update-ref", "-d", "refs/exps/celery/stash")
    assert not (tmp_path / "x").exists()


def test_params_edited_without_a_rerun_are_not_reviewed_as_results(lab, tmp_path):
    params = lab / "params.yaml"
    before = params.read_text()
    try:
        params.write_text(with_params(before, train={"epochs": 4, "lr": 0.05}))
        r = run_review(lab, "HEAD", "--out", str(tmp_path / "x"), check=False)
    finally:
        params.write_text(before)
    assert (r.returncode, r.stderr.strip()) == (
        2,
        "review: error: workspace: its results are not of its params.yaml: train.epochs, train.lr differ from "
        "what dvc.lock ran (run `dvc repro` first)",
    )
    assert not (tmp_path / "x").exists()


def test_code_changed_without_a_rerun_is_not_reviewed_as_results(lab, tmp_path):
    """A student committed a model edit without `dvc repro`: the review compared the old results as
    'None: the same params.yaml', every metric equal, and no 'Code … differs' (the two dvc.lock agree)."""
    copy = tmp_path / "lab"
    shutil.copytree(lab, copy, symlinks=True)
    model = copy / "src/models/fast_cnn.py"
    model.write_text(model.read_text() + "# a student's edit\n")
    r = run_review(copy, "HEAD", "--out", str(tmp_path / "ws"), check=False)
    assert (r.returncode, r.stderr.strip()) == (
        2,
        "review: error: workspace: its results are not of its code: src/models differ from what dvc.lock ran "
        "(run `dvc repro` first)",
    )
    sh(copy, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "edit, no rerun")
    r = run_review(copy, "HEAD~1", "HEAD", "--out", str(tmp_path / "x"), check=False)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "HEAD: its results are not of its code: src/models differ from what dvc.lock ran "
        "(code committed without a rerun: `dvc repro`, then commit)"
    )
    assert not (tmp_path / "x").exists()
    run_review(copy, "HEAD~2", "HEAD~1", "--out", str(tmp_path / "y"))  # the commits before it: as they ran


def test_a_run_on_another_copy_of_cifar10_says_so_and_marks_no_score(lab, tmp_path):
    copy = tmp_path / "lab"
    shutil.copytree(lab, copy, symlinks=True)
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    (raw,) = [o for o in lock["stages"]["download"]["outs"] if o["path"] == "data/raw"]
    raw["md5"] = "c58f30108f718f92721af3b95e74349a.dir"  # what another copy's files would hash to
    (copy / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    sh(copy, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "the official files")
    run_review(copy, "HEAD~1", "HEAD", "--out", str(tmp_path / "x"))
    md = (tmp_path / "x" / "review.md").read_text()
    assert "another copy of CIFAR-10: data/raw " in md and " against c58f301 in dvc.lock" in md
    assert not any(m in rows(md)["test accuracy"][2] for m in ("✅", "🔻"))


def test_bytecode_beside_the_code_is_no_change_to_dvc_or_the_review(repo, tmp_path):
    """Where PYTHONDONTWRITEBYTECODE is unset (most machines; this one sets it), importing the code
    writes src/models/__pycache__: DVC then called the folder dep src/models modified and every stage
    stale, until .dvcignore left bytecode out."""
    from src.review import stale_code

    copy = tmp_path / "lab"
    shutil.copytree(repo, copy, symlinks=True)
    sh(copy, sys.executable, "-c", "import src.models.fast_cnn", env_extra={"PYTHONDONTWRITEBYTECODE": ""})
    assert list((copy / "src/models/__pycache__").glob("*.pyc"))
    assert "Data and pipelines are up to date" in sh(copy, "dvc", "status").stdout
    assert stale_code(copy, None, yaml.safe_load((copy / "dvc.lock").read_text())) == []


# ------------------------------------------------------------------ templates for DVC's tools


def test_the_templates_carry_the_anchors_dvc_tools_fill():
    for name in ("epochs", "bar_horizontal_values", "confusion_counts", "confusion_normalized_values"):
        text = (REPO / ".dvc" / "plots" / f"{name}.json").read_text()
        assert "<DVC_METRIC_PLOT_HEIGHT>" in text and "<DVC_METRIC_PLOT_WIDTH>" in text, name
    for name in ("epochs", "bar_horizontal_values"):  # the charts whose marks stand for a revision
        assert '"<DVC_METRIC_COLOR>"' in (REPO / ".dvc" / "plots" / f"{name}.json").read_text(), name


def _svg_text(spec: dict) -> list[str]:
    import vl_convert as vlc

    return re.findall(r"<text[^>]*>([^<]*)</text>", vlc.vegalite_to_svg(spec))


def test_plots_diff_of_two_revisions_tells_them_apart(lab):
    r = sh(lab, "dvc", "plots", "diff", "--json", "HEAD~1", "HEAD")
    spec = json.loads(r.stdout)["data"]["Accuracy (train vs validation)"][0]["content"]
    color = spec["encoding"]["color"]
    assert color["field"] == "rev" and color["scale"]["domain"] == ["HEAD~1", "HEAD"]
    assert len(set(color["scale"]["range"])) == 2  # a colour per revision
    texts = _svg_text(spec)
    assert texts.count("HEAD~1") == 1 and texts.count("HEAD") == 1  # the legend names both
    assert "train" in texts and "validation" in texts  # and the split, by dash
    ticks = texts[: texts.index("epoch")]
    assert ticks == ["1", "2", "3"]  # whole epochs, each once
    two = {**spec, "data": {"values": [v for v in spec["data"]["values"] if v["rev"] == "HEAD~1"]}}
    texts = _svg_text(two)
    assert texts[: texts.index("epoch")] == ["1", "2"]  # a 2-epoch run does not read "1 2 2"


def test_the_readmes_plots_diff_compares_the_experiment_with_the_commit(lab):
    """Right after `dvc exp run`, `dvc plots diff` (no revision) draws the experiment against the last
    commit; `dvc plots diff <exp>` would draw the experiment against itself."""
    readme = (REPO / "README.md").read_text()
    assert "dvc plots diff                " in readme and "dvc plots diff <exp-name>  " not in readme

    def per_rev(name: str) -> dict[str, list[float]]:
        spec = json.loads((lab.parent / f"plots_diff_{name}.json").read_text())["data"]
        values = spec["Accuracy (train vs validation)"][0]["content"]["data"]["values"]
        out: dict[str, list[float]] = {}
        for v in values:
            if "val" in v["filename"]:
                out.setdefault(v["rev"], []).append(float(v["acc"]))
        return out

    plain = per_rev("plain")
    assert set(plain) == {"workspace", "HEAD"} and len(plain["workspace"]) == 3 and len(plain["HEAD"]) == 2
    named = per_rev("named")
    assert set(named) == {"workspace", "review-three"} and named["workspace"] == named["review-three"]


def test_timings_of_a_commit_from_before_timing_json_are_shown():
    """Seconds and images/s moved from metrics/train.json to metrics/timing.json: a base commit
    from before the move still shows them (as src.compare does)."""
    from src import paths
    from src.review import Side, metric_rows

    old = Side("main", "abc1234", {paths.TRAIN_METRICS.as_posix(): {"seconds": 150.0, "images_per_s": 540.0}})
    new = Side("workspace", None, {paths.TIMING.as_posix(): {"seconds": 125.8, "images_per_s": 658.0}})
    rows = {row[0]: row[1:3] for row in metric_rows(old, new)}
    assert rows["training seconds (validation included)"] == ("150.0", "125.8") and rows["images/s"] == ("540", "658")


def test_the_marks_and_the_class_lists_follow_which_way_is_better():
    """Two hand-made revisions that differ: higher accuracy and lower loss or seconds are ✅, the
    opposite 🔻, values that are neither better nor worse unmarked; classes up and down, largest first."""
    from src import paths
    from src.review import Side, better_worse, markdown, metric_rows

    ev, tr, tm = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING))
    base = Side("main", "abc1234", {
        ev: {"test_acc": 0.90, "test_loss": 0.30, "per_class_acc": {"cat": 0.80, "dog": 0.85, "ship": 0.95}},
        tr: {"epochs": 6, "best_val_acc": 0.91},
        tm: {"seconds": 120.0, "images_per_s": 600.0},
    })  # fmt: skip
    head = Side("workspace", None, {
        ev: {"test_acc": 0.92, "test_loss": 0.35, "per_class_acc": {"cat": 0.86, "dog": 0.84, "ship": 0.95}},
        tr: {"epochs": 8, "best_val_acc": 0.90},
        tm: {"seconds": 100.0, "images_per_s": 500.0},
    })  # fmt: skip
    rows = {row[0]: row[1:] for row in metric_rows(base, head)}
    assert rows["test accuracy"] == ("0.9000", "0.9200", "+0.0200 ✅")
    assert rows["test loss"] == ("0.3000", "0.3500", "+0.0500 🔻")  # lower is better
    assert rows["best validation accuracy"][2] == "−0.0100 🔻"
    assert rows["training seconds (validation included)"][2] == "−20.0 ✅" and rows["images/s"][2] == "−100 🔻"
    assert rows["epochs"][2] == "+2"  # neither better nor worse
    assert rows["accuracy: cat"][2] == "+0.0600 ✅" and rows["accuracy: ship"][2] == "="
    assert better_worse(base, head) == (["cat +0.060 (0.800 → 0.860)"], ["dog −0.010 (0.850 → 0.840)"], [])
    md = markdown(base, head, [])
    assert "cat +0.060 (0.800 → 0.860)" in md and "dog −0.010 (0.850 → 0.840)" in md
    assert "≈" not in md  # no test image count recorded: no noise band, the marks as before


def test_a_change_within_the_sampling_noise_is_marked_level_not_better_or_worse():
    """Two runs of the same settings with other seeds differ by a few tenths of a point, and the
    review marked every such change ✅ or 🔻 (a class 'better' by 2 images of its 1,000). A change
    smaller than one standard error of the difference of the two accuracies is ≈, the classes that
    moved that little are listed apart, and a line says what ≈ means and how to settle it."""
    from src import paths
    from src.review import Side, better_worse, markdown, metric_rows
    from src.run_diff import sampling_noise

    ev, tr, tm, st = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING, paths.STATS))

    def side(label: str, acc: float, val: float, cls: dict[str, float], ips: float = 673.0) -> Side:
        loss = 0.25 if label == "main" else 0.24
        return Side(label, None, {
            ev: {"test_acc": acc, "macro_f1": acc, "test_loss": loss, "test_images": 3000, "per_class_acc": cls},
            tr: {"best_val_acc": val, "steps": 312},
            tm: {"seconds": 123.0, "images_per_s": ips},
            st: {"val_images": 1500},
        })  # fmt: skip

    # the committed recipe's seeds 0 and 2 (95.87 and 95.63 %, benchmarks/results): 7 images of 3,000
    base = side("main", 0.9587, 0.940, {"cat": 0.900, "dog": 0.930, "ship": 0.990})
    head = side("workspace", 0.9563, 0.950, {"cat": 0.902, "dog": 0.960, "ship": 0.970})
    band = sampling_noise(0.9587, 0.9563, 3000, 3000)
    assert 0.0050 < band < 0.0055  # √(p(1−p)/n) twice over: about half a point at 3,000 images
    rows = {row[0]: row[1:] for row in metric_rows(base, head)}
    assert rows["test accuracy"][2] == "−0.0024 ≈" and rows["macro-F1"][2] == "−0.0024 ≈"
    assert rows["test loss"][2] == "−0.0100 ≈"  # no band of its own: it follows the test accuracy, not ✅
    # 1,500 validation images (500 a class): one point is beyond its band of ±0.83
    assert rows["best validation accuracy"][2] == "+0.0100 ✅"
    # 1,000 test images a class: 0.2 points ≈; 3 points ✅; 2 points at 99 → 97 % (band ±0.62) 🔻
    assert rows["accuracy: cat"][2] == "+0.0020 ≈"
    assert rows["accuracy: dog"][2] == "+0.0300 ✅" and rows["accuracy: ship"][2] == "−0.0200 🔻"
    assert better_worse(base, head) == (["dog +0.030 (0.930 → 0.960)"], ["ship −0.020 (0.990 → 0.970)"], ["cat"])
    md = markdown(base, head, [])
    assert "- moved within the noise (≈): cat" in md
    note = next(line for line in md.splitlines() if line.startswith("≈ within the noise"))
    assert "(±0.52 points for this test accuracy)" in note and "train.seed=1,2" in note
    assert "A time or speed" not in note and "A ✅ or 🔻 is a hint, not proof" in note  # the times did not move
    # a speed 3 % lower (the docs' example: 673 against 672 images/s was 🔻) is ≈, 14 % is 🔻
    slower = side("workspace", 0.9563, 0.950, {"cat": 0.902, "dog": 0.960, "ship": 0.970}, ips=653.0)
    rows = {row[0]: row[1:] for row in metric_rows(base, slower)}
    assert rows["images/s"][2] == "−20 ≈" and rows["training seconds (validation included)"][2] == "="
    assert "A time or speed that moved less than 12 % of the base's" in markdown(base, slower, [])
    slower = side("workspace", 0.9563, 0.950, {"cat": 0.902, "dog": 0.960, "ship": 0.970}, ips=580.0)
    assert {row[0]: row[3] for row in metric_rows(base, slower)}["images/s"] == "−93 🔻"
    # a move twice the band is marked again
    head = side("workspace", 0.9587 - 2 * band, 0.950, {"cat": 0.900, "dog": 0.930, "ship": 0.990})
    rows = {row[0]: row[1:] for row in metric_rows(base, head)}
    assert rows["test accuracy"][2].endswith("🔻") and rows["accuracy: cat"][2] == "="
    assert "≈ within the noise" not in markdown(base, head, [])


def test_a_revision_without_metrics_is_said_so_under_the_table():
    """A base commit from before any run has no metrics: its column is dashes, and a line says why
    (it was dashes alone); a revision with metrics gets no such line."""
    from src import paths
    from src.review import Side, markdown

    base = Side("main", "abc1234", {"params.yaml": {"train": {"epochs": 6}}})
    head = Side("workspace", None, {paths.EVAL_METRICS.as_posix(): {"test_acc": 0.9}})
    md = markdown(base, head, [])
    assert "`main` (abc1234) has no metrics (metrics/eval.json, metrics/train.json)" in md
    assert "`workspace` has no metrics" not in md


def test_runs_that_are_not_like_for_like_are_said_so_and_lose_their_marks():
    """A tiny run on a bf16 CPU against the committed one: other test images, another machine, one
    step. The review gave 'better: airplane ✅' from a model that predicts airplane for everything,
    and ✅ to a speed measured on another CPU."""
    from src import paths
    from src.review import Side, caveats, markdown, metric_rows

    ev, tr, tm = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING))
    classes = {"airplane": 0.95, "automobile": 0.98, "bird": 0.94}
    base = Side("main", "abc1234", {
        ev: {"test_acc": 0.9563, "test_images": 3000, "per_class_acc": classes},
        tr: {"steps": 312, "device": "cpu", "precision": "fp32", "cpu_capability": "AVX2"},
        tm: {"seconds": 125.2, "images_per_s": 661.0},
    })  # fmt: skip
    head = Side("tiny", None, {
        ev: {"test_acc": 0.3333, "test_images": 300, "per_class_acc": dict.fromkeys(classes, 0.0) | {"airplane": 1.0}},
        tr: {"steps": 1, "device": "cpu", "precision": "bf16", "cpu_capability": "AVX512"},
        tm: {"seconds": 2.0, "images_per_s": 1300.0},
    })  # fmt: skip
    notes, _ = caveats(base, head)
    assert notes == [
        "other test sets: 3,000 against 300 test images",
        "another machine or precision: cpu fp32 AVX2 against cpu bf16 AVX512 — the times are not comparable, nor "
        "the scores to a few tenths of a point (other kernels round differently)",
        "`tiny` trained 1 step only: its scores say little",
    ]
    rows = {row[0]: row[1:] for row in metric_rows(base, head)}
    assert rows["test accuracy"][2] == "−0.6230" and rows["accuracy: airplane"][2] == "+0.0500"  # no ✅/🔻
    assert rows["images/s"][2] == "+639" and rows["test images"] == ("3,000", "300", "−2,700")
    md = markdown(base, head, [])
    table = md.split("### Metrics")[1].split("**Not like for like** (no ✅/🔻 where it matters):")[0]
    assert "| test accuracy |" in table and "✅" not in table and "🔻" not in table
    other = Side("cats", None, {ev: {"test_acc": 0.8, "test_images": 3000, "per_class_acc": {"cat": 0.8, "dog": 0.8}}})
    assert caveats(base, other)[0] == [
        "other classes: airplane, automobile, bird against cat, dog — two tasks, not one run better"
    ]
    # a class one side has: which side, not "changed"
    rows = {row[0]: row[1:] for row in metric_rows(base, other)}
    assert rows["accuracy: airplane"] == ("0.9500", "—", "only in `main`")
    assert rows["accuracy: cat"] == ("—", "0.8000", "only in `cats`")
    assert rows["CPU kernels"] == ("AVX2", "—", "only in `main`") and rows["test images"][2] == "="


def test_another_cpu_model_is_another_machine_and_other_kernels_unmark_the_scores():
    """A PR's run on a GitHub runner against the committed run from the instructor's machine: the same
    kernels and precision, so the review said nothing and marked the runner's images/s 🔻. And a run
    with other kernels kept ✅/🔻 on its scores, which those kernels alone move by a few tenths."""
    from src import paths
    from src.review import Side, caveats, metric_rows

    ev, tr, tm = (p.as_posix() for p in (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.TIMING))
    run = {"device": "cpu", "precision": "fp32", "cpu_capability": "AVX2", "threads": 2, "steps": 312}

    def side(label: str, acc: float, ips: float, **machine) -> Side:
        return Side(label, None, {
            ev: {"test_acc": acc, "test_images": 3000, "per_class_acc": {"cat": acc, "dog": acc}},
            tr: {**run, **machine},
            tm: {"seconds": 100.0, "images_per_s": ips},
        })  # fmt: skip

    base = side("main", 0.90, 660.0, processor="AMD EPYC")
    runner = side("workspace", 0.91, 520.0, processor="AMD EPYC 7763 64-Core Processor")
    notes, unmarked = caveats(base, runner)
    assert notes == [
        "another machine or precision: cpu fp32 AVX2 AMD EPYC 2 threads against cpu fp32 AVX2 AMD EPYC 7763 "
        "64-Core Processor 2 threads — the times are not comparable"
    ]
    rows = {row[0]: row[1:] for row in metric_rows(base, runner)}
    assert rows["images/s"][2] == "−140" and rows["test accuracy"][2] == "+0.0100 ✅"  # the scores compare
    avx512 = side("workspace", 0.91, 900.0, processor="AMD EPYC", cpu_capability="AVX512")
    rows = {row[0]: row[1:] for row in metric_rows(base, avx512)}
    assert rows["test accuracy"][2] == "+0.0100" and rows["accuracy: cat"][2] == "+0.0100"  # no ✅ from the kernels


def test_a_few_step_run_or_an_older_record_of_the_machine_still_loses_the_marks():
    """A 1-step run on the same test set kept its ✅ and 'better: airplane'; a base commit from before
    cpu_capability was recorded (cuda bf16 against cpu fp32) gave no caveat at all."""
    from src import paths
    from src.review import Side, caveats, markdown, metric_rows

    ev, tr = paths.EVAL_METRICS.as_posix(), paths.TRAIN_METRICS.as_posix()
    per_class = {"airplane": 0.9, "bird": 0.9}
    base = Side(
        "main", "abc1234", {ev: {"test_acc": 0.9, "test_images": 200, "per_class_acc": per_class}, tr: {"steps": 312}}
    )
    tiny = Side("tiny", None, {
        ev: {"test_acc": 0.5, "test_images": 200, "per_class_acc": {"airplane": 1.0, "bird": 0.0}},
        tr: {"steps": 1},
    })  # fmt: skip
    assert caveats(base, tiny)[0] == ["`tiny` trained 1 step only: its scores say little"]
    rows = {row[0]: row[3] for row in metric_rows(base, tiny)}
    assert rows["test accuracy"] == "−0.4000" and rows["accuracy: airplane"] == "+0.1000"
    md = markdown(base, tiny, [])
    assert "- not compared: the runs are not like for like (above)" in md and "better: airplane" not in md
    old = Side("main", "abc1234", {tr: {"steps": 312, "device": "cpu", "precision": "fp32", "threads": 2}})
    gpu = Side(
        "gpu",
        None,
        {tr: {"steps": 312, "device": "cuda", "precision": "bf16", "cpu_capability": "AVX512", "threads": 8}},
    )
    want = (
        "another machine or precision: cpu fp32 2 threads against cuda bf16 8 threads — the times are not comparable, "
        "nor the scores to a few tenths of a point (other kernels round differently)"
    )
    assert caveats(old, gpu)[0] == [want]
    # the same machine, one thread per queue worker: it read "another machine or precision … 1 threads"
    queued = Side("q", None, {tr: {"steps": 312, "device": "cpu", "precision": "fp32", "threads": 1}})
    want = "another thread count: cpu fp32 2 threads against cpu fp32 1 thread — the times are not comparable"
    assert caveats(old, queued)[0] == [want]


def test_a_param_set_to_null_is_null_and_a_missing_one_absent():
    """`data.test_per_class:` (empty: all test images) read as '(absent)', as if the key were gone."""
    from src.review import Side, param_rows

    base = Side("main", "abc1234", {"params.yaml": {"data": {"test_per_class": None, "seed": 0}}})
    head = Side("tiny", None, {"params.yaml": {"data": {"test_per_class": 100}}})
    assert param_rows(base, head) == [("data.seed", "0", "(absent)"), ("data.test_per_class", "null", "100")]


def test_an_out_folder_that_cannot_be_written_is_one_line(lab, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    cases = [(tmp_path / "taken", "File exists"), (tmp_path / "taken" / "sub", "Not a directory")]
    cases += [(Path("/proc"), "No such file or directory")]  # exists, takes no new files: fails at the first chart
    for out, why in cases:
        r = run_review(lab, "HEAD~1", "HEAD", "--out", str(out), check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [f"review: error: --out {out}: cannot write there ({why})"]


def test_a_file_that_is_not_yaml_is_named_with_its_line(tmp_path):
    """A review of a params.yaml a student broke by hand says where: it said only "is not readable
    (ScannerError)"."""
    from src.review import ReviewError, read_at

    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.03\n\tepochs: 6\n")
    with pytest.raises(ReviewError) as e:
        read_at(tmp_path, None, Path("params.yaml"))
    assert str(e.value) == (
        "params.yaml at workspace: not valid YAML: line 3, column 1: found character '\\t' that cannot "
        "start any token; indent with spaces, not tabs"
    )


def test_the_review_can_say_what_its_head_is():
    """On a pull request the head is the workspace: the comment named no commit and no run."""
    from src.review import Side, markdown

    base, head = Side("origin/main", "abc1234def", {}), Side("workspace", None, {})
    about = "The PR's head 1234567 merged into main; run https://github.com/o/r/actions/runs/1"
    md = markdown(base, head, [], about)
    assert md.splitlines()[:3] == ["## Review: `workspace` against `origin/main` (abc1234)", "", about]
    assert about not in markdown(base, head, [])


def test_a_pr_that_changes_code_not_params_says_which_code():
    """A student's PR that edits a model file: the review said only "None: the same params.yaml"."""
    from src.review import LOCK, Side, code_changes, markdown

    def lock(model_md5: str, extra: dict | None = None) -> dict:
        deps = [
            {"path": "data/subset.pt", "md5": "d1"},  # made by stats: a result, not code
            {"path": "src/models", "md5": model_md5 + ".dir"},
            {"path": "stages/train.py", "md5": "t1"},
            *([extra] if extra else []),
        ]
        return {
            "stages": {
                "stats": {"deps": [{"path": "src/data/cifar.py", "md5": "c1"}], "outs": [{"path": "data/subset.pt"}]},
                "train": {"deps": deps, "params": {"params.yaml": {}}, "outs": [{"path": "models/best.pt"}]},
                "evaluate": {"deps": [{"path": "src/models", "md5": model_md5 + ".dir"}]},
            }
        }

    base = Side("origin/main", "abc1234def", {LOCK.as_posix(): lock("m1")})
    head = Side("workspace", None, {LOCK.as_posix(): lock("m2", {"path": "src/extra.py", "md5": "e1"})})
    assert code_changes(base, head) == [
        "`src/extra.py` added (read by train)",
        "`src/models` changed (read by train, evaluate)",
    ]
    md = markdown(base, head, [])
    assert "None: the same params.yaml.\n\n### Code the stages read that differs\n\n- `src/extra.py` added" in md
    assert code_changes(base, base) == [] and code_changes(base, Side("old", "f00", {})) == []


def test_a_param_the_run_did_not_use_is_said_so_under_the_params():
    """A student's `-S train.muon_lr=0.2` under `train.optimizer=sgd`, or a change to the gpu section
    on a laptop, changed nothing, and the review listed it as if it explained the new numbers."""
    from src import paths
    from src.review import Side, markdown, unused_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tr = paths.TRAIN_METRICS.as_posix()

    def side(label: str, device: str, **train) -> Side:
        p = {**params, "train": {**params["train"], **train}}
        recipe = "gpu" if device.startswith("cuda") else "default"  # train.json's record of the recipe run
        return Side(label, None, {"params.yaml": p, tr: {"device": device, "recipe": recipe, "steps": 312}})

    base = side("main", "cpu", optimizer="sgd")
    head = side("workspace", "cpu", optimizer="sgd", muon_lr=0.2, lr=0.05)
    head.files["params.yaml"]["gpu"] = {**params["gpu"], "train": {**params["gpu"]["train"], "lr": 0.1}}
    assert unused_params(base, head) == [
        "`gpu.train.lr`: the gpu section was not used: this run trained with the default recipe (on cpu)",
        "`train.muon_lr`: used only with train.optimizer=muon (this run: sgd)",
    ]  # train.lr is used: not listed
    md = markdown(base, head, [])
    assert "**Not used by the run of `workspace`** (changing them changed nothing):" in md
    assert "- `train.muon_lr`: used only with train.optimizer=muon (this run: sgd)" in md
    # the same change on a GPU run: the GPU recipe's own values replace the CPU recipe's
    gpu_head = side("workspace", "cuda:0", optimizer="sgd", muon_lr=0.2, lr=0.05)  # one of several GPUs
    assert unused_params(base, gpu_head) == [
        "`train.lr`: the GPU recipe this run used replaces it with gpu.train.lr",
        "`train.muon_lr`: the GPU recipe this run used replaces it with gpu.train.muon_lr",
    ]
    same = side("workspace", "cpu", optimizer="sgd", lr=0.05)
    assert unused_params(base, same) == [] and "Not used by" not in markdown(base, same, [])
    unknown = side("workspace", "cpu", optimizer="sgd", muon_lr=0.2)
    del unknown.files[tr]["recipe"]  # a commit from before train.json recorded its recipe: no guess
    assert unused_params(base, unknown) == []
