"""Same inputs, same bytes, and the README's ways back, done as a student does them.

A fresh `git clone` of a repo whose run is committed (the session's `repo` fixture) has the metrics
and plots but none of the DVC-cached outputs (data, models). Its own `dvc repro` must give every
output the committed bytes (the two-run identity test: two temp repos, every out's md5 in
dvc.lock), and then each way back of the README must end in a clean `dvc status`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import sh

GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
TIMING = "metrics/timing.json"  # seconds and images/s: the one output that differs run to run
REPORT = "report"  # ... and the report, which shows them (and its PDF, which Chromium dates)
TIMED = re.compile(r'<span class="num" data-src="metrics/timing.json"[^>]*>[^<]*</span>')


def lock_outs(lock_text: str) -> dict[str, str]:
    """Every stage output of a dvc.lock → its md5 (a folder's is the hash of its listing)."""
    lock = yaml.safe_load(lock_text)
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def clean(repo: Path) -> bool:
    out = sh(repo, "dvc", "status").stdout
    return "Data and pipelines are up to date" in out


@pytest.fixture(scope="module")
def clone(repo, full_mirror, tmp_path_factory) -> Path:
    """A fresh clone of the committed run, reproduced on this machine (the second run)."""
    dest = tmp_path_factory.mktemp("clone") / "lab"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(dest))
    return dest


def test_a_fresh_clone_cannot_check_out_what_only_another_cache_holds(clone):
    r = sh(clone, "dvc", "checkout", check=False)
    assert r.returncode != 0
    for path in ("models/best.pt", "models/last.pt", "data/subset.pt"):
        assert path in r.stdout + r.stderr


def test_two_runs_give_every_output_the_same_bytes(repo, clone, full_mirror):
    committed = lock_outs(sh(repo, "git", "show", "HEAD:dvc.lock").stdout)
    sh(clone, "dvc", "repro", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    mine = lock_outs((clone / "dvc.lock").read_text())
    assert set(mine) == set(committed) and len(mine) >= 15
    differ = sorted(p for p in mine if mine[p] != committed[p])
    assert differ == [TIMING, REPORT], differ
    html = [TIMED.sub("", (r / "report/lab_report.html").read_text()) for r in (repo, clone)]
    assert html[0] == html[1]  # the report differs only in the seconds it shows
    for rel in ["report/numbers.json", *(str(p.relative_to(repo)) for p in (repo / "report/figures").glob("*.png"))]:
        assert (repo / rel).read_bytes() == (clone / rel).read_bytes(), rel
    timed = {"seconds", "train_seconds", "images_per_s", "startup_seconds"}
    assert set(json.loads((clone / TIMING).read_text())) == timed
    changed = sh(clone, "git", "status", "--porcelain").stdout.split()
    assert set(changed) - {"M"} == {"dvc.lock", TIMING}


def test_back_to_the_committed_results(clone):
    committed = (clone / "metrics/train.json").read_bytes()
    sh(clone, "dvc", "exp", "run", "-S", "train.epochs=3", "-n", "three")
    assert json.loads((clone / "metrics/train.json").read_text())["epochs"] == 3
    sh(clone, "git", "read-tree", "HEAD")
    sh(clone, "git", "checkout", "--", ".")
    r = sh(clone, "dvc", "checkout", check=False)
    # this clone remade every output byte for byte but the report, which prints its own seconds:
    # the committed report is only in the cache of the machine that made it
    assert r.returncode != 0 and "report" in r.stdout + r.stderr and "models/best.pt" not in r.stderr
    out = sh(clone, "dvc", "repro").stdout  # remakes it from the restored files, to the committed bytes
    assert "Running stage 'report'" in out and out.count("Running stage") == 1
    sh(clone, "git", "diff", "--quiet", "dvc.lock")  # the remade report has the committed hash
    assert clean(clone)
    assert (clone / "metrics/train.json").read_bytes() == committed


def test_back_to_my_own_last_run(clone):
    sh(clone, "dvc", "exp", "run", "-S", "train.epochs=3")
    sh(clone, "git", "add", "dvc.lock", "params.yaml", "metrics", "plots", "dvclive")
    sh(clone, *GIT, "commit", "-qm", "my run")
    mine = (clone / "models/best.pt").read_bytes()
    sh(clone, "dvc", "exp", "run", "-S", "train.lr=0.05", "-n", "lr05")
    assert (clone / "models/best.pt").read_bytes() != mine
    sh(clone, "git", "checkout", "--", ".")
    sh(clone, "dvc", "checkout")
    assert clean(clone)
    assert (clone / "models/best.pt").read_bytes() == mine
    assert json.loads((clone / "metrics/train.json").read_text())["epochs"] == 3


# the README's way back
BACK = "git read-tree HEAD && git checkout -- . && git clean -fdq -- plots/visualize plots/theory && dvc checkout"


def test_back_from_an_experiment_on_other_classes(clone):
    """An experiment on other classes writes figures named after them (feature_maps_bird_1.png):
    git restores the committed files but keeps those, so `dvc status` called plots/visualize
    modified after the way back; its `git clean` of the stages' folders drops them, and a student's own
    untracked file elsewhere under plots/ stays. Another experiment is applied from there, where
    `dvc exp apply` leaves exactly that run's files."""
    committed = yaml.safe_load((clone / "params.yaml").read_text())["data"]["classes"]
    assert "bird" not in committed
    sh(clone, "dvc", "exp", "run", "-S", "data.classes=[cat,bird]", "-n", "catbird")  # now in the workspace
    (clone / "plots/my_sketch.png").write_bytes(b"mine")  # a student's own file, never added to git
    for step in BACK.split(" && ")[:2] + BACK.split(" && ")[3:]:  # the way back without the clean
        sh(clone, *step.split())
    left = sh(clone, "git", "status", "--porcelain").stdout
    assert "?? plots/visualize/feature_maps_bird_1.png" in left and not clean(clone)
    for step in BACK.split(" && "):
        sh(clone, *step.split())
    assert clean(clone) and sh(clone, "git", "status", "--porcelain").stdout == "?? plots/my_sketch.png\n"
    assert (clone / "plots/my_sketch.png").read_bytes() == b"mine"
    (clone / "plots/my_sketch.png").unlink()
    sh(clone, "dvc", "exp", "apply", "catbird")
    assert clean(clone) and (clone / "plots/visualize/feature_maps_bird_1.png").exists()
    assert not (clone / f"plots/visualize/feature_maps_{(set(committed) - {'cat'}).pop()}_1.png").exists()
    for step in BACK.split(" && "):
        sh(clone, *step.split())
    assert clean(clone) and sh(clone, "git", "status", "--porcelain").stdout == ""


def test_out_of_a_failed_experiment(clone):
    sh(clone, "dvc", "exp", "run", "-S", "train.lr=0.05", "-n", "lr05b")  # an experiment, now in the workspace
    r = sh(clone, "dvc", "exp", "run", "-S", "data.classes=[cat,dgo]", check=False)
    assert r.returncode != 0
    assert "unknown class 'dgo'" in r.stderr
    assert "`dvc exp apply lr05b` brings back the newest experiment" in r.stderr
    assert not clean(clone)  # DVC removed data/params.ok and params.yaml holds the typo
    sh(clone, "dvc", "exp", "apply", "lr05b")
    assert clean(clone)
    p = yaml.safe_load((clone / "params.yaml").read_text())
    assert p["train"]["lr"] == 0.05 and p["data"]["classes"] == ["cat", "dog", "ship"]
    sh(clone, "git", "checkout", "--", ".")
    sh(clone, "dvc", "checkout")
    assert clean(clone)


def test_out_of_a_failed_experiment_that_keeps_the_files_size(repo, tmp_path):
    """A value as wide as the committed one (epochs 2 → 0 keeps its size): DVC leaves git's index
    saying params.yaml is unchanged, so `git checkout params.yaml` restored nothing. The hint's
    command restores params.yaml alone (an edit elsewhere stays); after an applied experiment, the
    README's first way back restores the committed results too."""
    clone = tmp_path / "lab"  # a copy of the committed run with its cache (checkout needs the outputs)
    shutil.copytree(repo, clone, symlinks=True)
    (clone / "notes.txt").write_text("mine")
    sh(clone, "git", "add", "notes.txt")
    sh(clone, *GIT, "commit", "-qm", "notes")
    (clone / "notes.txt").write_text("my uncommitted edit")
    r = sh(clone, "dvc", "exp", "run", "-S", "train.epochs=0", check=False)
    assert r.returncode != 0 and "train.epochs=0" in r.stderr
    back = "git read-tree HEAD && git checkout -- params.yaml && dvc checkout"
    assert f"`{back}` restores the committed params.yaml" in r.stderr
    for step in back.split(" && "):
        sh(clone, *step.split())
    assert (clone / "params.yaml").read_text() == sh(clone, "git", "show", "HEAD:params.yaml").stdout
    assert clean(clone) and (clone / "notes.txt").read_text() == "my uncommitted edit"

    sh(clone, "dvc", "exp", "run", "-S", "train.lr=0.06", "-n", "lr06")  # applied, then a failed one
    assert sh(clone, "dvc", "exp", "run", "-S", "train.epochs=0", check=False).returncode != 0
    for step in ["git read-tree HEAD", "git checkout -- .", "dvc checkout"]:
        sh(clone, *step.split())
    for name in ("params.yaml", "dvc.lock"):
        assert (clone / name).read_text() == sh(clone, "git", "show", f"HEAD:{name}").stdout, name
    assert clean(clone) and sh(clone, "git", "status", "--porcelain").stdout == ""


def test_with_a_dvc_remote_a_fresh_clone_gets_everything(clone, tmp_path):
    remote = tmp_path / "remote"
    sh(clone, "dvc", "remote", "add", "-d", "class", str(remote))
    sh(clone, *GIT, "commit", "-qam", "class remote")
    sh(clone, "dvc", "push")
    other = tmp_path / "other"
    sh(tmp_path, "git", "clone", "-q", str(clone), str(other))
    sh(other, "dvc", "pull")
    assert clean(other)
    assert (other / "models/best.pt").read_bytes() == (clone / "models/best.pt").read_bytes()
    shutil.rmtree(other)
