"""The comparison across experiments, from a saved `dvc exp show --json` (built here in DVC 3's
layout from the committed params.yaml and metrics, so no experiment has to run): the printed table
fits the terminal, each figure labels a run with what differs and reads well when two runs land on
one point, and compare/ stays out of git."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.offsetbox import AnnotationBbox, TextArea

from src import compare
from src.compare import (
    describe,
    experiments,
    main,
    not_like_for_like,
    short_keys,
    shorten,
    show_value,
    table,
    terminal_view,
)
from src.figures.experiments import accuracy_vs_seconds, per_class_heatmap, point_labels, wrapped
from src.figures.readability import drawn_texts, problems
from src.params import CIFAR10_CLASSES, deep_merge
from tests.conftest import COMMITTED, REPO

EVAL = json.loads((REPO / "metrics/eval.json").read_text())
BASE = {"data": {"classes": list(CIFAR10_CLASSES)}}  # the baseline: all 10 classes, a long value to shorten
LR, EPOCHS = f"{COMMITTED['train']['lr']:g}", str(COMMITTED["train"]["epochs"])  # the baseline's
TRAIN = json.loads((REPO / "metrics/train.json").read_text())


def _rev(sha: str, name: str, over: dict, acc: float | None, seconds: float = 87.2, error: bool = False) -> dict:
    """One commit or experiment as `dvc exp show --json` writes it (data: params, metrics, deps, ...)."""
    params = deep_merge(deep_merge(copy.deepcopy(COMMITTED), BASE), over)
    metrics = (
        {}
        if acc is None
        else {
            "metrics/eval.json": {
                "data": {**EVAL, "test_acc": acc, "per_class_acc": dict.fromkeys(params["data"]["classes"], acc)}
            },
            "metrics/train.json": {"data": {**TRAIN, "seconds": seconds}},
        }
    )
    return {
        "rev": sha * 40,
        "name": name,
        "error": {"type": "ReproductionError", "msg": "failed"} if error else None,
        "data": {
            "rev": sha * 40,
            "timestamp": "2026-12-01T09:33:08",
            "params": {"params.yaml": {"data": params}},
            "metrics": metrics,
            "deps": {},
            "outs": {},
            "meta": {},
        },
        "experiments": None,
    }


def exp_show(runs: list[tuple[str, dict, float | None, float]]) -> list[dict]:
    """[workspace, main with its experiments]: each run (name, params changed, test acc or None if
    it failed, seconds)."""
    main_rev = {**_rev("a", "main", {}, 0.954), "experiments": []}
    for i, (name, over, acc, seconds) in enumerate(runs):
        failed = acc is None
        main_rev["experiments"].append(
            {
                "name": name,
                "executor": {"state": "failed"} if failed else None,
                "revs": [_rev("bcdef123"[i % 8], name, over, acc, seconds, failed)],
            }
        )
    return [{**_rev("0", "workspace", {}, 0.954), "rev": "workspace"}, main_rev]


def test_all_commits_keeps_head_and_the_commits_with_experiments():
    """`--all-commits` lists the whole history (188 rows on this repo): a row for each commit buried
    the students' experiments, so only HEAD and the commits that have experiments stay."""
    show = exp_show([("warm-dune", {"train": {"epochs": 12}}, 0.962, 120.0)])
    history = [{**_rev(c, f"old-{c}", {}, 0.9), "experiments": None} for c in "123"]
    with_exp = copy.deepcopy(show[1])
    with_exp.update(rev="fedcba9", name="older")
    with_exp["experiments"][0]["revs"][0]["name"] = "late-exp"
    rows = experiments([show[0], {**show[1], "experiments": []}, *history[:2], with_exp, history[2]])
    assert [r["name"] for r in rows] == ["main", "older", "late-exp"]


GRID = [
    ("lowse-meal", {"train": {"lr": 0.02}, "data": {"classes": ["cat", "dog"]}}, 0.97, 40.1),
    ("lento-cogs", {"train": {"lr": 0.02}, "data": {"classes": ["cat", "dog"]}}, 0.97, 40.1),  # same point
    ("warm-dune", {"train": {"epochs": 12}}, 0.962, 120.0),
    ("bad-epochs", {"train": {"epochs": 0}}, None, 0.0),
]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "show.json"
    path.write_text(json.dumps(exp_show(GRID)))
    return path


# ----------------------------------------------------------------------------- the printed table


def _printed(capsys, *argv: str) -> list[str]:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_the_printed_table_fits_120_columns_with_the_changed_params_first(saved, capsys, monkeypatch):
    # not a terminal (a pipe, CI): get_terminal_size gives its fallback, which must be 120
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size(fallback))
    lines = _printed(capsys, "--json", str(saved), "--terminal")
    assert max(map(len, lines)) <= 120, "\n".join(lines)
    head = lines[0].split()
    assert head[:5] == ["experiment", "classes", "epochs", "lr", "test_acc"]  # params.yaml's order
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["lowse-meal"][1:5] == ["cat,dog", EPOCHS, "0.02", "0.9700"]
    assert rows["warm-dune"][2] == "12" and rows["bad-epochs"][2:5] == ["0", LR, "failed"]
    assert rows["main"][1] == "airplane,automobile,…+8"  # the 10 classes, shortened sensibly


def test_many_changed_params_still_fit_and_the_ones_left_out_are_named(tmp_path, capsys):
    """Like `dvc exp show --only-changed` with ~30 columns, where train.epochs was cut off."""
    over = {
        "data": {"classes": ["cat", "dog"], "train_per_class": 900},
        "augment": {"cutout": 8, "flip": False},
        "model": {"name": "seed_cnn"},
        "train": {
            "lr": 0.04,
            "batch_size": 128,
            "weight_decay": 0.001,
            "optimizer": "muon",
            "label_smoothing": 0.2,
            "epochs": 3,
        },
    }
    over = {k: {kk: vv for kk, vv in v.items() if kk in COMMITTED[k]} for k, v in over.items()}
    changed = {kk for k, v in over.items() for kk, vv in v.items() if COMMITTED[k][kk] != vv}
    assert len(changed) >= 7, changed
    path = tmp_path / "show.json"
    path.write_text(json.dumps(exp_show([("wide-grid", over, 0.91, 50.0)])))
    for width in (120, 80, 40, 20):
        lines = _printed(capsys, "--json", str(path), "--terminal", "--width", str(width))
        assert max(map(len, lines)) <= width, "\n".join(lines)
        assert "test_acc" in lines[0] and "0.9100" in lines[2 + 1]
        note = " ".join(lines[4:])  # under the header, the rule and the two rows: wrapped, not cut
        note, _, unlike = note.partition("Not like for like: ")  # cat/dog against 10 classes: two tasks
        note = note.strip()
        assert unlike.startswith("2 class sets (2, 10 classes)"), unlike
        words = set(re.split(r"[\s,;:()]+", f"{lines[0]} {note}"))
        shown = {k for k in changed for w in words if k == w or (w.endswith("…") and k.startswith(w[:-1]))}
        assert shown == changed, (changed - shown, note)  # each shown (its header maybe cut), or named as left out
    assert note.startswith("(also changed, not shown:") and note.endswith("all columns in compare.md)")


def test_a_branch_made_from_an_experiment_is_one_row():
    """After `dvc exp branch ep3 ep3-branch`, `dvc exp show --all-commits` lists the branch's commit
    (first) and the experiment ep3 under main, the same commit: compare showed the run twice."""
    show = exp_show([("ep3", {"train": {"epochs": 3}}, 0.93, 40.0), ("lr", {"train": {"lr": 0.02}}, 0.95, 60.0)])
    branch = {**_rev("b", "ep3-branch", {"train": {"epochs": 3}}, 0.93, 40.0), "experiments": None}
    rows = experiments([show[0], branch, *show[1:]])
    assert [r["name"] for r in rows] == ["main", "ep3", "lr"]


def test_queued_and_running_experiments_are_marked_and_show_no_metrics(tmp_path, capsys):
    """A running experiment's files were its baseline's: its row showed main's 0.9540 as its own."""
    show = exp_show([("done", {"train": {"lr": 0.02}}, 0.93, 40.0), ("busy", {"train": {"lr": 0.04}}, 0.954, 60.0)])
    show[1]["experiments"][1]["executor"] = {"state": "running"}
    show[1]["experiments"].append(
        {"name": "later", "executor": {"state": "queued"}, "revs": [_rev("e", "later", {}, None)]}
    )
    rows = {r["name"]: r for r in experiments(show)}
    assert [rows[n]["status"] for n in ("main", "done", "busy", "later")] == ["ok", "ok", "running", "queued"]
    assert rows["busy"]["test_acc"] is None and rows["busy"]["seconds"] is None and rows["busy"]["per_class"] == {}
    path = tmp_path / "show.json"
    path.write_text(json.dumps(show))
    lines = _printed(capsys, "--json", str(path), "--out", str(tmp_path / "out"))
    cells = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert cells["busy"][2] == "running" and cells["later"][2] == "queued" and cells["done"][2] == "0.9300"
    assert lines[-1].startswith("compare: 4 rows (0 failed, 1 queued, 1 running) → ")


def test_head_alone_is_nothing_to_compare(tmp_path, capsys):
    path = tmp_path / "show.json"
    path.write_text(json.dumps(exp_show([])))
    assert main(["--json", str(path), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == "compare: no experiments to compare (run some with `dvc exp run`)\n"
    assert not (tmp_path / "out").exists()


def test_the_report_prints_the_fitted_table_and_writes_its_files(saved, tmp_path, capsys):
    lines = _printed(capsys, "--json", str(saved), "--out", str(tmp_path / "out"), "--width", "100")
    assert max(map(len, lines[:-1])) <= 100 and lines[-1].startswith("compare: 5 rows (1 failed)")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "compare.md",
        "compare.csv",
        "accuracy_vs_seconds.png",
        "per_class.png",
    }


def test_the_files_write_values_as_the_printed_table_does():
    """compare.md and compare.csv wrote True, an empty cell for null and [cat, dog], where the
    printed table and the review write true, null and cat,dog."""
    over = {"report": {"pdf": False}, "data": {"classes": ["cat", "dog"], "test_per_class": 100}}
    header, cells = table(experiments(exp_show([("nopdf", over, 0.9, 40.0)])))
    main_row, exp_row = (
        {h: row[header.index(h)] for h in ("report.pdf", "data.classes", "data.test_per_class")}
        for row in (cells[0], cells[-1])
    )
    assert exp_row == {"report.pdf": "false", "data.classes": "cat,dog", "data.test_per_class": "100"}
    assert main_row["report.pdf"] == "true" and main_row["data.test_per_class"] == "null"


def test_values_and_keys_are_shortened_sensibly():
    assert show_value("[cat, dog]") == "cat,dog" and show_value(0.0200) == "0.02" and show_value(True) == "true"
    assert show_value(None) == "null" and show_value("[[0.49, 0.48], [0.24, 0.24]]") == "[[0.49, 0.48], [0.24, 0.24]]"
    # the lists src.review reads from params.yaml: they showed as 'cat','dog' and, empty, as nothing
    assert show_value(["cat", "dog"]) == "cat,dog" and show_value([]) == "[]" and show_value("[]") == "[]"
    assert (
        show_value([[0.49, 0.48], [0.24, 0.24]]) == "[[0.49, 0.48], [0.24, 0.24]]"
        and show_value([0.5, 0.8]) == "0.5,0.8"
    )
    assert shorten("airplane,automobile,bird,cat,deer", 24) == "airplane,automobile,…+3"
    assert shorten("a-very-long-experiment-name", 10) == "a-very-lo…" and shorten("short", 10) == "short"
    assert short_keys(["train.lr", "model.fast_cnn.widths", "model.seed_cnn.widths"]) == {
        "train.lr": "lr",
        "model.fast_cnn.widths": "fast_cnn.widths",
        "model.seed_cnn.widths": "seed_cnn.widths",
    }
    # an experiment that changes a value and its GPU recipe's copy (-S train.epochs=8 -S gpu.train.epochs=12)
    assert short_keys(["train.epochs", "gpu.train.epochs", "train.lr"]) == {
        "train.epochs": "train.epochs",
        "gpu.train.epochs": "gpu.train.epochs",
        "train.lr": "lr",
    }


def test_a_single_run_or_a_narrow_terminal_still_fits():
    rows = experiments(exp_show(GRID))
    for width in (120, 60, 40, 24):
        assert max(map(len, terminal_view(rows, width).splitlines())) <= width
    assert "experiment" in terminal_view(rows[:1], 120)


# ----------------------------------------------------------------------------- the figures


def _labels(fig) -> list[str]:
    """Each point's label as drawn: its lines joined by " | "."""
    boxes = [a for a in fig.axes[0].artists if isinstance(a, AnnotationBbox)]
    return [
        " | ".join(t.get_text() for t in b.offsetbox.findobj(match=lambda o: isinstance(o, TextArea))) for b in boxes
    ]


def test_points_are_labelled_with_what_differs_and_their_name():
    rows = experiments(exp_show(GRID))
    assert describe(rows[:3]) == [
        f"classes=airplane,automobile,bird,…+7, lr={LR}",
        "classes=cat,dog, lr=0.02",
        "classes=cat,dog, lr=0.02",
    ]
    fig = accuracy_vs_seconds(rows, describe)
    assert sorted(_labels(fig)) == sorted(
        [
            f"classes=airplane,automobile,bird,…+7\nepochs={EPOCHS}, lr={LR} | main",  # broken between params
            f"classes=cat,dog, epochs={EPOCHS}, lr=0.02 | lowse-meal",
            f"classes=cat,dog, epochs={EPOCHS}, lr=0.02 | lento-cogs",
            f"classes=airplane,automobile,bird,…+7\nepochs=12, lr={LR} | warm-dune",
        ]
    )  # the failed run is not drawn, and the title counts it apart
    assert fig.axes[0].get_title() == "Test accuracy against training time, 4 runs; 1 failed run left out"
    # cat/dog and the 10 classes are two tasks: a colour each, named in a legend
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "10 classes: airplane, automobile, bird +7",
        "2 classes: cat, dog",
    ]
    plt.close(fig)


def test_runs_on_other_processors_are_not_like_for_like():
    """Two students' laptops, the same kernels and threads: their seconds sat side by side unremarked
    (train.json records the processor now; a run that does not say is no evidence either way)."""
    rows = experiments(exp_show([("a", {"train": {"lr": 0.02}}, 0.9, 40.0), ("b", {"train": {"lr": 0.04}}, 0.9, 60.0)]))
    for r in rows:  # the committed train.json's processor, in the baseline row, is not this test's
        r["processor"] = None
    rows[1]["processor"], rows[2]["processor"] = "AMD Ryzen 5 5600U", "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz"
    assert not_like_for_like(rows) == [
        "other processors (AMD Ryzen 5 5600U, Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz): seconds and images/s "
        "compare only between runs alike in these"
    ]
    rows[2]["processor"] = None
    assert not_like_for_like(rows) == []


def test_what_is_not_like_for_like_is_said_under_the_table(tmp_path, capsys):
    """Runs on other classes, or with other thread counts, sat in one table as if comparable (the
    review said so; compare did not)."""
    show = exp_show(
        [("cats", {"data": {"classes": ["cat", "dog"]}}, 0.9, 40.0), ("more", {"train": {"lr": 0.02}}, 0.95, 60.0)]
    )
    show[1]["experiments"][1]["revs"][0]["data"]["metrics"]["metrics/train.json"]["data"]["threads"] = 1
    path = tmp_path / "show.json"
    path.write_text(json.dumps(show))
    text = " ".join(_printed(capsys, "--json", str(path), "--terminal", "--width", "200"))
    assert (
        "Not like for like: 2 class sets (2, 10 classes): test accuracy compares only between runs on the same " in text
    )
    assert f"Not like for like: other thread counts (1, {TRAIN['threads']}): seconds and images/s compare only" in text
    _printed(capsys, "--json", str(path), "--out", str(tmp_path / "out"))
    assert "**Not like for like:** other thread counts" in (tmp_path / "out/compare.md").read_text()
    # the same classes in another order are one task
    rows = experiments(exp_show([("dogcat", {"data": {"classes": ["dog", "cat"]}}, 0.9, 40.0)]))
    rows += experiments(exp_show([("catdog", {"data": {"classes": ["cat", "dog"]}}, 0.9, 40.0)]))[1:]
    assert [n for n in not_like_for_like(rows[1:]) if "class sets" in n] == []


def test_other_test_sets_kernels_processes_and_short_runs_are_said_too():
    """compare said less than the review: two fp32 runs on AVX2 and AVX-512 kernels, 2 processes of 1
    thread, a quick run on 300 test images and of 9 steps sat in the table unremarked."""
    rows = experiments(exp_show([("tiny", {"data": {"test_per_class": 100}}, 0.6, 5.0), ("np2", {}, 0.95, 60.0)]))
    assert not_like_for_like(rows) == []  # the committed metrics in every row: alike
    rows[1].update(test_images=300, steps=9, cpu_capability="AVX512")
    rows[2].update(processes=2, threads=1)
    assert not_like_for_like(rows) == [
        f"other test sets (300, {EVAL['test_images']:,} test images): test accuracy compares only between runs "
        "on the same test images",
        "under 20 training steps, so their scores say little: tiny",
        f"other CPU kernels (AVX2, AVX512) and thread counts (1, {TRAIN['threads']}) and process counts (1, 2): "
        "seconds and images/s compare only between runs alike in these",
    ]


def test_a_workspace_whose_params_dvc_lock_did_not_run_is_stale(tmp_path, monkeypatch, capsys):
    """After `dvc exp apply` of a failed run (train.lr=-1), the workspace row showed lr -1 beside the
    baseline's accuracy as if it were that run's."""
    from src.compare import workspace_stale

    monkeypatch.chdir(tmp_path)
    lock = {"stages": {"train": {"params": {"params.yaml": {"train.lr": 0.03, "train.epochs": 6}}}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    (tmp_path / "params.yaml").write_text(json.dumps({"train": {"lr": 0.03, "epochs": 6}}))
    assert workspace_stale() == []
    (tmp_path / "params.yaml").write_text(json.dumps({"train": {"lr": -1, "epochs": 6}}))
    assert workspace_stale() == ["train.lr"]
    # a figure's or the report's param changes no number of the table: not stale
    lock["stages"]["report"] = {"params": {"params.yaml": {"report.dpi": 110}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    (tmp_path / "params.yaml").write_text(json.dumps({"train": {"lr": 0.03, "epochs": 6}, "report": {"dpi": 200}}))
    assert workspace_stale() == []
    rows = experiments(exp_show(GRID[:1]), include_workspace=True, stale_workspace=True)
    assert rows[0]["name"] == "workspace" and rows[0]["status"] == "stale" and rows[0]["test_acc"] is None
    assert [r["status"] for r in rows[1:]] == ["ok", "ok"]


# a class's quick runs beside the committed one: eight params differ, four runs near one point
TINY = {"data": {"classes": ["cat", "dog"], "train_per_class": 200, "val_per_class": 50, "test_per_class": 100}}
TINY_RUN = deep_merge(TINY, {"train": {"epochs": 1, "batch_size": 64}, "report": {"pdf": False}})
WIDE = [
    ("tiny-seed1", deep_merge(TINY_RUN, {"train": {"seed": 1, "nproc": 2}}), 0.53, 0.6),
    ("tiny-np2", deep_merge(TINY_RUN, {"train": {"nproc": 2}}), 0.53, 0.7),
    ("tiny", TINY_RUN, 0.53, 6.6),
    ("tiny-3cls", deep_merge(TINY_RUN, {"data": {"classes": ["airplane", "automobile", "bird"]}}), 0.64, 6.9),
]


@pytest.mark.parametrize(
    "grid",
    [GRID, GRID[:2], [GRID[0]] * 5, [], WIDE],
    ids=["grid", "two-at-one-point", "five-at-one-point", "baseline-only", "eight-params"],
)
def test_both_comparison_figures_read_well(grid):
    """No label on another (two or five runs at one point included), none cut at the figure's edge
    (eight changed params printed one line each ran off the right), numbers readable on their cells."""
    rows = experiments(exp_show([(f"{name}-{i}", over, acc, s) for i, (name, over, acc, s) in enumerate(grid)]))
    cls = list(dict.fromkeys(c for r in rows for c in r["per_class"]))
    for fig in (accuracy_vs_seconds(rows, describe), per_class_heatmap(rows, cls, describe)):
        fig.set_dpi(110)  # as src.compare saves them
        assert problems(fig) == []
        renderer = fig.canvas.get_renderer()
        boxes = {t.get_text(): t.get_window_extent(renderer) for t in drawn_texts(fig, renderer)}
        cut = [
            text for text, b in boxes.items() if not (fig.bbox.contains(b.x0, b.y0) and fig.bbox.contains(b.x1, b.y1))
        ]
        assert cut == []
        plt.close(fig)


def test_a_long_label_breaks_between_params_and_puts_what_tells_it_apart_first():
    labels = describe(experiments(exp_show([(n, over, acc, s) for n, over, acc, s in WIDE])))
    assert len(labels[1].split(", ")) == 9  # main and the four runs differ in nine params
    shown = point_labels(labels)
    # a line holds 34 characters, or one param that is longer by itself
    assert all(len(line) <= 34 or ", " not in line for label in shown for line in label.splitlines())
    assert shown[1] == "seed=1, nproc=2, classes=cat,dog\ntrain_per_class=200\n+5 more (compare.md)"
    assert point_labels(["lr=0.02, classes=cat,dog"]) == ["lr=0.02, classes=cat,dog"]  # short: as it was
    assert wrapped("a=1, b=2, c=3", width=8) == "a=1, b=2\nc=3"


def test_a_heatmap_row_label_wraps_and_ends_with_its_experiment():
    """Nine changed params on one line widened the heatmap by the longest row label (1,747 px for
    ten classes); they now wrap at 48 characters like the points' labels, and the rows grow taller."""
    rows = experiments(exp_show([(f"{n}-{i}", over, acc, s) for i, (n, over, acc, s) in enumerate(WIDE)]))
    cls = list(dict.fromkeys(c for r in rows for c in r["per_class"]))
    fig = per_class_heatmap(rows, cls, describe)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert [t.rsplit("(", 1)[-1] for t in ticks] == [f"{r['name']})" for r in rows]
    assert all(len(line) <= 48 or ", " not in line for t in ticks for line in t.splitlines())
    assert max(t.count("\n") for t in ticks) >= 2 and fig.get_size_inches()[0] < 14.5
    plt.close(fig)


# ----------------------------------------------------------------------------- git


def test_the_comparison_folder_is_ignored_by_git():
    paths = ["compare/compare.md", "compare/per_class.png"]
    res = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True)
    assert res.stdout.split() == paths, "add /compare/ to .gitignore: `python -m src.compare` writes it"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--json", "{missing}"], "compare: error: --json {missing}: No such file or directory"),
        (["--json", "{cut}"], "compare: error: --json {cut}: not the JSON of `dvc exp show --json` (Expecting"),
        (["--json", "{other}"], "compare: error: --json {other}: not the output of `dvc exp show --json`"),
        (
            ["--json", "{typed}", "--terminal"],
            "compare: error: --json {typed}: not the output of `dvc exp show --json` (test_acc='high' is not a number)",
        ),
        (["--json", "{saved}", "--out", "{blocked}/x"], "compare: error: --out {blocked}/x: cannot write there ("),
    ],
)
def test_bad_files_are_one_line(saved, tmp_path, capsys, args, message):
    names = {"missing": tmp_path / "nope.json", "cut": tmp_path / "cut.json", "other": tmp_path / "other.json"}
    names["cut"].write_text("{")
    names["other"].write_text('{"a": 1}')
    names["typed"] = tmp_path / "typed.json"  # printing it with "{:.4f}" was a traceback
    typed = {"metrics": {"metrics/eval.json": {"data": {"test_acc": "high"}}}}
    names["typed"].write_text(json.dumps([{"rev": "x", "data": typed}]))
    names["blocked"] = tmp_path / "a_file"  # a file where --out needs a folder
    names["blocked"].write_text("")
    names["saved"] = saved
    with pytest.raises(SystemExit) as e:
        main([a.format(**names) for a in args])
    assert str(e.value).startswith(message.format(**names)) and "\n" not in str(e.value)
    assert capsys.readouterr().out == ""  # the one line alone: no table printed before it


@pytest.mark.parametrize("width,message", [("0", "at least 20 columns"), ("-5", "at least 20"), ("x", "'x' is not")])
def test_a_bad_width_is_refused(saved, capsys, width, message):
    with pytest.raises(SystemExit) as e:
        main(["--json", str(saved), "--terminal", "--width", width])
    assert e.value.code == 2 and message in capsys.readouterr().err


# ----------------------------------------------------------------------------- experiments on other commits


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_experiments_on_commits_no_branch_holds_are_counted_and_named_to_dvc(tmp_path, monkeypatch, capsys):
    """A pulled experiment whose baseline is a student's commit: `dvc exp show --all-commits` walks
    the branches only, so compare names each experiment ref's baseline with --rev; without
    --all-commits it says how many it leaves out. (tests/test_many_experiments.py does it with DVC.)"""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "class")
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "student")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "my first run")
    theirs = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "branch", "-q", "-D", "student")  # the instructor never gets the student's branch
    for base, name in ((head, "mine"), (theirs, "alice-1"), (theirs, "alice-2")):
        _git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/{name}", base)
    _git(repo, "update-ref", "refs/exps/celery/failed", head)  # DVC's own refs are no experiments
    monkeypatch.chdir(repo)
    assert compare.experiment_baselines() == {head: 1, theirs: 2}
    assert compare.elsewhere() == (
        "2 experiments from a commit other than HEAD left out: "
        "`python -m src.compare --all-commits` shows every commit's"
    )
    ran: list[list[str]] = []
    real_run = subprocess.run

    def fake_run(cmd, **kw):
        if cmd[:3] != [compare.sys.executable, "-m", "dvc"]:
            return real_run(cmd, **kw)
        ran.append(cmd)
        # DVC lists a named rev before HEAD; compare puts HEAD first
        show = [{"rev": "workspace"}, {"rev": theirs, "experiments": []}, {"rev": head, "name": "main"}]
        return subprocess.CompletedProcess(cmd, 0, json.dumps(show), "")

    monkeypatch.setattr(compare.subprocess, "run", fake_run)
    assert [c["rev"] for c in compare.exp_show(all_commits=True)] == ["workspace", head, theirs]
    assert ran[-1][3:7] == ["exp", "show", "--json", "--all-commits"]
    assert sorted(ran[-1][7:]) == sorted([f"--rev={head}", f"--rev={theirs}"])
    compare.exp_show()
    assert ran[-1][3:] == ["exp", "show", "--json"]
    assert main(["--terminal"]) == 1  # HEAD alone, and the line says where the others are
    assert capsys.readouterr().err == f"compare: no experiments on HEAD to compare ({compare.elsewhere()})\n"
