"""What a difference between two runs means, for the review and the report's "What changed": how
far a score or a time moves by chance (so a smaller change is ≈, neither better nor worse), and why
a changed param had no effect on a run. Pure functions over the runs' parsed files."""

from __future__ import annotations

from typing import Any

from src import paths
from src.params import FEW_STEPS, GPU_SECTIONS, flatten, gpu_recipe_raw

# which count each score's noise comes from (`score_counts`); macro-F1 is not a share of images,
# but at these sizes it moves as an accuracy does, so it takes the test accuracy's count
NOISE_COUNT = {"test_acc": "test", "macro_f1": "test", "per_class_acc": "class", "best_val_acc": "val"}
# a time or speed of the same recipe on one VM moves about this share of the base's value by chance:
# of the README's whole `dvc repro` runs over two days all but one stayed within 12 % of their median
# (that one, in a slow hour, 20 %), and their training ran at 544-704 images/s
TIMING_SPREAD = 0.12
TIMED = ("seconds", "train_seconds", "images_per_s")
# what metrics/train.json records of the machine a run trained on (older commits lack the last four)
MACHINE = ("device", "precision", "cpu_capability", "processor", "threads", "processes")
# images/s this far apart with the same model, batch and machine: more than a param change moves it on a
# CPU (NCHW against channels_last is 1.25×); two trainings sharing 2 cores run about 2× slower each
LOAD_RATIO = 1.6
# how to tell a change inside the noise from none, as the review and the report both say it
SEED_ADVICE = (
    "train both with two more seeds and compare the medians of three "
    "(`dvc exp run --queue -S 'train.seed=1,2'`, then `dvc queue start`)"
)
# the lab notebook's network: the theory stage draws it whatever model.name trains (figure 6)
NOTEBOOK_MODEL = "seed_cnn"
# (past one standard error, all): pairs of runs of one recipe on one subset that differ only in
# their seed, in benchmarks/results (tests/test_run_diff.py counts them again from the files)
SEED_PAIRS = (9, 67)


def is_number(v: Any) -> bool:
    """An int or a float, not a bool (JSON's true and false are no scores)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def difference(before: Any, after: Any) -> float | None:
    """after − before where both are numbers, else None."""
    return after - before if is_number(before) and is_number(after) else None


def noise_note(scores: bool, times: bool, marks: str, band: float | None = None, base: str = "the base's") -> str:
    """What ≈ means under a table where `scores` and/or `times` were marked so, as the review
    (Markdown) and the report (HTML, its `code` spans made <code>) both say it. `marks`: how the
    table shows better and worse ("a ✅ or 🔻"); `band`: one standard error of this test accuracy;
    `base`: what the table calls the run compared with, possessive ("the committed run's")."""
    parts = []
    if scores:
        here = f" (±{band * 100:.2f} points for this test accuracy)" if band is not None else ""
        past, pairs = SEED_PAIRS
        parts.append(
            "A score that moved less than one standard error of the difference of two accuracies, "
            f"√(p₁(1−p₁)/n₁ + p₂(1−p₂)/n₂) over each run's n images{here}; the test loss, whose own noise is not "
            "estimated, follows the test accuracy. Runs that differ only in their seed differ about that much, so "
            f"one run each cannot say which is better: {SEED_ADVICE}. {marks[0].upper() + marks[1:]} is a hint, not "
            f"proof: {past} of the {pairs} pairs of seeds in `benchmarks/results` move past one standard error."
        )
    if times:
        parts.append(
            f"A time or speed that moved less than {TIMING_SPREAD * 100:.0f} % of {base}: whole `dvc repro` runs "
            "of one recipe on one VM stay about that close to their median (README). "
            "`python -m benchmarks.cpu_step` times two settings in turn."
        )
    return " ".join(["≈ within the noise.", *parts])


def sampling_noise(before: Any, after: Any, n_before: Any, n_after: Any) -> float | None:
    """One standard error of the difference of two accuracies, each a share of its n images
    (binomial): sqrt(p1(1-p1)/n1 + p2(1-p2)/n2). None where a value or a count is missing, or a
    value is not a share (0 to 1). Most pairs of seeds in benchmarks/results move less (SEED_PAIRS)."""
    if not all(map(is_number, (before, after, n_before, n_after))):
        return None
    if min(n_before, n_after) <= 0 or not (0 <= before <= 1 and 0 <= after <= 1):
        return None
    return (before * (1 - before) / n_before + after * (1 - after) / n_after) ** 0.5


def score_noise(key: str, before: Any, after: Any, counts: list[dict[str, Any]]) -> float | None:
    """How far the metric `key` moves between two runs that differ only by chance: the sampling noise
    of an accuracy (`sampling_noise` over `counts`, each run's `score_counts`), TIMING_SPREAD of a
    time or speed; None for anything else (the loss: see `verdicts`)."""
    which = NOISE_COUNT.get(key)
    if which:
        return sampling_noise(before, after, counts[0].get(which), counts[1].get(which))
    if key in TIMED and is_number(before):
        return TIMING_SPREAD * abs(before)
    return None


def score_counts(evaluation: Any, stats: Any) -> dict[str, Any]:
    """The images a run's scores are shares of: its test images, its test images a class (CIFAR-10's
    test sets hold as many of each class) and its validation images (metrics/stats.json)."""
    ev = evaluation if isinstance(evaluation, dict) else {}
    test, per_class = ev.get("test_images"), ev.get("per_class_acc")
    classes = len(per_class) if isinstance(per_class, dict) else 0
    val = stats.get("val_images") if isinstance(stats, dict) else None
    return {"test": test, "class": test / classes if isinstance(test, int) and classes else None, "val": val}


def verdict(delta: Any, better: int, noise: float | None) -> str | None:
    """ "up" or "down" (the change is better or worse: `better` +1 higher is better, -1 lower), "level"
    (smaller than `noise`), or None (no change, not a number, or neither way is better)."""
    if not better or not is_number(delta) or delta == 0:
        return None
    if noise is not None and abs(delta) < noise:
        return "level"
    return "up" if delta * better > 0 else "down"


def loss_follows_accuracy(marks: dict[str, str | None]) -> dict[str, str | None]:
    """`marks` by metric key, the test loss's made "level" where the test accuracy's is: the loss's
    own noise is not estimated, and a ✅ on it beside an accuracy inside its noise reads as proof."""
    if marks.get("test_acc") == "level" and marks.get("test_loss") in ("up", "down"):
        return {**marks, "test_loss": "level"}
    return marks


def why_unused(raw: Any, key: str, run: Any) -> str | None:
    """Why the dotted `key` of the params mapping `raw` had no effect on the run whose
    metrics/train.json is `run` (its `recipe`: "default" or "gpu"), or None where it was used or this
    cannot tell (no recipe recorded): the gpu section under the default recipe, a value the GPU
    recipe replaced, a key of a model nothing built, a setting whose switch is off."""
    recipe = run.get("recipe") if isinstance(run, dict) else None
    if not isinstance(raw, dict) or recipe not in ("default", "gpu"):
        return None
    gpu = raw.get("gpu") if isinstance(raw.get("gpu"), dict) else {}
    if key.startswith("gpu.") and key != "gpu.use":
        if recipe == "default":
            return f"the gpu section was not used: this run trained with the default recipe (on {run.get('device')})"
        return None
    section, _, rest = key.partition(".")
    if recipe == "gpu" and section in GPU_SECTIONS:
        if key in flatten({section: gpu.get(section) or {}}):
            return f"the GPU recipe this run used replaces it with gpu.{key}"
        raw = gpu_recipe_raw(raw)
    return _switched_off(flatten(raw), key, section, rest.split(".")[0])


def _switched_off(flat: dict[str, Any], key: str, section: str, first: str) -> str | None:
    """`why_unused`'s rules for one recipe's params (`flat`: dotted keys)."""
    opt, name = flat.get("train.optimizer"), flat.get("model.name")
    if key in ("train.muon_lr", "train.muon_momentum") and opt != "muon":
        return f"used only with train.optimizer=muon (this run: {opt})"
    if key in ("train.momentum", "train.nesterov", "train.bn_bias_lr_factor") and opt == "adamw":
        return "not used with train.optimizer=adamw"
    if key == "train.momentum" and flat.get("train.cycle_momentum") and opt in ("sgd", "muon"):
        # set_hparams overwrites every group's momentum at each step; Muon's own stays put only when
        # train.muon_momentum sets it, and then that value is used, not this one
        return "not used with train.cycle_momentum on: the schedule cycles the momentum 0.95 -> 0.85 -> 0.95"
    if key == "train.lookahead_decay" and not flat.get("train.lookahead_steps"):
        return "used only when train.lookahead_steps is above 0"
    if key == "train.epochs" and flat.get("train.time_budget_s"):
        return f"not used when train.time_budget_s is set ({flat['train.time_budget_s']} s here: it sizes the run)"
    if key == "augment.crop_pad_mode" and not flat.get("augment.crop_padding"):
        return "used only when augment.crop_padding is above 0"
    if key == "evaluate.tta_fraction" and not flat.get("evaluate.tta_flip") and not flat.get("evaluate.tta_shift"):
        return "used only with test-time augmentation (evaluate.tta_flip or evaluate.tta_shift)"
    if section == "model" and first not in ("name", name, NOTEBOOK_MODEL) and isinstance(name, str):
        return f"used only with model.name={first} (this run: {name})"
    return None


def raw_data(lock: Any) -> str | None:
    """The md5 a dvc.lock (parsed) records for data/raw, which copy of CIFAR-10 the run read; None where absent."""
    stages = lock.get("stages") if isinstance(lock, dict) else None
    outs = [o for st in (stages or {}).values() if isinstance(st, dict) for o in st.get("outs") or []]
    found = [o.get("md5") for o in outs if isinstance(o, dict) and o.get("path") == paths.RAW.as_posix()]
    return str(found[0]) if found and found[0] else None


def unlike(
    evals: tuple[Any, Any],
    trains: tuple[Any, Any],
    labels: tuple[str, str],
    speeds: tuple[Any, Any] = (None, None),
    data: tuple[str | None, str | None] = (None, None),
) -> tuple[list[str], set[str]]:
    """Where two runs (their metrics/eval.json and train.json, base first) are not like for like, one
    line each (Markdown), and which of "scores", "times" and "seconds" (the total alone: other step
    counts) then get no better or worse: other
    classes or test images, another device, precision or kernels (another CPU model or thread count:
    the times only), a machine one side does not record, images/s (`speeds`) too far apart for one
    machine's work alone, another copy of CIFAR-10 (`data`, each `raw_data`), and a run of so few
    steps that its scores say little. `labels` name the runs in the lines ("`main`", "this run")."""
    ev, tr = ([d if isinstance(d, dict) else {} for d in pair] for pair in (evals, trains))
    lines: list[str] = []
    unmarked: set[str] = set()
    classes = [list(e.get("per_class_acc") or {}) for e in ev]
    images = [e.get("test_images") for e in ev]
    if all(classes) and sorted(classes[0]) != sorted(classes[1]):
        a, b = (", ".join(c) for c in classes)
        lines.append(f"other classes: {a} against {b} — two tasks, not one run better")
    elif None not in images and images[0] != images[1]:
        lines.append(f"other test sets: {images[0]:,} against {images[1]:,} test images")
    elif None not in data and data[0] != data[1]:
        a, b = (d.removesuffix(".dir")[:7] for d in data if d)
        lines.append(
            f"another copy of CIFAR-10: {paths.RAW.as_posix()} {a} against {b} in dvc.lock (the official files and "
            "a mirror rebuilt from JPEGs differ in every pixel) — the scores compare only between runs on one copy"
        )
    unmarked |= {"scores"} if lines else set()
    lines_, unmarked_ = _other_machine(tr, labels)
    if not lines_:
        lines_, unmarked_ = _other_load(tr, speeds, labels)
    lines += lines_
    unmarked |= unmarked_
    recipes, steps = ([t.get(k) for t in tr] for k in ("recipe", "steps"))
    if None not in recipes and recipes[0] != recipes[1]:
        lines.append(
            f"another recipe: {recipes[0]} against {recipes[1]} (on a GPU the `gpu` section of params.yaml replaces "
            "some values, so the same params.yaml trains another network)"
        )
    if all(isinstance(n, int) for n in steps) and steps[0] != steps[1]:
        unmarked.add("seconds")  # more steps take longer, not slower: images/s compares the speed
    for t, label in zip(tr, labels):
        steps = t.get("steps")
        if isinstance(steps, int) and steps < FEW_STEPS:
            lines.append(f"{label} trained {steps} step{'s' * (steps != 1)} only: its scores say little")
            unmarked.add("scores")
    return lines, unmarked


def _other_machine(trains: list[dict], labels: tuple[str, str]) -> tuple[list[str], set[str]]:
    """`unlike`'s machine line: the MACHINE keys both runs record, where any differ; else the
    device, precision or kernels one run does not record (a commit from before they were)."""
    shared = [k for k in MACHINE if all(t.get(k) is not None for t in trains)]
    differ = {k for k in shared if trains[0][k] != trains[1][k]}
    if differ:
        a, b = (" ".join(_machine_word(k, t[k]) for k in shared) for t in trains)
        counts = differ <= {"threads", "processes"}
        what = "another thread or process count" if counts else "another machine or precision"
        what = "another thread count" if differ == {"threads"} else what
        # other kernels or another precision round differently: the scores move a few tenths on their own
        rounding = bool(differ & {"device", "precision", "cpu_capability"})
        also = ", nor the scores to a few tenths of a point (other kernels round differently)" if rounding else ""
        return [f"{what}: {a} against {b} — the times are not comparable{also}"], (
            {"times", "scores"} if rounding else {"times"}
        )
    for t, label in zip(trains if all(trains) else [], labels):  # a run with no train.json: said elsewhere
        missing = [k for k in MACHINE[:3] if t.get(k) is None and any(o.get(k) is not None for o in trains)]
        if missing:
            what = ", ".join(k.replace("cpu_capability", "CPU kernels") for k in missing)
            return [f"{label} records no {what}: the times may not be comparable"], {"times"}
    return [], set()


def _other_load(trains: list[dict], speeds: tuple[Any, Any], labels: tuple[str, str]) -> tuple[list[str], set[str]]:
    """`unlike`'s load line: two CPU runs of one model, batch size and machine whose images/s are
    LOAD_RATIO or more apart, which other work on the machine during one of them explains best."""
    work = ("model", "params", "batch_size")
    recorded = all(trains) and all(trains[0].get(k) is not None for k in work)
    alike = recorded and all(trains[0].get(k) == trains[1].get(k) for k in (*work, *MACHINE))
    if not alike or trains[0]["device"] != "cpu" or not all(isinstance(s, (int, float)) and s > 0 for s in speeds):
        return [], set()
    ratio = max(speeds) / min(speeds)
    if ratio < LOAD_RATIO:
        return [], set()
    slower = labels[0] if speeds[0] < speeds[1] else labels[1]
    return [
        f"images/s {speeds[0]:,.0f} against {speeds[1]:,.0f} ({ratio:.1f}× apart) with the same model, batch size "
        f"and machine: most likely other work shared the CPU during {slower} (a costlier data augmentation would "
        "also do it) — the times are not comparable"
    ], {"times"}


def _machine_word(key: str, value: Any) -> str:
    """One value of a run's machine as `unlike` prints it: "fp32", "AVX2", "1 thread", "2 processes"."""
    if key == "threads":
        return f"{value} thread{'s' * (value != 1)}"
    return f"{value} process{'es' * (value != 1)}" if key == "processes" else str(value)
