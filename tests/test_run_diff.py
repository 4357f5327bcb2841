"""What a difference between two runs means (src/run_diff.py): the noise bands, and why a changed
param had no effect on a run — each rule against the code that reads the param."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import yaml

from src.run_diff import (
    SEED_PAIRS,
    difference,
    noise_note,
    raw_data,
    sampling_noise,
    score_counts,
    unlike,
    verdict,
    why_unused,
)
from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CPU = {"recipe": "default", "device": "cpu"}
GPU = {"recipe": "gpu", "device": "cuda:0"}


def params(**sections: dict) -> dict:
    """The committed params with some keys of some sections replaced."""
    p = copy.deepcopy(PARAMS)
    for name, values in sections.items():
        p[name].update(values)
    return p


@pytest.mark.parametrize(
    "raw, key, run, why",
    [
        (params(train={"optimizer": "sgd"}), "train.muon_lr", CPU, "used only with train.optimizer=muon (this run: sg"),
        (params(train={"optimizer": "adamw"}), "train.muon_momentum", CPU, "used only with train.optimizer=muon"),
        (params(train={"optimizer": "adamw"}), "train.momentum", CPU, "not used with train.optimizer=adamw"),
        (params(train={"optimizer": "adamw"}), "train.nesterov", CPU, "not used with train.optimizer=adamw"),
        (params(train={"optimizer": "adamw"}), "train.bn_bias_lr_factor", CPU, "not used with train.optimizer=adamw"),
        (params(), "train.lookahead_decay", CPU, "used only when train.lookahead_steps is above 0"),
        (params(train={"cycle_momentum": True}), "train.momentum", CPU, "not used with train.cycle_momentum on"),
        (params(train={"cycle_momentum": True, "optimizer": "sgd"}), "train.momentum", CPU, "not used with train.cyc"),
        (params(train={"cycle_momentum": True, "muon_momentum": 0.9}), "train.momentum", CPU, "not used with train"),
        (params(train={"time_budget_s": 120}), "train.epochs", CPU, "not used when train.time_budget_s is set (120 s"),
        (params(augment={"crop_padding": 0}), "augment.crop_pad_mode", CPU, "used only when augment.crop_padding"),
        (params(evaluate={"tta_flip": False, "tta_shift": 0}), "evaluate.tta_fraction", CPU, "used only with test"),
        (params(model={"name": "seed_cnn"}), "model.fast_cnn.widths", CPU, "used only with model.name=fast_cnn"),
        (params(), "gpu.train.lr", CPU, "the gpu section was not used: this run trained with the default recipe (on"),
        (params(gpu={"use": "never"}), "gpu.train.lr", {"recipe": "default", "device": "cuda"}, "the gpu section was"),
        (params(), "train.lr", GPU, "the GPU recipe this run used replaces it with gpu.train.lr"),
        (params(), "model.fast_cnn.widths", GPU, "the GPU recipe this run used replaces it with gpu.model.fast_cnn"),
        (params(), "augment.hflip", GPU, "the GPU recipe this run used replaces it with gpu.augment.hflip"),
    ],
)
def test_a_param_the_run_did_not_use_says_why(raw, key, run, why):
    assert (why_unused(raw, key, run) or "").startswith(why)


@pytest.mark.parametrize(
    "raw, key, run",
    [
        (params(), "train.muon_lr", CPU),  # the committed optimizer is muon
        (params(), "train.momentum", CPU),  # not cycled: every group's momentum
        (params(train={"cycle_momentum": True, "muon_momentum": 0.9}), "train.muon_momentum", CPU),  # never cycled
        (params(), "model.seed_cnn.widths", CPU),  # the theory stage draws the notebook's net whatever trains
        (params(), "train.lookahead_decay", GPU),  # the GPU recipe turns lookahead on (gpu.train.lookahead_steps)
        (params(), "gpu.train.lr", GPU),
        (params(), "gpu.use", CPU),  # the switch itself is always read
        (params(train={"optimizer": "sgd"}), "train.muon_lr", {"device": "cpu"}),  # no recipe recorded: no guess
        (params(train={"optimizer": "sgd"}), "train.muon_lr", None),
        ("not a mapping", "train.lr", CPU),
    ],
)
def test_a_param_the_run_used_or_may_have_used_is_not_called_unused(raw, key, run):
    assert why_unused(raw, key, run) is None


def test_the_noise_band_is_the_binomial_standard_error_and_only_for_shares():
    assert sampling_noise(0.9587, 0.9563, 3000, 3000) == pytest.approx(0.005209, abs=1e-6)
    assert sampling_noise(0.5, 0.5, 100, 100) == pytest.approx(0.0707107, abs=1e-6)
    # a percent typed into eval.json, no count, a boolean, an empty test set: no band rather than a wrong one
    for args in ((95.87, 95.63, 3000, 3000), (0.9, 0.9, None, 3000), (True, 0.9, 3000, 3000), (0.9, 0.9, 0, 3000)):
        assert sampling_noise(*args) is None
    assert score_counts({"test_images": 3000, "per_class_acc": 3}, None) == {"test": 3000, "class": None, "val": None}
    assert score_counts({"test_images": 3000, "per_class_acc": {"a": 1, "b": 1}}, {"val_images": 200}) == {
        "test": 3000,
        "class": 1500,
        "val": 200,
    }


def test_the_verdict_is_level_inside_the_noise_and_by_direction_outside():
    assert verdict(0.004, 1, 0.005) == "level" and verdict(-0.004, -1, 0.005) == "level"
    assert verdict(0.006, 1, 0.005) == "up" and verdict(0.006, -1, 0.005) == "down"
    assert verdict(0.006, 1, None) == "up"  # no band known: marked as before
    assert verdict(0, 1, 0.005) is None and verdict(0.5, 0, 0.005) is None and verdict(None, 1, None) is None


def test_the_pairs_of_seeds_the_notes_quote_are_those_in_benchmarks_results():
    """The ≈ note says how many pairs of runs that differ only in their seed move past one standard
    error: counted again here from every result file with two or more seeds of one recipe (3,000
    test images, 10,000 for all ten classes)."""
    past = pairs = 0
    for f in sorted((REPO / "benchmarks/results").glob("*.json")):
        data = json.loads(f.read_text())
        runs = data.get("runs") if isinstance(data, dict) else None
        for recipe_runs in runs.values() if isinstance(runs, dict) else [runs or []]:
            seeded = [r for r in recipe_runs if isinstance(r, dict) and "test_acc" in r and "seed" in r]
            if len(seeded) < 2 or len({r["seed"] for r in seeded}) < len(seeded):
                continue
            n = 10000 if "--classes all" in data.get("command", "") else 3000
            for a, b in itertools.combinations(seeded, 2):
                pairs += 1
                past += abs(a["test_acc"] - b["test_acc"]) >= sampling_noise(a["test_acc"], b["test_acc"], n, n)
    assert (past, pairs) == SEED_PAIRS
    assert f"{past} of the {pairs} pairs of seeds" in noise_note(True, False, "a ✅ or 🔻")


def test_a_difference_is_of_two_numbers_and_the_note_says_only_what_was_marked():
    assert difference(0.95, 0.96) == pytest.approx(0.01) and difference(3, 5) == 2
    assert difference(True, 0.9) is None and difference(0.9, None) is None and difference("1", 2) is None
    scores, times = noise_note(True, False, "a ✅ or 🔻", 0.0052), noise_note(False, True, "a green or red change")
    assert scores.startswith("≈ within the noise. A score that moved") and "(±0.52 points" in scores
    assert "A ✅ or 🔻 is a hint" in scores and "A time or speed" not in scores
    assert "12 % of the base's" in times and "A score" not in times
    committed = noise_note(False, True, "a green or red change", base="the committed run's")
    assert "12 % of the committed run's:" in committed


CPU = {"device": "cpu", "precision": "fp32", "cpu_capability": "AVX2", "threads": 2, "processes": 1, "steps": 312}
EVAL = {"test_images": 3000, "per_class_acc": {"cat": 0.8, "dog": 0.9}}


def test_two_processes_of_one_thread_are_another_count_not_another_machine():
    """`-S train.nproc=2` on 2 cores: 2 processes of 1 thread against 1 of 2. The review said
    '2 threads against 1 thread', the count of the wrong thing; the scores still compare."""
    nproc2 = {**CPU, "threads": 1, "processes": 2}
    lines, which = unlike((EVAL, EVAL), (CPU, nproc2), ("`main`", "`np2`"))
    assert lines == [
        "another thread or process count: cpu fp32 AVX2 2 threads 1 process against cpu fp32 AVX2 1 thread "
        "2 processes — the times are not comparable"
    ]
    assert which == {"times"}
    assert unlike((EVAL, EVAL), (CPU, dict(CPU)), ("a", "b")) == ([], set())


def test_a_machine_one_run_does_not_record_leaves_its_times_unmarked():
    """A base from before precision and kernels were recorded against a bf16 run: images/s 1167 →
    599 got a 🔻, most likely fp32 against bf16. Recorded on one side only is not like for like."""
    old = {"device": "cpu", "threads": 2, "steps": 312}
    lines, which = unlike((EVAL, EVAL), (old, CPU), ("`53a206e`", "this run"))
    assert lines == ["`53a206e` records no precision, CPU kernels: the times may not be comparable"]
    assert which == {"times"}
    # a run with no train.json at all is not a machine left unrecorded (the review says it has no metrics)
    assert unlike((EVAL, EVAL), (None, CPU), ("a", "b")) == ([], set())


def test_other_classes_test_sets_and_few_steps_unmark_the_scores():
    tiny = {**CPU, "steps": 3}
    lines, which = unlike((EVAL, {**EVAL, "test_images": 300}), (CPU, tiny), ("the committed run", "this run"))
    assert lines == [
        "other test sets: 3,000 against 300 test images",
        "this run trained 3 steps only: its scores say little",
    ]
    assert which == {"scores", "seconds"}
    cats = {"test_images": 3000, "per_class_acc": {"cat": 0.8, "bird": 0.9}}
    assert unlike((EVAL, cats), (CPU, CPU), ("a", "b"))[0] == [
        "other classes: cat, dog against cat, bird — two tasks, not one run better"
    ]


def test_images_per_s_far_apart_on_one_machine_and_model_is_other_load_not_the_change():
    """The notebook's 4-epoch experiment, trained while other jobs shared the 2 cores: the report
    showed images/s 590 → 91 as the change's effect, on the same model, batch size and machine."""
    run = {**CPU, "model": "fast_cnn", "params": 655416, "batch_size": 256}
    lines, which = unlike((EVAL, EVAL), (run, dict(run)), ("the committed run", "this run"), (590.0, 91.0))
    assert lines == [
        "images/s 590 against 91 (6.5× apart) with the same model, batch size and machine: most likely other "
        "work shared the CPU during this run (a costlier data augmentation would also do it) — the times are "
        "not comparable"
    ]
    assert which == {"times"}
    assert "during `a`" in unlike((EVAL, EVAL), (run, run), ("`a`", "`b`"), (300, 590))[0][0]
    for trains, speeds in [
        ((run, run), (590.0, 420.0)),  # 1.4×: NCHW against channels_last alone is 1.25×
        ((run, {**run, "batch_size": 64}), (590.0, 91.0)),  # another batch: another cost per image
        ((run, {**run, "params": 4079429, "model": "seed_cnn"}), (590.0, 91.0)),
        (({**run, "device": "cuda"}, {**run, "device": "cuda"}), (9000.0, 3000.0)),  # compile alone does that
        ((run, run), (590.0, None)),
        (({**run, "batch_size": None}, {**run, "batch_size": None}), (590.0, 91.0)),
    ]:
        assert unlike((EVAL, EVAL), trains, ("a", "b"), speeds) == ([], set()), (trains, speeds)


def test_another_copy_of_cifar10_leaves_the_scores_unmarked():
    """A PR's run on GitHub reads the official archive; the committed one here, the mirror rebuilt
    from JPEGs (its README: 1–3 points lower). Same classes, same 3,000 test images: the review
    marked the scores as the change's."""

    def lock(md5: str | None) -> dict:
        return {"stages": {"download": {"outs": [{"path": "data/raw", "md5": md5}]}, "stats": {"outs": []}}}

    assert raw_data(lock("12dc9c8ed9e062b8.dir")) == "12dc9c8ed9e062b8.dir"
    assert raw_data(lock(None)) is None and raw_data({"stages": {}}) is None and raw_data(None) is None
    data = (raw_data(lock("12dc9c8ed9e062b8.dir")), raw_data(lock("c58f30108f718f92.dir")))
    lines, which = unlike((EVAL, EVAL), (CPU, CPU), ("`main`", "`pr`"), data=data)
    assert lines == [
        "another copy of CIFAR-10: data/raw 12dc9c8 against c58f301 in dvc.lock (the official files and a mirror "
        "rebuilt from JPEGs differ in every pixel) — the scores compare only between runs on one copy"
    ]
    assert which == {"scores"}
    assert unlike((EVAL, EVAL), (CPU, CPU), ("a", "b"), data=(data[0], data[0])) == ([], set())
    assert unlike((EVAL, EVAL), (CPU, CPU), ("a", "b"), data=(data[0], None)) == ([], set())  # an older lock


def test_other_step_counts_unmark_the_seconds_alone_and_another_recipe_is_said():
    """1 epoch on cat/dog against the committed 6 got 'training seconds −31.9 ✅', and 8 epochs against
    6 a 🔻: more steps take longer, which is not slower. A GPU run against a CPU one read as 'the
    same params.yaml' though the GPU recipe trains another network."""
    assert unlike((EVAL, EVAL), (CPU, {**CPU, "steps": 416}), ("a", "b")) == ([], {"seconds"})
    lines, which = unlike((EVAL, EVAL), ({**CPU, "recipe": "default"}, {**CPU, "recipe": "gpu"}), ("a", "b"))
    assert lines == [
        "another recipe: default against gpu (on a GPU the `gpu` section of params.yaml replaces some values, "
        "so the same params.yaml trains another network)"
    ]
    assert which == set()
