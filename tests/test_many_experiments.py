"""Many experiments: a grid on DVC's queue with `-j 2` (a bad one fails alone), the comparison table
read back from every experiment's metrics, and the push/pull round trip between a student's clone
and an instructor's through a bare git remote and a local-folder DVC remote."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from src.compare import differing, exp_show, experiments, table, to_csv
from tests.conftest import make_repo, sh

GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t")


def _start_workers(repo: Path, env: dict, jobs: int) -> str:
    """`dvc queue start -j jobs`, its output through a file: each worker's launcher process keeps the
    caller's stdout open until the worker exits, so through a pipe this call would last the whole grid
    (and hit sh's timeout if the grid outlasts it). The file is in .dvc/tmp, which git ignores, so the
    experiments' workspace stays as committed."""
    log = repo / ".dvc/tmp/queue-start.log"
    return sh(repo, "dvc", "queue", "start", "-j", str(jobs), env_extra=env, log=log).stdout


def _worker_logs(repo: Path, tail: int = 1500) -> str:
    logs = sorted((repo / ".dvc/tmp/exps/celery").glob("*.out"))
    return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}" for f in logs)


def _wait_for_queue(repo: Path, env: dict, jobs: int, timeout: float = 900) -> tuple[str, int]:
    """Poll `dvc queue status` until nothing is Queued or Running; return the last status and how often
    the workers had to be started again. DVC's workers can all exit while tasks are still Queued (a race
    between workers, treeverse/dvc#10562); the answer DVC's users give is `dvc queue start` again, so
    after three polls in that state (≥ 6 s) the test does that too."""
    deadline, restarts, stalled = time.time() + timeout, 0, 0
    while time.time() < deadline:
        status = sh(repo, "dvc", "queue", "status", env_extra=env).stdout
        if "Running" not in status and "Queued" not in status:
            return status, restarts
        stalled = stalled + 1 if "Running" not in status and "0 active, 0 idle" in status else 0
        if stalled >= 3:
            _start_workers(repo, env, jobs)
            restarts, stalled = restarts + 1, 0
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}\n{_worker_logs(repo)}")


def _metrics(repo: Path, rev: str, path: str) -> dict:
    return json.loads(sh(repo, "git", "show", f"{rev}:{path}").stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, full_mirror):
    """A committed lab repo whose pipeline has run once (its outputs in the DVC cache)."""
    env = {"CIFAR10_MIRROR": str(full_mirror)}
    repo = make_repo(tmp_path_factory.mktemp("many") / "lab", full_mirror, over={"train": {"threads": None}})
    sh(repo, "dvc", "repro", env_extra=env)
    sh(repo, "git", "add", "-A")
    sh(repo, *GIT, "commit", "-qm", "first run")
    return repo, env


def test_a_queued_grid_runs_two_at_a_time_and_a_bad_one_fails_alone(lab):
    repo, env = lab
    out = sh(
        repo, "dvc", "exp", "run", "--queue", "-S", "train.lr=0.01,0.05", "-S", "data.classes=[cat,dog]", env_extra=env
    ).stdout
    assert out.count("Queued experiment") == 2
    sh(repo, "dvc", "exp", "run", "--queue", "-n", "bad-epochs", "-S", "train.epochs=0", env_extra=env)
    assert "Started '2'" in _start_workers(repo, env, 2)
    try:
        status, restarts = _wait_for_queue(repo, env, 2)
    finally:  # no worker outlives the test, whatever happened
        sh(repo, "dvc", "queue", "stop", "--kill", env_extra=env, check=False)
    assert status.count("Success") == 2 and "bad-epochs" in status and "Failed" in status, status
    assert restarts <= 1, f"the workers stopped with tasks queued {restarts} times:\n{_worker_logs(repo)}"
    log = sh(repo, "dvc", "queue", "logs", "bad-epochs", env_extra=env, check=False).stdout
    assert "check: error: params.yaml: train.epochs=0: Input should be greater than or equal to 1" in log
    rows = [
        r
        for r in experiments(json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout))
        if r["params"].get("data.classes") == "[cat, dog]"
    ]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["test_acc"] is not None for r in rows)
    assert sorted(r["params"]["train.lr"] for r in rows) == [0.01, 0.05]
    # two queue workers on this machine's cores: each run took its share of the threads
    cores = len(os.sched_getaffinity(0))
    for r in rows:
        assert r["threads"] == max(1, cores // 2), r
        log = sh(repo, "dvc", "queue", "logs", r["name"], env_extra=env).stdout
        assert "cores shared by 2 queue workers" in log or cores < 2


def test_the_comparison_has_one_row_per_experiment_with_its_own_metrics(lab, tmp_path):
    repo, env = lab
    sh(repo, "dvc", "exp", "run", "-n", "lr-high", "-S", "train.lr=0.08", env_extra=env)
    show = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    rows = experiments(show)
    names = [r["name"] for r in rows]
    assert names[0] == "main" and "lr-high" in names and len(names) == len(set(names))
    header, cells = table(rows)
    assert "train.lr" in header and "test_acc" in header and "acc.cat" in header
    for r, cell in zip(rows, cells):
        if r["status"] != "ok":
            continue
        ev = _metrics(repo, r["rev"], "metrics/eval.json")  # what that experiment's commit holds
        assert cell[header.index("test_acc")] == f"{ev['test_acc']:.4f}"
        for c, acc in ev["per_class_acc"].items():
            assert cell[header.index(f"acc.{c}")] == f"{acc:.4f}"
    assert to_csv(header, cells).count("\n") == len(rows) + 1
    out = tmp_path / "report"
    res = sh(repo, "python", "-m", "src.compare", "--out", str(out))
    assert "lr-high" in res.stdout
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.csv", "accuracy_vs_seconds.png", "per_class.png"}
    # the printed table from the saved `dvc exp show --json`: 120 columns (not a terminal), where
    # `dvc exp show` shows "…" in every cell; the changed lr and test_acc in it
    saved = tmp_path / "show.json"
    saved.write_text(json.dumps(show))
    lines = sh(
        repo, "python", "-m", "src.compare", "--json", str(saved), "--terminal", env_extra={"COLUMNS": "120"}
    ).stdout.splitlines()
    assert max(map(len, lines)) <= 120, "\n".join(lines)
    assert {"experiment", "lr", "test_acc"} <= set(lines[0].split()), lines[0]
    row = next(line.split() for line in lines if line.startswith("lr-high"))
    assert "0.08" in row and f"{rows[names.index('lr-high')]['test_acc']:.4f}" in row


def test_a_student_pushes_experiments_and_the_instructor_pulls_and_compares(tmp_path, full_mirror):
    env = {"CIFAR10_MIRROR": str(full_mirror)}
    remote, store = tmp_path / "class.git", tmp_path / "dvc-store"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(remote))
    teacher = make_repo(tmp_path / "instructor", full_mirror)
    sh(teacher, "dvc", "remote", "add", "-d", "store", str(store))
    sh(teacher, "git", "add", "-A")
    sh(teacher, *GIT, "commit", "-qm", "class remote")
    sh(teacher, "git", "remote", "add", "origin", str(remote))
    sh(teacher, "git", "push", "-q", "origin", "main")

    student = tmp_path / "alice"
    sh(tmp_path, "git", "clone", "-q", str(remote), str(student))
    sh(student, "dvc", "exp", "run", "-n", "alice-lr01", "-S", "train.lr=0.01", env_extra=env)
    # as the README advises a student: commit the first run; the next experiment starts from that
    # commit, which never reaches the class's remote (only the experiments are pushed)
    sh(student, *GIT, "commit", "-q", "--allow-empty", "-m", "my first run")
    sh(student, "dvc", "exp", "run", "-n", "alice-lr05", "-S", "train.lr=0.05", env_extra=env)
    pushed = sh(student, "dvc", "exp", "push", "origin", "alice-lr01", "alice-lr05").stdout
    assert "alice-lr01" in pushed and "alice-lr05" in pushed
    student_acc = {r["name"]: r["test_acc"] for r in experiments(exp_show(all_commits=True, root=student))}

    assert "alice-lr01" in sh(teacher, "dvc", "exp", "list", "origin").stdout
    sh(teacher, "dvc", "exp", "pull", "-A", "origin")  # the README's command: everyone's experiments
    # `dvc exp show` alone (HEAD's) misses alice-lr05, and plain compare says so
    assert "alice-lr05" not in {r["name"] for r in experiments(exp_show(root=teacher))}
    left_out = sh(teacher, "python", "-m", "src.compare", "--terminal").stderr
    assert "1 experiment from a commit other than HEAD left out" in left_out, left_out
    rows = {r["name"]: r for r in experiments(exp_show(all_commits=True, root=teacher))}
    assert next(iter(rows)) == "main", list(rows)  # HEAD first, before the student's commit
    for name in ("alice-lr01", "alice-lr05"):
        assert rows[name]["status"] == "ok" and rows[name]["test_acc"] == student_acc[name]
    assert "train.lr" in differing(list(rows.values()))
    # the model files came along through the DVC remote: the instructor can check one out
    sh(teacher, "dvc", "exp", "apply", "alice-lr05")
    sh(teacher, "dvc", "checkout", "models/best.pt")
    assert (teacher / "models/best.pt").stat().st_size > 0
