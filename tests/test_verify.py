"""`python -m src.verify`: passes on a clean run (the workspace, a commit, an experiment) and fails,
naming the file, when a metric is edited by hand, the model is swapped, or params changed without
a rerun (the session's tiny `dvc repro` repo; each test puts it back)."""

from __future__ import annotations

import json
import os
import shutil
import sys

from tests.conftest import sh


def verify(repo, *args: str):
    return sh(repo, sys.executable, "-m", "src.verify", *args, check=False)


def restore(repo) -> None:
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "-f", "-q", check=False)


def test_a_clean_run_verifies(repo):
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    acc = json.loads((repo / "metrics/eval.json").read_text())["test_acc"]
    assert f"test accuracy {acc:.4f} recomputed from models/best.pt" in r.stdout


def test_a_metric_edited_by_hand_is_named(repo):
    path = repo / "metrics/eval.json"
    try:
        m = json.loads(path.read_text())
        m["test_acc"] = round(m["test_acc"] - 0.05, 4)
        path.write_text(json.dumps(m, indent=2) + "\n")
        r = verify(repo)
        assert r.returncode == 1
        lines = r.stdout.splitlines()
        assert (
            "verify: metrics/eval.json: modified since the run dvc.lock records (output of stage evaluate; input of "
            "stage report)" in lines
        )
        assert any(
            line.startswith(f"verify: metrics/eval.json: test_acc {m['test_acc']} but models/best.pt scores")
            for line in lines
        )
    finally:
        restore(repo)


def test_a_damaged_metric_file_is_one_line_naming_it(repo):
    """eval.json without its test_acc: the same DataError line every other reader gives, not
    Python's `'test_acc'` (a bare KeyError)."""
    path = repo / "metrics/eval.json"
    try:
        m = json.loads(path.read_text())
        del m["test_acc"]
        path.write_text(json.dumps(m, indent=2) + "\n")
        r = verify(repo)
        assert r.returncode == 1
        line = next(x for x in r.stdout.splitlines() if "cannot recompute" in x)
        assert line == (  # the path relative: under `verify REV` the root is a temporary worktree
            "verify: metrics/eval.json: cannot recompute the test accuracy: metrics/eval.json: no test_acc in "
            "it; run `dvc repro` to make it again"
        )
    finally:
        restore(repo)


def test_a_swapped_model_is_named(repo):
    best = repo / "models/best.pt"
    try:
        os.remove(best)  # never write through a link into DVC's cache
        shutil.copyfile(repo / "models/last.pt", best)
        r = verify(repo)
        assert r.returncode == 1
        # one line for the file, not one per stage that reads it (a failed run listed data/params.ok 8 times)
        assert r.stdout.splitlines() == [
            "verify: models/best.pt: modified since the run dvc.lock records (output of stage train; input of "
            "stages evaluate, report, visualize)"
        ]
    finally:
        restore(repo)
    assert verify(repo).returncode == 0


def test_params_changed_without_a_rerun_are_named(repo):
    path = repo / "params.yaml"
    try:
        path.write_text(path.read_text().replace("epochs: 2", "epochs: 5", 1))
        r = verify(repo)
        assert r.returncode == 1
        assert (
            "verify: params.yaml: train.epochs modified since the run dvc.lock records (stage train): "
            "the results are not of these params" in r.stdout
        )
    finally:
        restore(repo)


def test_a_commit_and_an_experiment_verify_by_name(repo):
    try:
        sh(repo, "dvc", "exp", "run", "-S", "train.epochs=3", "-n", "verify-exp")
        restore(repo)  # back to the committed run: the experiment lives in refs/exps and the cache
        r = verify(repo, "verify-exp")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "verify: ok — verify-exp:" in r.stdout
        assert verify(repo, "HEAD").returncode == 0
        bad = verify(repo, "no-such-exp")
        assert bad.returncode == 2 and "neither a git revision nor one `dvc exp` name" in bad.stderr
    finally:
        restore(repo)


def test_an_experiment_name_reused_on_two_commits_means_the_one_of_the_commit_checked_out(tmp_path):
    """`dvc exp run -n epochs-8` on one commit and again on a later one: both refs stay, and the name
    was "neither a git revision nor one `dvc exp` name". DVC takes the one of HEAD; so do review and verify."""
    from src.verify import resolve, unresolved

    def git(*args: str) -> str:
        return sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args).stdout.strip()

    git("init", "-q")
    base, runs = [], []
    for k in range(3):
        git("commit", "-q", "--allow-empty", "-m", f"commit {k}")
        base.append(git("rev-parse", "HEAD"))
        if k < 2:  # an experiment's commit, named epochs-8, on the first two commits
            runs.append(git("commit-tree", "-p", base[k], "-m", "exp", f"{base[k]}^{{tree}}"))
            git("update-ref", f"refs/exps/{base[k][:2]}/{base[k][2:]}/epochs-8", runs[k])
    assert resolve(tmp_path, "epochs-8") is None  # HEAD (the third commit) ran none
    (b0, r0), (b1, r1) = sorted(zip(base, runs))  # in the refs' order, by baseline
    assert unresolved(tmp_path, "epochs-8", "not found") == (
        f"'epochs-8' names 2 `dvc exp` runs, none on the commit checked out (their baselines {b0[:7]}, "
        f"{b1[:7]}): name one by its commit, {r0[:7]} or {r1[:7]}"
    )
    git("checkout", "-q", base[1])
    assert resolve(tmp_path, "epochs-8") == runs[1]
    assert unresolved(tmp_path, "no-such-run", "not found") == "not found"


def test_a_commit_whose_outputs_are_not_in_the_cache_is_one_line(repo):
    """A fresh clone before `dvc pull`: each missing output read as "deleted since the run", as if
    someone had removed it, and the last line named a temporary folder that was gone."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (md5,) = [o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) if o["path"] == "models/best.pt"]
    cached = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    aside = repo.parent / "best.pt.aside"
    shutil.move(cached, aside)
    try:
        r = verify(repo, "HEAD")
    finally:
        shutil.move(aside, cached)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    commit = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert r.stderr.strip() == (
        f"verify: error: {commit[:12]}: 1 output(s) of its run are not in this repo's DVC cache (models/best.pt): "
        "`dvc pull` (or `dvc exp pull <remote> <name>`) brings them, or `dvc repro` on that commit makes them again"
    )
    assert verify(repo, "HEAD").returncode == 0


def test_a_shared_cache_set_with_dvc_cache_dir_is_the_one_checked_out_from(repo):
    """An instructor's many clones share one cache (`dvc cache dir --local <path>`): verify of a
    revision took <repo>/.dvc/cache regardless and found none of its outputs."""
    own, shared = repo / ".dvc/cache", repo.parent / "shared-cache"
    shutil.move(own, shared)
    try:
        sh(repo, "dvc", "cache", "dir", "--local", str(shared))
        r = verify(repo, "HEAD")
    finally:
        sh(repo, "dvc", "config", "--local", "--unset", "cache.dir")
        shutil.move(shared, own)
    assert r.returncode == 0 and "verify: ok" in r.stdout, r.stdout + r.stderr


def test_a_run_on_a_gpu_is_rescored_within_the_tolerance(repo):
    """A run that trained (and so was scored) on a GPU is re-scored on this CPU: other kernels, so
    within TOLERANCE instead of to the digit."""
    from src.verify import TOLERANCE, rescore

    train, ev = repo / "metrics/train.json", repo / "metrics/eval.json"
    try:
        m = json.loads(ev.read_text())
        m["test_acc"] = round(m["test_acc"] + TOLERANCE / 2, 4)
        ev.write_text(json.dumps(m, indent=2) + "\n")
        problem, _ = rescore(repo)  # trained on this CPU: must be equal
        assert problem is not None and "must be equal on the same CPU kernels" in problem
        t = json.loads(train.read_text())
        train.write_text(json.dumps({**t, "device": "cuda:0"}, indent=2) + "\n")
        problem, what = rescore(repo)
        assert problem is None and what.endswith("; the run trained and scored on cuda:0)")
    finally:
        restore(repo)


def test_a_missing_or_broken_dvc_lock_is_one_line(tmp_path):
    """Without dvc.lock, `dvc status` listed all 62 files as changed; a broken one printed `['  2']`."""
    from src.verify import lock_problems

    assert lock_problems(tmp_path) == [
        "dvc.lock: missing: no run is recorded to check against (run `dvc repro`, then commit dvc.lock)"
    ]
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: [1,2\n")
    assert lock_problems(tmp_path) == [
        "dvc.lock: not readable (line 3, column 1: expected ',' or ']', but got '<stream end>'); "
        "`git checkout dvc.lock` restores the committed one"
    ]
    # at a revision (a student's commit in a temporary worktree) the advice is for its author: there is
    # no workspace to restore, and `dvc repro` in the worktree would be gone with it
    assert lock_problems(tmp_path, "alice/exp1") == [
        "dvc.lock: not readable (line 3, column 1: expected ',' or ']', but got '<stream end>'); "
        "the run record alice/exp1 holds is damaged: `dvc repro` on it, then commit dvc.lock"
    ]
    (tmp_path / "dvc.lock").unlink()
    assert lock_problems(tmp_path, "alice/exp1") == [
        "dvc.lock: missing: no run is recorded to check against (alice/exp1 holds no run: `dvc repro` on it, "
        "then commit dvc.lock)"
    ]
