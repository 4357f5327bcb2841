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

from tests.conftest import REPO

TINY = {
    "data": {"classes": ["cat", "dog", "ship"], "train_per_class": 60, "val_per_class": 20, "test_per_class": 20},
    "model": {"fast_cnn": {"widths": [8, 16, 16]}},
    "train": {"epochs": 2, "batch_size": 32, "threads": 1},
    "evaluate": {"batch_size": 64},
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def sh(repo: Path, *cmd: str, check: bool = True, env_extra: dict | None = None, timeout: float = 600):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def make_repo(dest: Path, mirror: Path, over: dict | None = None) -> Path:
    dest.mkdir(parents=True)
    for name in ("src", "stages"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dest / name)
    for extra in ("dvc_plots_template.html", "templates"):
        if (REPO / extra).exists():
            (shutil.copytree if (REPO / extra).is_dir() else shutil.copy)(REPO / extra, dest / extra)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(TINY, over or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(dest, "git", "init", "-q", "-b", "main")
    sh(dest, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory, full_mirror) -> Path:
    r = make_repo(tmp_path_factory.mktemp("e2e") / "lab", full_mirror)
    out = sh(r, "dvc", "repro", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    assert "NOT the official" in out.stdout + out.stderr
    sh(r, "git", "add", "-A")
    sh(r, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro")
    return r


def read(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def test_repro_writes_metrics_and_plots(repo):
    stats, train, ev = read(repo, "metrics/stats.json"), read(repo, "metrics/train.json"), read(repo, "metrics/eval.json")
    assert stats["classes"] == ["cat", "dog", "ship"] and stats["train_images"] == 180
    assert stats["per_class"]["val"] == {"cat": 20, "dog": 20, "ship": 20}
    for k in ("best_val_acc", "best_epoch", "epochs", "params", "seconds", "images_per_s"):
        assert k in train
    assert train["epochs"] == 2 and 1 <= train["best_epoch"] <= 2
    assert ev["test_images"] == 60 and set(ev["per_class_acc"]) == {"cat", "dog", "ship"}
    lines = (repo / "plots/eval/predictions.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted,confidence" and len(lines) == 61
    correct = sum(a == b for a, b, _ in (line.split(",") for line in lines[1:]))
    assert correct / 60 == pytest.approx(ev["test_acc"])
    assert (repo / "dvclive/train/plots/metrics/val/acc.tsv").read_text().count("\n") == 3
    assert (repo / "models/best.pt").is_file() and (repo / "models/last.pt").is_file()


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
    sh(repo, "dvc", "exp", "run", "-S", "model.name=seed_cnn", "-S", "data.classes=all",
       "-S", "data.train_per_class=20", "-S", "train.epochs=1", "-n", "seed")
    assert read(repo, "metrics/train.json")["params"] == 4_079_429
    assert read(repo, "metrics/eval.json")["test_images"] == 200
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-q", check=False)
