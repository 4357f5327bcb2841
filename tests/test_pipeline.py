"""End to end: the real dvc.yaml on a tiny configuration in a temporary git repo, synthetic data.

Also the robustness promises that need the real stages: interruptions (SIGINT, SIGKILL) then resume,
byte-identical reruns, bad params that stop a stage before it writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.teach.probe import fingerprint, top_patches
from tests.conftest import merge, sh

TIMING_KEYS = {"seconds", "train_seconds", "images_per_s", "startup_seconds"}


def read(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def test_repro_writes_metrics_and_plots(repo):
    stats, train, ev = (
        read(repo, "metrics/stats.json"),
        read(repo, "metrics/train.json"),
        read(repo, "metrics/eval.json"),
    )
    assert stats["classes"] == ["cat", "dog", "ship"] and stats["train_images"] == 180
    assert stats["per_class"]["val"] == {"cat": 20, "dog": 20, "ship": 20}
    for k in ("best_val_acc", "best_epoch", "epochs", "params", "steps", "precision"):
        assert k in train
    assert set(read(repo, "metrics/timing.json")) == TIMING_KEYS  # the run-to-run part, on its own
    assert train["epochs"] == 2 and 1 <= train["best_epoch"] <= 2
    assert ev["test_images"] == 60 and set(ev["per_class_acc"]) == {"cat", "dog", "ship"}
    lines = (repo / "plots/eval/predictions.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted,confidence" and len(lines) == 61
    correct = sum(a == b for a, b, _ in (line.split(",") for line in lines[1:]))
    assert correct / 60 == pytest.approx(ev["test_acc"])
    assert (repo / "dvclive/train/plots/metrics/val/acc.tsv").read_text().count("\n") == 3
    assert (repo / "models/best.pt").is_file() and (repo / "models/last.pt").is_file()


def test_visualize_figures_agree_with_metrics(repo):
    fig, ev, th = read(repo, "plots/visualize.json"), read(repo, "metrics/eval.json"), read(repo, "metrics/theory.json")
    cm = fig["confusion"]["matrix"]
    assert fig["confusion"]["total"] == sum(map(sum, cm)) == ev["test_images"]
    assert sum(cm[i][i] for i in range(len(cm))) / fig["confusion"]["total"] == pytest.approx(ev["test_acc"])
    assert fig["first_layer"]["tiles"] == fig["first_layer"]["out_channels"] == 24  # fast_cnn's whitening layer
    # the feature-map panels have the layers' real shapes: 32 -> whiten 31 -> pools 15, 7, 3
    maps = fig["feature_maps"]["cat_1"]
    assert maps["features.group1.pool"]["shape"] == [8, 15, 15]
    assert maps["features.group3"]["panel_shape"] == [3, 3]
    assert set(fig["feature_maps"]) == {"cat_1", "dog_1", "ship_1"}
    pngs = {p.name for p in (repo / "plots/visualize").glob("*.png")}
    assert {
        "filters_first_layer.png",
        "filters_deep_layer.png",
        "gradcam.png",
        "training_curves.png",
        "sample_predictions.png",
        "per_class_accuracy.png",
        "confusion_matrix.png",
        "augmentation.png",
        "feature_maps_cat_1.png",
    } <= pngs
    assert th["networks"]["seed_cnn"]["total_params"] == 4_079_429
    assert len(list((repo / "plots/theory").glob("*.png"))) == 7


def test_visualize_takes_its_top_patches_from_the_evaluate_pass(repo):
    import torch

    from src.data.cifar import Subset, normalize
    from src.training.checkpoints import load_trained

    sub = Subset.load(repo / "data/subset.pt")
    model, ck = load_trained(repo / "models/best.pt", sub.classes)
    x, _ = sub.split("test")
    own = top_patches(model.eval(), normalize(x, torch.tensor(ck["mean"]), torch.tensor(ck["std"])), 6, 6)
    shown = read(repo, "plots/visualize.json")["top_patches"]
    assert list(shown) == [t.layer for t in own]
    for t in own:  # what a pass of its own finds, from the numbers evaluate noted during its plain pass
        assert shown[t.layer]["channels"] == t.channels and shown[t.layer]["images"] == t.images.tolist()
        assert shown[t.layer]["positions"] == t.positions.tolist()
    path = repo / "models/test_responses.pt"
    good = path.read_bytes()
    try:
        stale = torch.load(path, weights_only=True)  # as evaluate wrote it for a model one weight away
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] += 1e-3
        stale["fingerprint"] = fingerprint(model, x)
        torch.save(stale, path)
        r = sh(repo, sys.executable, "-m", "stages.visualize", check=False)
        assert r.returncode == 2
        assert (
            "models/test_responses.pt: not this model's responses on this test split; run dvc repro evaluate"
            in r.stderr
        )
    finally:
        path.write_bytes(good)


def test_second_repro_changes_nothing(repo):
    out = sh(repo, "dvc", "repro")
    assert "didn't change" in out.stdout or "up to date" in out.stdout
    assert "Running stage" not in out.stdout
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""


def test_bad_param_stops_before_writing(repo):
    before = (repo / "metrics/train.json").read_bytes()
    r = sh(repo, "dvc", "exp", "run", "-S", "train.epochs=0", check=False)
    assert r.returncode != 0
    assert "check: error: params.yaml: train.epochs=0: Input should be greater than or equal to 1" in r.stderr
    assert (repo / "metrics/train.json").read_bytes() == before
    sh(repo, "git", "checkout", "params.yaml")


def test_exp_run_and_diffs(repo):
    sh(repo, "dvc", "exp", "run", "-S", "train.epochs=3", "-n", "three")
    assert read(repo, "metrics/train.json")["epochs"] == 3
    diff = sh(repo, "dvc", "metrics", "diff", "--json").stdout
    assert "metrics/train.json" in diff and "epochs" in diff
    assert "train.epochs" in sh(repo, "dvc", "params", "diff").stdout
    show = sh(repo, "dvc", "exp", "show", "--json").stdout
    assert "three" in show
    sh(repo, "dvc", "exp", "apply", "main", check=False)
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-q", check=False)


def test_seed_recipe_model_counts_parameters(repo):
    sh(
        repo,
        "dvc",
        "exp",
        "run",
        "-S",
        "model.name=seed_cnn",
        "-S",
        "data.classes=all",
        "-S",
        "data.train_per_class=20",
        "-S",
        "train.epochs=1",
        "-n",
        "seed",
    )
    assert read(repo, "metrics/train.json")["params"] == 4_079_429
    assert read(repo, "metrics/eval.json")["test_images"] == 200
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-q", check=False)


def test_trainable_parameters_are_counted_before_freezeout_stops_any(repo):
    """metrics/train.json's trainable_params is the model's, whatever `train.freeze_at` froze by the
    end: counted after training, [0.5, 0.75] reported the unfrozen third group alone."""
    unfrozen = read(repo, "metrics/train.json")["trainable_params"]
    sh(repo, "dvc", "exp", "run", "train", "-S", "train.freeze_at=[0.5,0.75]", "-S", "train.epochs=2", "-n", "frozen")
    assert read(repo, "metrics/train.json")["trainable_params"] == unfrozen
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-q", check=False)


# ----------------------------------------------------------------------------- interruptions, reproducibility

LONGER = {"train": {"epochs": 20}, "model": {"fast_cnn": {"widths": [32, 64, 64]}}}


def _train(repo: Path, check: bool = True) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "stages.train", check=check)


def _outputs(repo: Path) -> dict:
    sh(repo, sys.executable, "-m", "stages.evaluate")
    files = (
        "metrics/train.json",
        "metrics/eval.json",
        "models/best.pt",
        "models/last.pt",
        "dvclive/train/plots/metrics/val/acc.tsv",
        "plots/train/lr.csv",
    )
    return {f: (repo / f).read_bytes() for f in files}


def _interrupt(repo: Path, sig: int) -> subprocess.CompletedProcess:
    """Start the train stage, send `sig` once its first epoch checkpoint exists, wait for it."""
    shutil.rmtree(repo / "models", ignore_errors=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=repo,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    resume = repo / ".cache/train/resume.pt"
    deadline = time.time() + 120
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # land somewhere inside a later epoch
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def longer(repo):
    params = repo / "params.yaml"
    original = params.read_text()
    params.write_text(yaml.safe_dump(merge(yaml.safe_load(original), LONGER), sort_keys=False))
    shutil.rmtree(repo / ".cache", ignore_errors=True)
    _train(repo)
    first = _outputs(repo)
    yield repo, first
    params.write_text(original)
    shutil.rmtree(repo / ".cache", ignore_errors=True)
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-q", "--force", check=False)


def test_same_params_same_bytes(longer):
    repo, first = longer
    _train(repo)
    second = _outputs(repo)
    assert second == first  # checkpoints, metrics, logs: byte for byte (timings are in timing.json)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_resumes_to_the_same_result(longer, sig):
    repo, first = longer
    r = _interrupt(repo, sig)
    assert r.returncode != 0
    if sig != signal.SIGKILL:
        assert r.returncode == 130
        assert "interrupted" in r.stderr and "run the same command again" in r.stderr
    assert (repo / ".cache/train/resume.pt").exists()
    assert not (repo / "models/best.pt").exists()  # nothing final is written by an interrupted run
    again = _train(repo)
    assert "resuming from .cache/train/resume.pt" in again.stdout + again.stderr
    assert not (repo / ".cache/train").exists()
    assert _outputs(repo) == first


def test_corrupted_and_mismatched_checkpoints_are_clear_errors(longer):
    repo, _ = longer
    best = repo / "models/best.pt"
    good = best.read_bytes()
    try:
        best.write_bytes(good[: len(good) // 3])
        r = sh(repo, sys.executable, "-m", "stages.evaluate", check=False)
        assert r.returncode == 2 and "models/best.pt: not a readable checkpoint" in r.stderr
        import torch

        ck = torch.load(repo / "models/last.pt", weights_only=False)
        ck["classes"] = ["cat", "dog"]
        torch.save(ck, best)
        r = sh(repo, sys.executable, "-m", "stages.evaluate", check=False)
        assert r.returncode == 2 and "trained on classes ['cat', 'dog']" in r.stderr
        ck["classes"] = ["cat", "dog", "ship"]
        ck["model_name"] = "seed_cnn"
        ck["params"]["model"]["name"] = "seed_cnn"
        torch.save(ck, best)
        r = sh(repo, sys.executable, "-m", "stages.evaluate", check=False)
        assert r.returncode == 2 and "weights of model 'seed_cnn' do not fit this model" in r.stderr
    finally:
        best.write_bytes(good)


def test_a_training_run_that_fails_keeps_the_last_runs_logs(longer):
    """DVCLive writes dvclive/train in place and `kept_if_failed` puts the last run's folder back
    when the run fails: a run by hand whose loss became NaN left metrics.json empty and the
    per-epoch TSVs deleted."""
    repo, first = longer
    logs = sorted((repo / "dvclive/train").rglob("*"))
    before = {p: p.read_bytes() for p in logs if p.is_file()}
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(yaml.safe_dump(merge(yaml.safe_load(original), {"train": {"lr": 1e8}}), sort_keys=False))
        r = _train(repo, check=False)
        assert r.returncode == 2 and "the training loss became" in r.stderr, r.stderr[-500:]
        assert {p: p.read_bytes() for p in logs if p.is_file()} == before
        assert sorted(p.name for p in (repo / "dvclive").iterdir()) == ["train"]  # no temporary folder left
    finally:
        params.write_text(original)
        shutil.rmtree(repo / ".cache", ignore_errors=True)
